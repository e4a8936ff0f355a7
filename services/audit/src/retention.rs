//! Retention of the audit log: entries recorded longer ago than the retention period
//! (default 90 days) are deleted by the schema's `purge_entries` function, the only DELETE the
//! append-only trigger lets through. Each user's chain then starts after its last removed
//! entry, so [`crate::entries::verify`] checks what is left from that point.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The default retention period of audit entries (90 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Deletes the entries recorded before `cutoff`; returns how many went.
///
/// # Errors
/// The database error.
pub async fn purge_before(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT purge_entries($1)")
        .bind(cutoff)
        .fetch_one(pool)
        .await
}

/// Every hour until `shutdown`: purges entries older than `retention`, and consumed-event
/// records older than `dedupe_retention`.
pub async fn run(
    pool: PgPool,
    retention: Duration,
    dedupe_retention: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| Utc::now().checked_sub_signed(r));
        if let Some(cutoff) = cutoff {
            match purge_before(&pool, cutoff).await {
                Ok(0) => {}
                Ok(entries) => tracing::info!(entries, %cutoff, "purged expired audit entries"),
                Err(error) => tracing::warn!(%error, "audit retention failed"),
            }
        }
        let tables = &[("processed_events", "process_time")];
        if let Err(error) =
            taskmesh_platform::retention::purge(&pool, dedupe_retention, tables).await
        {
            tracing::warn!(%error, "consumed-event retention failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
