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
//!
//! This module holds the handler and the rows; the rest is in:
//! - `batch`: one batch read, applied and written back in a few statements.
//! - `rules`: one change applied to a task's rows by the rules above, without I/O.

mod batch;
mod rules;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use taskmesh_domain::{DueKind, DueValue};
use taskmesh_platform::{
    cloudevents::CloudEvent,
    consumer::{HandleError, Handler, database, decode, reject},
    grpc::echo,
};
use taskmesh_proto::{catalogue::TaskEvents, names::TaskName, task::v1 as task_pb};
use uuid::Uuid;

use batch::apply_all;

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
