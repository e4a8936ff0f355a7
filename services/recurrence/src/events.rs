//! The `task-events` consumer (ARCHITECTURE.md invariant 2): keeps the bookkeeping of every
//! series and moves a series on when its current task is completed.
//!
//! - `task.created` / `task.updated` of a recurring task: the series and the task's place in
//!   it are tracked; a changed (or newly set) rule starts `COUNT` again from this task and
//!   takes an ended series up again. A rule removed from the current task stops the series.
//! - `task.completed` of the current task: the next occurrence is computed
//!   ([`taskmesh_domain::recurrence::next_occurrence`], from the completion time in the
//!   event, so a redelivery computes the same) and a `task.create` command for it goes to
//!   TaskService with the request id `series + occurrence`; or, when `COUNT` or `UNTIL` ends
//!   the rule, the series ends with a `series.ended` event. A task leads to at most one next
//!   occurrence: completing it again after uncompleting it changes nothing.
//! - `task.deleted` of the current task (with no successor asked for) ends the series.
//! - A next occurrence created after its series was stopped or deleted (the command was in
//!   flight) loses its rule or is deleted in turn.
//!
//! The series row is locked for each event, and every effect commits with the
//! `(consumer, ce_id)` record, so a redelivered event changes nothing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use taskmesh_domain::{
    DueValue, instant,
    recurrence::{Anchor, Next, NextError, SeriesPosition, next_occurrence, wall_time_of},
    timestamp,
};
use taskmesh_platform::{
    cloudevents::CloudEvent,
    consumer::{HandleError, Handler, database, decode, reject},
    grpc::echo,
};
use taskmesh_proto::{
    catalogue::TaskEvents,
    events::v1 as ev,
    names::{SeriesName, TaskName},
    task::v1::{self as task_pb, recurrence::Anchor as PbAnchor, task::State},
};
use uuid::Uuid;

use crate::series::{self, Ending, OccurrenceRow, Outbox, SeriesRow, Successor};

/// Applies `task-events` for the consumer `taskmesh-recurrence`.
#[derive(Clone, Debug)]
pub struct TaskEventHandler {
    /// The installation's topic prefix, for the commands it sends.
    topic_prefix: String,
}

impl TaskEventHandler {
    /// A handler sending its commands to the topics named with `topic_prefix`.
    pub fn new(topic_prefix: String) -> Self {
        Self { topic_prefix }
    }
}

/// What happened to a task.
enum Kind {
    Created,
    /// Updated: the rule before the change when the mask has `recurrence`, and whether the
    /// mask has `due`.
    Updated(Option<Option<task_pb::Recurrence>>, bool),
    Completed,
    Deleted,
}

/// The event's kind, task and owner; `None` for events that concern no series.
fn read(event: &CloudEvent) -> Result<Option<(Kind, task_pb::Task, String)>, HandleError> {
    let (context, task, kind) = match decode::<TaskEvents>(event)? {
        TaskEvents::TaskCreated(e) => (e.context, e.task, Kind::Created),
        TaskEvents::TaskUpdated(e) => {
            let has = |path: &str| {
                e.update_mask
                    .as_ref()
                    .is_some_and(|m| m.paths.iter().any(|p| p == path))
            };
            let (rule_changed, due_moved) = (has("recurrence"), has("due"));
            let before = rule_changed.then(|| e.previous.and_then(|p| p.recurrence));
            (e.context, e.task, Kind::Updated(before, due_moved))
        }
        TaskEvents::TaskCompleted(e) => (e.context, e.task, Kind::Completed),
        TaskEvents::TaskDeleted(e) => (e.context, e.task, Kind::Deleted),
        // Re-opening a task neither advances nor ends its series (the next occurrence, if
        // any, exists already); tags are not part of a rule.
        TaskEvents::TaskUncompleted(_)
        | TaskEvents::TagCreated(_)
        | TaskEvents::TagUpdated(_)
        | TaskEvents::TagDeleted(_) => return Ok(None),
    };
    let user = context
        .map(|c| c.user)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| reject("event without an owner"))?;
    let task = task.ok_or_else(|| reject("event without a task"))?;
    Ok(Some((kind, task, user)))
}

impl Handler for TaskEventHandler {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandleError> {
        let Some((kind, task, user)) = read(event)? else {
            return Ok(());
        };
        let id = TaskName::parse(&task.name)
            .map_err(|e| reject(format!("{}: {e}", echo(&task.name))))?
            .id();
        let outbox = Outbox {
            topic_prefix: &self.topic_prefix,
            user: &user,
            actor: crate::ACTOR,
            now: event.time,
        };
        match kind {
            Kind::Updated(Some(before), _) if task.recurrence.is_none() => {
                let series = before
                    .as_ref()
                    .and_then(|r| SeriesName::parse(&r.series).ok().map(SeriesName::id));
                if let Some(series) = series {
                    rule_removed(tx, &outbox, series, id)
                        .await
                        .map_err(database)?;
                }
                Ok(())
            }
            kind => tracked(tx, &outbox, kind, &task, id, event.time).await,
        }
    }
}

/// Applies an event of a task that carries a rule.
async fn tracked(
    tx: &mut PgConnection,
    outbox: &Outbox<'_>,
    kind: Kind,
    task: &task_pb::Task,
    id: Uuid,
    time: DateTime<Utc>,
) -> Result<(), HandleError> {
    let Some(recurrence) = task.recurrence.as_ref() else {
        return Ok(());
    };
    let series_id = SeriesName::parse(&recurrence.series)
        .map_err(|e| reject(format!("{}: {e}", echo(&recurrence.series))))?
        .id();
    let previous = TaskName::parse(&recurrence.previous_task)
        .ok()
        .map(TaskName::id);
    let tracked = series::track(tx, outbox.user, series_id, id, previous, time)
        .await
        .map_err(database)?;
    let Some((mut series, occurrence)) = tracked else {
        tracing::warn!(series = %series_id, "series of another user; event ignored");
        return Ok(());
    };
    match kind {
        Kind::Created => late_successor(tx, outbox, &series, id)
            .await
            .map_err(database),
        Kind::Updated(before, due_moved) => {
            if due_moved {
                series::due_moved(tx, id).await.map_err(database)?;
            }
            if let Some(before) = before
                && before.is_none_or(|b| b.rrule != recurrence.rrule)
            {
                series::restart(tx, &mut series, id, is_open(task), time)
                    .await
                    .map_err(database)?;
            }
            Ok(())
        }
        Kind::Completed => {
            if series.ended() || series.current_task != id || occurrence.successor_request.is_some()
            {
                return Ok(());
            }
            let done = task
                .complete_time
                .as_ref()
                .and_then(instant)
                .unwrap_or(time);
            move_on(tx, outbox, &mut series, task, &occurrence, done).await
        }
        Kind::Deleted => {
            series::mark_deleted(tx, id).await.map_err(database)?;
            if series.current_task == id && occurrence.successor_request.is_none() {
                outbox
                    .end(tx, &mut series, Ending::Deleted)
                    .await
                    .map_err(database)?;
            }
            Ok(())
        }
    }
}

/// A rule was removed from `task`: when it is the series' current task, the series stops.
async fn rule_removed(
    tx: &mut PgConnection,
    outbox: &Outbox<'_>,
    series: Uuid,
    task: Uuid,
) -> Result<(), sqlx::Error> {
    let Some(mut row) = series::lock(tx, outbox.user, series).await? else {
        return Ok(());
    };
    if row.current_task == task {
        outbox.end(tx, &mut row, Ending::Stopped).await?;
    }
    Ok(())
}

/// A new occurrence of a series that was stopped or deleted while its creation was on the
/// way follows the series: its rule goes, or it goes.
async fn late_successor(
    tx: &mut PgConnection,
    outbox: &Outbox<'_>,
    series: &SeriesRow,
    task: Uuid,
) -> Result<(), sqlx::Error> {
    if series.current_task != task {
        return Ok(());
    }
    match series.end_reason {
        Some(r) if r == ev::series_ended::Reason::Stopped as i16 => {
            outbox.end_series(tx, task).await
        }
        Some(r) if r == ev::series_ended::Reason::Deleted as i16 => {
            outbox.delete_task(tx, task).await
        }
        _ => Ok(()),
    }
}

/// The next occurrence after `task` (a recurring task with a due) done at `done`, given
/// its place in the series. The expansion runs on a blocking thread: a rule may take up to
/// the walk's budget (500,000 periods of the rule).
pub(crate) async fn next_after(
    task: &task_pb::Task,
    occurrence: &OccurrenceRow,
    done: DateTime<Utc>,
) -> Result<(DueValue, Result<Next, NextError>), String> {
    let recurrence = task
        .recurrence
        .clone()
        .ok_or_else(|| format!("{} does not recur", task.name))?;
    let due = task
        .due
        .as_ref()
        .and_then(DueValue::from_proto)
        .ok_or_else(|| format!("recurring task {} has no valid due", task.name))?;
    // Skips the task may not show yet count as EXDATEs too.
    let mut exdates = exdates_of(task);
    exdates.extend(occurrence.skipped.iter().copied());
    let anchor = match PbAnchor::try_from(recurrence.anchor) {
        Ok(PbAnchor::Completion) => Anchor::Completion,
        _ => Anchor::Due,
    };
    let (used, wall_time) = (
        u64::try_from(occurrence.used).unwrap_or(1),
        occurrence.wall_time,
    );
    let current = due.clone();
    // Inside the series' transaction: a plain blocking task, not the bounded pool (whose
    // queue must not hold a transaction open).
    let next = tokio::task::spawn_blocking(move || {
        let position = SeriesPosition {
            rrule: &recurrence.rrule,
            due: &current,
            wall_time,
            anchor,
            exdates: &exdates,
            used,
        };
        next_occurrence(&position, done)
    })
    .await
    .map_err(|_| "the expansion failed".to_owned())?;
    Ok((due, next))
}

/// The exdates of a task's rule, as instants.
pub(crate) fn exdates_of(task: &task_pb::Task) -> Vec<DateTime<Utc>> {
    task.recurrence
        .iter()
        .flat_map(|r| r.exdates.iter().filter_map(instant))
        .collect()
}

/// Moves `series` on from its current task `task`, done at `done`: asks for the next
/// occurrence, or ends the series when the rule has none.
pub(crate) async fn move_on(
    tx: &mut PgConnection,
    outbox: &Outbox<'_>,
    series: &mut SeriesRow,
    task: &task_pb::Task,
    occurrence: &OccurrenceRow,
    done: DateTime<Utc>,
) -> Result<(), HandleError> {
    let id = TaskName::parse(&task.name)
        .map_err(|e| reject(format!("{}: {e}", echo(&task.name))))?
        .id();
    let (due, next) = next_after(task, occurrence, done).await.map_err(reject)?;
    let next = next.map_err(|error| reject(format!("{}: {error}", task.name)))?;
    match next {
        Next::Occurrence { due: next, used } => {
            let used = i64::try_from(used).unwrap_or(i64::MAX);
            // The next task carries the skips the current one may not show yet.
            let mut current = task.clone();
            if let Some(recurrence) = current.recurrence.as_mut() {
                for skipped in &occurrence.skipped {
                    let skipped = timestamp(*skipped);
                    if !recurrence.exdates.contains(&skipped) {
                        recurrence.exdates.push(skipped);
                    }
                }
            }
            let request = outbox
                .create_next(tx, series.id, &current, &due, &next)
                .await
                .map_err(database)?;
            let successor = Successor {
                due: &next,
                used,
                wall_time: occurrence.wall_time.unwrap_or_else(|| wall_time_of(&due)),
            };
            series::settle(tx, id, Some(successor), &request)
                .await
                .map_err(database)?;
        }
        Next::Ended(reason) => {
            outbox
                .end(tx, series, Ending::Rule(reason))
                .await
                .map_err(database)?;
            series::settle(tx, id, None, "ended")
                .await
                .map_err(database)?;
        }
    }
    Ok(())
}

/// Whether `task` is open.
pub(crate) fn is_open(task: &task_pb::Task) -> bool {
    task.state == State::Open as i32
}
