//! Task writes and reads: create, get, update (field mask), delete, complete, uncomplete. Each
//! write is one transaction holding the user's change-log lock, with its change-log row and
//! its event.

use std::{num::NonZeroU64, sync::LazyLock};

use prost::Message;
use sqlx::{Acquire, PgConnection, Postgres};
use taskmesh_proto::{events::v1 as ev, names::TaskName, task::v1 as pb};
use uuid::Uuid;

use crate::{
    changes::{self, Change, Writer},
    error::TaskError,
    model::{DueKind, TASK_COLUMNS, TaskFields, TaskRow, now},
};

/// Names of the updatable fields (AIP-134 paths).
pub(crate) const UPDATABLE: [&str; 7] = [
    "title",
    "description",
    "priority",
    "tags",
    "due",
    "reminders",
    "recurrence",
];

/// Reads one task of `user` (inside a transaction or not), optionally locking it.
pub(crate) async fn fetch(
    conn: &mut PgConnection,
    user: &str,
    id: Uuid,
    for_update: bool,
) -> Result<TaskRow, TaskError> {
    let lock = if for_update { " FOR UPDATE OF t" } else { "" };
    sqlx::query_as::<_, TaskRow>(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = $1 AND t.user_id = $2{lock}"
    ))
    .bind(id)
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| TaskError::NotFound(TaskName(id).to_string()))
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
    let task = row_query(
        &INSERT_TASK,
        id,
        writer.user,
        &fields,
        &tag_ids,
        Lineage {
            series,
            previous_task: lineage.previous_task.filter(|_| series.is_some()),
        },
        time,
    )
    .bind(max_tasks.map(|max| i64::try_from(max.get()).unwrap_or(i64::MAX)))
    .fetch_optional(&mut *tx)
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

/// `sql` (an `INSERT` or `UPDATE` of one task) returning the written task's
/// [`TASK_COLUMNS`], so a write needs no read after it.
fn returning_task(sql: &str) -> String {
    format!("WITH t AS ({sql} RETURNING *) SELECT {TASK_COLUMNS} FROM t")
}

/// Inserts a task row and returns it, unless its user already has `$18` tasks or more (then
/// no row; `$18` NULL: no limit). The count is `task_counts`, kept by triggers (migration
/// `20261203000001_task_counts`) and read inside the insert, so the quota costs no
/// statement; the caller holds the user's change-log lock, so two creates of one user do
/// not both pass on the same count. Other parameters as in [`row_query`].
static INSERT_TASK: LazyLock<String> = LazyLock::new(|| {
    returning_task(
        "INSERT INTO tasks (id, user_id, title, description, priority, tag_ids, due_at, \
         due_time, due_date, due_time_zone, reminders, rrule, recurrence_anchor, exdates, \
         series_id, previous_task_id, state, version, create_time, update_time) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $17, 1, 1, \
         $16, $16 \
         WHERE $18::bigint IS NULL \
            OR coalesce((SELECT tasks FROM task_counts WHERE user_id = $2), 0) < $18",
    )
});

/// Updates a task row's user-settable fields, bumps its version and returns it; a series id
/// and a previous occurrence are kept once assigned. Parameters as in [`row_query`].
static UPDATE_TASK: LazyLock<String> = LazyLock::new(|| {
    returning_task(
        "UPDATE tasks SET title = $3, description = $4, priority = $5, tag_ids = $6, \
         due_at = $7, due_time = $8, due_date = $9, due_time_zone = $10, reminders = $11, \
         rrule = $12, recurrence_anchor = $13, exdates = $14, \
         series_id = COALESCE(series_id, $15), \
         previous_task_id = COALESCE(previous_task_id, $17), version = version + 1, \
         update_time = $16 WHERE id = $1 AND user_id = $2",
    )
});

/// `sql` ([`INSERT_TASK`] or [`UPDATE_TASK`]) bound with `$1` id, `$2` user, `$3..$14` the
/// fields, `$15` a series id for a recurring task, `$16` the write time (UTC), `$17` the
/// occurrence this one follows.
#[allow(clippy::too_many_arguments)]
fn row_query<'q>(
    sql: &'q str,
    id: Uuid,
    user: &'q str,
    fields: &'q TaskFields,
    tag_ids: &'q [Uuid],
    lineage: Lineage,
    time: chrono::DateTime<chrono::Utc>,
) -> sqlx::query::QueryAs<'q, Postgres, TaskRow, sqlx::postgres::PgArguments> {
    let due = due_columns(fields);
    let recurrence = fields.recurrence.as_ref();
    sqlx::query_as::<_, TaskRow>(sql)
        .bind(id)
        .bind(user)
        .bind(&fields.title)
        .bind(&fields.description)
        .bind(fields.priority)
        .bind(tag_ids)
        .bind(due.due_at)
        .bind(due.time)
        .bind(due.date)
        .bind(due.zone)
        .bind(sqlx::types::Json(&fields.reminders))
        .bind(recurrence.map(|r| r.rrule.clone()))
        .bind(recurrence.map(|r| r.anchor))
        .bind(recurrence.map(|r| r.exdates.clone()).unwrap_or_default())
        .bind(lineage.series)
        .bind(time)
        .bind(lineage.previous_task)
}

/// The `tasks` columns a due is stored in.
#[derive(Default)]
struct DueColumns {
    /// The instant filters and order use.
    due_at: Option<chrono::DateTime<chrono::Utc>>,
    time: Option<chrono::DateTime<chrono::Utc>>,
    date: Option<chrono::NaiveDate>,
    zone: Option<String>,
}

fn due_columns(fields: &TaskFields) -> DueColumns {
    let Some(due) = &fields.due else {
        return DueColumns::default();
    };
    let (time, date) = match due.kind {
        DueKind::Time(time) => (Some(time), None),
        DueKind::Date(date) => (None, Some(date)),
    };
    DueColumns {
        due_at: Some(due.due_at()),
        time,
        date,
        zone: Some(due.time_zone.name().to_owned()),
    }
}

/// The paths of `mask` whose normalised values differ (so trimming, a priority of 0 for
/// NONE, tag order or case and the like are no change).
fn changed_fields(
    mask: &[&'static str],
    before: &pb::Task,
    after: &TaskFields,
) -> Vec<&'static str> {
    let mut ignored = taskmesh_platform::grpc::Violations::new();
    // The stored rule was checked when it was written: not expanded again here.
    let stored = crate::validate::CheckedRule::stored(before);
    let Some(before) =
        crate::validate::task_fields_checked(before, "", &mut ignored, stored.as_ref())
    else {
        // Stored tasks are valid; should one not be, treat every masked field as changed.
        return mask.to_vec();
    };
    let tag_set = |tags: &[String]| {
        let mut set: Vec<String> = tags.iter().map(|t| t.to_lowercase()).collect();
        set.sort();
        set
    };
    mask.iter()
        .copied()
        .filter(|path| match *path {
            "title" => before.title != after.title,
            "description" => before.description != after.description,
            "priority" => before.priority != after.priority,
            "tags" => tag_set(&before.tags) != tag_set(&after.tags),
            "due" => before.due != after.due,
            "reminders" => before.reminders != after.reminders,
            "recurrence" => before.recurrence != after.recurrence,
            _ => false,
        })
        .collect()
}

/// Copies one top-level field (an [`UPDATABLE`] path) from `from` into `to`.
pub(crate) fn copy_field(path: &str, from: &pb::Task, to: &mut pb::Task) {
    match path {
        "title" => to.title.clone_from(&from.title),
        "description" => to.description.clone_from(&from.description),
        "priority" => to.priority = from.priority,
        "tags" => to.tags.clone_from(&from.tags),
        "due" => to.due.clone_from(&from.due),
        "reminders" => to.reminders.clone_from(&from.reminders),
        "recurrence" => {
            // Output-only parts of the rule (series, previous task) are kept as stored.
            let kept = to.recurrence.take();
            to.recurrence = from.recurrence.clone().map(|mut r| {
                if let Some(kept) = &kept {
                    r.series.clone_from(&kept.series);
                    r.previous_task.clone_from(&kept.previous_task);
                }
                r
            });
        }
        _ => {}
    }
}

/// Applies an update: `merge` builds and validates the new user-settable fields from the
/// current task, and only fields that really changed bump the version and appear in
/// the event's mask.
pub(crate) async fn update<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    writer: &Writer<'_>,
    id: Uuid,
    etag: &str,
    mask: &[&'static str],
    merge: impl FnOnce(&pb::Task) -> Result<TaskFields, TaskError>,
) -> Result<pb::Task, TaskError> {
    let mut tx = db.begin().await?;
    changes::lock_user(&mut tx, writer.user).await?;
    let row = fetch(&mut tx, writer.user, id, true).await?;
    let before = row.to_proto();
    check_etag(etag, &before)?;
    let fields = merge(&before)?;
    let changed = changed_fields(mask, &before, &fields);
    if changed.is_empty() {
        tx.rollback().await?;
        return Ok(before);
    }
    let time = now();
    let tag_ids = crate::tags::resolve(&mut tx, writer, &fields.tags, time).await?;
    let series = fields.recurrence.as_ref().map(|_| Uuid::now_v7());
    let task = row_query(
        &UPDATE_TASK,
        id,
        writer.user,
        &fields,
        &tag_ids,
        Lineage {
            series,
            previous_task: None,
        },
        time,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| TaskError::NotFound(TaskName(id).to_string()))?
    .to_proto();
    let mut previous = pb::Task::default();
    for path in &changed {
        copy_field(path, &before, &mut previous);
    }
    let paths = changed.iter().map(|p| (*p).to_owned()).collect();
    record_updated(&mut tx, writer, time, &task, paths, previous).await?;
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
    sqlx::query("DELETE FROM tasks WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(writer.user)
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
        let (tasks, followed): (Option<i64>, bool) = sqlx::query_as(
            "SELECT (SELECT tasks FROM task_counts WHERE user_id = $1), \
                    EXISTS (SELECT 1 FROM tasks WHERE user_id = $1 AND previous_task_id = $2)",
        )
        .bind(writer.user)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if !followed && u64::try_from(tasks.unwrap_or(0)).unwrap_or(0) >= max.get() {
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
    static SET_STATE: LazyLock<String> = LazyLock::new(|| {
        returning_task(
            "UPDATE tasks SET state = $3, complete_time = $4, version = version + 1, \
             update_time = $5 WHERE id = $1 AND user_id = $2",
        )
    });
    let task = sqlx::query_as::<_, TaskRow>(&SET_STATE)
        .bind(id)
        .bind(writer.user)
        .bind(target as i16)
        .bind(complete.then_some(time))
        .bind(time)
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

/// The user's tasks that carry `tag`, as they are now, locked for update (call before renaming
/// or deleting the tag, then [`record_tags_changed`] after).
pub(crate) async fn with_tag(
    conn: &mut PgConnection,
    user: &str,
    tag: Uuid,
) -> Result<Vec<pb::Task>, TaskError> {
    let rows = sqlx::query_as::<_, TaskRow>(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.user_id = $1 AND t.tag_ids @> ARRAY[$2]::uuid[] \
         ORDER BY t.id FOR UPDATE OF t"
    ))
    .bind(user)
    .bind(tag)
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
        sqlx::query(
            "UPDATE tasks SET version = version + 1, update_time = $3 WHERE id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(writer.user)
        .bind(time)
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

fn id_of(name: &str) -> Result<Uuid, TaskError> {
    TaskName::parse(name)
        .map(TaskName::id)
        .map_err(|_| TaskError::NotFound(name.to_owned()))
}
