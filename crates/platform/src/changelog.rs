//! The per-user change log of a service (ARCHITECTURE.md, the live stream, and invariant 1):
//! every write transaction takes the user's counter lock first, allocates the next gapless
//! sequence number, and writes the change-log row and the outbox record in the writer's
//! transaction. A client that knows its last sequence reads what it missed with [`read`].
//!
//! Each service with a change log owns these tables in its schema:
//! ```sql
//! CREATE TABLE change_counters (user_id text PRIMARY KEY, last_sequence bigint NOT NULL);
//! CREATE TABLE changes (
//!     user_id text NOT NULL, sequence bigint NOT NULL, event_id uuid NOT NULL,
//!     event_type text NOT NULL, subject text NOT NULL, create_time timestamptz NOT NULL,
//!     payload bytea NOT NULL, PRIMARY KEY (user_id, sequence)
//! );
//! ```
//! plus the `outbox` table of [`crate::outbox`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use taskmesh_proto::{
    catalogue::{Event, Topic},
    events::v1::ChangeContext,
};
use uuid::Uuid;

use crate::{cloudevents, outbox};

/// Which service's log: the CloudEvent `source` of its events and the NOTIFY channel that
/// wakes its outbox relay.
#[derive(Clone, Copy, Debug)]
pub struct Log {
    /// CloudEvent `source`, e.g. `/taskmesh/task`.
    pub source: &'static str,
    /// The outbox's NOTIFY channel (see [`outbox::enqueue`]).
    pub channel: &'static str,
}

/// Who is writing, and for which request: the parts of [`ChangeContext`] known up front.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    /// The owner (JWT `sub`).
    pub user: &'a str,
    /// Who acts: the user, or `service:<name>`.
    pub actor: &'a str,
    /// The request's `request_id` (AIP-155), or empty.
    pub request_id: &'a str,
    /// The installation's topic prefix ([`crate::kafka::KafkaConfig::topic_prefix`]); the
    /// topic itself is the event's ([`Event::TOPIC`]).
    pub topic_prefix: &'a str,
}

/// A typed payload, erased: what the outbox row needs of it.
struct Payload {
    event_type: &'static str,
    message: &'static str,
    topic: Topic,
    subject: String,
    encode: Box<dyn FnOnce(ChangeContext) -> Vec<u8> + Send>,
}

impl Payload {
    fn of<E: Event>(subject: String, mut payload: E) -> Self {
        Self {
            event_type: E::TYPE,
            message: E::MESSAGE,
            topic: E::TOPIC,
            subject,
            encode: Box::new(move |context| {
                payload.set_context(context);
                payload.encode_to_vec()
            }),
        }
    }
}

/// One event to record in the change log ([`record`], [`record_all`], [`record_finishing`]):
/// a payload whose `(event)` option says `change_log: true`, and its subject.
pub struct Change(Payload);

impl Change {
    /// `payload` about `subject` (the resource name, CloudEvent `subject`); its `context` is
    /// filled in when it is written. Only change-log events compile here.
    pub fn new<E: Event>(subject: impl Into<String>, payload: E) -> Self {
        const {
            assert!(
                E::CHANGE_LOG,
                "this event is not a change-log event: use Published"
            );
        }
        Self(Payload::of(subject.into(), payload))
    }
}

/// One event only published, outside the change log ([`publish_only`]): a payload whose
/// `(event)` option has no `change_log` (commands, and events no live stream shows).
pub struct Published(Payload);

impl Published {
    /// `payload` about `subject`; its `context` (sequence 0) is filled in when it is written.
    /// Only events outside the change log compile here.
    pub fn new<E: Event>(subject: impl Into<String>, payload: E) -> Self {
        const {
            assert!(
                !E::CHANGE_LOG,
                "this event belongs in the change log: use Change"
            );
        }
        Self(Payload::of(subject.into(), payload))
    }
}

/// Locks the user's change counter (creating it at 0) for the rest of the transaction and
/// returns its value. Every write transaction calls this first, so one user's writes are
/// serialised and take locks in the same order (no deadlocks).
///
/// # Errors
/// The database error.
pub async fn lock_user(conn: &mut PgConnection, user: &str) -> Result<i64, sqlx::Error> {
    // One round trip for a user who has written before (the usual case); a first write
    // creates the counter and locks it then.
    if let Some(last) = lock_counter(conn, user).await? {
        return Ok(last);
    }
    sqlx::query!(
        "INSERT INTO change_counters (user_id, last_sequence) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        user
    )
    .execute(&mut *conn)
    .await?;
    lock_counter(conn, user)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Locks the user's change counter, when it exists, and returns its value.
async fn lock_counter(conn: &mut PgConnection, user: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT last_sequence FROM change_counters WHERE user_id = $1 FOR UPDATE",
        user
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Records `change` in `log`: allocates its sequence number, writes the change-log row and
/// the outbox record (CloudEvent time = `time`). The caller holds [`lock_user`]. Returns the
/// sequence.
///
/// # Errors
/// The database error.
pub async fn record(
    conn: &mut PgConnection,
    log: &Log,
    writer: &Writer<'_>,
    time: DateTime<Utc>,
    change: Change,
) -> Result<i64, sqlx::Error> {
    let sequences = write(conn, log, time, vec![(writer.clone(), change)], None).await?;
    Ok(sequences.first().copied().unwrap_or_default())
}

/// The response a request finished with (AIP-155): what a retry of its `request_id` gets.
#[derive(Debug)]
pub struct Finish<'a> {
    /// The RPC's name, e.g. `CreateTask` (as given to [`crate::requests::claim`]).
    pub method: &'a str,
    /// The resource it acted on.
    pub resource_id: Uuid,
    /// The encoded response message.
    pub response: Vec<u8>,
}

/// [`record`], and stores `finish` as the response of the writer's `request_id` (claimed
/// with [`crate::requests::claim`]; the service's schema has its `requests` table) in the
/// same statement, so finishing a request costs no round trip of its own. Without a
/// `request_id` it is [`record`].
///
/// # Errors
/// The database error.
pub async fn record_finishing(
    conn: &mut PgConnection,
    log: &Log,
    writer: &Writer<'_>,
    time: DateTime<Utc>,
    change: Change,
    finish: Finish<'_>,
) -> Result<i64, sqlx::Error> {
    let finish = (!writer.request_id.is_empty()).then_some(finish);
    let sequences = write(conn, log, time, vec![(writer.clone(), change)], finish).await?;
    Ok(sequences.first().copied().unwrap_or_default())
}

/// Records several changes, possibly of several users, with a constant number of statements:
/// each user's sequence numbers are allocated in one step, in the order of `changes`. The
/// caller holds [`lock_user`] of every user involved (taken in user order, so concurrent
/// batches cannot deadlock). Returns the sequences, in the order of `changes`.
///
/// # Errors
/// The database error.
pub async fn record_all(
    conn: &mut PgConnection,
    log: &Log,
    time: DateTime<Utc>,
    changes: Vec<(Writer<'_>, Change)>,
) -> Result<Vec<i64>, sqlx::Error> {
    write(conn, log, time, changes, None).await
}

/// [`record_all`], and with `finish` the response of the first writer's request stored by
/// the same statement.
async fn write(
    conn: &mut PgConnection,
    log: &Log,
    time: DateTime<Utc>,
    changes: Vec<(Writer<'_>, Change)>,
    finish: Option<Finish<'_>>,
) -> Result<Vec<i64>, sqlx::Error> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let finishing = finish.map(|finish| {
        let writer = &changes[0].0;
        (writer.user.to_owned(), writer.request_id.to_owned(), finish)
    });
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for (writer, _) in &changes {
        *counts.entry(writer.user).or_default() += 1;
    }
    let (users, ns): (Vec<&str>, Vec<i64>) = counts.iter().map(|(u, n)| (*u, *n)).unzip();
    let lasts = sqlx::query!(
        "UPDATE change_counters c SET last_sequence = c.last_sequence + u.n \
         FROM unnest($1::text[], $2::bigint[]) AS u(user_id, n) WHERE c.user_id = u.user_id \
         RETURNING c.user_id, c.last_sequence",
        &users as &[&str],
        &ns
    )
    .fetch_all(&mut *conn)
    .await?;
    // The first new sequence of each user.
    let mut next: HashMap<String, i64> = lasts
        .into_iter()
        .map(|row| {
            let n = counts.get(row.user_id.as_str()).copied().unwrap_or(0);
            (row.user_id, row.last_sequence - n + 1)
        })
        .collect();
    let mut sequences = Vec::with_capacity(changes.len());
    let mut events = Vec::with_capacity(changes.len());
    for (writer, change) in changes {
        let slot = next.entry(writer.user.to_owned()).or_insert(1);
        let sequence = *slot;
        *slot += 1;
        sequences.push(sequence);
        let topic = format!("{}{}", writer.topic_prefix, change.0.topic.base_name());
        events.push((topic, event(log, &writer, time, change.0, sequence)));
    }
    let refs: Vec<(&str, &cloudevents::CloudEvent)> = events
        .iter()
        .map(|(topic, e)| (topic.as_str(), e))
        .collect();
    let arrays = outbox::EventArrays::of(&refs);
    // The change-log rows (`c`, one per outbox row of `e`, with its sequence), the outbox rows
    // and the relay's wake-up in one round trip; and the request's response (`f`: a
    // data-modifying WITH runs whether or not it is read).
    macro_rules! record {
        ($($tail:literal)* $(, $arg:expr)* $(,)?) => {
            outbox::query_with_events!(
                arrays,
                ", c AS (INSERT INTO changes (user_id, sequence, event_id, event_type, subject, \
                 create_time, payload) SELECT e.record_key, s.sequence, e.event_id, \
                 e.event_type, e.subject, e.event_time, e.payload FROM e \
                 JOIN unnest($11::bigint[]) WITH ORDINALITY AS s(sequence, n) USING (n))"
                $($tail)* " SELECT pg_notify($12, '')",
                &sequences,
                log.channel
                $(, $arg)*
            )
            .execute(&mut *conn)
            .await?
        };
    }
    match finishing {
        None => record!(),
        Some((user, request_id, finish)) => record!(
            ", f AS (UPDATE requests SET resource_id = $13, response = $14 \
             WHERE user_id = $15 AND method = $16 AND request_id = $17)",
            finish.resource_id,
            finish.response,
            user,
            finish.method,
            request_id
        ),
    };
    Ok(sequences)
}

/// Writes an event to the outbox only, outside the change log (`context.sequence` = 0): for
/// events no live stream shows (e.g. a snoozed reminder, for the audit log).
///
/// # Errors
/// The database error.
pub async fn publish_only(
    conn: &mut PgConnection,
    log: &Log,
    writer: &Writer<'_>,
    time: DateTime<Utc>,
    change: Published,
) -> Result<(), sqlx::Error> {
    let topic = format!("{}{}", writer.topic_prefix, change.0.topic.base_name());
    let event = event(log, writer, time, change.0, 0);
    outbox::enqueue(conn, log.channel, &topic, &event).await
}

/// The CloudEvent of `change` at `sequence` (0 = not in the change log).
fn event(
    log: &Log,
    writer: &Writer<'_>,
    time: DateTime<Utc>,
    change: Payload,
    sequence: i64,
) -> cloudevents::CloudEvent {
    let context = ChangeContext {
        user: writer.user.to_owned(),
        actor: writer.actor.to_owned(),
        sequence,
        request_id: writer.request_id.to_owned(),
    };
    cloudevents::CloudEvent {
        id: Uuid::now_v7(),
        source: log.source.to_owned(),
        event_type: change.event_type.to_owned(),
        time,
        subject: change.subject,
        data_schema: cloudevents::data_schema(change.message),
        key: writer.user.to_owned(),
        data: (change.encode)(context),
        // The trace of the request or event that caused this change continues in its
        // consumers.
        traceparent: crate::trace::current_traceparent(),
    }
}

/// One change-log entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Gapless per-user sequence number, from 1.
    pub sequence: i64,
    /// CloudEvent `id`.
    pub event_id: Uuid,
    /// CloudEvent `type`.
    pub event_type: String,
    /// Resource name.
    pub subject: String,
    /// When the change committed (UTC).
    pub time: DateTime<Utc>,
    /// The protobuf payload.
    pub data: Vec<u8>,
}

/// Why [`read`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The log no longer holds every change after the position (retention purged some), or
    /// the position is beyond the log (a cursor from elsewhere): the client must resync.
    #[error("changes after sequence {0} are no longer retained")]
    Expired(i64),
    /// A database failure.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// The page size of a change-log read request (TaskService's `ListChanges`, ReminderService's
/// `ListNotificationChanges`): `page_size` as AIP-158 says (0: 500, at most
/// [`crate::pages::MAX_PAGE_SIZE`]), and `after_sequence` must not be negative.
///
/// # Errors
/// `INVALID_ARGUMENT` with a field violation for each bad field.
pub fn read_size(after_sequence: i64, page_size: i32) -> Result<i64, tonic::Status> {
    let mut v = crate::grpc::Violations::new();
    let size = crate::pages::page_size(page_size, 500, &mut v);
    if after_sequence < 0 {
        v.add("after_sequence", "must not be negative");
    }
    v.check()?;
    Ok(size)
}

/// Reads `user`'s changes after sequence `after`, at most `limit`, with the latest sequence,
/// in one REPEATABLE READ snapshot. `after = i64::MAX` asks only for the latest sequence.
///
/// # Errors
/// [`ReadError::Expired`] when the changes after `after` are not all retained.
pub async fn read(
    pool: &PgPool,
    user: &str,
    after: i64,
    limit: i64,
) -> Result<(Vec<Entry>, i64), ReadError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let latest = latest(&mut tx, user).await?;
    let entries = sqlx::query_as!(
        Entry,
        "SELECT sequence, event_id, event_type, subject, create_time AS time, payload AS data \
         FROM changes WHERE user_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        user,
        after,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    // Expired when changes after `after` exist but are not all here from `after + 1` on
    // (retention removed some), or when `after` is beyond the log.
    let expired = if after == i64::MAX || after == latest {
        false
    } else if after > latest {
        true
    } else {
        // after < latest <= i64::MAX: `after + 1` cannot overflow.
        entries.first().map(|e| e.sequence) != Some(after + 1)
            || !entries
                .iter()
                .zip(after + 1..)
                .all(|(entry, expected)| entry.sequence == expected)
    };
    if expired {
        return Err(ReadError::Expired(after));
    }
    Ok((entries, latest))
}

/// The user's latest sequence (0 before the first change), as the connection's snapshot
/// sees it.
///
/// # Errors
/// The database error.
pub async fn latest(conn: &mut PgConnection, user: &str) -> Result<i64, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "SELECT last_sequence FROM change_counters WHERE user_id = $1",
        user
    )
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or(0))
}
