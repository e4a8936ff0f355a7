//! The SQL of a task row: the `INSERT` and `UPDATE` that write a task's user-settable fields
//! and return the written row, and how a due is spread over its columns.

use sqlx::PgConnection;
use uuid::Uuid;

use super::Lineage;
use crate::model::{DueKind, TaskFields, TaskRow, query_task};

/// Inserts a task row and returns it, unless its user already has `max_tasks` tasks or more
/// (then `None`; `max_tasks` `None`: no limit). The count is `task_counts`, kept by triggers
/// (migration `20261203000001_task_counts`) and read inside the insert, so the quota costs no
/// statement; the caller holds the user's change-log lock, so two creates of one user do
/// not both pass on the same count. `time` is the create and update time (UTC).
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    user: &str,
    fields: &TaskFields,
    tag_ids: &[Uuid],
    lineage: Lineage,
    time: chrono::DateTime<chrono::Utc>,
    max_tasks: Option<i64>,
) -> Result<Option<TaskRow>, sqlx::Error> {
    let due = due_columns(fields);
    let recurrence = Recurrence::of(fields);
    // The written row is returned through the CTE `t`, so a write needs no read after it.
    query_task!(
        "WITH t AS (INSERT INTO tasks (id, user_id, title, description, priority, tag_ids, \
         due_at, due_time, due_date, due_time_zone, reminders, rrule, recurrence_anchor, \
         exdates, series_id, previous_task_id, state, version, create_time, update_time) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $17, 1, 1, \
         $16, $16 \
         WHERE $18::bigint IS NULL \
            OR coalesce((SELECT tasks FROM task_counts WHERE user_id = $2), 0) < $18 \
         RETURNING *) SELECT ",
        " FROM t",
        id,
        user,
        fields.title,
        fields.description,
        fields.priority,
        tag_ids,
        due.due_at,
        due.time,
        due.date,
        due.zone,
        sqlx::types::Json(&fields.reminders) as _,
        recurrence.rrule,
        recurrence.anchor,
        recurrence.exdates,
        lineage.series,
        time,
        lineage.previous_task,
        max_tasks
    )
    .fetch_optional(conn)
    .await
}

/// Updates a task row's user-settable fields, bumps its version and returns it (`None`: no
/// such task of `user`); a series id (`lineage.series`) and a previous occurrence are kept
/// once assigned. `time` is the update time (UTC).
pub(super) async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    user: &str,
    fields: &TaskFields,
    tag_ids: &[Uuid],
    lineage: Lineage,
    time: chrono::DateTime<chrono::Utc>,
) -> Result<Option<TaskRow>, sqlx::Error> {
    let due = due_columns(fields);
    let recurrence = Recurrence::of(fields);
    // The written row is returned through the CTE `t`, so a write needs no read after it.
    query_task!(
        "WITH t AS (UPDATE tasks SET title = $3, description = $4, priority = $5, \
         tag_ids = $6, due_at = $7, due_time = $8, due_date = $9, due_time_zone = $10, \
         reminders = $11, rrule = $12, recurrence_anchor = $13, exdates = $14, \
         series_id = COALESCE(series_id, $15), \
         previous_task_id = COALESCE(previous_task_id, $17), version = version + 1, \
         update_time = $16 WHERE id = $1 AND user_id = $2 RETURNING *) SELECT ",
        " FROM t",
        id,
        user,
        fields.title,
        fields.description,
        fields.priority,
        tag_ids,
        due.due_at,
        due.time,
        due.date,
        due.zone,
        sqlx::types::Json(&fields.reminders) as _,
        recurrence.rrule,
        recurrence.anchor,
        recurrence.exdates,
        lineage.series,
        time,
        lineage.previous_task
    )
    .fetch_optional(conn)
    .await
}

/// The `tasks` columns a recurrence rule is stored in (all empty without one).
struct Recurrence<'a> {
    rrule: Option<&'a str>,
    anchor: Option<i16>,
    exdates: &'a [chrono::DateTime<chrono::Utc>],
}

impl<'a> Recurrence<'a> {
    fn of(fields: &'a TaskFields) -> Self {
        let recurrence = fields.recurrence.as_ref();
        Recurrence {
            rrule: recurrence.map(|r| r.rrule.as_str()),
            anchor: recurrence.map(|r| r.anchor),
            exdates: recurrence.map_or(&[], |r| r.exdates.as_slice()),
        }
    }
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
