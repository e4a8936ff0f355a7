//! Retention of a service's bookkeeping: change-log entries, request ids (AIP-155) and
//! processed-event records older than the retention window are deleted hourly. A stream
//! cursor older than the window then gets "resync"; a request retried after it acts again.

use std::time::Duration;

use sqlx::PgPool;

use crate::runtime::{Backoff, TaskContext};

/// Longest one table's purge may run (its own statement timeout).
const PURGE_TIMEOUT: &str = "10min";

/// The bookkeeping tables and their time columns of a service with a change log.
pub const WITH_CHANGE_LOG: &[(&str, &str)] = &[
    ("changes", "create_time"),
    ("requests", "create_time"),
    ("processed_events", "process_time"),
];

/// The bookkeeping tables and their time columns of a service without a change log.
pub const WITHOUT_CHANGE_LOG: &[(&str, &str)] = &[
    ("requests", "create_time"),
    ("processed_events", "process_time"),
];

/// Deletes rows of `tables` (`(table, time column)`, e.g. [`WITH_CHANGE_LOG`]) older than
/// `retention` (by the database clock); returns how many rows went.
///
/// # Errors
/// The database error.
pub async fn purge(
    pool: &PgPool,
    retention: Duration,
    tables: &[(&str, &str)],
) -> Result<u64, sqlx::Error> {
    let mut rows = 0;
    for (table, column) in tables {
        let mut tx = pool.begin().await?;
        // A first purge after a long pause may delete millions of rows: longer than the
        // pool's statement timeout allows a call.
        sqlx::query(&format!("SET LOCAL statement_timeout = '{PURGE_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
        rows += sqlx::query(&format!(
            "DELETE FROM {table} WHERE {column} < now() - make_interval(secs => $1)"
        ))
        .bind(retention.as_secs_f64())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
    }
    Ok(rows)
}

/// Runs [`purge`] of `tables` every hour until shutdown; a failed purge reports the task
/// degraded and is tried again after a backoff.
///
/// # Errors
/// None today: a failed purge is transient. (The signature is the supervisor's.)
pub async fn run(
    pool: PgPool,
    retention: Duration,
    tables: &'static [(&'static str, &'static str)],
    ctx: TaskContext,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    loop {
        let wait = match purge(&pool, retention, tables).await {
            Ok(rows) => {
                if rows > 0 {
                    tracing::info!(rows, "purged expired change-log entries and request ids");
                }
                ctx.health.recovered();
                backoff.reset();
                HOURLY
            }
            Err(error) => {
                ctx.health
                    .degraded(&format_args!("retention purge failed: {error}"));
                backoff.next_delay()
            }
        };
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How often retention runs.
pub const HOURLY: Duration = Duration::from_secs(3600);
