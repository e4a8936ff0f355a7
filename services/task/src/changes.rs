//! TaskService's change log (see [`taskmesh_platform::changelog`]) and the event types it
//! records.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use taskmesh_platform::changelog;
pub(crate) use taskmesh_platform::changelog::{Change, Writer, lock_user};

/// CloudEvent `source` of TaskService events.
pub(crate) const SOURCE: &str = "/taskmesh/task";
/// NOTIFY channel that wakes the outbox relay.
pub(crate) const CHANNEL: &str = "taskmesh_task_outbox";

/// TaskService's change log.
const LOG: changelog::Log = changelog::Log {
    source: SOURCE,
    channel: CHANNEL,
};

/// Records `change` in TaskService's change log (see [`changelog::record`]).
pub(crate) async fn record(
    conn: &mut PgConnection,
    writer: &Writer<'_>,
    time: DateTime<Utc>,
    change: Change<'_>,
) -> Result<i64, sqlx::Error> {
    changelog::record(conn, &LOG, writer, time, change).await
}

/// Records `change` and finishes the writer's request with `response` (see
/// [`changelog::record_finishing`]): one statement for both.
pub(crate) async fn record_finishing(
    conn: &mut PgConnection,
    writer: &Writer<'_>,
    time: DateTime<Utc>,
    change: Change<'_>,
    method: &str,
    resource_id: uuid::Uuid,
    response: &impl prost::Message,
) -> Result<i64, sqlx::Error> {
    if writer.request_id.is_empty() {
        return record(conn, writer, time, change).await;
    }
    let finish = changelog::Finish {
        method,
        resource_id,
        response: response.encode_to_vec(),
    };
    changelog::record_finishing(conn, &LOG, writer, time, change, finish).await
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
