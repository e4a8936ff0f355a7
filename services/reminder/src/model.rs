//! Rows of the `reminder` schema and their protobuf resources.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use taskmesh_domain::timestamp;
use taskmesh_proto::names::{NotificationName, ReminderName, TaskName};
use taskmesh_proto::reminder::v1::{self as pb, notification::Kind};
use uuid::Uuid;

/// Reminder states as stored (`ScheduledReminder.State` values).
pub(crate) mod state {
    pub(crate) const SCHEDULED: i16 = 1;
    pub(crate) const FIRED: i16 = 2;
    pub(crate) const SNOOZED: i16 = 3;
    pub(crate) const DISMISSED: i16 = 4;
    pub(crate) const CANCELLED: i16 = 5;
}

/// Microseconds as a protobuf duration.
pub(crate) fn micros(us: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: us.div_euclid(1_000_000),
        nanos: i32::try_from(us.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// The columns of [`ReminderRow`] for `SELECT` from `reminders r JOIN tasks t`, written once:
/// `with_reminder_columns!(m!(args…))` expands to `m!("<columns>"; args…)`.
macro_rules! with_reminder_columns {
    ($($callback:ident)::+!($($args:tt)*)) => {
        $($callback)::+!(
            "r.task_id, r.reminder_id, r.user_id, t.title, t.due_label, r.fire_at, r.state, \
             r.fired_time, r.lateness_us";
            $($args)*
        )
    };
}

/// The column literal handed over by [`with_reminder_columns!`], as it is.
macro_rules! columns_literal {
    ($columns:literal;) => {
        $columns
    };
}

/// Columns of [`ReminderRow`], for the run-time built ListReminders query.
pub(crate) const REMINDER_COLUMNS: &str = with_reminder_columns!(columns_literal!());

/// `sqlx::query_as!(ReminderRow, …)` of a statement that selects reminder rows from
/// `reminders r JOIN tasks t`: `$head`, the columns of [`ReminderRow`] (from
/// [`with_reminder_columns!`]) and `$tail` are joined into one SQL text (sqlx's `+` of
/// literals), checked at compile time like any `query_as!`, with the column list written once.
macro_rules! query_reminder {
    ($columns:literal; $head:literal, $tail:literal $(, $arg:expr)*) => {
        sqlx::query_as!($crate::model::ReminderRow, $head + $columns + $tail $(, $arg)*)
    };
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        $crate::model::with_reminder_columns!(
            $crate::model::query_reminder!($head, $tail $(, $arg)*)
        )
    };
}
pub(crate) use {query_reminder, with_reminder_columns};

/// A reminder with its task's title.
#[derive(Clone, Debug, FromRow)]
pub(crate) struct ReminderRow {
    pub(crate) task_id: Uuid,
    pub(crate) reminder_id: String,
    pub(crate) user_id: String,
    pub(crate) title: String,
    pub(crate) due_label: String,
    pub(crate) fire_at: DateTime<Utc>,
    pub(crate) state: i16,
    pub(crate) fired_time: Option<DateTime<Utc>>,
    pub(crate) lateness_us: Option<i64>,
}

impl ReminderRow {
    /// The protobuf resource.
    pub(crate) fn to_proto(&self) -> pb::ScheduledReminder {
        pb::ScheduledReminder {
            name: ReminderName::new(self.task_id, &self.reminder_id).to_string(),
            task: TaskName(self.task_id).to_string(),
            task_title: self.title.clone(),
            fire_time: Some(timestamp(self.fire_at)),
            state: i32::from(self.state),
            fired_time: self.fired_time.map(timestamp),
            lateness: self.lateness_us.map(micros),
        }
    }
}

/// Columns of [`NotificationRow`].
pub(crate) const NOTIFICATION_COLUMNS: &str =
    "id, kind, task_id, reminder_id, title, body, create_time, read_time, lateness_us";

/// A notification.
#[derive(Clone, Debug, FromRow)]
pub(crate) struct NotificationRow {
    pub(crate) id: Uuid,
    pub(crate) kind: i16,
    pub(crate) task_id: Uuid,
    pub(crate) reminder_id: String,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) create_time: DateTime<Utc>,
    pub(crate) read_time: Option<DateTime<Utc>>,
    pub(crate) lateness_us: i64,
}

impl NotificationRow {
    /// The protobuf resource.
    pub(crate) fn to_proto(&self) -> pb::Notification {
        pb::Notification {
            name: NotificationName(self.id).to_string(),
            kind: i32::from(self.kind),
            task: TaskName(self.task_id).to_string(),
            reminder: if self.reminder_id.is_empty() {
                String::new()
            } else {
                ReminderName::new(self.task_id, &self.reminder_id).to_string()
            },
            title: self.title.clone(),
            body: self.body.clone(),
            create_time: Some(timestamp(self.create_time)),
            read_time: self.read_time.map(timestamp),
            lateness: Some(micros(self.lateness_us)),
        }
    }
}

/// Stored kind values.
pub(crate) const KIND_REMINDER: i16 = Kind::Reminder as i16;
/// Stored kind values.
pub(crate) const KIND_OVERDUE: i16 = Kind::Overdue as i16;

#[cfg(test)]
mod tests {
    use taskmesh_proto::reminder::v1::scheduled_reminder::State;

    use super::*;

    #[test]
    fn micros_are_split_into_seconds_and_nanos() {
        assert_eq!(
            micros(1_500_000),
            prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        for (stored, wire) in [
            (state::SCHEDULED, State::Scheduled),
            (state::FIRED, State::Fired),
            (state::SNOOZED, State::Snoozed),
            (state::DISMISSED, State::Dismissed),
            (state::CANCELLED, State::Cancelled),
        ] {
            assert_eq!(i32::from(stored), wire as i32);
        }
    }
}
