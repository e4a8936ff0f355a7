//! Applying events in PostgreSQL transactions: a batch in one, or one event with its
//! retries.

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::{ConsumerSettings, HandleError, Handler};
use crate::{cloudevents::CloudEvent, runtime::Backoff};

/// How long a batch's transaction waits for a lock before it is applied event by event.
const BATCH_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '100ms'";

/// What became of an event that was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Applied now.
    Applied,
    /// Applied before (a redelivery).
    Duplicate,
}

/// Why an event was not applied.
#[derive(Debug)]
pub(super) enum Failure {
    /// It can never be applied: move it to the dead-letter topic, for this reason.
    DeadLetter(String),
    /// It can be applied later: keep it (and what is not applied yet) and retry after a pause.
    Transient(String),
    /// Shutdown came while retrying: leave the offset, the event is delivered again later.
    Interrupted,
}

/// The span of handling `event`: a child of the request or event that produced it, so the
/// event's trace goes on here.
pub(super) fn event_span(consumer: &str, event: &CloudEvent) -> tracing::Span {
    let span = tracing::info_span!("consume", otel.name = %format!("{consumer} {}", event.event_type), consumer = %consumer, event_id = %event.id);
    crate::trace::continue_trace(&span, event.traceparent.as_deref());
    span
}

/// Applies every well-formed event of a batch in one transaction, with a constant number of
/// statements for the framework's part: one records every event as processed (and tells the
/// redeliveries), then the handler applies the new ones together
/// ([`Handler::handle_batch`]). Per event its outcome, or `None` for one that is not a
/// CloudEvent.
///
/// # Errors
/// The index of the event that failed (0 when the transaction itself could not begin or
/// commit); nothing is applied then.
pub(super) async fn batch<H: Handler, E>(
    pool: &PgPool,
    consumer: &str,
    handler: &H,
    events: &[&Result<CloudEvent, E>],
) -> Result<Vec<Option<Outcome>>, usize> {
    let span = tracing::debug_span!("consume.batch", consumer = %consumer, events = events.len());
    tracing::Instrument::instrument(batch_in_span(pool, consumer, handler, events), span).await
}

/// [`batch`], inside its span.
async fn batch_in_span<H: Handler, E>(
    pool: &PgPool,
    consumer: &str,
    handler: &H,
    events: &[&Result<CloudEvent, E>],
) -> Result<Vec<Option<Outcome>>, usize> {
    let mut tx = pool.begin().await.map_err(|_| 0_usize)?;
    // A batch holds its locks longer than one event would, and two batches may take them in
    // opposite orders (say, two consumers of one service appending to the same users'
    // chains): rather than wait, or stall a second on a deadlock, it gives up and goes one by
    // one.
    sqlx::query(BATCH_LOCK_TIMEOUT)
        .execute(&mut *tx)
        .await
        .map_err(|_| 0_usize)?;
    let ids: Vec<uuid::Uuid> = events
        .iter()
        .filter_map(|e| e.as_ref().ok().map(|e| e.id))
        .collect();
    let recorded: HashSet<uuid::Uuid> = sqlx::query_scalar!(
        "INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::uuid[]) \
         ON CONFLICT DO NOTHING RETURNING event_id",
        consumer,
        &ids
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(|_| 0_usize)?
    .into_iter()
    .collect();
    // Applied: recorded now, and the first of its `ce_id` in the batch. The rest are
    // redeliveries.
    let mut seen = HashSet::with_capacity(ids.len());
    let mut outcomes = Vec::with_capacity(events.len());
    let mut new = Vec::with_capacity(recorded.len());
    let mut positions = Vec::with_capacity(recorded.len());
    for (i, event) in events.iter().enumerate() {
        let Ok(event) = event else {
            outcomes.push(None);
            continue;
        };
        if recorded.contains(&event.id) && seen.insert(event.id) {
            outcomes.push(Some(Outcome::Applied));
            new.push(event);
            positions.push(i);
        } else {
            outcomes.push(Some(Outcome::Duplicate));
        }
    }
    if !new.is_empty() {
        let spans: Vec<tracing::Span> = new.iter().map(|e| event_span(consumer, e)).collect();
        let applied = handler.handle_batch(&mut tx, &new).await;
        // Each event keeps a span of its own in its producer's trace.
        drop(spans);
        if let Err((failed, error)) = applied {
            let at = positions.get(failed).copied().unwrap_or(0);
            tracing::debug!(%consumer, event_id = ?new.get(failed).map(|e| e.id), %error, "batch failed; applying its events one by one");
            return Err(at);
        }
    }
    tx.commit().await.map_err(|_| 0_usize)?;
    Ok(outcomes)
}

/// Applies one event on its own: a transient failure is returned at once (the caller pauses
/// and retries it later), an unexpected one is retried here up to `max_attempts`, a
/// rejection is final.
pub(super) async fn one<H: Handler>(
    pool: &PgPool,
    settings: &ConsumerSettings,
    handler: &H,
    event: &CloudEvent,
    shutdown: &CancellationToken,
) -> Result<Outcome, Failure> {
    let mut backoff = Backoff::new(settings.backoff, settings.max_backoff);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match in_transaction(pool, &settings.name, handler, event).await {
            Ok(outcome) => return Ok(outcome),
            Err(HandleError::Reject(reason)) => return Err(Failure::DeadLetter(reason)),
            Err(HandleError::Transient(reason)) => return Err(Failure::Transient(reason)),
            Err(HandleError::Failed(reason)) if attempt >= settings.max_attempts.max(1) => {
                return Err(Failure::DeadLetter(format!(
                    "gave up after {attempt} attempts: {reason}"
                )));
            }
            Err(HandleError::Failed(reason)) => {
                let delay = backoff.next_delay();
                tracing::warn!(consumer = %settings.name, event_id = %event.id, attempt, %reason, ?delay, "event failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Err(Failure::Interrupted),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn in_transaction<H: Handler>(
    pool: &PgPool,
    consumer: &str,
    handler: &H,
    event: &CloudEvent,
) -> Result<Outcome, HandleError> {
    let mut tx = pool.begin().await.map_err(super::database)?;
    let outcome = record_and_handle(&mut tx, consumer, handler, event).await?;
    tx.commit().await.map_err(super::database)?;
    Ok(outcome)
}

/// Records `event` as processed by `consumer` and applies it, in `tx`; a duplicate (already
/// recorded) changes nothing.
async fn record_and_handle<H: Handler>(
    tx: &mut PgConnection,
    consumer: &str,
    handler: &H,
    event: &CloudEvent,
) -> Result<Outcome, HandleError> {
    let inserted = sqlx::query!(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        consumer,
        event.id
    )
    .execute(&mut *tx)
    .await
    .map_err(super::database)?
    .rows_affected();
    if inserted == 0 {
        return Ok(Outcome::Duplicate);
    }
    handler.handle(tx, event).await?;
    Ok(Outcome::Applied)
}
