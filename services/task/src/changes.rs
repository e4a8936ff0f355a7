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
    change: Change,
) -> Result<i64, sqlx::Error> {
    changelog::record(conn, &LOG, writer, time, change).await
}

/// Records `change` and finishes the writer's request with `response` (see
/// [`changelog::record_finishing`]): one statement for both.
pub(crate) async fn record_finishing(
    conn: &mut PgConnection,
    writer: &Writer<'_>,
    time: DateTime<Utc>,
    change: Change,
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
