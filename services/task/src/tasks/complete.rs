//! CompleteTask and UncompleteTask: the state change, idempotent by `request_id`, and the
//! quota rule for completing a recurring task.

use std::num::NonZeroU64;

use prost::Message;
use sqlx::{Acquire, Postgres};
use taskmesh_proto::{events::v1 as ev, task::v1 as pb};
use uuid::Uuid;

use super::{check_etag, fetch};
use crate::{
    changes::{self, Change, Writer},
    error::TaskError,
    model::{now, query_task},
};

/// Completes (`complete = true`) or re-opens a task. Already in that state: returned
/// unchanged, no event. Idempotent by `request_id`.
pub(crate) async fn set_completed<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    writer: &Writer<'_>,
    id: Uuid,
    etag: &str,
    complete: bool,
    max_tasks: Option<NonZeroU64>,
) -> Result<pb::Task, TaskError> {
    let method = if complete {
        "CompleteTask"
    } else {
        "UncompleteTask"
    };
    let mut tx = db.begin().await?;
    changes::lock_user(&mut tx, writer.user).await?;
    if let Some(done) =
        taskmesh_platform::requests::claim(&mut tx, writer.user, method, writer.request_id).await?
    {
        tx.rollback().await?;
        return Ok(pb::Task::decode(done.as_slice())?);
    }
    let before = fetch(&mut tx, writer.user, id, true).await?.to_proto();
    check_etag(etag, &before)?;
    // Completing a recurring task makes its series create the next occurrence, which the
    // quota never refuses (a series must not stop half-way): so at the quota a user cannot
    // complete one that has not led to a next occurrence yet, or completing and reopening
    // would add tasks past the quota without bound. (Occurrences on their way are not
    // counted: completing several at once just below the quota overshoots it by as many.)
    if let (true, Some(_), Some(max)) = (complete, &before.recurrence, max_tasks)
        && before.state != pb::task::State::Completed as i32
    {
        // No `task_counts` row yet: NULL, no tasks.
        let row = sqlx::query!(
            r#"SELECT (SELECT tasks FROM task_counts WHERE user_id = $1) AS "tasks?",
                      EXISTS (SELECT 1 FROM tasks WHERE user_id = $1 AND previous_task_id = $2)
                        AS "followed!""#,
            writer.user,
            id
        )
        .fetch_one(&mut *tx)
        .await?;
        if !row.followed && u64::try_from(row.tasks.unwrap_or(0)).unwrap_or(0) >= max.get() {
            return Err(TaskError::TooManyTasks {
                max: max.get(),
                completing: true,
            });
        }
    }
    let target = if complete {
        pb::task::State::Completed
    } else {
        pb::task::State::Open
    } as i32;
    if before.state == target {
        taskmesh_platform::requests::finish(
            &mut tx,
            writer.user,
            method,
            writer.request_id,
            id,
            &before,
        )
        .await?;
        tx.commit().await?;
        return Ok(before);
    }
    let time = now();
    // The written row is returned through the CTE `t`, so a write needs no read after it.
    let task = query_task!(
        "WITH t AS (UPDATE tasks SET state = $3, complete_time = $4, version = version + 1, \
         update_time = $5 WHERE id = $1 AND user_id = $2 RETURNING *) SELECT ",
        " FROM t",
        id,
        writer.user,
        target as i16,
        complete.then_some(time),
        time
    )
    .fetch_one(&mut *tx)
    .await?
    .to_proto();
    let payload = task.clone();
    let change = if complete {
        Change::new(
            task.name.clone(),
            ev::TaskCompleted {
                context: None,
                task: Some(payload),
            },
        )
    } else {
        Change::new(
            task.name.clone(),
            ev::TaskUncompleted {
                context: None,
                task: Some(payload),
            },
        )
    };
    changes::record_finishing(&mut tx, writer, time, change, method, id, &task).await?;
    tx.commit().await?;
    Ok(task)
}
