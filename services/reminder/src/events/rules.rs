//! One task change applied to the task's row and its reminders, in memory: the scheduling
//! rules of the consumer's module docs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use taskmesh_domain::{DueValue, fire_time};
use taskmesh_proto::task::v1::{self as task_pb, task::State as TaskState};

use super::{ReminderRow, TaskChange, TaskRow, due_label};
use crate::model::state;

/// What applying one change did: the task's new row (`None`: the event is old news) and the
/// earliest time a scheduler must wake for.
pub(super) struct Applied {
    pub(super) row: Option<TaskRow>,
    pub(super) wake: Option<DateTime<Utc>>,
}

/// Applies `change` to the task's `stored` row and its `reminders` (changed in place).
pub(super) fn apply(
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
