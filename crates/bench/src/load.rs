//! Open-loop load: requests start at a constant arrival rate whatever the server does, and
//! each one is timed from its *intended* start, so a server that stalls shows as latency
//! instead of as fewer requests (no coordinated omission). With each run: the CPU this
//! process and the PostgreSQL server used, in cores (CPU seconds per wall second).

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;

/// What one open-loop run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Target arrival rate, requests per second.
    pub(crate) rate: f64,
    /// Requests started.
    pub(crate) sent: u64,
    /// Requests that failed (any error).
    pub(crate) errors: u64,
    /// Latency from the intended start to completion, in microseconds (successes only).
    pub(crate) latency: Histogram<u64>,
    /// CPU used meanwhile.
    pub(crate) cpu: CpuUse,
}

impl Outcome {
    /// A latency quantile (0..=1) in milliseconds.
    pub(crate) fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Runs `call(i)` for `i` in `0..rate*duration`, the i-th intended to start at `i / rate`
/// seconds; a call resolves to whether it succeeded.
pub(crate) async fn open_loop<F, Fut>(rate: f64, duration: Duration, call: F) -> Outcome
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let latency = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu = CpuClock::start();
    let start = Instant::now() + Duration::from_millis(2);
    let mut running = JoinSet::new();
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(intended.into()).await;
        let request = call(i);
        let latency = latency.clone();
        let errors = errors.clone();
        running.spawn(async move {
            if request.await {
                let micros = u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency
                    .lock()
                    .expect("latency lock")
                    .saturating_record(micros.max(1));
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    let latency = latency.lock().expect("latency lock").clone();
    Outcome {
        rate,
        sent: total,
        errors: errors.load(Ordering::Relaxed),
        latency,
        cpu: cpu.stop(),
    }
}

/// CPU used over a run, in cores.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuUse {
    /// This process (the load generator and whatever it runs in-process: the mesh).
    pub(crate) bench: f64,
    /// Every `postgres` process.
    pub(crate) postgres: f64,
    /// Server processes this one started (the streams scenario's).
    pub(crate) children: f64,
    /// The broker's own process, with `--broker-process` (else it is part of `bench`).
    pub(crate) broker: f64,
}

impl CpuUse {
    /// CPU milliseconds per call at `rate` calls per second: this process and PostgreSQL
    /// (and server processes started), divided by the calls.
    pub(crate) fn per_call_ms(&self, rate: f64) -> f64 {
        (self.bench + self.postgres + self.children + self.broker) * 1_000.0 / rate.max(1e-9)
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.bench == 0.0 && self.postgres == 0.0 && self.children == 0.0 && self.broker == 0.0 {
            return write!(f, "-");
        }
        write!(f, "{:.2} + pg {:.2}", self.bench, self.postgres)?;
        if self.children > 0.0 {
            write!(f, " + srv {:.2}", self.children)?;
        }
        if self.broker > 0.0 {
            write!(f, " + broker {:.2}", self.broker)?;
        }
        Ok(())
    }
}

/// The broker processes every [`CpuClock`] counts (`--broker-process`; see `mesh`).
static BROKERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Counts process `pid`, a broker, in every [`CpuClock`] started from now on.
pub(crate) fn count_broker(pid: u32) {
    BROKERS.lock().expect("broker pids").push(pid);
}

/// Stops counting broker process `pid` (it is going away).
pub(crate) fn forget_broker(pid: u32) {
    BROKERS.lock().expect("broker pids").retain(|&p| p != pid);
}

/// Each of `pids` with its CPU seconds now.
fn readings(pids: impl IntoIterator<Item = u32>) -> Vec<(u32, f64)> {
    pids.into_iter()
        .map(|pid| {
            (
                pid,
                cpu_seconds(&format!("/proc/{pid}/stat")).unwrap_or(0.0),
            )
        })
        .collect()
}

/// CPU seconds used by each of `since`'s processes since its reading.
fn used(since: &[(u32, f64)]) -> f64 {
    since
        .iter()
        .map(|(pid, first)| {
            cpu_seconds(&format!("/proc/{pid}/stat")).map_or(0.0, |last| last - first)
        })
        .sum()
}

/// CPU time counters from the start of a run. PostgreSQL backends come and go (pgbench's
/// exit with it), so they are sampled every 100 ms by pid while the clock runs.
pub(crate) struct CpuClock {
    wall: Instant,
    bench: f64,
    postgres: Arc<Mutex<HashMap<u32, (f64, f64)>>>,
    sampler: tokio::task::JoinHandle<()>,
    /// Child processes' pids and their CPU seconds at the start.
    children: Vec<(u32, f64)>,
    /// Broker processes' pids and their CPU seconds at the start.
    brokers: Vec<(u32, f64)>,
}

impl CpuClock {
    /// Like [`CpuClock::start`], also counting the processes `pids` (which outlive the run).
    pub(crate) fn start_with(pids: Vec<u32>) -> Self {
        let mut clock = Self::start();
        clock.children = readings(pids);
        clock
    }

    /// Reads the counters now and starts sampling PostgreSQL's (inside a Tokio runtime).
    pub(crate) fn start() -> Self {
        let postgres = Arc::new(Mutex::new(HashMap::new()));
        sample_postgres(&postgres, true);
        let sampler = tokio::spawn({
            let postgres = postgres.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    sample_postgres(&postgres, false);
                }
            }
        });
        Self {
            wall: Instant::now(),
            bench: cpu_seconds("/proc/self/stat").unwrap_or(0.0),
            postgres,
            sampler,
            children: Vec::new(),
            brokers: readings(BROKERS.lock().expect("broker pids").clone()),
        }
    }

    /// The cores used since [`CpuClock::start`].
    pub(crate) fn stop(&self) -> CpuUse {
        self.sampler.abort();
        sample_postgres(&self.postgres, false);
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let postgres: f64 = self
            .postgres
            .lock()
            .expect("postgres samples")
            .values()
            .map(|(first, last)| last - first)
            .sum();
        CpuUse {
            bench: (cpu_seconds("/proc/self/stat").unwrap_or(0.0) - self.bench) / wall,
            postgres: postgres / wall,
            children: used(&self.children) / wall,
            broker: used(&self.brokers) / wall,
        }
    }
}

/// Records each live `postgres` process's CPU seconds: the first reading per pid (zero for a
/// process that started after the clock, unless `initial`) and the latest.
fn sample_postgres(samples: &Mutex<HashMap<u32, (f64, f64)>>, initial: bool) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut samples = samples.lock().expect("postgres samples");
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == "postgres")
        {
            continue;
        }
        if let Some(cpu) = cpu_seconds(&entry.path().join("stat").to_string_lossy()) {
            let first = if initial { cpu } else { 0.0 };
            samples.entry(pid).or_insert((first, cpu)).1 = cpu;
        }
    }
}

/// A `kB` field of a `/proc/<pid>/status` file (e.g. `VmRSS`, `VmHWM`), in KiB.
pub(crate) fn status_kib(status: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `utime + stime` of a `/proc/<pid>/stat` file, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(stat: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
