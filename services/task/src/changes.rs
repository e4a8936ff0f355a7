//! The per-user change log and the events it feeds (ARCHITECTURE.md, the live stream and
//! invariant 1): every change takes the user's counter lock, allocates the next gapless
//! sequence number, and writes the change-log row and the outbox record in the writer's
//! transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use taskmesh_platform::{cloudevents, outbox};
use taskmesh_proto::events::v1::ChangeContext;
use uuid::Uuid;

/// CloudEvent `source` of TaskService events.
pub(crate) const SOURCE: &str = "/taskmesh/task";
/// NOTIFY channel that wakes the outbox relay.
pub(crate) const CHANNEL: &str = "taskmesh_task_outbox";

/// Who is writing, and for which request: the parts of [`ChangeContext`] known up front.
#[derive(Clone, Debug)]
pub(crate) struct Writer<'a> {
    /// The owner (JWT `sub`).
    pub(crate) user: &'a str,
    /// Who acts: the user, or `service:<name>`.
    pub(crate) actor: &'a str,
    /// The request's `request_id`, or empty.
    pub(crate) request_id: &'a str,
    /// Kafka topic of `task-events`.
    pub(crate) topic: &'a str,
}

/// One event to record.
pub(crate) struct Change<'a> {
    /// CloudEvent `type`.
    pub(crate) event_type: &'static str,
    /// Protobuf full name of the payload (for `ce_dataschema`).
    pub(crate) message: &'static str,
    /// Resource name.
    pub(crate) subject: String,
    /// Builds the encoded payload from the context (which carries the sequence).
    pub(crate) payload: Box<dyn FnOnce(ChangeContext) -> Vec<u8> + Send + 'a>,
}

/// Locks the user's change counter (creating it at 0) for the rest of the transaction. Every
/// write transaction calls this first, so one user's writes are serialised and take locks in
/// the same order (no deadlocks).
pub(crate) async fn lock_user(conn: &mut PgConnection, user: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO change_counters (user_id, last_sequence) VALUES ($1, 0) ON CONFLICT DO NOTHING")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar("SELECT last_sequence FROM change_counters WHERE user_id = $1 FOR UPDATE")
        .bind(user)
        .fetch_one(&mut *conn)
        .await
}

/// Records `change`: allocates its sequence number, writes the change-log row and the
/// outbox record. Returns the sequence.
pub(crate) async fn record(
    conn: &mut PgConnection,
    writer: &Writer<'_>,
    time: DateTime<Utc>,
    change: Change<'_>,
) -> Result<i64, sqlx::Error> {
    let sequence: i64 = sqlx::query_scalar(
        "UPDATE change_counters SET last_sequence = last_sequence + 1 WHERE user_id = $1 \
         RETURNING last_sequence",
    )
    .bind(writer.user)
    .fetch_one(&mut *conn)
    .await?;
    let context = ChangeContext {
        user: writer.user.to_owned(),
        actor: writer.actor.to_owned(),
        sequence,
        request_id: writer.request_id.to_owned(),
    };
    let data = (change.payload)(context);
    let event = cloudevents::CloudEvent {
        id: Uuid::now_v7(),
        source: SOURCE.to_owned(),
        event_type: change.event_type.to_owned(),
        time,
        subject: change.subject,
        data_schema: cloudevents::data_schema(change.message),
        key: writer.user.to_owned(),
        data,
        traceparent: None,
    };
    sqlx::query(
        "INSERT INTO changes (user_id, sequence, event_id, event_type, subject, create_time, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(writer.user)
    .bind(sequence)
    .bind(event.id)
    .bind(&event.event_type)
    .bind(&event.subject)
    .bind(time)
    .bind(&event.data)
    .execute(&mut *conn)
    .await?;
    outbox::enqueue(conn, CHANNEL, writer.topic, &event).await?;
    Ok(sequence)
}

/// CloudEvent types TaskService produces on `task-events`.
pub(crate) mod types {
    /// A task was created.
    pub(crate) const TASK_CREATED: &str = "dev.taskmesh.task.created.v1";
    /// A task was updated.
    pub(crate) const TASK_UPDATED: &str = "dev.taskmesh.task.updated.v1";
    /// A task was completed.
    pub(crate) const TASK_COMPLETED: &str = "dev.taskmesh.task.completed.v1";
    /// A task was re-opened.
    pub(crate) const TASK_UNCOMPLETED: &str = "dev.taskmesh.task.uncompleted.v1";
    /// A task was deleted.
    pub(crate) const TASK_DELETED: &str = "dev.taskmesh.task.deleted.v1";
    /// A tag was created.
    pub(crate) const TAG_CREATED: &str = "dev.taskmesh.tag.created.v1";
    /// A tag was updated.
    pub(crate) const TAG_UPDATED: &str = "dev.taskmesh.tag.updated.v1";
    /// A tag was deleted.
    pub(crate) const TAG_DELETED: &str = "dev.taskmesh.tag.deleted.v1";
}
