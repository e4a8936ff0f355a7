//! The `task-events` consumer (ARCHITECTURE.md invariant 2 and 6): keeps ReminderService's
//! view of each task and schedules, reschedules, cancels and restores its reminders.
//!
//! Ordering: every task event carries the task after the change with its `version` (+1 on
//! every change), so an event whose version is not above the stored one is a duplicate or
//! arrived late and changes nothing. A deletion is final: the task stays as a tombstone, and
//! later (late) events for it are ignored.
//!
//! Per reminder, on an event that shows the task:
//! - a new reminder is scheduled at its trigger time (RFC 5545 `TRIGGER`, resolved by
//!   [`taskmesh_domain::fire_time`]);
//! - a reminder whose trigger time changed (its offset or the due moved) is re-armed;
//! - completing or deleting the task cancels its waiting reminders; uncompleting restores
//!   them (to `FIRED` if they had fired, otherwise to `SCHEDULED` while their time is
//!   still ahead of the change);
//! - a trigger time that is already past when the change that set it happened does not
//!   fire: nothing is owed for a time set in the past (it shows as `CANCELLED`);
//! - reminders no longer on the task are removed.
//!
//! Overdue: a notice is owed once per due instant, when the due is still ahead of the change
//! that set it and the task is open; completing the task withdraws it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use taskmesh_domain::{DueKind, DueValue, fire_time};
use taskmesh_platform::{
    cloudevents::CloudEvent,
    consumer::{HandleError, Handler, database, decode, reject},
};
use taskmesh_proto::{
    events::v1 as ev,
    task::v1::{self as task_pb, task::State as TaskState},
};
use uuid::Uuid;

use crate::{model::state, scheduler::WAKE_CHANNEL};

/// Applies `task-events` for the consumer `taskmesh-reminder`.
#[derive(Clone, Debug, Default)]
pub struct TaskEventHandler;

/// The task an event shows, whether it was deleted, and its owner.
fn task_of(event: &CloudEvent) -> Result<Option<(task_pb::Task, bool, String)>, HandleError> {
    let (context, task, deleted) = match event.event_type.as_str() {
        "dev.taskmesh.task.created.v1" => {
            let e: ev::TaskCreated = decode(&event.data)?;
            (e.context, e.task, false)
        }
        "dev.taskmesh.task.updated.v1" => {
            let e: ev::TaskUpdated = decode(&event.data)?;
            (e.context, e.task, false)
        }
        "dev.taskmesh.task.completed.v1" => {
            let e: ev::TaskCompleted = decode(&event.data)?;
            (e.context, e.task, false)
        }
        "dev.taskmesh.task.uncompleted.v1" => {
            let e: ev::TaskUncompleted = decode(&event.data)?;
            (e.context, e.task, false)
        }
        "dev.taskmesh.task.deleted.v1" => {
            let e: ev::TaskDeleted = decode(&event.data)?;
            (e.context, e.task, true)
        }
        // Tag events change no reminder.
        _ => return Ok(None),
    };
    let user = context
        .map(|c| c.user)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| reject("event without an owner"))?;
    let task = task.ok_or_else(|| reject("event without a task"))?;
    Ok(Some((task, deleted, user)))
}

/// How a due is shown in a notification, e.g. `2026-11-23 09:00 (Europe/Berlin)` or
/// `2026-11-23 (Europe/Berlin)` for a date-only due.
pub(crate) fn due_label(due: &DueValue) -> String {
    match due.kind {
        DueKind::Time(time) => format!(
            "{} ({})",
            time.with_timezone(&due.time_zone).format("%Y-%m-%d %H:%M"),
            due.time_zone.name()
        ),
        DueKind::Date(date) => format!("{date} ({})", due.time_zone.name()),
    }
}

impl Handler for TaskEventHandler {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandleError> {
        let Some((task, deleted, user)) = task_of(event)? else {
            return Ok(());
        };
        let id = task
            .name
            .strip_prefix("tasks/")
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| reject(format!("{:?} is not tasks/{{uuid}}", task.name)))?;
        apply(tx, &user, id, &task, deleted, event.time)
            .await
            .map_err(database)
    }
}

/// A reminder row as the event finds it.
struct Existing {
    trigger_time: DateTime<Utc>,
    state: i16,
    fired_time: Option<DateTime<Utc>>,
}

/// Applies one task event, as of `time` (the CloudEvent time of the change).
async fn apply(
    tx: &mut PgConnection,
    user: &str,
    id: Uuid,
    task: &task_pb::Task,
    deleted: bool,
    time: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let stored = sqlx::query(
        "SELECT user_id, version, deleted, overdue_notice_for FROM tasks WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let mut notice_for: Option<DateTime<Utc>> = None;
    if let Some(row) = &stored {
        let owner: String = row.try_get("user_id")?;
        let version: i64 = row.try_get("version")?;
        if owner != user || row.try_get::<bool, _>("deleted")? {
            return Ok(());
        }
        if !deleted && version >= task.version {
            return Ok(());
        }
        notice_for = row.try_get("overdue_notice_for")?;
    }
    let due = task.due.as_ref().and_then(DueValue::from_proto);
    let due_at = due.as_ref().map(DueValue::due_at);
    let open = !deleted && task.state == TaskState::Open as i32;
    let overdue_at = due_at.filter(|at| open && *at > time && notice_for != Some(*at));
    sqlx::query(
        "INSERT INTO tasks (id, user_id, title, version, is_open, deleted, due_at, due_label, \
         overdue_at, update_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET title = $3, version = GREATEST(tasks.version, $4), \
         is_open = $5, deleted = $6, due_at = $7, due_label = $8, overdue_at = $9, update_time = $10",
    )
    .bind(id)
    .bind(user)
    .bind(&task.title)
    .bind(task.version)
    .bind(open)
    .bind(deleted)
    .bind(due_at)
    .bind(due.as_ref().map(due_label).unwrap_or_default())
    .bind(overdue_at)
    .bind(time)
    .execute(&mut *tx)
    .await?;

    let existing: HashMap<String, Existing> = sqlx::query(
        "SELECT reminder_id, trigger_time, state, fired_time FROM reminders WHERE task_id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("reminder_id")?,
            Existing {
                trigger_time: r.try_get("trigger_time")?,
                state: r.try_get("state")?,
                fired_time: r.try_get("fired_time")?,
            },
        ))
    })
    .collect::<Result<_, sqlx::Error>>()?;

    let mut kept: Vec<&str> = Vec::new();
    let mut earliest: Option<DateTime<Utc>> = overdue_at;
    for reminder in if deleted {
        &[][..]
    } else {
        &task.reminders[..]
    } {
        let Some(trigger) = &reminder.trigger else {
            continue;
        };
        let Some(trigger_time) = fire_time(trigger, due.as_ref()) else {
            continue;
        };
        kept.push(&reminder.id);
        let ahead = trigger_time > time;
        let (absolute, relative) = match trigger {
            task_pb::reminder::Trigger::AbsoluteTime(_) => (Some(trigger_time), None),
            task_pb::reminder::Trigger::RelativeToDue(offset) => (None, Some(offset.seconds)),
        };
        let current = existing.get(&reminder.id);
        // New, or its time moved: (re-)armed.
        let rearm = current.is_none_or(|c| c.trigger_time != trigger_time);
        let target = match current {
            _ if rearm => Some(if open && ahead {
                state::SCHEDULED
            } else {
                state::CANCELLED
            }),
            None => None,
            Some(c) => match (c.state, open) {
                (state::SCHEDULED | state::SNOOZED, false) => Some(state::CANCELLED),
                (state::CANCELLED, true) if c.fired_time.is_some() => Some(state::FIRED),
                (state::CANCELLED, true) if ahead => Some(state::SCHEDULED),
                _ => None,
            },
        };
        let Some(target) = target else {
            continue;
        };
        if target == state::SCHEDULED {
            earliest = Some(earliest.map_or(trigger_time, |e| e.min(trigger_time)));
        }
        sqlx::query(
            "INSERT INTO reminders (task_id, reminder_id, user_id, absolute_time, relative_seconds, \
             trigger_time, fire_at, state) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
             ON CONFLICT (task_id, reminder_id) DO UPDATE SET absolute_time = $4, \
             relative_seconds = $5, trigger_time = $6, state = $7, \
             fire_at = CASE WHEN $8 THEN $6 ELSE reminders.fire_at END, \
             fired_time = CASE WHEN $8 THEN NULL ELSE reminders.fired_time END, \
             lateness_us = CASE WHEN $8 THEN NULL ELSE reminders.lateness_us END",
        )
        .bind(id)
        .bind(&reminder.id)
        .bind(user)
        .bind(absolute)
        .bind(relative)
        .bind(trigger_time)
        .bind(target)
        .bind(rearm)
        .execute(&mut *tx)
        .await?;
    }
    if !open && !deleted {
        sqlx::query("UPDATE reminders SET state = $2 WHERE task_id = $1 AND state IN ($3, $4)")
            .bind(id)
            .bind(state::CANCELLED)
            .bind(state::SCHEDULED)
            .bind(state::SNOOZED)
            .execute(&mut *tx)
            .await?;
    }
    // Reminders no longer on the task (all of them once it is deleted) go.
    sqlx::query("DELETE FROM reminders WHERE task_id = $1 AND NOT (reminder_id = ANY($2))")
        .bind(id)
        .bind(&kept)
        .execute(&mut *tx)
        .await?;
    if let Some(at) = earliest {
        // Wake the schedulers (they may sleep past this time); delivered on commit.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WAKE_CHANNEL)
            .bind(at.to_rfc3339())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
