//! The transactional outbox (ARCHITECTURE.md invariant 1): a state change, its change-log row
//! and its event commit in one transaction; a [`Relay`] publishes the outbox to Kafka with an
//! idempotent producer and deletes what the broker acknowledged.
//!
//! Each service owns a table `outbox` in its schema:
//! ```sql
//! CREATE TABLE outbox (
//!     id          bigserial PRIMARY KEY,
//!     topic       text        NOT NULL,
//!     record_key  text        NOT NULL,
//!     event_id    uuid        NOT NULL,
//!     event_type  text        NOT NULL,
//!     source      text        NOT NULL,
//!     subject     text        NOT NULL,
//!     event_time  timestamptz NOT NULL,
//!     data_schema text        NOT NULL,
//!     payload     bytea       NOT NULL,
//!     traceparent text
//! );
//! ```
//! Ordering: writers take a per-user row lock (the change-log counter) before inserting into
//! the outbox, so one user's rows get increasing ids in commit order, and the relay publishes
//! in id order. One relay is active per schema at a time (a PostgreSQL advisory lock), so a
//! user's events keep their order when a service runs several replicas.

use std::time::Duration;

use rdkafka::{
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use uuid::Uuid;

use crate::{
    cloudevents::CloudEvent,
    kafka::KafkaConfig,
    runtime::{Backoff, TaskContext},
};

/// The columns of a batch of `(topic, event)`s as the ten arrays [`query_with_events!`]
/// binds as `$1`..`$10`: one element per event, in order.
#[derive(Debug)]
pub(crate) struct EventArrays<'q> {
    pub(crate) topic: Vec<&'q str>,
    pub(crate) record_key: Vec<&'q str>,
    pub(crate) event_id: Vec<Uuid>,
    pub(crate) event_type: Vec<&'q str>,
    pub(crate) source: Vec<&'q str>,
    pub(crate) subject: Vec<&'q str>,
    pub(crate) event_time: Vec<chrono::DateTime<chrono::Utc>>,
    pub(crate) data_schema: Vec<&'q str>,
    pub(crate) payload: Vec<&'q [u8]>,
    pub(crate) traceparent: Vec<Option<&'q str>>,
}

impl<'q> EventArrays<'q> {
    /// The arrays of `events`.
    pub(crate) fn of(events: &'q [(&'q str, &'q CloudEvent)]) -> Self {
        let text = |f: fn(&'q CloudEvent) -> &'q str| -> Vec<&'q str> {
            events.iter().map(|(_, e)| f(e)).collect()
        };
        Self {
            topic: events.iter().map(|(topic, _)| *topic).collect(),
            record_key: text(|e| &e.key),
            event_id: events.iter().map(|(_, e)| e.id).collect(),
            event_type: text(|e| &e.event_type),
            source: text(|e| &e.source),
            subject: text(|e| &e.subject),
            event_time: events.iter().map(|(_, e)| e.time).collect(),
            data_schema: text(|e| &e.data_schema),
            payload: events.iter().map(|(_, e)| e.data.as_slice()).collect(),
            traceparent: events
                .iter()
                .map(|(_, e)| e.traceparent.as_deref())
                .collect(),
        }
    }
}

/// `sqlx::query!` of a statement that writes a batch of events to the outbox, checked at
/// compile time: `WITH e AS (…), o AS (…)` followed by the literals `$tail`. `e` is the
/// `unnest` of the [`EventArrays`] `$arrays` (bound as `$1`..`$10`), one row per event with
/// its position `n` (from 1) and the columns `topic, record_key, event_id, event_type, source,
/// subject, event_time, data_schema, payload, traceparent, n`; `o` inserts them into the
/// outbox in the order of `n`, so their ids (the relay's order) follow the events' order.
/// `$arg`s bind `$11` on.
macro_rules! query_with_events {
    ($arrays:expr, $($tail:literal)+ $(, $arg:expr)* $(,)?) => {
        sqlx::query!(
            "WITH e AS (SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], \
             $5::text[], $6::text[], $7::timestamptz[], $8::text[], $9::bytea[], $10::text[]) \
             WITH ORDINALITY AS e(topic, record_key, event_id, event_type, source, subject, \
             event_time, data_schema, payload, traceparent, n)), \
             o AS (INSERT INTO outbox (topic, record_key, event_id, event_type, source, \
             subject, event_time, data_schema, payload, traceparent) \
             SELECT topic, record_key, event_id, event_type, source, subject, event_time, \
             data_schema, payload, traceparent FROM e ORDER BY n)"
                $(+ $tail)+,
            &$arrays.topic as &[&str],
            &$arrays.record_key as &[&str],
            &$arrays.event_id,
            &$arrays.event_type as &[&str],
            &$arrays.source as &[&str],
            &$arrays.subject as &[&str],
            &$arrays.event_time,
            &$arrays.data_schema as &[&str],
            &$arrays.payload as &[&[u8]],
            &$arrays.traceparent as &[Option<&str>]
            $(, $arg)*
        )
    };
}
pub(crate) use query_with_events;

/// Writes `event` for `topic` into the outbox of the connection's schema, and notifies
/// `channel` (delivered when the transaction commits). Call inside the transaction of the
/// change.
///
/// # Errors
/// The database error.
pub async fn enqueue(
    conn: &mut PgConnection,
    channel: &str,
    topic: &str,
    event: &CloudEvent,
) -> Result<(), sqlx::Error> {
    enqueue_all(conn, channel, &[(topic, event)]).await
}

/// Writes each `(topic, event)` into the outbox, in order (the relay publishes in that
/// order), and notifies `channel` once: one statement, one round trip.
///
/// # Errors
/// The database error.
pub async fn enqueue_all(
    conn: &mut PgConnection,
    channel: &str,
    events: &[(&str, &CloudEvent)],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let arrays = EventArrays::of(events);
    query_with_events!(arrays, " SELECT pg_notify($11, '')", channel)
        .execute(conn)
        .await?;
    Ok(())
}

/// Errors of one relay round.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or deleting outbox rows failed.
    #[error("outbox database error")]
    Database(#[from] sqlx::Error),
    /// The broker did not acknowledge a record.
    #[error("kafka delivery failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Publishes a schema's outbox to Kafka. See the module docs.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    kafka: KafkaConfig,
    producer: FutureProducer,
    channel: String,
    lock_key: i64,
    batch_size: i64,
    poll_interval: Duration,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("channel", &self.channel)
            .field("lock_key", &self.lock_key)
            .finish_non_exhaustive()
    }
}

struct Pending {
    id: i64,
    topic: String,
    event: CloudEvent,
}

impl Relay {
    /// A relay for the outbox of `pool`'s schema to `kafka`, woken by NOTIFY on `channel`,
    /// polling every second as a fallback. The advisory-lock key derives from `channel`.
    ///
    /// # Errors
    /// The producer cannot be created (a configuration error).
    pub fn new(pool: PgPool, kafka: &KafkaConfig, channel: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            pool,
            producer: kafka.producer()?,
            kafka: kafka.clone(),
            channel: channel.to_owned(),
            lock_key: lock_key(channel),
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
        })
    }

    /// The relay's producer (e.g. to connect it before the relay runs).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Runs until shutdown: waits to become the active relay, then publishes whatever is
    /// pending whenever notified (and at least every poll interval). A failure (database or
    /// broker away) gives up the lock, reports the task degraded and starts over after a
    /// backoff; it never ends the task.
    ///
    /// # Errors
    /// None today: every failure here is transient. (The signature is the supervisor's.)
    pub async fn run(mut self, ctx: TaskContext) -> anyhow::Result<()> {
        let mut backoff = Backoff::default();
        while !ctx.shutdown.is_cancelled() {
            if let Err(error) = self.lead(&ctx, &mut backoff).await {
                let reason = format!(
                    "outbox relay of {}: {}",
                    self.channel,
                    crate::error_chain(&error)
                );
                if matches!(error, RelayError::Kafka(_)) {
                    // A fresh producer gets a fresh producer id: an idempotent producer can
                    // wedge on a sequence or epoch the broker no longer agrees with. (Creating
                    // it worked before, so this fails only on a defect.) Dropping the old one
                    // blocks while it purges: off the async runtime.
                    let old = std::mem::replace(&mut self.producer, self.kafka.producer()?);
                    tokio::task::spawn_blocking(move || drop(old));
                }
                if !ctx.retry_after(&mut backoff, &reason).await {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One leadership term: take the lock (or wait for it), then publish until shutdown or
    /// an error.
    async fn lead(&self, ctx: &TaskContext, backoff: &mut Backoff) -> Result<(), RelayError> {
        let shutdown = &ctx.shutdown;
        // A connection of its own, outside the pool: the advisory lock lives as long as it.
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(self.lock_key)
                .fetch_one(&mut conn)
                .await?;
            // Reaching the database is all a standby relay does.
            ctx.health.recovered();
            if locked {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
        tracing::info!(channel = %self.channel, "outbox relay active");
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&self.channel).await?;
        loop {
            // On error, leave: dropping `conn` releases the lock so another replica (or this
            // one, after a pause) takes over.
            self.publish_pending(&mut conn).await?;
            ctx.health.recovered();
            backoff.reset();
            tokio::select! {
                () = shutdown.cancelled() => {
                    sqlx::query("SELECT pg_advisory_unlock($1)").bind(self.lock_key).execute(&mut conn).await?;
                    return Ok(());
                }
                notification = listener.recv() => {
                    if let Err(error) = notification {
                        tracing::warn!(%error, "outbox listener lost; polling until it reconnects");
                        tokio::time::sleep(self.poll_interval).await;
                    }
                }
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Publishes every pending outbox row in id order and deletes each acknowledged one.
    /// Returns how many were published.
    ///
    /// # Errors
    /// [`RelayError`]; rows not acknowledged stay for the next round (they may then be
    /// published twice, which consumers dedupe by `ce_id`).
    pub async fn publish_pending(&self, conn: &mut PgConnection) -> Result<usize, RelayError> {
        let result = self.publish_rounds(conn).await;
        // The backlog a stuck relay leaves (0 once drained), for the outbox backlog alert.
        let backlog: i64 = match result {
            Ok(_) => 0,
            Err(_) => sqlx::query_scalar!(r#"SELECT count(*) AS "backlog!" FROM outbox"#)
                .fetch_one(&mut *conn)
                .await
                .unwrap_or(-1),
        };
        metrics::gauge!("taskmesh_outbox_backlog", "channel" => self.channel.clone())
            .set(backlog as f64);
        result
    }

    async fn publish_rounds(&self, conn: &mut PgConnection) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let rows = sqlx::query!(
                "SELECT id, topic, record_key, event_id, event_type, source, subject, event_time, \
                 data_schema, payload, traceparent FROM outbox ORDER BY id LIMIT $1",
                self.batch_size
            )
            .fetch_all(&mut *conn)
            .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let full = rows.len() as i64 == self.batch_size;
            let pending: Vec<Pending> = rows
                .into_iter()
                .map(|row| Pending {
                    id: row.id,
                    topic: row.topic,
                    event: CloudEvent {
                        id: row.event_id,
                        source: row.source,
                        event_type: row.event_type,
                        time: row.event_time,
                        subject: row.subject,
                        data_schema: row.data_schema,
                        key: row.record_key,
                        data: row.payload,
                        traceparent: row.traceparent,
                    },
                })
                .collect();
            let acknowledged = self.send(&pending).await;
            let ids: Vec<i64> = pending[..acknowledged].iter().map(|p| p.id).collect();
            if !ids.is_empty() {
                sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", &ids)
                    .execute(&mut *conn)
                    .await?;
            }
            total += acknowledged;
            let now = chrono::Utc::now();
            let delay = metrics::histogram!("taskmesh_outbox_publish_delay_seconds", "channel" => self.channel.clone());
            for item in &pending[..acknowledged] {
                delay.record((now - item.event.time).as_seconds_f64().max(0.0));
            }
            metrics::counter!("taskmesh_outbox_published_total", "channel" => self.channel.clone())
                .increment(acknowledged as u64);
            if acknowledged < pending.len() {
                return Err(RelayError::Kafka(
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
                    ),
                ));
            }
            if !full {
                return Ok(total);
            }
        }
    }

    /// Sends `pending` in order; returns the length of the acknowledged prefix.
    async fn send(&self, pending: &[Pending]) -> usize {
        let mut deliveries = Vec::with_capacity(pending.len());
        for item in pending {
            // A span per published event, in the trace of the change that wrote it.
            let span = tracing::info_span!("outbox.publish", otel.name = %format!("publish {}", item.event.event_type), topic = %item.topic, event_id = %item.event.id);
            crate::trace::continue_trace(&span, item.event.traceparent.as_deref());
            let _entered = span.enter();
            let timestamp = item.event.time.timestamp_millis();
            let record = FutureRecord::to(&item.topic)
                .key(&item.event.key)
                .payload(&item.event.data)
                .headers(item.event.headers())
                .timestamp(timestamp);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => {
                    tracing::warn!(%error, "cannot enqueue record for kafka");
                    break;
                }
            }
        }
        let mut acknowledged = 0;
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => acknowledged += 1,
                Ok(Err((error, _))) => {
                    tracing::warn!(%error, "kafka did not acknowledge a record");
                    break;
                }
                Err(_) => break,
            }
        }
        acknowledged
    }
}

/// A stable 63-bit advisory-lock key for a channel name (FNV-1a).
fn lock_key(channel: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash >> 1) as i64
}
