//! Retention: change-log entries, request ids and processed-event records older than the retention window are deleted
//! hourly. A stream cursor older than the window then gets "resync".

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Deletes change-log entries and request ids older than `retention`; returns how many rows
/// went.
///
/// # Errors
/// The database error.
pub async fn purge(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let changes =
        sqlx::query("DELETE FROM changes WHERE create_time < now() - make_interval(secs => $1)")
            .bind(seconds)
            .execute(pool)
            .await?
            .rows_affected();
    let requests =
        sqlx::query("DELETE FROM requests WHERE create_time < now() - make_interval(secs => $1)")
            .bind(seconds)
            .execute(pool)
            .await?
            .rows_affected();
    let processed = sqlx::query(
        "DELETE FROM processed_events WHERE process_time < now() - make_interval(secs => $1)",
    )
    .bind(seconds)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(changes + requests + processed)
}

/// Runs [`purge`] every hour until `shutdown`.
pub async fn run(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    loop {
        match purge(&pool, retention).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "purged expired change-log entries and request ids"),
            Err(error) => tracing::warn!(%error, "retention purge failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
