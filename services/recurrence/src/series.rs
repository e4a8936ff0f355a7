//! Series bookkeeping (`series`, `occurrences`) and what a series change sends: commands to
//! TaskService and `series.ended` events, through the outbox, in the transaction of the
//! change. Every command's `request_id` is derived from what it is about (a UUIDv5 of e.g.
//! the series and the task it follows), so doing the same thing again sends the same id and
//! TaskService applies it once (AIP-155).

use chrono::{DateTime, NaiveTime, Utc};
use sqlx::PgConnection;
use taskmesh_domain::{DueValue, recurrence::EndReason, timestamp};
use taskmesh_platform::changelog::{self, Published, Writer};
use taskmesh_proto::{
    catalogue::Event,
    events::v1::{self as ev, series_ended::Reason},
    names::{SeriesName, TaskName},
    recurrence::v1::{self as pb, series::EndReason as PbEndReason},
    task::v1 as task_pb,
};
use uuid::Uuid;

use crate::{LOG, occurrence};

/// The namespace of the UUIDv5 request ids RecurrenceService derives.
const REQUEST_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b8e_4a0d_4c55_9a57_3d1e_8b42_c7a1);

/// A deterministic `request_id` for `what` (e.g. `series/{id}/occurrences/{time}`).
pub(crate) fn request_id(what: &str) -> String {
    Uuid::new_v5(&REQUEST_NAMESPACE, what.as_bytes()).to_string()
}

/// Why a series ended, as stored (`SeriesEnded.Reason` numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The rule ran out.
    Rule(EndReason),
    /// StopSeries, or the rule was removed from the current task.
    Stopped,
    /// The current task was deleted.
    Deleted,
}

impl Ending {
    fn reason(self) -> Reason {
        match self {
            Ending::Rule(EndReason::CountReached) => Reason::CountReached,
            Ending::Rule(EndReason::UntilPassed) => Reason::UntilPassed,
            Ending::Stopped => Reason::Stopped,
            Ending::Deleted => Reason::Deleted,
        }
    }
}

/// A `series` row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct SeriesRow {
    pub(crate) id: Uuid,
    pub(crate) current_task: Uuid,
    pub(crate) occurrence_count: i64,
    pub(crate) end_time: Option<DateTime<Utc>>,
    pub(crate) end_reason: Option<i16>,
}

impl SeriesRow {
    /// Whether the series ended.
    pub(crate) fn ended(&self) -> bool {
        self.end_time.is_some()
    }

    /// The `Series` resource.
    pub(crate) fn to_proto(&self) -> pb::Series {
        let end_reason = match self.end_reason.map(i32::from) {
            Some(r) if r == Reason::CountReached as i32 => PbEndReason::CountReached,
            Some(r) if r == Reason::UntilPassed as i32 => PbEndReason::UntilPassed,
            Some(r) if r == Reason::Stopped as i32 => PbEndReason::Stopped,
            Some(r) if r == Reason::Deleted as i32 => PbEndReason::Deleted,
            _ => PbEndReason::Unspecified,
        };
        pb::Series {
            name: SeriesName(self.id).to_string(),
            current_task: if self.ended() {
                String::new()
            } else {
                TaskName(self.current_task).to_string()
            },
            occurrence_count: self.occurrence_count,
            ended: self.ended(),
            end_time: self.end_time.map(timestamp),
            end_reason: end_reason as i32,
            last_task: TaskName(self.current_task).to_string(),
        }
    }
}

/// An `occurrences` row: one task of a series.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct OccurrenceRow {
    pub(crate) position: i64,
    pub(crate) used: i64,
    /// The series' time of day when it differs from the task's due.
    pub(crate) wall_time: Option<NaiveTime>,
    /// Skips not yet known to be on the task.
    pub(crate) skipped: Vec<DateTime<Utc>>,
    pub(crate) successor_request: Option<String>,
}

const SERIES_COLUMNS: &str = "id, current_task, occurrence_count, end_time, end_reason";
const OCCURRENCE_COLUMNS: &str = "position, used, wall_time, skipped, successor_request";

/// The caller's series `id`, locked for the transaction; `None` when unknown or another
/// user's.
pub(crate) async fn lock(
    tx: &mut PgConnection,
    user: &str,
    id: Uuid,
) -> Result<Option<SeriesRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SERIES_COLUMNS} FROM series WHERE id = $1 AND user_id = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await
}

/// The caller's series `id`, unlocked.
pub(crate) async fn get(
    conn: &mut PgConnection,
    user: &str,
    id: Uuid,
) -> Result<Option<SeriesRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SERIES_COLUMNS} FROM series WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(user)
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
    let created = sqlx::query(
        "INSERT INTO series (id, user_id, current_task, occurrence_count, create_time, update_time) \
         VALUES ($1, $2, $3, 1, $4, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(series_id)
    .bind(user)
    .bind(task)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let Some(mut series) = lock(tx, user, series_id).await? else {
        return Ok(None);
    };
    let existing: Option<OccurrenceRow> = sqlx::query_as(&format!(
        "SELECT {OCCURRENCE_COLUMNS} FROM occurrences WHERE task_id = $1 AND series_id = $2 FOR UPDATE"
    ))
    .bind(task)
    .bind(series_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(occurrence) = existing {
        return Ok(Some((series, occurrence)));
    }
    let before: Option<(i64, i64, Option<i64>, Option<NaiveTime>)> = match previous {
        Some(previous) => {
            sqlx::query_as(
                "SELECT position, used, successor_used, successor_wall_time FROM occurrences \
                 WHERE task_id = $1 AND series_id = $2",
            )
            .bind(previous)
            .bind(series_id)
            .fetch_optional(&mut *tx)
            .await?
        }
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
    let occurrence: OccurrenceRow = sqlx::query_as(&format!(
        "INSERT INTO occurrences (task_id, series_id, user_id, position, used, wall_time, \
         create_time) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {OCCURRENCE_COLUMNS}"
    ))
    .bind(task)
    .bind(series_id)
    .bind(user)
    .bind(position)
    .bind(used)
    .bind(wall_time)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if !created && follows_current {
        series = sqlx::query_as(&format!(
            "UPDATE series SET current_task = $2, occurrence_count = occurrence_count + 1, \
             update_time = $3 WHERE id = $1 RETURNING {SERIES_COLUMNS}"
        ))
        .bind(series_id)
        .bind(task)
        .bind(now)
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
    sqlx::query("UPDATE occurrences SET used = 1 WHERE task_id = $1")
        .bind(task)
        .execute(&mut *tx)
        .await?;
    if series.ended() && series.current_task == task && open {
        sqlx::query(
            "UPDATE series SET end_time = NULL, end_reason = NULL, update_time = $2 WHERE id = $1",
        )
        .bind(series.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE occurrences SET successor_due = NULL, successor_used = NULL, \
             successor_wall_time = NULL, successor_request = NULL WHERE task_id = $1",
        )
        .bind(task)
        .execute(&mut *tx)
        .await?;
        series.end_time = None;
        series.end_reason = None;
    }
    Ok(())
}

/// The user moved `task`'s due: the series' time of day is the new due's from now on.
pub(crate) async fn due_moved(tx: &mut PgConnection, task: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE occurrences SET wall_time = NULL WHERE task_id = $1")
        .bind(task)
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
    sqlx::query("UPDATE occurrences SET skipped = array_append(skipped, $2) WHERE task_id = $1")
        .bind(task)
        .bind(time)
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
    let series: Option<Uuid> =
        sqlx::query_scalar("SELECT series_id FROM occurrences WHERE task_id = $1 AND user_id = $2")
            .bind(task)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(series) = series else {
        return Ok(None);
    };
    let Some(series) = lock(tx, user, series).await? else {
        return Ok(None);
    };
    let occurrence: OccurrenceRow = sqlx::query_as(&format!(
        "SELECT {OCCURRENCE_COLUMNS} FROM occurrences WHERE task_id = $1 FOR UPDATE"
    ))
    .bind(task)
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
    sqlx::query(
        "UPDATE occurrences SET successor_due = $2, successor_used = $3, \
         successor_wall_time = $4, successor_request = $5 WHERE task_id = $1",
    )
    .bind(task)
    .bind(successor.as_ref().map(|s| s.due.start()))
    .bind(successor.as_ref().map(|s| s.used))
    .bind(successor.as_ref().map(|s| s.wall_time))
    .bind(request)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Marks `task` deleted in its series.
pub(crate) async fn mark_deleted(tx: &mut PgConnection, task: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE occurrences SET deleted = true WHERE task_id = $1")
        .bind(task)
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
    sqlx::query_scalar(
        "SELECT task_id FROM occurrences WHERE series_id = $1 AND position >= $2 AND NOT deleted \
         ORDER BY position",
    )
    .bind(series)
    .bind(position)
    .fetch_all(&mut *tx)
    .await
}

/// Sends commands and series events for one user through the outbox.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outbox<'a> {
    /// The installation's topic prefix.
    pub(crate) topic_prefix: &'a str,
    /// Whose tasks.
    pub(crate) user: &'a str,
    /// Who asks: the user for an RPC, [`crate::ACTOR`] for what a completion caused.
    pub(crate) actor: &'a str,
    /// The CloudEvent time.
    pub(crate) now: DateTime<Utc>,
}

impl Outbox<'_> {
    async fn send(
        &self,
        tx: &mut PgConnection,
        request_id: &str,
        subject: String,
        payload: impl Event,
    ) -> Result<(), sqlx::Error> {
        let writer = Writer {
            user: self.user,
            actor: self.actor,
            request_id,
            topic_prefix: self.topic_prefix,
        };
        changelog::publish_only(
            tx,
            &LOG,
            &writer,
            self.now,
            Published::new(subject, payload),
        )
        .await
    }

    /// Asks TaskService to create the occurrence after `current` at `next`; the request id
    /// is the series and the task it follows, so each task leads to one next task (an id
    /// of the occurrence's time alone could repeat: an "every!" task done twice on one day
    /// has the same next due). Returns the request id.
    pub(crate) async fn create_next(
        &self,
        tx: &mut PgConnection,
        series: Uuid,
        current: &task_pb::Task,
        current_due: &DueValue,
        next: &DueValue,
    ) -> Result<String, sqlx::Error> {
        let request_id = request_id(&format!(
            "{}/successor-of/{}",
            SeriesName(series),
            current.name
        ));
        let task = occurrence::next_task(current, current_due, next);
        self.send(
            tx,
            &request_id,
            "tasks".to_owned(),
            ev::CreateTaskCommand {
                context: None,
                task: Some(task),
            },
        )
        .await?;
        Ok(request_id)
    }

    /// Asks TaskService to add `exdate` to `task`'s rule.
    pub(crate) async fn add_exdate(
        &self,
        tx: &mut PgConnection,
        task: Uuid,
        exdate: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let name = TaskName(task).to_string();
        let at = timestamp(exdate);
        let id = request_id(&format!("{name}/exdates/{}.{:09}", at.seconds, at.nanos));
        let subject = name.clone();
        self.send(
            tx,
            &id,
            subject,
            ev::AddExdateCommand {
                context: None,
                task: name,
                exdate: Some(at),
            },
        )
        .await
    }

    /// Asks TaskService to remove the rule from `task`.
    pub(crate) async fn end_series(
        &self,
        tx: &mut PgConnection,
        task: Uuid,
    ) -> Result<(), sqlx::Error> {
        let name = TaskName(task).to_string();
        let id = request_id(&format!("{name}/end-series"));
        let subject = name.clone();
        self.send(
            tx,
            &id,
            subject,
            ev::EndSeriesCommand {
                context: None,
                task: name,
            },
        )
        .await
    }

    /// Asks TaskService to delete `task`.
    pub(crate) async fn delete_task(
        &self,
        tx: &mut PgConnection,
        task: Uuid,
    ) -> Result<(), sqlx::Error> {
        let name = TaskName(task).to_string();
        let id = request_id(&format!("{name}/delete"));
        let subject = name.clone();
        self.send(
            tx,
            &id,
            subject,
            ev::DeleteTaskCommand {
                context: None,
                task: name,
            },
        )
        .await
    }

    /// Ends `series` (`ending`, now) and emits `series.ended`; an ended series is left as it
    /// is.
    pub(crate) async fn end(
        &self,
        tx: &mut PgConnection,
        series: &mut SeriesRow,
        ending: Ending,
    ) -> Result<(), sqlx::Error> {
        if series.ended() {
            return Ok(());
        }
        let reason = ending.reason();
        sqlx::query(
            "UPDATE series SET end_time = $2, end_reason = $3, update_time = $2 WHERE id = $1",
        )
        .bind(series.id)
        .bind(self.now)
        .bind(reason as i16)
        .execute(&mut *tx)
        .await?;
        series.end_time = Some(self.now);
        series.end_reason = Some(reason as i16);
        let name = SeriesName(series.id).to_string();
        let last_task = TaskName(series.current_task).to_string();
        let id = request_id(&format!("{name}/ended"));
        let subject = name.clone();
        self.send(
            tx,
            &id,
            subject,
            ev::SeriesEnded {
                context: None,
                series: name,
                last_task,
                reason: reason as i32,
            },
        )
        .await
    }
}
