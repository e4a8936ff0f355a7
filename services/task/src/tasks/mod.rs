//! Task writes and reads: create, get, update (field mask), delete, complete, uncomplete. Each
//! write is one transaction holding the user's change-log lock, with its change-log row and
//! its event.
//!
//! This module holds the reads and the plain writes (fetch, create, delete) and what the
//! others share; the rest is in:
//! - `rows`: the SQL that inserts or updates a task row and returns it.
//! - `update`: UpdateTask's field mask, change detection and write.
//! - `complete`: CompleteTask and UncompleteTask, with the quota rule for recurring tasks.
//! - `tagged`: the tasks a tag rename or delete touches.

mod complete;
mod rows;
mod tagged;
mod update;

use std::num::NonZeroU64;

use prost::Message;
use sqlx::{Acquire, PgConnection, Postgres};
use taskmesh_proto::{events::v1 as ev, names::TaskName, task::v1 as pb};
use uuid::Uuid;

use crate::{
    changes::{self, Change, Writer},
    error::TaskError,
    model::{TaskFields, TaskRow, now, query_task},
};

pub(crate) use complete::set_completed;
pub(crate) use tagged::{record_tags_changed, with_tag};
pub(crate) use update::{UPDATABLE, copy_field, update};

/// Reads one task of `user` (inside a transaction or not), optionally locking it.
pub(crate) async fn fetch(
    conn: &mut PgConnection,
    user: &str,
    id: Uuid,
    for_update: bool,
) -> Result<TaskRow, TaskError> {
    let row = if for_update {
        query_task!(
            "SELECT ",
            " FROM tasks t WHERE t.id = $1 AND t.user_id = $2 FOR UPDATE OF t",
            id,
            user
        )
        .fetch_optional(&mut *conn)
        .await?
    } else {
        query_task!(
            "SELECT ",
            " FROM tasks t WHERE t.id = $1 AND t.user_id = $2",
            id,
            user
        )
        .fetch_optional(&mut *conn)
        .await?
    };
    row.ok_or_else(|| TaskError::NotFound(TaskName(id).to_string()))
}

/// Where a task comes from in a recurring series: kept when a command creates the next
/// occurrence; empty for a task a user creates.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Lineage {
    /// The series; `None` assigns a new one when the task recurs.
    pub(crate) series: Option<Uuid>,
    /// The occurrence this one follows.
    pub(crate) previous_task: Option<Uuid>,
}

/// Creates a task; with a `request_id`, a retry returns the first result and writes nothing.
/// With `max_tasks`, a user who already has that many tasks gets
/// [`TaskError::TooManyTasks`] and nothing is written (`None` for the occurrences a series
/// creates: they count, but a series never stops for the quota).
pub(crate) async fn create<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    writer: &Writer<'_>,
    fields: TaskFields,
    lineage: Lineage,
    max_tasks: Option<NonZeroU64>,
) -> Result<pb::Task, TaskError> {
    let mut tx = db.begin().await?;
    changes::lock_user(&mut tx, writer.user).await?;
    if let Some(done) =
        taskmesh_platform::requests::claim(&mut tx, writer.user, "CreateTask", writer.request_id)
            .await?
    {
        tx.rollback().await?;
        return Ok(pb::Task::decode(done.as_slice())?);
    }
    let id = Uuid::now_v7();
    let time = now();
    let tag_ids = crate::tags::resolve(&mut tx, writer, &fields.tags, time).await?;
    let series = fields
        .recurrence
        .as_ref()
        .map(|_| lineage.series.unwrap_or_else(Uuid::now_v7));
    let task = rows::insert(
        &mut tx,
        id,
        writer.user,
        &fields,
        &tag_ids,
        Lineage {
            series,
            previous_task: lineage.previous_task.filter(|_| series.is_some()),
        },
        time,
        max_tasks.map(|max| i64::try_from(max.get()).unwrap_or(i64::MAX)),
    )
    .await?
    .ok_or_else(|| TaskError::TooManyTasks {
        max: max_tasks.map_or(0, NonZeroU64::get),
        completing: false,
    })?
    .to_proto();
    let payload = task.clone();
    changes::record_finishing(
        &mut tx,
        writer,
        time,
        Change::new(
            task.name.clone(),
            ev::TaskCreated {
                context: None,
                task: Some(payload),
            },
        ),
        "CreateTask",
        id,
        &task,
    )
    .await?;
    tx.commit().await?;
    Ok(task)
}

fn check_etag(etag: &str, task: &pb::Task) -> Result<(), TaskError> {
    if etag.is_empty() || etag == task.etag {
        Ok(())
    } else {
        Err(TaskError::EtagMismatch)
    }
}

/// Deletes a task.
pub(crate) async fn delete<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    writer: &Writer<'_>,
    id: Uuid,
    etag: &str,
) -> Result<(), TaskError> {
    let mut tx = db.begin().await?;
    changes::lock_user(&mut tx, writer.user).await?;
    let task = fetch(&mut tx, writer.user, id, true).await?.to_proto();
    check_etag(etag, &task)?;
    sqlx::query!(
        "DELETE FROM tasks WHERE id = $1 AND user_id = $2",
        id,
        writer.user
    )
    .execute(&mut *tx)
    .await?;
    let time = now();
    changes::record(
        &mut tx,
        writer,
        time,
        Change::new(
            task.name.clone(),
            ev::TaskDeleted {
                context: None,
                task: Some(task),
            },
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Records a `task.updated` change: `task` after, the changed `paths`, their `previous` values.
async fn record_updated(
    conn: &mut PgConnection,
    writer: &Writer<'_>,
    time: chrono::DateTime<chrono::Utc>,
    task: &pb::Task,
    paths: Vec<String>,
    previous: pb::Task,
) -> Result<(), sqlx::Error> {
    let payload = task.clone();
    changes::record(
        conn,
        writer,
        time,
        Change::new(
            task.name.clone(),
            ev::TaskUpdated {
                context: None,
                task: Some(payload),
                update_mask: Some(prost_types::FieldMask { paths }),
                previous: Some(previous),
            },
        ),
    )
    .await?;
    Ok(())
}
