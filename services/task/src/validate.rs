//! Input validation: turns a protobuf `Task` into [`TaskFields`], recording a field violation
//! (AIP-193 `BadRequest`) for everything wrong, so one response lists every problem.

use std::str::FromStr;

use chrono::NaiveDate;
use chrono_tz::Tz;
use taskmesh_domain::recurrence::Rule;
use taskmesh_platform::grpc::Violations;
use taskmesh_proto::task::v1::{self as pb, due, reminder};

use crate::model::{DueKind, DueValue, RecurrenceValue, StoredReminder, TaskFields, anchor_value};

/// Longest title, in characters.
pub(crate) const MAX_TITLE: usize = 500;
/// Longest description, in characters.
pub(crate) const MAX_DESCRIPTION: usize = 20_000;
/// Most tags on one task.
pub(crate) const MAX_TAGS: usize = 20;
/// Longest tag name, in characters.
pub(crate) const MAX_TAG_NAME: usize = 64;
/// Most reminders on one task.
pub(crate) const MAX_REMINDERS: usize = 20;
/// Longest reminder offset, in seconds (366 days).
const MAX_OFFSET_SECONDS: i64 = 366 * 24 * 3600;

/// Validates every user-settable field of `task`; violations name fields under `prefix`
/// (e.g. `task.`).
pub(crate) fn task_fields(task: &pb::Task, prefix: &str, v: &mut Violations) -> Option<TaskFields> {
    task_fields_checked(task, prefix, v, None)
}

/// A recurrence rule already expanded and found valid with a due (RFC 5545: the due is its
/// `DTSTART`), and its normal form: validating a task with the same rule and due need not
/// expand it again (the costly part).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CheckedRule {
    /// The rule as the task holds it.
    pub(crate) rrule: String,
    /// The due it was checked with.
    pub(crate) due: Option<pb::Due>,
    /// Its normal form.
    pub(crate) normalized: String,
}

impl CheckedRule {
    /// The rule of a stored task: validated when it was written, stored in normal form.
    pub(crate) fn stored(task: &pb::Task) -> Option<Self> {
        let rrule = task.recurrence.as_ref()?.rrule.clone();
        Some(Self {
            normalized: rrule.clone(),
            rrule,
            due: task.due.clone(),
        })
    }

    /// Whether `task` holds this rule with this due.
    pub(crate) fn covers(&self, task: &pb::Task) -> bool {
        task.recurrence
            .as_ref()
            .is_some_and(|r| r.rrule == self.rrule)
            && task.due == self.due
    }

    /// The checked rule of `task` once `fields` (its validated fields) are known.
    pub(crate) fn of(task: &pb::Task, fields: &TaskFields) -> Option<Self> {
        Some(Self {
            rrule: task.recurrence.as_ref()?.rrule.clone(),
            due: task.due.clone(),
            normalized: fields.recurrence.as_ref()?.rrule.clone(),
        })
    }
}

/// [`task_fields`], without expanding the rule again when `checked` covers the task's rule
/// and due.
pub(crate) fn task_fields_checked(
    task: &pb::Task,
    prefix: &str,
    v: &mut Violations,
    checked: Option<&CheckedRule>,
) -> Option<TaskFields> {
    let checked = checked.filter(|c| c.covers(task));
    let title = task.title.trim().to_owned();
    if title.is_empty() {
        v.add(format!("{prefix}title"), "must not be empty");
    } else if title.chars().count() > MAX_TITLE {
        v.add(
            format!("{prefix}title"),
            format!("must be at most {MAX_TITLE} characters"),
        );
    } else if title.chars().any(char::is_control) {
        v.add(
            format!("{prefix}title"),
            "must not contain control characters",
        );
    }
    if task.description.chars().count() > MAX_DESCRIPTION {
        v.add(
            format!("{prefix}description"),
            format!("must be at most {MAX_DESCRIPTION} characters"),
        );
    } else if task
        .description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        v.add(
            format!("{prefix}description"),
            "must not contain control characters other than line breaks and tabs",
        );
    }
    let priority = match task.priority {
        0 => 1,
        p @ 1..=5 => p as i16,
        _ => {
            v.add(format!("{prefix}priority"), "unknown priority value");
            1
        }
    };
    let tags = tag_names(&task.tags, &format!("{prefix}tags"), v);
    let due = task
        .due
        .as_ref()
        .and_then(|d| due_value(d, &format!("{prefix}due"), v));
    let reminders = reminders(
        &task.reminders,
        due.is_some(),
        &format!("{prefix}reminders"),
        v,
    );
    let recurrence = task
        .recurrence
        .as_ref()
        .and_then(|r| recurrence(r, due.as_ref(), checked, &format!("{prefix}recurrence"), v));
    if task.recurrence.is_some() && task.due.is_none() {
        v.add(
            format!("{prefix}recurrence"),
            "a recurring task needs a due (it is DTSTART)",
        );
    }
    v.is_empty().then_some(TaskFields {
        title,
        description: task.description.clone(),
        priority,
        tags,
        due,
        reminders,
        recurrence,
    })
}

/// Normalises tag names: trimmed, 1 to 64 characters, no control characters, deduplicated
/// ignoring case (the first spelling wins).
pub(crate) fn tag_names(names: &[String], field: &str, v: &mut Violations) -> Vec<String> {
    if names.len() > MAX_TAGS {
        v.add(field, format!("at most {MAX_TAGS} tags"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if let Err(problem) = tag_name(name) {
            v.add(format!("{field}[{i}]"), problem);
            continue;
        }
        let name = name.trim().to_owned();
        if !out.iter().any(|n| n.to_lowercase() == name.to_lowercase()) {
            out.push(name);
        }
    }
    out
}

/// Checks one tag display name.
pub(crate) fn tag_name(name: &str) -> Result<(), String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        Err("must not be empty".into())
    } else if trimmed.chars().count() > MAX_TAG_NAME {
        Err(format!("must be at most {MAX_TAG_NAME} characters"))
    } else if trimmed.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(())
    }
}

/// Checks a tag colour: empty or `#rrggbb`; returns it lower-cased.
pub(crate) fn color(color: &str) -> Result<String, String> {
    let ok = color.is_empty()
        || (color.len() == 7
            && color.starts_with('#')
            && color[1..].chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(color.to_ascii_lowercase())
    } else {
        Err("must be empty or #rrggbb".into())
    }
}

pub(crate) use taskmesh_domain::instant;

fn due_value(d: &pb::Due, field: &str, v: &mut Violations) -> Option<DueValue> {
    let zone = match Tz::from_str(&d.time_zone) {
        Ok(zone) if !d.time_zone.is_empty() => Some(zone),
        _ => {
            v.add(
                format!("{field}.time_zone"),
                "must be an IANA time zone name such as Europe/Berlin",
            );
            None
        }
    };
    let kind = match &d.value {
        Some(due::Value::Time(ts)) => match instant(ts) {
            Some(time) => Some(DueKind::Time(time)),
            None => {
                v.add(
                    format!("{field}.time"),
                    "must be a valid timestamp in years 1 to 9999",
                );
                None
            }
        },
        Some(due::Value::Date(date)) => {
            let parsed = u32::try_from(date.month)
                .ok()
                .zip(u32::try_from(date.day).ok())
                .and_then(|(month, day)| NaiveDate::from_ymd_opt(date.year, month, day));
            match parsed {
                Some(date) if (1..=9999).contains(&chrono::Datelike::year(&date)) => {
                    Some(DueKind::Date(date))
                }
                _ => {
                    v.add(
                        format!("{field}.date"),
                        "must be a full calendar date in years 1 to 9999",
                    );
                    None
                }
            }
        }
        None => {
            v.add(field.to_owned(), "set either time or date");
            None
        }
    };
    Some(DueValue {
        kind: kind?,
        time_zone: zone?,
    })
}

fn reminders(
    input: &[pb::Reminder],
    has_due: bool,
    field: &str,
    v: &mut Violations,
) -> Vec<StoredReminder> {
    if input.len() > MAX_REMINDERS {
        v.add(field, format!("at most {MAX_REMINDERS} reminders"));
        return Vec::new();
    }
    let mut out: Vec<StoredReminder> = Vec::new();
    for (i, r) in input.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let id = if r.id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else if r.id.len() <= 64
            && r.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            r.id.clone()
        } else {
            v.add(
                format!("{at}.id"),
                "must be 1 to 64 characters of a-z, 0-9 and -",
            );
            continue;
        };
        if out.iter().any(|o| o.id == id) {
            v.add(format!("{at}.id"), "duplicates another reminder's id");
            continue;
        }
        match &r.trigger {
            Some(reminder::Trigger::AbsoluteTime(ts)) => match instant(ts) {
                Some(time) => out.push(StoredReminder {
                    id,
                    absolute_time: Some(time),
                    relative_seconds: None,
                }),
                None => v.add(format!("{at}.absolute_time"), "must be a valid timestamp"),
            },
            Some(reminder::Trigger::RelativeToDue(d)) => {
                if !has_due {
                    v.add(
                        format!("{at}.relative_to_due"),
                        "needs the task to have a due",
                    );
                } else if d.nanos != 0
                    || d.seconds.unsigned_abs() > MAX_OFFSET_SECONDS.unsigned_abs()
                {
                    v.add(
                        format!("{at}.relative_to_due"),
                        "must be whole seconds between -366 and +366 days",
                    );
                } else {
                    out.push(StoredReminder {
                        id,
                        absolute_time: None,
                        relative_seconds: Some(d.seconds),
                    });
                }
            }
            None => v.add(at, "set absolute_time or relative_to_due"),
        }
    }
    out
}

fn recurrence(
    r: &pb::Recurrence,
    due: Option<&DueValue>,
    checked: Option<&CheckedRule>,
    field: &str,
    v: &mut Violations,
) -> Option<RecurrenceValue> {
    if r.exdates.len() > 1000 {
        v.add(format!("{field}.exdates"), "at most 1000 exdates");
        return None;
    }
    let mut exdates = Vec::with_capacity(r.exdates.len());
    for (i, ts) in r.exdates.iter().enumerate() {
        match instant(ts) {
            Some(time) => exdates.push(time),
            None => v.add(format!("{field}.exdates[{i}]"), "must be a valid timestamp"),
        }
    }
    // The rule is checked against the due as `DTSTART` in the due's zone (RFC 5545); without
    // a due the task is rejected for that already.
    let due = due?;
    let rrule = match checked {
        Some(checked) => checked.normalized.clone(),
        None => match Rule::for_due(&r.rrule, due) {
            Ok(rule) => rule.normalized(),
            Err(problems) => {
                for problem in problems {
                    v.add(format!("{field}.rrule"), problem.to_string());
                }
                return None;
            }
        },
    };
    Some(RecurrenceValue {
        rrule,
        anchor: anchor_value(r.anchor),
        exdates,
    })
}

pub(crate) use taskmesh_platform::requests::validate as request_id;
