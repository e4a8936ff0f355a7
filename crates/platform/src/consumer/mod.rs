//! Idempotent Kafka consumers (ARCHITECTURE.md invariant 2): each event's effect and the
//! record `(consumer, ce_id)` commit in one PostgreSQL transaction, and the Kafka offset is
//! stored only after that commit (auto-commit then commits stored offsets to the consumer
//! group). A redelivered event finds its record and changes nothing.
//!
//! Failures are told apart ([`HandleError`]):
//! - **transient** (the database is away, a pool or statement timeout, a serialization failure
//!   or deadlock): the consumer keeps the events it has not applied, stops receiving
//!   and tries again after a capped backoff, for as long as it takes, reporting itself
//!   degraded. It never dead-letters such an event.
//! - **rejected** (the record is not a taskmesh CloudEvent, the payload does not decode, the
//!   command is invalid): moved to the topic's dead-letter topic (`<topic>.dlq`, the reason in
//!   headers) at once, and the consumer goes on.
//! - **failed** (anything unexpected): retried a few times with backoff, then dead-lettered.
//!
//! Events that have already arrived are applied together, up to [`BATCH`] in one
//! transaction (one commit, one WAL flush); when more than that has arrived, each
//! partition's events go in transactions of their own, the partitions concurrently (up to
//! [`PARTITIONS_IN_FLIGHT`] transactions at once, each partition's in order). A lone event
//! is never held back waiting for company. If any event of a batch fails, the transaction is
//! rolled back and every event of the batch (and those after it in its partition) is
//! applied on its own: a bad event costs its batch one retry and is dead-lettered alone. (No
//! seeking back: a fetch from an offset inside a stored record batch is not served by every
//! broker, and with partitions assigned by leases rather than group membership there is no
//! poll interval to keep.)
//!
//! Which process consumes which partition is decided by leases in PostgreSQL ([`leases`]),
//! not by Kafka's group coordinator: every replica of a consumer takes a fair share of the
//! topic's partitions, a replica that dies (even by `kill -9`) loses its leases with its
//! database session, and the survivors take its partitions within seconds. Offsets are still
//! committed to the Kafka consumer group, so Kafka's own tools show each consumer's position
//! and lag.
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
//!
//! # Layout
//! - this module: [`Handler`], [`HandleError`], [`ConsumerSettings`], [`run`].
//! - `worker`: the consuming loop (batches, retries, pauses, leases applied to the client).
//! - `apply`: applying events in transactions.
//! - [`leases`]: partition leases (PostgreSQL advisory locks) and fair shares.
//! - `lag`: the lag probe (committed offsets against high watermarks).
//! - [`dead_letter`]: moving records to `<topic>.dlq`, and the headers that say why.

mod apply;
pub mod dead_letter;
mod lag;
pub mod leases;
mod worker;

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use rdkafka::consumer::StreamConsumer;
use sqlx::{PgConnection, PgPool};
use taskmesh_proto::catalogue::TopicEvents;

use crate::{
    cloudevents::CloudEvent,
    kafka::{KafkaConfig, Topic},
    runtime::TaskContext,
};

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event cannot be applied now but can later (database unavailable, pool or statement
    /// timeout, serialization failure, deadlock): retried with backoff for as long as it
    /// takes, never dead-lettered.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The event can never be applied (malformed, invalid): dead-lettered at once.
    #[error("rejected: {0}")]
    Reject(String),
    /// An unexpected failure: retried [`ConsumerSettings::max_attempts`] times, then
    /// dead-lettered.
    #[error("failed: {0}")]
    Failed(String),
}

/// A [`HandleError::Reject`] for `reason`.
pub fn reject(reason: impl Into<String>) -> HandleError {
    HandleError::Reject(reason.into())
}

/// A database error as a handler failure: [`HandleError::Transient`] when retrying can
/// succeed ([`crate::db::is_transient`]), else [`HandleError::Failed`]. A statement timeout
/// counts as failed (bounded retries): an event that always takes too long must not stall
/// its partition for good.
pub fn database(error: sqlx::Error) -> HandleError {
    let statement_timeout =
        matches!(&error, sqlx::Error::Database(e) if e.code().as_deref() == Some("57014"));
    if crate::db::is_transient(&error) && !statement_timeout {
        HandleError::Transient(error.to_string())
    } else {
        HandleError::Failed(error.to_string())
    }
}

/// Decodes an event of topic `T` by its CloudEvent type ([`TopicEvents::decode`]), for a
/// handler to `match` on without a wildcard arm.
///
/// # Errors
/// [`HandleError::Reject`] when the payload is not the type's message, or when the type is
/// not one of `T`'s: a newer producer's event is dead-lettered rather than skipped, so
/// nothing is lost and `taskmesh dlq replay` applies it once this consumer knows the type.
pub fn decode<T: TopicEvents>(event: &CloudEvent) -> Result<T, HandleError> {
    match T::decode(&event.event_type, &event.data) {
        Ok(Some(decoded)) => Ok(decoded),
        Ok(None) => Err(reject(format!(
            "unknown event type on {}: {}",
            T::TOPIC.base_name(),
            crate::grpc::echo(&event.event_type)
        ))),
        Err(e) => Err(reject(format!("payload does not decode: {e}"))),
    }
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

    /// Applies `events`, each new (recorded as processed in this very transaction), in their
    /// order, inside one transaction. A handler that can should do so with a constant number
    /// of statements whatever the batch's size (`INSERT … SELECT FROM unnest(…)`); the
    /// default applies them one after another with [`Handler::handle`].
    ///
    /// # Errors
    /// The position in `events` of the event that failed (for the log; a failure no single
    /// event explains, such as a database error, may name any), and why: the transaction is
    /// rolled back and the consumer applies every event of the batch on its own, so a bad
    /// event costs its batch one retry and is dead-lettered alone.
    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a CloudEvent],
    ) -> impl Future<Output = Result<(), (usize, HandleError)>> + Send + 'a {
        async move {
            for (i, event) in events.iter().enumerate() {
                self.handle(&mut *tx, event).await.map_err(|e| (i, e))?;
            }
            Ok(())
        }
    }
}

/// Most events applied in one transaction.
pub const BATCH: usize = 128;

/// Most transactions one consumer runs at once, each for events of its own partition (a
/// partition's events are applied in order, one transaction after the other). Records are
/// keyed by user, so concurrent transactions touch different users' rows. Each takes a
/// connection of the service's pool while it runs: a consumer uses at most a quarter of its
/// pool's connections this way (at least one), so the pool should hold the RPCs in flight
/// plus this many per consumer of the process (README, "Sizing").
pub const PARTITIONS_IN_FLIGHT: usize = 4;

/// Longest an idle fetch of these consumers waits at the broker, in milliseconds (at least;
/// [`KafkaConfig::fetch_wait_max_ms`] when larger).
const FETCH_WAIT_MAX_MS: u32 = 100;

/// Settings of one consumer.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// The consumer's name: its dedupe key, its lease name and (after
    /// [`KafkaConfig::group_prefix`]) its consumer group id, e.g. `taskmesh-task`.
    pub name: String,
    /// The topic it reads.
    pub topic: Topic,
    /// Attempts at an event that fails unexpectedly ([`HandleError::Failed`]) before it is
    /// dead-lettered (at least 1). Transient failures are retried without limit.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled on each further retry, up to `max_backoff`.
    pub backoff: Duration,
    /// Longest delay between retries of a transient failure.
    pub max_backoff: Duration,
    /// Most transactions it runs at once over a backlog (at least 1): [`PARTITIONS_IN_FLIGHT`]
    /// by default, and never more than a quarter of its pool's connections. A quiet topic's
    /// consumer takes 1, so a process's consumers together leave connections to its RPCs.
    pub max_in_flight: usize,
}

impl ConsumerSettings {
    /// The defaults for consumer `name` of `topic`: 5 attempts, backoff from 200 ms up to
    /// 30 s, [`PARTITIONS_IN_FLIGHT`] transactions at once.
    pub fn new(name: &str, topic: Topic) -> Self {
        Self {
            name: name.to_owned(),
            topic,
            max_attempts: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_in_flight: PARTITIONS_IN_FLIGHT,
        }
    }
}

/// Consumes `settings.topic` with `handler` until shutdown, finishing the batch in hand.
/// Transient failures (Kafka or PostgreSQL away) are retried inside, reported through
/// `ctx.health`.
///
/// # Errors
/// When the Kafka clients cannot be created (a configuration error that no retry heals):
/// the supervisor then fails the component.
pub async fn run<H: Handler>(
    pool: PgPool,
    kafka: KafkaConfig,
    settings: ConsumerSettings,
    handler: H,
    ctx: TaskContext,
) -> anyhow::Result<()> {
    let topic = kafka.topic(settings.topic);
    let group = kafka.group_id(&settings.name);
    let mut config = kafka.consumer_config(&group);
    // Stored offsets (never auto-stored) are committed in the background.
    config.set("enable.auto.commit", "true");
    // Names the consumer in the broker's logs and librdkafka's.
    config.set("client.id", &group);
    // Nothing here is waited on by a person the way a live stream is: an idle fetch may wait
    // longer. (Kafka answers a waiting fetch as soon as data arrives; the embedded dev broker
    // polls, so a short wait there costs CPU on every idle consumer.)
    config.set(
        "fetch.wait.max.ms",
        kafka.fetch_wait_max_ms.max(FETCH_WAIT_MAX_MS).to_string(),
    );
    let consumer: StreamConsumer = config
        .create()
        .with_context(|| format!("cannot create the Kafka consumer {group}"))?;
    let dead_letters = dead_letter::DeadLetters::new(&kafka, settings.topic);
    let probe = lag::Probe::new(&kafka, &group, &topic)
        .with_context(|| format!("cannot create the lag probe of {group}"))?;
    tracing::info!(consumer = %settings.name, %group, %topic, "consuming");
    let leases = leases::Leases::new(pool.clone(), &group);
    let result = worker::Worker::new(pool, settings, handler, ctx, leases, dead_letters, topic)
        .run(&consumer, probe)
        .await;
    let closing = std::time::Instant::now();
    close(consumer).await;
    tracing::debug!(%group, took = ?closing.elapsed(), "consumer closed");
    result
}

/// Closes a consumer off the async runtime: leaving blocks until the broker answers, and the
/// broker may be served by this very runtime (the embedded one).
pub async fn close<C: Send + 'static>(consumer: C) {
    if let Err(error) = tokio::task::spawn_blocking(move || drop(consumer)).await {
        tracing::warn!(%error, "closing a Kafka consumer failed");
    }
}
