//! Retention of the audit log: entries recorded longer ago than the retention period
//! (default 90 days) are deleted by the schema's `purge_entries` function, the only DELETE the
//! append-only trigger lets through. Each user's chain then starts after its last removed
//! entry, so [`crate::entries::verify`] checks what is left from that point.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use taskmesh_platform::runtime::{Backoff, TaskContext};

/// The default retention period of audit entries (90 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Deletes the entries recorded before `cutoff`; returns how many went.
///
/// # Errors
/// The database error.
pub async fn purge_before(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    // The function always returns a count (0 when another replica holds the purge lock).
    sqlx::query_scalar!(r#"SELECT purge_entries($1) AS "removed!""#, cutoff)
        .fetch_one(pool)
        .await
}

/// Every hour until shutdown: purges entries older than `retention`, and consumed-event
/// records older than `dedupe_retention`. A failed purge reports the task degraded and is
/// tried again after a backoff.
///
/// # Errors
/// None today: a failed purge is transient. (The signature is the supervisor's.)
pub async fn run(
    pool: PgPool,
    retention: Duration,
    dedupe_retention: Duration,
    ctx: TaskContext,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    loop {
        let wait = match purge(&pool, retention, dedupe_retention).await {
            Ok(()) => {
                ctx.health.recovered();
                backoff.reset();
                taskmesh_platform::retention::HOURLY
            }
            Err(error) => {
                ctx.health
                    .degraded(&format_args!("audit retention failed: {error}"));
                backoff.next_delay()
            }
        };
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One retention round.
async fn purge(
    pool: &PgPool,
    retention: Duration,
    dedupe_retention: Duration,
) -> Result<(), sqlx::Error> {
    let cutoff = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| Utc::now().checked_sub_signed(r));
    if let Some(cutoff) = cutoff {
        let entries = purge_before(pool, cutoff).await?;
        if entries > 0 {
            tracing::info!(entries, %cutoff, "purged expired audit entries");
        }
    }
    let tables = &[("processed_events", "process_time")];
    taskmesh_platform::retention::purge(pool, dedupe_retention, tables).await?;
    // What identifies recorded changes lives as long as their entries.
    let tables = &[("recorded_changes", "record_time")];
    taskmesh_platform::retention::purge(pool, retention, tables).await?;
    Ok(())
}
