//! Reminder lateness (issue "ReminderService", benchmark): schedule `total` reminders, of
//! which `burst` come due within one second, run the real scheduler (its timer loop, claims
//! and firing transactions), and report lateness (`fired_time - fire_time`) percentiles, the
//! earliest firing relative to its time (never negative), and the process's peak memory.
//!
//! Two bursts run one after the other: "spread" (the burst's reminders evenly over one
//! second) and "instant" (all at the same microsecond). The other reminders wait an hour
//! ahead, so the scheduler works against a realistically large queue.
//!
//! The limit beside it: one bare Tokio timer per reminder, the same two bursts, lateness by
//! the same clock.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args as ClapArgs;
use sqlx::PgPool;
use taskmesh_platform::{db, runtime::TaskContext};
use taskmesh_reminder::Scheduler;
use taskmesh_testkit::TestDb;

use crate::load::CpuClock;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Options of the reminders scenario.
#[derive(Debug, ClapArgs)]
pub(crate) struct Args {
    /// Reminders scheduled in all.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) total: usize,
    /// Reminders due within the measured second (per burst).
    #[arg(long, default_value_t = 1_000)]
    pub(crate) burst: usize,
    /// Users the reminders belong to.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) users: usize,
}

/// Inserts `count` reminders (one task each) for rotating users, due at `time(i)`.
async fn schedule(
    pool: &PgPool,
    count: usize,
    users: usize,
    tag: &str,
    time: impl Fn(usize) -> DateTime<Utc>,
) -> anyhow::Result<()> {
    for chunk in (0..count).collect::<Vec<_>>().chunks(5_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::now_v7()).collect();
        let owners: Vec<String> = chunk
            .iter()
            .map(|i| format!("user-{}", i % users))
            .collect();
        let times: Vec<DateTime<Utc>> = chunk.iter().map(|i| time(*i)).collect();
        let title = format!("bench {tag}");
        sqlx::query(
            "INSERT INTO tasks (id, user_id, title, version, is_open, update_time) \
             SELECT id, owner, $3, 1, true, now() FROM unnest($1::uuid[], $2::text[]) AS t(id, owner)",
        )
        .bind(&ids)
        .bind(&owners)
        .bind(&title)
        .execute(pool)
        .await?;
        sqlx::query(
            "INSERT INTO reminders (task_id, reminder_id, user_id, absolute_time, trigger_time, fire_at, state) \
             SELECT id, 'r', owner, at, at, at, 1 \
             FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS t(id, owner, at)",
        )
        .bind(&ids)
        .bind(&owners)
        .bind(&times)
        .execute(pool)
        .await?;
    }
    Ok(())
}

struct Figures {
    fired: i64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    earliest_ms: f64,
}

/// Lateness of the reminders of tasks titled `bench <tag>`, once all have fired.
async fn figures(pool: &PgPool, tag: &str) -> anyhow::Result<Figures> {
    let row: (i64, f64, f64, f64, f64, f64) = sqlx::query_as(
        "SELECT count(*), \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY lateness_us) / 1000.0, \
         percentile_cont(0.99) WITHIN GROUP (ORDER BY lateness_us) / 1000.0, \
         percentile_cont(0.999) WITHIN GROUP (ORDER BY lateness_us) / 1000.0, \
         (max(lateness_us) / 1000.0)::float8, \
         (min(extract(epoch FROM fired_time - fire_at)) * 1000.0)::float8 \
         FROM reminders r JOIN tasks t ON t.id = r.task_id \
         WHERE t.title = $1 AND r.state = 2",
    )
    .bind(format!("bench {tag}"))
    .fetch_one(pool)
    .await?;
    Ok(Figures {
        fired: row.0,
        p50_ms: row.1,
        p99_ms: row.2,
        p999_ms: row.3,
        max_ms: row.4,
        earliest_ms: row.5,
    })
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    crate::load::status_kib("/proc/self/status", "VmHWM")
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

/// Polls (every 10 ms) until `count` reminders of `tag` fired; returns when the last became
/// visible (committed), by this process's clock.
async fn wait_fired(pool: &PgPool, tag: &str, count: usize) -> anyhow::Result<DateTime<Utc>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let fired: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM reminders r JOIN tasks t ON t.id = r.task_id \
             WHERE t.title = $1 AND r.state = 2",
        )
        .bind(format!("bench {tag}"))
        .fetch_one(pool)
        .await?;
        if usize::try_from(fired)? >= count {
            return Ok(taskmesh_domain::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {fired} of {count} fired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lateness of one Tokio timer per time in `times` (UTC), by the clock the scheduler uses.
async fn timer_lateness(times: Vec<DateTime<Utc>>) -> hdrhistogram::Histogram<u64> {
    let mut timers = tokio::task::JoinSet::new();
    for time in times {
        timers.spawn(async move {
            let wait = (time - taskmesh_domain::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            (taskmesh_domain::now() - time)
                .num_microseconds()
                .unwrap_or(0)
        });
    }
    let lateness = crate::live::histogram();
    while let Some(late) = timers.join_next().await {
        crate::live::record(&lateness, late.unwrap_or(i64::MAX));
    }
    lateness.lock().expect("histogram").clone()
}

/// Runs the scenario; adds its rows (lateness beside a bare Tokio timer's) to `table`.
pub(crate) async fn run(args: Args, table: &mut crate::table::Table) -> anyhow::Result<()> {
    let database = TestDb::create().await?;
    let pool = db::connect(&database.url(), taskmesh_reminder::SCHEMA, 16).await?;
    db::migrate(&pool, &taskmesh_reminder::MIGRATIONS).await?;

    let background = args.total.saturating_sub(2 * args.burst);
    let started = Instant::now();
    let later = taskmesh_domain::now() + chrono::Duration::hours(1);
    schedule(&pool, background, args.users, "background", |i| {
        later + chrono::Duration::milliseconds(i64::try_from(i).unwrap_or(0))
    })
    .await?;
    // The bursts start once scheduling is done and the scheduler is up.
    let lead = chrono::Duration::seconds(3);
    let spread_start = taskmesh_domain::now() + lead + chrono::Duration::seconds(2);
    let step_us = 1_000_000 / i64::try_from(args.burst.max(1))?;
    schedule(&pool, args.burst, args.users, "spread", |i| {
        spread_start + chrono::Duration::microseconds(i64::try_from(i).unwrap_or(0) * step_us)
    })
    .await?;
    let instant = spread_start + chrono::Duration::seconds(3);
    schedule(&pool, args.burst, args.users, "instant", |_| instant).await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    let scheduled = started.elapsed();

    let shutdown = CancellationToken::new();
    let scheduler = Scheduler::new(pool.clone(), String::new());
    let cpu = CpuClock::start();
    let wall_before = Instant::now();
    let handle = tokio::spawn(scheduler.run(TaskContext::detached("scheduler", shutdown.clone())));
    let spread_end = spread_start
        + chrono::Duration::microseconds((i64::try_from(args.burst)? - 1).max(0) * step_us);
    let spread_visible = wait_fired(&pool, "spread", args.burst).await? - spread_end;
    let instant_visible = wait_fired(&pool, "instant", args.burst).await? - instant;
    let cpu = cpu.stop();
    let wall = wall_before.elapsed().as_secs_f64();
    shutdown.cancel();
    handle.await??;

    table.note(format!(
        "reminders: {} scheduled ({} background an hour ahead) for {} users in {:.1} s; \
         the scheduler's CPU (cores: this process + PostgreSQL) {} over {:.1} s; \
         peak RSS of this process so far (with other scenarios before it, theirs too) {:.1} MiB",
        args.total,
        background,
        args.users,
        scheduled.as_secs_f64(),
        cpu,
        wall,
        peak_rss_mib()
    ));
    // The runtime's own timer lateness for the same two bursts: what firing at an exact time
    // costs with nothing in between (Tokio's timer wheel has a granularity of 1 ms).
    let timer_start = taskmesh_domain::now() + chrono::Duration::seconds(1);
    let timer_spread = timer_lateness(
        (0..args.burst)
            .map(|i| {
                timer_start
                    + chrono::Duration::microseconds(i64::try_from(i).unwrap_or(0) * step_us)
            })
            .collect(),
    )
    .await;
    let timer_instant =
        timer_lateness(vec![timer_start + chrono::Duration::seconds(2); args.burst]).await;
    for (tag, label, visible, timer) in [
        (
            "spread",
            format!("{} over 1 s", args.burst),
            spread_visible,
            timer_spread,
        ),
        (
            "instant",
            format!("{} at once", args.burst),
            instant_visible,
            timer_instant,
        ),
    ] {
        let f = figures(&pool, tag).await?;
        for (name, ours, quantile) in [
            ("p50", f.p50_ms, 0.5),
            ("p99", f.p99_ms, 0.99),
            ("p99.9", f.p999_ms, 0.999),
        ] {
            table.ratio_row(
                "reminders",
                &format!("{label}: lateness {name}, ms"),
                ours,
                "tokio timer, same schedule",
                timer.value_at_quantile(quantile) as f64 / 1000.0,
                cpu,
            );
        }
        table.note(format!(
            "reminders {label}: {} fired, max lateness {:.2} ms, earliest {:.3} ms after its \
             time (never negative), all seen committed {:.1} ms after the last fire time \
             (polling every 10 ms)",
            f.fired,
            f.max_ms,
            f.earliest_ms,
            visible.num_microseconds().unwrap_or(0) as f64 / 1000.0
        ));
    }
    pool.close().await;
    Ok(())
}
