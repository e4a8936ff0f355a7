//! What the tools return: JSON shapes made for a model (plain strings for enums, RFC 3339
//! instants, `YYYY-MM-DD` dates, resource names as ids), each with a JSON Schema (the tool's
//! `outputSchema`), converted from the services' protobuf messages.

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use taskmesh_proto::{
    audit::v1 as audit,
    reminder::v1 as reminder,
    task::v1::{self as task, due, reminder::Trigger},
};

/// A task as the tools show it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct TaskView {
    /// The task's id, `tasks/{uuid}`: pass it to the other tools.
    pub(crate) id: String,
    /// Title.
    pub(crate) title: String,
    /// Notes; empty when none.
    pub(crate) description: String,
    /// How urgent it is.
    pub(crate) priority: PriorityName,
    /// Tag names, alphabetical.
    pub(crate) tags: Vec<String>,
    /// When it is due; null when it has no due date.
    pub(crate) due: Option<DueView>,
    /// Its reminders.
    pub(crate) reminders: Vec<ReminderView>,
    /// How it repeats; null when it does not.
    pub(crate) recurrence: Option<RecurrenceView>,
    /// `open` or `completed`.
    pub(crate) state: StateName,
    /// When it was created (RFC 3339, UTC).
    pub(crate) create_time: String,
    /// When it last changed (RFC 3339, UTC).
    pub(crate) update_time: String,
    /// When it was completed (RFC 3339, UTC); null while open.
    pub(crate) complete_time: Option<String>,
    /// Version tag: pass it back as `etag` to change the task only if nobody changed it since.
    pub(crate) etag: String,
    /// 1 after creation, +1 on every change.
    pub(crate) version: i64,
}

/// A priority, lowest to highest.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PriorityName {
    /// No particular priority.
    None,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

impl PriorityName {
    /// The protobuf value.
    pub(crate) fn proto(self) -> task::Priority {
        match self {
            Self::None => task::Priority::None,
            Self::Low => task::Priority::Low,
            Self::Medium => task::Priority::Medium,
            Self::High => task::Priority::High,
            Self::Urgent => task::Priority::Urgent,
        }
    }

    /// The AIP-160 filter literal (`priority >= HIGH`).
    pub(crate) fn filter_literal(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
            Self::Urgent => "URGENT",
        }
    }

    fn of(priority: i32) -> Self {
        match task::Priority::try_from(priority) {
            Ok(task::Priority::Low) => Self::Low,
            Ok(task::Priority::Medium) => Self::Medium,
            Ok(task::Priority::High) => Self::High,
            Ok(task::Priority::Urgent) => Self::Urgent,
            _ => Self::None,
        }
    }
}

/// Whether a task is done.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StateName {
    /// Not done yet.
    Open,
    /// Done.
    Completed,
}

/// When a task is due: an instant or a whole day, in the zone the user thinks in.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct DueView {
    /// The due instant (RFC 3339, UTC); null for a date-only due.
    #[schemars(extend("format" = "date-time"))]
    pub(crate) time: Option<String>,
    /// The due day (`YYYY-MM-DD`); null when due at an instant.
    #[schemars(extend("format" = "date"))]
    pub(crate) date: Option<String>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub(crate) time_zone: String,
}

/// One reminder of a task.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReminderView {
    /// Its id within the task; the reminder's own id is `{task id}/reminders/{id}`.
    pub(crate) id: String,
    /// When it fires, for a reminder at a fixed instant (RFC 3339, UTC); else null.
    pub(crate) at: Option<String>,
    /// Minutes before the due time it fires (negative: after); null for a fixed instant.
    pub(crate) minutes_before_due: Option<i64>,
}

/// How a task repeats (RFC 5545 `RRULE`, from the due date).
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RecurrenceView {
    /// The RFC 5545 rule, e.g. `FREQ=WEEKLY;BYDAY=MO`.
    pub(crate) rrule: String,
    /// `due`: the next occurrence follows the rule from the due date; `completion`: from
    /// when the task is completed.
    pub(crate) anchor: AnchorName,
    /// Skipped occurrences (RFC 3339, UTC).
    pub(crate) exdates: Vec<String>,
    /// The series the occurrences share, `series/{uuid}`.
    pub(crate) series: String,
}

/// What a recurring task's next occurrence is computed from.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AnchorName {
    /// The rule, from the due date.
    Due,
    /// The completion date (Todoist's "every!").
    Completion,
}

/// An RFC 3339 UTC rendering of a protobuf timestamp.
pub(crate) fn rfc3339(timestamp: &prost_types::Timestamp) -> String {
    let nanos = u32::try_from(timestamp.nanos).unwrap_or(0);
    DateTime::<Utc>::from_timestamp(timestamp.seconds, nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn rfc3339_opt(timestamp: Option<&prost_types::Timestamp>) -> Option<String> {
    timestamp.map(rfc3339)
}

impl From<task::Task> for TaskView {
    fn from(t: task::Task) -> Self {
        let state = if t.state == task::task::State::Completed as i32 {
            StateName::Completed
        } else {
            StateName::Open
        };
        Self {
            priority: PriorityName::of(t.priority),
            due: t.due.map(|d| DueView {
                time: match &d.value {
                    Some(due::Value::Time(time)) => Some(rfc3339(time)),
                    _ => None,
                },
                date: match &d.value {
                    Some(due::Value::Date(date)) => Some(format!(
                        "{:04}-{:02}-{:02}",
                        date.year, date.month, date.day
                    )),
                    _ => None,
                },
                time_zone: d.time_zone,
            }),
            reminders: t
                .reminders
                .into_iter()
                .map(|r| ReminderView {
                    id: r.id,
                    at: match &r.trigger {
                        Some(Trigger::AbsoluteTime(at)) => Some(rfc3339(at)),
                        _ => None,
                    },
                    minutes_before_due: match &r.trigger {
                        Some(Trigger::RelativeToDue(offset)) => Some(-offset.seconds / 60),
                        _ => None,
                    },
                })
                .collect(),
            recurrence: t.recurrence.map(|r| RecurrenceView {
                anchor: if r.anchor == task::recurrence::Anchor::Completion as i32 {
                    AnchorName::Completion
                } else {
                    AnchorName::Due
                },
                exdates: r.exdates.iter().map(rfc3339).collect(),
                rrule: r.rrule,
                series: r.series,
            }),
            state,
            create_time: rfc3339_opt(t.create_time.as_ref()).unwrap_or_default(),
            update_time: rfc3339_opt(t.update_time.as_ref()).unwrap_or_default(),
            complete_time: rfc3339_opt(t.complete_time.as_ref()),
            id: t.name,
            title: t.title,
            description: t.description,
            tags: t.tags,
            etag: t.etag,
            version: t.version,
        }
    }
}

/// A tag.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct TagView {
    /// The text put on tasks.
    pub(crate) display_name: String,
    /// Colour as `#rrggbb`; empty for the default.
    pub(crate) color: String,
    /// The tag's id, `tags/{uuid}`.
    pub(crate) name: String,
}

impl From<task::Tag> for TagView {
    fn from(t: task::Tag) -> Self {
        Self {
            display_name: t.display_name,
            color: t.color,
            name: t.name,
        }
    }
}

/// A reminder as ReminderService schedules it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ScheduledReminderView {
    /// The reminder's id, `tasks/{uuid}/reminders/{id}`: pass it to `snooze_reminder` or
    /// `dismiss_reminder`.
    pub(crate) id: String,
    /// Its task's id, `tasks/{uuid}`.
    pub(crate) task_id: String,
    /// Its task's title.
    pub(crate) task_title: String,
    /// When it fires (RFC 3339, UTC); after a snooze, the snoozed time.
    pub(crate) fire_time: Option<String>,
    /// `scheduled`, `fired`, `snoozed`, `dismissed` or `cancelled` (its task was completed
    /// or deleted).
    pub(crate) state: String,
}

impl From<reminder::ScheduledReminder> for ScheduledReminderView {
    fn from(r: reminder::ScheduledReminder) -> Self {
        use reminder::scheduled_reminder::State;
        let state = match State::try_from(r.state) {
            Ok(State::Scheduled) => "scheduled",
            Ok(State::Fired) => "fired",
            Ok(State::Snoozed) => "snoozed",
            Ok(State::Dismissed) => "dismissed",
            Ok(State::Cancelled) => "cancelled",
            _ => "unknown",
        };
        Self {
            id: r.name,
            task_id: r.task,
            task_title: r.task_title,
            fire_time: rfc3339_opt(r.fire_time.as_ref()),
            state: state.to_owned(),
        }
    }
}

/// An in-app notification.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct NotificationView {
    /// Its id, `notifications/{uuid}`.
    pub(crate) id: String,
    /// `reminder` (a reminder fired) or `overdue` (an open task's due time passed).
    pub(crate) kind: String,
    /// The task it is about, `tasks/{uuid}`.
    pub(crate) task_id: String,
    /// The reminder that fired, `tasks/{uuid}/reminders/{id}` (pass it to `snooze_reminder`
    /// or `dismiss_reminder`); null for an overdue notice.
    pub(crate) reminder_id: Option<String>,
    /// Short text, e.g. the task's title.
    pub(crate) title: String,
    /// Longer text, e.g. when the task is due.
    pub(crate) body: String,
    /// When it was created (RFC 3339, UTC).
    pub(crate) create_time: String,
    /// Whether the user has read it.
    pub(crate) read: bool,
}

impl From<reminder::Notification> for NotificationView {
    fn from(n: reminder::Notification) -> Self {
        let kind = if n.kind == reminder::notification::Kind::Overdue as i32 {
            "overdue"
        } else {
            "reminder"
        };
        Self {
            id: n.name,
            kind: kind.to_owned(),
            task_id: n.task,
            reminder_id: (!n.reminder.is_empty()).then_some(n.reminder),
            title: n.title,
            body: n.body,
            create_time: rfc3339_opt(n.create_time.as_ref()).unwrap_or_default(),
            read: n.read_time.is_some(),
        }
    }
}

/// One entry of the audit trail.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ActivityView {
    /// What happened, a CloudEvents type, e.g. `dev.taskmesh.task.updated.v1`.
    pub(crate) event_type: String,
    /// Who did it: the user id, `mcp:{user}` for changes made through this MCP server (an
    /// assistant), or `service:{name}` (e.g. the next occurrence of a recurring task).
    pub(crate) actor: String,
    /// What changed, e.g. `tasks/{uuid}`.
    pub(crate) resource: String,
    /// When (RFC 3339, UTC).
    pub(crate) time: String,
    /// For updates, each changed field with its values before and after.
    pub(crate) changes: Vec<FieldChangeView>,
}

/// A field's value before and after a change.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FieldChangeView {
    /// The field, e.g. `title` or `due`.
    pub(crate) field: String,
    /// Its value before (null when unset).
    pub(crate) before: serde_json::Value,
    /// Its value after (null when now unset).
    pub(crate) after: serde_json::Value,
}

impl From<audit::AuditEntry> for ActivityView {
    fn from(e: audit::AuditEntry) -> Self {
        Self {
            event_type: e.event_type,
            actor: e.actor,
            resource: e.resource,
            time: rfc3339_opt(e.event_time.as_ref()).unwrap_or_default(),
            changes: e
                .changes
                .into_iter()
                .map(|c| FieldChangeView {
                    field: c.field,
                    before: c.before.map_or(serde_json::Value::Null, json),
                    after: c.after.map_or(serde_json::Value::Null, json),
                })
                .collect(),
        }
    }
}

/// A `google.protobuf.Value` as the JSON it stands for.
fn json(value: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::NumberValue(n)) => n.into(),
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::ListValue(list)) => list.values.into_iter().map(json).collect(),
        Some(Kind::StructValue(object)) => object
            .fields
            .into_iter()
            .map(|(key, value)| (key, json(value)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}
