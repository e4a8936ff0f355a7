//! Validated task and tag values, their database rows, and conversions to the protobuf
//! resources.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use taskmesh_proto::google::r#type::Date;
use taskmesh_proto::names::{SeriesName, TagName, TaskName};
use taskmesh_proto::task::v1::{self as pb, due, recurrence, reminder};
use uuid::Uuid;

/// The user-settable fields of a task, validated (see `validate.rs`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TaskFields {
    pub(crate) title: String,
    pub(crate) description: String,
    /// 1 (none) to 5 (urgent), the `Priority` enum values.
    pub(crate) priority: i16,
    /// Tag display names, deduplicated case-insensitively, in input order.
    pub(crate) tags: Vec<String>,
    pub(crate) due: Option<DueValue>,
    pub(crate) reminders: Vec<StoredReminder>,
    pub(crate) recurrence: Option<RecurrenceValue>,
}

pub(crate) use taskmesh_domain::{DueKind, DueValue, now, timestamp};

/// A reminder as stored in the `reminders` jsonb column: exactly one trigger is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredReminder {
    pub(crate) id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) absolute_time: Option<DateTime<Utc>>,
    /// Seconds relative to the due (RFC 5545 `TRIGGER` duration), negative = before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) relative_seconds: Option<i64>,
}

/// A recurrence rule, validated.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RecurrenceValue {
    pub(crate) rrule: String,
    /// The `Recurrence.Anchor` value (1 due, 2 completion).
    pub(crate) anchor: i16,
    pub(crate) exdates: Vec<DateTime<Utc>>,
}

/// A `tasks` row with its tag names resolved (`FromRow` for the run-time built List).
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct TaskRow {
    pub(crate) id: Uuid,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) priority: i16,
    pub(crate) tag_names: Vec<String>,
    pub(crate) due_time: Option<DateTime<Utc>>,
    pub(crate) due_date: Option<NaiveDate>,
    pub(crate) due_time_zone: Option<String>,
    pub(crate) reminders: sqlx::types::Json<Vec<StoredReminder>>,
    pub(crate) rrule: Option<String>,
    pub(crate) recurrence_anchor: Option<i16>,
    pub(crate) exdates: Vec<DateTime<Utc>>,
    pub(crate) series_id: Option<Uuid>,
    pub(crate) previous_task_id: Option<Uuid>,
    pub(crate) state: i16,
    pub(crate) version: i64,
    pub(crate) create_time: DateTime<Utc>,
    pub(crate) update_time: DateTime<Utc>,
    pub(crate) complete_time: Option<DateTime<Utc>>,
}

/// The columns of [`TaskRow`] over alias `t` (tag names resolved through `tags`), written
/// once: `with_task_columns!(m!(args…))` expands to `m!(<plain>, <reminders>, <tag names>;
/// args…)`, the plain columns and the two expressions each caller names itself (the run-time
/// List with plain names, [`query_task!`] with the type and nullability overrides the checked
/// macros need).
macro_rules! with_task_columns {
    ($callback:ident!($($args:tt)*)) => {
        $callback!(
            "t.id, t.title, t.description, t.priority, t.due_time, t.due_date, \
             t.due_time_zone, t.rrule, t.recurrence_anchor, t.exdates, t.series_id, \
             t.previous_task_id, t.state, t.version, t.create_time, t.update_time, \
             t.complete_time",
            "t.reminders",
            "ARRAY(SELECT g.display_name FROM tags g WHERE g.id = ANY(t.tag_ids) \
             ORDER BY lower(g.display_name))";
            $($args)*
        )
    };
}

/// The columns of [`with_task_columns!`] as one SQL list with plain names.
macro_rules! task_columns_list {
    ($plain:literal, $reminders:literal, $tag_names:literal;) => {
        concat!(
            $plain,
            ", ",
            $reminders,
            " AS reminders, ",
            $tag_names,
            " AS tag_names"
        )
    };
}

/// The columns of [`TaskRow`] over alias `t`, for the run-time built List.
pub(crate) const TASK_COLUMNS: &str = with_task_columns!(task_columns_list!());

/// `sqlx::query_as!(TaskRow, …)` of a statement that yields task rows over alias `t`:
/// `$head`, the columns of [`with_task_columns!`] and `$tail` are joined into one SQL text
/// (sqlx's `+` of literals), checked at compile time like any `query_as!`. The reminders
/// column is decoded as its [`TaskRow`] type, and the tag names (an `ARRAY(…)`, which
/// PostgreSQL never returns NULL) as not null.
macro_rules! query_task {
    ($plain:literal, $reminders:literal, $tag_names:literal; $head:literal, $tail:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            $crate::model::TaskRow,
            $head + $plain + ", " + $reminders
                + r#" AS "reminders: sqlx::types::Json<Vec<crate::model::StoredReminder>>", "#
                + $tag_names + r#" AS "tag_names!""# + $tail
            $(, $arg)*
        )
    };
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        $crate::model::with_task_columns!(query_task!($head, $tail $(, $arg)*))
    };
}
pub(crate) use {query_task, with_task_columns};

/// A `tags` row.
#[derive(Clone, Debug)]
pub(crate) struct TagRow {
    pub(crate) id: Uuid,
    pub(crate) display_name: String,
    pub(crate) color: String,
    pub(crate) version: i64,
    pub(crate) create_time: DateTime<Utc>,
    pub(crate) update_time: DateTime<Utc>,
}

/// `sqlx::query_as!(TagRow, …)` of a statement that yields a tag row: `$head`, the columns
/// of [`TagRow`] and `$tail` are joined into one SQL text (sqlx's `+` of literals), checked
/// at compile time like any `query_as!`, with the column list written once.
macro_rules! query_tag {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::model::TagRow,
            $head + "id, display_name, color, version, create_time, update_time" + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use query_tag;

impl TaskRow {
    /// The protobuf resource.
    pub(crate) fn to_proto(&self) -> pb::Task {
        let due = match (&self.due_time_zone, self.due_time, self.due_date) {
            (Some(zone), Some(time), _) => Some(pb::Due {
                value: Some(due::Value::Time(timestamp(time))),
                time_zone: zone.clone(),
            }),
            (Some(zone), None, Some(date)) => Some(pb::Due {
                value: Some(due::Value::Date(proto_date(date))),
                time_zone: zone.clone(),
            }),
            _ => None,
        };
        let reminders = self
            .reminders
            .0
            .iter()
            .map(StoredReminder::to_proto)
            .collect();
        let recurrence = self.rrule.as_ref().map(|rrule| pb::Recurrence {
            rrule: rrule.clone(),
            anchor: i32::from(self.recurrence_anchor.unwrap_or(1)),
            exdates: self.exdates.iter().copied().map(timestamp).collect(),
            series: self
                .series_id
                .map(|id| SeriesName(id).to_string())
                .unwrap_or_default(),
            previous_task: self
                .previous_task_id
                .map(|id| TaskName(id).to_string())
                .unwrap_or_default(),
        });
        pb::Task {
            name: TaskName(self.id).to_string(),
            title: self.title.clone(),
            description: self.description.clone(),
            priority: i32::from(self.priority),
            tags: self.tag_names.clone(),
            due,
            reminders,
            recurrence,
            state: i32::from(self.state),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            complete_time: self.complete_time.map(timestamp),
            etag: self.version.to_string(),
            version: self.version,
        }
    }
}

impl StoredReminder {
    fn to_proto(&self) -> pb::Reminder {
        let trigger = match (self.absolute_time, self.relative_seconds) {
            (Some(time), _) => Some(reminder::Trigger::AbsoluteTime(timestamp(time))),
            (None, Some(seconds)) => {
                Some(reminder::Trigger::RelativeToDue(prost_types::Duration {
                    seconds,
                    nanos: 0,
                }))
            }
            (None, None) => None,
        };
        pb::Reminder {
            id: self.id.clone(),
            trigger,
        }
    }
}

impl TagRow {
    /// The protobuf resource.
    pub(crate) fn to_proto(&self) -> pb::Tag {
        pb::Tag {
            name: TagName(self.id).to_string(),
            display_name: self.display_name.clone(),
            color: self.color.clone(),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            etag: self.version.to_string(),
        }
    }
}

fn proto_date(date: NaiveDate) -> Date {
    use chrono::Datelike;
    Date {
        year: date.year(),
        month: i32::try_from(date.month()).unwrap_or(0),
        day: i32::try_from(date.day()).unwrap_or(0),
    }
}

/// `Recurrence.Anchor` as stored.
pub(crate) fn anchor_value(anchor: i32) -> i16 {
    match recurrence::Anchor::try_from(anchor) {
        Ok(recurrence::Anchor::Completion) => 2,
        _ => 1,
    }
}
