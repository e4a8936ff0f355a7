//! The SQL of a task row: the `INSERT` and `UPDATE` that write a task's user-settable fields
//! and return the written row, and how a due is spread over its columns.

use std::sync::LazyLock;

use sqlx::Postgres;
use uuid::Uuid;

use super::Lineage;
use crate::model::{DueKind, TASK_COLUMNS, TaskFields, TaskRow};

/// `sql` (an `INSERT` or `UPDATE` of one task) returning the written task's
/// [`TASK_COLUMNS`], so a write needs no read after it.
pub(super) fn returning_task(sql: &str) -> String {
    format!("WITH t AS ({sql} RETURNING *) SELECT {TASK_COLUMNS} FROM t")
}

/// Inserts a task row and returns it, unless its user already has `$18` tasks or more (then
/// no row; `$18` NULL: no limit). The count is `task_counts`, kept by triggers (migration
/// `20261203000001_task_counts`) and read inside the insert, so the quota costs no
/// statement; the caller holds the user's change-log lock, so two creates of one user do
/// not both pass on the same count. Other parameters as in [`row_query`].
pub(super) static INSERT_TASK: LazyLock<String> = LazyLock::new(|| {
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
pub(super) static UPDATE_TASK: LazyLock<String> = LazyLock::new(|| {
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
pub(super) fn row_query<'q>(
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
