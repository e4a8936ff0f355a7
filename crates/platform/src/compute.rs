//! CPU-heavy request work (expanding recurrence rules) off the async workers, on a bounded
//! pool: at most one job per core at once, the rest wait their turn without holding a worker.
//! Before it, 200 concurrent costly rules from one user made another user's GetTask take
//! 4.4 s instead of 5 ms; now they queue behind each other and other calls go on. Run such
//! work outside any transaction, so a queued job holds no lock and no connection.

use std::sync::{
    OnceLock,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::Semaphore;
use tonic::Status;

/// Jobs admitted (running or waiting) per core; one more is refused (`UNAVAILABLE`) rather
/// than queued for longer than its caller would wait.
const QUEUE_PER_CORE: usize = 32;

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
}

/// One permit per core (`std::thread::available_parallelism`).
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(cores()))
}

/// Jobs admitted (waiting or running).
static ADMITTED: AtomicUsize = AtomicUsize::new(0);

/// One admitted job, until dropped.
struct Admitted;

impl Drop for Admitted {
    fn drop(&mut self) {
        ADMITTED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `work` on the blocking pool once a core's permit is free, and returns its result.
/// The permit goes with the job: a caller that gives up (its deadline passed) frees its
/// place only when the job it started has finished.
///
/// # Errors
/// `UNAVAILABLE` when more jobs wait than [`QUEUE_PER_CORE`] per core; `INTERNAL` (logged)
/// when `work` panicked.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    let limit = QUEUE_PER_CORE * cores();
    if ADMITTED.fetch_add(1, Ordering::AcqRel) >= limit {
        ADMITTED.fetch_sub(1, Ordering::AcqRel);
        return Err(Status::unavailable(
            "too much rule work queued; retry with backoff",
        ));
    }
    let admitted = Admitted;
    // The semaphore is never closed: acquiring cannot fail.
    let permit = permits()
        .acquire()
        .await
        .map_err(|_| Status::internal("internal error"))?;
    permit.forget();
    // Back to the pool (and out of the queue) when the job ends, however its caller fared,
    // or when it never runs (a runtime shutting down drops it).
    let returned = Returned;
    let job = tokio::task::spawn_blocking(move || {
        let _admitted = admitted;
        let _returned = returned;
        work()
    });
    job.await.map_err(|error| {
        tracing::error!(%error, "compute job failed");
        Status::internal("internal error")
    })
}

/// Gives a forgotten permit back to [`permits`] when dropped.
struct Returned;

impl Drop for Returned {
    fn drop(&mut self) {
        permits().add_permits(1);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::Arc,
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_one_job_per_core_runs_at_once() {
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let jobs = (0..32).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            tokio::spawn(super::run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
            }))
        });
        for job in futures::future::join_all(jobs).await {
            job.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= super::cores());
        assert!(most.load(Ordering::SeqCst) >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_give_up_do_not_free_a_core_before_their_job_ends() {
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut impatient = Vec::new();
        for _ in 0..8 {
            let (running, most) = (running.clone(), most.clone());
            // Each caller waits 1 ms for a 30 ms job, then gives up.
            impatient.push(tokio::spawn(tokio::time::timeout(
                Duration::from_millis(1),
                super::run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                }),
            )));
        }
        for caller in impatient {
            let _ = caller.await;
        }
        // Jobs already started run on; new ones wait for them.
        let (r, m) = (running.clone(), most.clone());
        super::run(move || {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            r.fetch_sub(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
        assert!(most.load(Ordering::SeqCst) <= super::cores());
    }
}
