//! Idempotent Kafka consumers (ARCHITECTURE.md invariant 2): each event's effect and the
//! record `(consumer, ce_id)` commit in one PostgreSQL transaction, and the Kafka offset is
//! stored only after that commit (auto-commit then commits stored offsets). A redelivered
//! event finds its record and changes nothing. A failing event is retried with exponential
//! backoff a bounded number of times, then moved to the topic's dead-letter topic
//! (`<topic>.dlq`, with the reason in headers) and the consumer goes on.
//!
//! Events that have already arrived are applied together, up to [`BATCH`] in one transaction
//! (one commit, one WAL flush, instead of one per event); a lone event is never held back
//! waiting for company. If any event of a batch fails, the whole transaction is rolled back;
//! the events up to the failing one are applied on their own as above, and the partitions are
//! rewound to the events after it, which the next batches fetch again. So one bad event costs
//! its batch a retry, never a lost or doubled effect, and the consumer polls Kafka between
//! slow events as before.
//!
//! Each service owns a table in its schema:
//! ```sql
//! CREATE TABLE processed_events (
//!     consumer     text        NOT NULL,
//!     event_id     uuid        NOT NULL,
//!     process_time timestamptz NOT NULL DEFAULT now(),
//!     PRIMARY KEY (consumer, event_id)
//! );
//! ```

use std::{future::Future, time::Duration};

use futures::FutureExt as _;

use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    message::{BorrowedMessage, Header},
    producer::{FutureProducer, FutureRecord},
};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::{
    cloudevents::CloudEvent,
    kafka::{KafkaConfig, Topic},
};

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// A transient failure (database, network): retry with backoff.
    #[error("transient failure: {0}")]
    Retry(String),
    /// The event can never be applied (malformed, invalid): dead-letter it at once.
    #[error("rejected: {0}")]
    Reject(String),
}

/// A [`HandleError::Reject`] for `reason`.
pub fn reject(reason: impl Into<String>) -> HandleError {
    HandleError::Reject(reason.into())
}

/// A database failure is transient: [`HandleError::Retry`].
pub fn retry(error: sqlx::Error) -> HandleError {
    HandleError::Retry(error.to_string())
}

/// Decodes an event's protobuf payload; a payload that does not decode is rejected.
///
/// # Errors
/// [`HandleError::Reject`] with the decode error.
pub fn decode<M: prost::Message + Default>(data: &[u8]) -> Result<M, HandleError> {
    M::decode(data).map_err(|e| reject(format!("payload does not decode: {e}")))
}

/// Applies events. Implementations run inside the transaction that records the event as
/// processed, and must do all their writes through `tx`.
pub trait Handler: Send + Sync + 'static {
    /// Applies `event`.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a CloudEvent,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + 'a;
}

/// Most events applied in one transaction.
pub const BATCH: usize = 128;

/// Longest an idle fetch of these consumers waits at the broker, in milliseconds (at least;
/// [`KafkaConfig::fetch_wait_max_ms`] when larger).
const FETCH_WAIT_MAX_MS: u32 = 100;

/// How long a batch's transaction waits for a lock before it is applied event by event.
const BATCH_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '100ms'";

/// Settings of one consumer.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// The consumer's name: its dedupe key and its consumer group id (e.g. `taskmesh-task`).
    pub name: String,
    /// The topic it reads.
    pub topic: Topic,
    /// Attempts before dead-lettering a failing event (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled on each further retry.
    pub backoff: Duration,
}

#[derive(Clone, Copy)]
enum Outcome {
    /// Applied now.
    Applied,
    /// Applied before (a redelivery).
    Duplicate,
}

enum Failure {
    /// Move the event to the dead-letter topic, for this reason.
    DeadLetter(String),
    /// Shutdown came while retrying: leave the offset, the event is redelivered later.
    Interrupted,
}

/// Consumes `settings.topic` with `handler` until `shutdown`, finishing the event in hand.
///
/// # Errors
/// When the Kafka clients cannot be created or the subscription fails.
pub async fn run<H: Handler>(
    pool: PgPool,
    kafka: KafkaConfig,
    settings: ConsumerSettings,
    handler: H,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topic = kafka.topic(settings.topic);
    let dead_letters = kafka.dead_letter_topic(settings.topic);
    let mut config = kafka.consumer_config(&settings.name);
    // Stored offsets (never auto-stored) are committed in the background.
    config.set("enable.auto.commit", "true");
    // Nothing here is waited on by a person the way a live stream is: an idle fetch may wait
    // longer. (Kafka answers a waiting fetch as soon as data arrives; the embedded dev broker
    // polls, so a short wait there costs CPU on every idle consumer.)
    config.set(
        "fetch.wait.max.ms",
        kafka.fetch_wait_max_ms.max(FETCH_WAIT_MAX_MS).to_string(),
    );
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[&topic])?;
    let producer = kafka.producer()?;
    tracing::info!(consumer = %settings.name, %topic, "consuming");
    let result = consume(
        &consumer,
        &producer,
        &pool,
        &settings,
        &handler,
        &dead_letters,
        &shutdown,
    )
    .await;
    close(consumer).await;
    result
}

/// Closes a consumer off the async runtime: leaving the consumer group blocks until the broker
/// answers, and the broker may be served by this very runtime (the embedded one).
pub async fn close<C: Send + 'static>(consumer: C) {
    if let Err(error) = tokio::task::spawn_blocking(move || drop(consumer)).await {
        tracing::warn!(%error, "closing a Kafka consumer failed");
    }
}

async fn consume<H: Handler>(
    consumer: &StreamConsumer,
    producer: &FutureProducer,
    pool: &PgPool,
    settings: &ConsumerSettings,
    handler: &H,
    dead_letters: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let Some(batch) = next_batch(consumer, settings, shutdown).await else {
            return Ok(());
        };
        let events: Vec<_> = batch.iter().map(CloudEvent::from_message).collect();
        // All together first. If that fails, the events up to the one that failed it go one
        // by one (with retries), and the rest are fetched again: the consumer keeps polling
        // Kafka between slow events, as it did before batching (`max.poll.interval.ms`).
        let (together, upto) = if batch.len() > 1 {
            match apply_batch(pool, &settings.name, handler, &events).await {
                Ok(outcomes) => (Some(outcomes), batch.len()),
                Err(failed_at) => (None, failed_at + 1),
            }
        } else {
            (None, 1)
        };
        if upto < batch.len() {
            fetch_again(consumer, &batch[upto..], &settings.name);
        }
        for (i, (message, event)) in batch.iter().zip(&events).take(upto).enumerate() {
            let started = std::time::Instant::now();
            let outcome = match (together.as_ref().and_then(|o| o[i]), event) {
                (Some(outcome), _) => Ok(outcome),
                // Shutting down: leave the rest unstored; they are delivered again.
                (None, _) if shutdown.is_cancelled() => return Ok(()),
                (None, Ok(event)) => {
                    tracing::Instrument::instrument(
                        process(pool, settings, handler, event, shutdown),
                        event_span(&settings.name, event),
                    )
                    .await
                }
                (None, Err(error)) => Err(Failure::DeadLetter(format!(
                    "not a taskmesh CloudEvent: {error}"
                ))),
            };
            let name = settings.name.clone();
            let label = match outcome {
                Ok(Outcome::Applied) => "applied",
                Ok(Outcome::Duplicate) => {
                    tracing::debug!(consumer = %settings.name, offset = message.offset(), "duplicate event skipped");
                    "duplicate"
                }
                Err(Failure::DeadLetter(reason)) => {
                    dead_letter(producer, dead_letters, message, &settings.name, &reason).await?;
                    "dead_lettered"
                }
                Err(Failure::Interrupted) => return Ok(()),
            };
            metrics::counter!("taskmesh_consumer_events_total", "consumer" => name.clone(), "outcome" => label)
                .increment(1);
            metrics::histogram!("taskmesh_consumer_processing_seconds", "consumer" => name.clone())
                .record(started.elapsed().as_secs_f64());
            if let Ok(event) = event {
                let age = (chrono::Utc::now() - event.time).as_seconds_f64().max(0.0);
                metrics::histogram!("taskmesh_consumer_event_age_seconds", "consumer" => name)
                    .record(age);
            }
            if let Err(error) = consumer.store_offset_from_message(message) {
                // The partition was revoked meanwhile (a rebalance served while the batch was
                // drained): its new owner gets the event again and skips it as a duplicate.
                tracing::info!(%error, consumer = %settings.name, partition = message.partition(), offset = message.offset(), "offset not stored");
            }
        }
    }
}

/// Rewinds each partition of `messages` to its first one, so they are fetched (and applied)
/// again by the next batches. A partition no longer assigned is left to its new owner.
fn fetch_again(consumer: &StreamConsumer, messages: &[BorrowedMessage<'_>], name: &str) {
    let mut rewound: Vec<(&str, i32)> = Vec::new();
    for message in messages {
        let partition = (message.topic(), message.partition());
        if rewound.contains(&partition) {
            continue;
        }
        rewound.push(partition);
        if let Err(error) = consumer.seek(
            message.topic(),
            message.partition(),
            rdkafka::Offset::Offset(message.offset()),
            Duration::from_secs(10),
        ) {
            tracing::info!(%error, consumer = %name, partition = message.partition(), "cannot rewind; the partition's new owner reads on");
        }
    }
}

/// The next message, waiting for it, and up to [`BATCH`] - 1 more that have already arrived;
/// `None` on shutdown.
async fn next_batch<'c>(
    consumer: &'c StreamConsumer,
    settings: &ConsumerSettings,
    shutdown: &CancellationToken,
) -> Option<Vec<BorrowedMessage<'c>>> {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return None,
            message = consumer.recv() => message,
        };
        match first {
            Ok(message) => {
                let mut batch = vec![message];
                while batch.len() < BATCH {
                    match consumer.recv().now_or_never() {
                        Some(Ok(message)) => batch.push(message),
                        Some(Err(error)) => {
                            tracing::warn!(%error, consumer = %settings.name, "kafka receive failed");
                            break;
                        }
                        None => break,
                    }
                }
                return Some(batch);
            }
            Err(error) => {
                tracing::warn!(%error, consumer = %settings.name, "kafka receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The span of handling `event`: a child of the request or event that produced it, so the
/// event's trace goes on here.
fn event_span(consumer: &str, event: &CloudEvent) -> tracing::Span {
    let span = tracing::info_span!("consume", otel.name = %format!("{consumer} {}", event.event_type), consumer = %consumer, event_id = %event.id);
    crate::trace::continue_trace(&span, event.traceparent.as_deref());
    span
}

/// Applies every well-formed event of a batch in one transaction: per event its outcome, or
/// `None` for one that is not a CloudEvent.
///
/// # Errors
/// The index of the event that failed (0 when the transaction itself could not begin or
/// commit); nothing is applied then.
async fn apply_batch<H: Handler, E>(
    pool: &PgPool,
    consumer: &str,
    handler: &H,
    events: &[Result<CloudEvent, E>],
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
    let mut outcomes = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let Ok(event) = event else {
            outcomes.push(None);
            continue;
        };
        let outcome = tracing::Instrument::instrument(
            record_and_handle(&mut tx, consumer, handler, event),
            event_span(consumer, event),
        )
        .await;
        match outcome {
            Ok(outcome) => outcomes.push(Some(outcome)),
            Err(error) => {
                tracing::debug!(%consumer, event_id = %event.id, %error, "batch failed; applying its events one by one");
                return Err(i);
            }
        }
    }
    tx.commit().await.map_err(|_| 0_usize)?;
    Ok(outcomes)
}

/// Applies one event with retries.
async fn process<H: Handler>(
    pool: &PgPool,
    settings: &ConsumerSettings,
    handler: &H,
    event: &CloudEvent,
    shutdown: &CancellationToken,
) -> Result<Outcome, Failure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = apply(pool, &settings.name, handler, event).await;
        match result {
            Ok(outcome) => return Ok(outcome),
            Err(HandleError::Reject(reason)) => return Err(Failure::DeadLetter(reason)),
            Err(HandleError::Retry(reason)) if attempt >= settings.max_attempts.max(1) => {
                return Err(Failure::DeadLetter(format!(
                    "gave up after {attempt} attempts: {reason}"
                )));
            }
            Err(HandleError::Retry(reason)) => {
                let delay = settings.backoff * 2u32.saturating_pow(attempt - 1);
                tracing::warn!(consumer = %settings.name, event_id = %event.id, attempt, %reason, ?delay, "event failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Err(Failure::Interrupted),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn apply<H: Handler>(
    pool: &PgPool,
    consumer: &str,
    handler: &H,
    event: &CloudEvent,
) -> Result<Outcome, HandleError> {
    let mut tx = pool.begin().await.map_err(retry)?;
    let outcome = record_and_handle(&mut tx, consumer, handler, event).await?;
    tx.commit().await.map_err(retry)?;
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
    let inserted = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event.id)
    .execute(&mut *tx)
    .await
    .map_err(retry)?
    .rows_affected();
    if inserted == 0 {
        return Ok(Outcome::Duplicate);
    }
    handler.handle(tx, event).await?;
    Ok(Outcome::Applied)
}

/// Copies `message` to the dead-letter topic with the reason and origin in headers.
async fn dead_letter(
    producer: &FutureProducer,
    topic: &str,
    message: &BorrowedMessage<'_>,
    consumer: &str,
    reason: &str,
) -> anyhow::Result<()> {
    tracing::error!(%consumer, source_topic = message.topic(), offset = message.offset(), %reason, "moving event to the dead-letter topic");
    let mut headers = message.headers().map(|h| h.detach()).unwrap_or_default();
    let origin = format!(
        "{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    for (key, value) in [
        ("taskmesh_dlq_reason", reason),
        ("taskmesh_dlq_consumer", consumer),
        ("taskmesh_dlq_origin", origin.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(error, _)| anyhow::anyhow!("cannot dead-letter: {error}"))?;
    Ok(())
}
