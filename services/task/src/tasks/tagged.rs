//! The tasks a tag rename or delete touches: read and locked before, a new version and a
//! `task.updated` each after.

use sqlx::PgConnection;
use taskmesh_proto::{names::TaskName, task::v1 as pb};
use uuid::Uuid;

use super::{fetch, record_updated};
use crate::{
    changes::Writer,
    error::TaskError,
    model::{TaskRow, query_task},
};

/// The user's tasks that carry `tag`, as they are now, locked for update (call before renaming
/// or deleting the tag, then [`record_tags_changed`] after).
pub(crate) async fn with_tag(
    conn: &mut PgConnection,
    user: &str,
    tag: Uuid,
) -> Result<Vec<pb::Task>, TaskError> {
    let rows = query_task!(
        "SELECT ",
        " FROM tasks t WHERE t.user_id = $1 AND t.tag_ids @> ARRAY[$2]::uuid[] \
         ORDER BY t.id FOR UPDATE OF t",
        user,
        tag
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(TaskRow::to_proto).collect())
}

/// After a tag rename or delete: each task in `before` shows other tags now, so its version
/// and update time move (AIP-154: a changed resource gets a new etag) and a `task.updated`
/// with mask `tags` and the previous names is recorded.
pub(crate) async fn record_tags_changed(
    conn: &mut PgConnection,
    writer: &Writer<'_>,
    before: Vec<pb::Task>,
    time: chrono::DateTime<chrono::Utc>,
) -> Result<(), TaskError> {
    for before in before {
        let id = id_of(&before.name)?;
        sqlx::query!(
            "UPDATE tasks SET version = version + 1, update_time = $3 WHERE id = $1 AND user_id = $2",
            id,
            writer.user,
            time
        )
        .execute(&mut *conn)
        .await?;
        let task = fetch(conn, writer.user, id, false).await?.to_proto();
        let previous = pb::Task {
            tags: before.tags,
            ..Default::default()
        };
        record_updated(conn, writer, time, &task, vec!["tags".to_owned()], previous).await?;
    }
    Ok(())
}

fn id_of(name: &str) -> Result<Uuid, TaskError> {
    TaskName::parse(name)
        .map(TaskName::id)
        .map_err(|_| TaskError::NotFound(name.to_owned()))
}
