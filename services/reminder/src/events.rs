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
    grpc::echo,
};
use taskmesh_proto::{
    catalogue::TaskEvents,
    names::TaskName,
    task::v1::{self as task_pb, task::State as TaskState},
};
use uuid::Uuid;

use crate::{model::state, scheduler::WAKE_CHANNEL};

/// Applies `task-events` for the consumer `taskmesh-reminder`.
#[derive(Clone, Debug, Default)]
pub struct TaskEventHandler;

/// The task an event shows, whether it was deleted, and its owner.
fn task_of(event: &CloudEvent) -> Result<Option<(task_pb::Task, bool, String)>, HandleError> {
    let (context, task, deleted) = match decode::<TaskEvents>(event)? {
        TaskEvents::TaskCreated(e) => (e.context, e.task, false),
        TaskEvents::TaskUpdated(e) => (e.context, e.task, false),
        TaskEvents::TaskCompleted(e) => (e.context, e.task, false),
        TaskEvents::TaskUncompleted(e) => (e.context, e.task, false),
        TaskEvents::TaskDeleted(e) => (e.context, e.task, true),
        // Tag events change no reminder (a rename shows in the tasks' own `task.updated`).
        TaskEvents::TagCreated(_) | TaskEvents::TagUpdated(_) | TaskEvents::TagDeleted(_) => {
            return Ok(None);
        }
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
        self.handle_batch(tx, &[event]).await.map_err(|(_, e)| e)
    }

    /// Reads the batch's tasks and their reminders (locked, in id order), applies every event
    /// in order to that state here, then writes what changed: at most six statements whatever
    /// the batch's size.
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[&CloudEvent],
    ) -> Result<(), (usize, HandleError)> {
        let mut changes = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let Some((task, deleted, user)) = task_of(event).map_err(|e| (i, e))? else {
                continue;
            };
            let id = TaskName::parse(&task.name)
                .map_err(|e| (i, reject(format!("{}: {e}", echo(&task.name)))))?
                .id();
            changes.push(TaskChange {
                id,
                user,
                task,
                deleted,
                time: event.time,
            });
        }
        apply_all(tx, &changes).await.map_err(|e| (0, database(e)))
    }
}

/// One event's news of a task.
struct TaskChange {
    id: Uuid,
    user: String,
    task: task_pb::Task,
    deleted: bool,
    /// When the change happened (the event's time, UTC).
    time: DateTime<Utc>,
}

/// A `tasks` row as this consumer keeps it.
#[derive(Clone, Debug)]
struct TaskRow {
    user: String,
    title: String,
    version: i64,
    open: bool,
    deleted: bool,
    due_at: Option<DateTime<Utc>>,
    due_label: String,
    overdue_at: Option<DateTime<Utc>>,
    /// Set by the scheduler; never written here.
    overdue_notice_for: Option<DateTime<Utc>>,
    update_time: DateTime<Utc>,
    /// Changed by this batch (to be written).
    dirty: bool,
}

/// A `reminders` row.
#[derive(Clone, Debug)]
struct ReminderRow {
    user: String,
    absolute: Option<DateTime<Utc>>,
    relative: Option<i64>,
    trigger_time: DateTime<Utc>,
    fire_at: DateTime<Utc>,
    state: i16,
    fired_time: Option<DateTime<Utc>>,
    lateness_us: Option<i64>,
    /// Changed by this batch (to be written).
    dirty: bool,
}

/// Applies `changes` in order: reads the state they touch, applies each to it here (the
/// rules of the module docs), and writes the rows that changed.
async fn apply_all(tx: &mut PgConnection, changes: &[TaskChange]) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<Uuid> = changes.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Row locks in id order: concurrent writers of the same tasks cannot deadlock.
    let mut tasks: HashMap<Uuid, TaskRow> = sqlx::query(
        "SELECT id, user_id, title, version, is_open, deleted, due_at, due_label, overdue_at, \
         overdue_notice_for, update_time FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("id")?,
            TaskRow {
                user: r.try_get("user_id")?,
                title: r.try_get("title")?,
                version: r.try_get("version")?,
                open: r.try_get("is_open")?,
                deleted: r.try_get("deleted")?,
                due_at: r.try_get("due_at")?,
                due_label: r.try_get("due_label")?,
                overdue_at: r.try_get("overdue_at")?,
                overdue_notice_for: r.try_get("overdue_notice_for")?,
                update_time: r.try_get("update_time")?,
                dirty: false,
            },
        ))
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let mut reminders: HashMap<Uuid, HashMap<String, ReminderRow>> = HashMap::new();
    for r in sqlx::query(
        "SELECT task_id, reminder_id, user_id, absolute_time, relative_seconds, trigger_time, \
         fire_at, state, fired_time, lateness_us FROM reminders WHERE task_id = ANY($1) \
         ORDER BY task_id, reminder_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    {
        reminders.entry(r.try_get("task_id")?).or_default().insert(
            r.try_get("reminder_id")?,
            ReminderRow {
                user: r.try_get("user_id")?,
                absolute: r.try_get("absolute_time")?,
                relative: r.try_get("relative_seconds")?,
                trigger_time: r.try_get("trigger_time")?,
                fire_at: r.try_get("fire_at")?,
                state: r.try_get("state")?,
                fired_time: r.try_get("fired_time")?,
                lateness_us: r.try_get("lateness_us")?,
                dirty: false,
            },
        );
    }
    // Every reminder row there was, to tell which ones go.
    let before: Vec<(Uuid, String)> = reminders
        .iter()
        .flat_map(|(task, rows)| rows.keys().map(move |r| (*task, r.clone())))
        .collect();

    let mut earliest: Option<DateTime<Utc>> = None;
    for change in changes {
        let stored = tasks.get(&change.id);
        let scheduled = apply(stored, reminders.entry(change.id).or_default(), change);
        if let Some(row) = scheduled.row {
            tasks.insert(change.id, row);
        }
        if let Some(at) = scheduled.wake {
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }

    write_tasks(tx, &tasks).await?;
    let gone: Vec<&(Uuid, String)> = before
        .iter()
        .filter(|(task, id)| {
            !reminders
                .get(task)
                .is_some_and(|rows| rows.contains_key(id))
        })
        .collect();
    let mut gone = gone;
    gone.sort_unstable();
    if !gone.is_empty() {
        sqlx::query(
            "DELETE FROM reminders r USING unnest($1::uuid[], $2::text[]) AS g(task_id, reminder_id) \
             WHERE r.task_id = g.task_id AND r.reminder_id = g.reminder_id",
        )
        .bind(gone.iter().map(|g| g.0).collect::<Vec<_>>())
        .bind(gone.iter().map(|g| g.1.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    write_reminders(tx, &reminders).await?;
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

/// What applying one change did: the task's new row (`None`: the event is old news) and the
/// earliest time a scheduler must wake for.
struct Applied {
    row: Option<TaskRow>,
    wake: Option<DateTime<Utc>>,
}

/// Applies `change` to the task's `stored` row and its `reminders` (changed in place).
fn apply(
    stored: Option<&TaskRow>,
    reminders: &mut HashMap<String, ReminderRow>,
    change: &TaskChange,
) -> Applied {
    let (task, deleted, user, time) = (&change.task, change.deleted, &change.user, change.time);
    let old_news = Applied {
        row: None,
        wake: None,
    };
    let mut notice_for = None;
    if let Some(row) = stored {
        if row.user != *user || row.deleted {
            return old_news;
        }
        if !deleted && row.version >= task.version {
            return old_news;
        }
        notice_for = row.overdue_notice_for;
    }
    let due = task.due.as_ref().and_then(DueValue::from_proto);
    let due_at = due.as_ref().map(DueValue::due_at);
    let open = !deleted && task.state == TaskState::Open as i32;
    let overdue_at = due_at.filter(|at| open && *at > time && notice_for != Some(*at));
    let row = TaskRow {
        user: user.clone(),
        title: task.title.clone(),
        version: stored.map_or(task.version, |s| s.version.max(task.version)),
        open,
        deleted,
        due_at,
        due_label: due.as_ref().map(due_label).unwrap_or_default(),
        overdue_at,
        overdue_notice_for: notice_for,
        update_time: time,
        dirty: true,
    };

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
        let current = reminders.get(&reminder.id);
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
        let row = reminders
            .entry(reminder.id.clone())
            .or_insert_with(|| ReminderRow {
                user: user.clone(),
                absolute,
                relative,
                trigger_time,
                fire_at: trigger_time,
                state: target,
                fired_time: None,
                lateness_us: None,
                dirty: true,
            });
        row.absolute = absolute;
        row.relative = relative;
        row.trigger_time = trigger_time;
        row.state = target;
        if rearm {
            row.fire_at = trigger_time;
            row.fired_time = None;
            row.lateness_us = None;
        }
        row.dirty = true;
    }
    if !open && !deleted {
        for row in reminders.values_mut() {
            if matches!(row.state, state::SCHEDULED | state::SNOOZED) {
                row.state = state::CANCELLED;
                row.dirty = true;
            }
        }
    }
    // Reminders no longer on the task (all of them once it is deleted) go.
    reminders.retain(|id, _| kept.contains(&id.as_str()));
    Applied {
        row: Some(row),
        wake: earliest,
    }
}

/// Writes the task rows this batch changed, in one statement (the scheduler's
/// `overdue_notice_for` is left as stored).
async fn write_tasks(
    tx: &mut PgConnection,
    tasks: &HashMap<Uuid, TaskRow>,
) -> Result<(), sqlx::Error> {
    // In key order, as every writer of these rows takes them: no lock-order deadlocks.
    let mut dirty: Vec<(&Uuid, &TaskRow)> = tasks.iter().filter(|(_, t)| t.dirty).collect();
    dirty.sort_unstable_by_key(|(id, _)| **id);
    if dirty.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO tasks (id, user_id, title, version, is_open, deleted, due_at, due_label, \
         overdue_at, update_time) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], \
         $4::bigint[], $5::boolean[], $6::boolean[], $7::timestamptz[], $8::text[], \
         $9::timestamptz[], $10::timestamptz[]) \
         ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, \
         version = GREATEST(tasks.version, EXCLUDED.version), \
         is_open = EXCLUDED.is_open, deleted = EXCLUDED.deleted, due_at = EXCLUDED.due_at, \
         due_label = EXCLUDED.due_label, overdue_at = EXCLUDED.overdue_at, \
         update_time = EXCLUDED.update_time",
    )
    .bind(dirty.iter().map(|(id, _)| **id).collect::<Vec<_>>())
    .bind(
        dirty
            .iter()
            .map(|(_, t)| t.user.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        dirty
            .iter()
            .map(|(_, t)| t.title.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(dirty.iter().map(|(_, t)| t.version).collect::<Vec<_>>())
    .bind(dirty.iter().map(|(_, t)| t.open).collect::<Vec<_>>())
    .bind(dirty.iter().map(|(_, t)| t.deleted).collect::<Vec<_>>())
    .bind(dirty.iter().map(|(_, t)| t.due_at).collect::<Vec<_>>())
    .bind(
        dirty
            .iter()
            .map(|(_, t)| t.due_label.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(dirty.iter().map(|(_, t)| t.overdue_at).collect::<Vec<_>>())
    .bind(dirty.iter().map(|(_, t)| t.update_time).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes the reminder rows this batch changed, in one statement.
async fn write_reminders(
    tx: &mut PgConnection,
    reminders: &HashMap<Uuid, HashMap<String, ReminderRow>>,
) -> Result<(), sqlx::Error> {
    let mut dirty: Vec<(&Uuid, &String, &ReminderRow)> = reminders
        .iter()
        .flat_map(|(task, rows)| rows.iter().map(move |(id, r)| (task, id, r)))
        .filter(|(_, _, r)| r.dirty)
        .collect();
    dirty.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    if dirty.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO reminders (task_id, reminder_id, user_id, absolute_time, relative_seconds, \
         trigger_time, fire_at, state, fired_time, lateness_us) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
         $5::bigint[], $6::timestamptz[], $7::timestamptz[], $8::smallint[], \
         $9::timestamptz[], $10::bigint[]) \
         ON CONFLICT (task_id, reminder_id) DO UPDATE SET absolute_time = EXCLUDED.absolute_time, \
         relative_seconds = EXCLUDED.relative_seconds, trigger_time = EXCLUDED.trigger_time, \
         fire_at = EXCLUDED.fire_at, state = EXCLUDED.state, fired_time = EXCLUDED.fired_time, \
         lateness_us = EXCLUDED.lateness_us",
    )
    .bind(dirty.iter().map(|(t, _, _)| **t).collect::<Vec<_>>())
    .bind(
        dirty
            .iter()
            .map(|(_, id, _)| id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        dirty
            .iter()
            .map(|(_, _, r)| r.user.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(dirty.iter().map(|(_, _, r)| r.absolute).collect::<Vec<_>>())
    .bind(dirty.iter().map(|(_, _, r)| r.relative).collect::<Vec<_>>())
    .bind(
        dirty
            .iter()
            .map(|(_, _, r)| r.trigger_time)
            .collect::<Vec<_>>(),
    )
    .bind(dirty.iter().map(|(_, _, r)| r.fire_at).collect::<Vec<_>>())
    .bind(dirty.iter().map(|(_, _, r)| r.state).collect::<Vec<_>>())
    .bind(
        dirty
            .iter()
            .map(|(_, _, r)| r.fired_time)
            .collect::<Vec<_>>(),
    )
    .bind(
        dirty
            .iter()
            .map(|(_, _, r)| r.lateness_us)
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
