//! Series bookkeeping: the `series` and `occurrences` rows a series change reads, locks and
//! writes (which task is current, positions, occurrences used, skips, successors).

use chrono::{DateTime, NaiveTime, Utc};
use sqlx::PgConnection;
use taskmesh_domain::DueValue;
use uuid::Uuid;

use super::{OccurrenceRow, SeriesRow, query_occurrence, query_series};

/// The caller's series `id`, locked for the transaction; `None` when unknown or another
/// user's.
pub(crate) async fn lock(
    tx: &mut PgConnection,
    user: &str,
    id: Uuid,
) -> Result<Option<SeriesRow>, sqlx::Error> {
    query_series!(
        "SELECT ",
        " FROM series WHERE id = $1 AND user_id = $2 FOR UPDATE",
        id,
        user
    )
    .fetch_optional(&mut *tx)
    .await
}

/// The caller's series `id`, unlocked.
pub(crate) async fn get(
    conn: &mut PgConnection,
    user: &str,
    id: Uuid,
) -> Result<Option<SeriesRow>, sqlx::Error> {
    query_series!(
        "SELECT ",
        " FROM series WHERE id = $1 AND user_id = $2",
        id,
        user
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Tracks a task of a series: locks the series (creating it with `task` as its first
/// occurrence when unknown) and the task's occurrence (creating it, after `previous` when
/// that is known). A new occurrence that follows the series' current task becomes the
/// current task; one that does not (a task from before this service knew the series) is
/// recorded without moving the series. `None` when the series belongs to another user.
pub(crate) async fn track(
    tx: &mut PgConnection,
    user: &str,
    series_id: Uuid,
    task: Uuid,
    previous: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Option<(SeriesRow, OccurrenceRow)>, sqlx::Error> {
    let created = sqlx::query!(
        "INSERT INTO series (id, user_id, current_task, occurrence_count, create_time, update_time) \
         VALUES ($1, $2, $3, 1, $4, $4) ON CONFLICT (id) DO NOTHING",
        series_id,
        user,
        task,
        now,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let Some(mut series) = lock(tx, user, series_id).await? else {
        return Ok(None);
    };
    let existing: Option<OccurrenceRow> = query_occurrence!(
        "SELECT ",
        " FROM occurrences WHERE task_id = $1 AND series_id = $2 FOR UPDATE",
        task,
        series_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(occurrence) = existing {
        return Ok(Some((series, occurrence)));
    }
    let before: Option<(i64, i64, Option<i64>, Option<NaiveTime>)> = match previous {
        Some(previous) => sqlx::query!(
            "SELECT position, used, successor_used, successor_wall_time FROM occurrences \
             WHERE task_id = $1 AND series_id = $2",
            previous,
            series_id,
        )
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| (r.position, r.used, r.successor_used, r.successor_wall_time)),
        None => None,
    };
    let follows_current = previous.is_some_and(|p| p == series.current_task);
    let (position, used, wall_time) = match before {
        _ if created => (1, 1, None),
        Some((position, used, successor_used, wall_time)) => {
            (position + 1, successor_used.unwrap_or(used + 1), wall_time)
        }
        None => (series.occurrence_count + 1, 1, None),
    };
    let occurrence: OccurrenceRow = query_occurrence!(
        "INSERT INTO occurrences (task_id, series_id, user_id, position, used, wall_time, \
         create_time) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        "",
        task,
        series_id,
        user,
        position,
        used,
        wall_time,
        now
    )
    .fetch_one(&mut *tx)
    .await?;
    if !created && follows_current {
        series = query_series!(
            "UPDATE series SET current_task = $2, occurrence_count = occurrence_count + 1, \
             update_time = $3 WHERE id = $1 RETURNING ",
            "",
            series_id,
            task,
            now
        )
        .fetch_one(&mut *tx)
        .await?;
    }
    Ok(Some((series, occurrence)))
}

/// The rule of `task` changed: its count starts again (`used` = 1). When the series had
/// ended and `task` is its open current task, the series goes on from it.
pub(crate) async fn restart(
    tx: &mut PgConnection,
    series: &mut SeriesRow,
    task: Uuid,
    open: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE occurrences SET used = 1 WHERE task_id = $1", task)
        .execute(&mut *tx)
        .await?;
    if series.ended() && series.current_task == task && open {
        sqlx::query!(
            "UPDATE series SET end_time = NULL, end_reason = NULL, update_time = $2 WHERE id = $1",
            series.id,
            now,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE occurrences SET successor_due = NULL, successor_used = NULL, \
             successor_wall_time = NULL, successor_request = NULL WHERE task_id = $1",
            task,
        )
        .execute(&mut *tx)
        .await?;
        series.end_time = None;
        series.end_reason = None;
    }
    Ok(())
}

/// The user moved `task`'s due: the series' time of day is the new due's from now on.
pub(crate) async fn due_moved(tx: &mut PgConnection, task: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE occurrences SET wall_time = NULL WHERE task_id = $1",
        task
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records that SkipOccurrence skipped `time` after `task`, until the task's own `EXDATE`s
/// show it.
pub(crate) async fn add_skipped(
    tx: &mut PgConnection,
    task: Uuid,
    time: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE occurrences SET skipped = array_append(skipped, $2) WHERE task_id = $1",
        task,
        time,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The caller's task `task` as an occurrence of a series (also once its rule is gone), with
/// the series locked.
pub(crate) async fn find(
    tx: &mut PgConnection,
    user: &str,
    task: Uuid,
) -> Result<Option<(SeriesRow, OccurrenceRow)>, sqlx::Error> {
    let series: Option<Uuid> = sqlx::query_scalar!(
        "SELECT series_id FROM occurrences WHERE task_id = $1 AND user_id = $2",
        task,
        user,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(series) = series else {
        return Ok(None);
    };
    let Some(series) = lock(tx, user, series).await? else {
        return Ok(None);
    };
    let occurrence: OccurrenceRow = query_occurrence!(
        "SELECT ",
        " FROM occurrences WHERE task_id = $1 FOR UPDATE",
        task
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some((series, occurrence)))
}

/// What a task leads to: its successor's due, the rule occurrences used by then and the
/// series' time of day.
pub(crate) struct Successor<'a> {
    pub(crate) due: &'a DueValue,
    pub(crate) used: i64,
    pub(crate) wall_time: NaiveTime,
}

/// Records that `task`'s successor was asked for (with `request`), or with `None` that there
/// will be none; either way `task` leads to nothing more.
pub(crate) async fn settle(
    tx: &mut PgConnection,
    task: Uuid,
    successor: Option<Successor<'_>>,
    request: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE occurrences SET successor_due = $2, successor_used = $3, \
         successor_wall_time = $4, successor_request = $5 WHERE task_id = $1",
        task,
        successor.as_ref().map(|s| s.due.start()),
        successor.as_ref().map(|s| s.used),
        successor.as_ref().map(|s| s.wall_time),
        request,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Marks `task` deleted in its series.
pub(crate) async fn mark_deleted(tx: &mut PgConnection, task: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE occurrences SET deleted = true WHERE task_id = $1",
        task
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The tasks of `series` from `position` on that are not deleted, in series order.
pub(crate) async fn tasks_from(
    tx: &mut PgConnection,
    series: Uuid,
    position: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT task_id FROM occurrences WHERE series_id = $1 AND position >= $2 AND NOT deleted \
         ORDER BY position",
        series,
        position,
    )
    .fetch_all(&mut *tx)
    .await
}
