//! What the tools take: JSON shapes with schemas a model fills in right the first time
//! (enums, formats, one way to say each thing), turned into the services' protobuf messages.
//! Dates and times are ISO 8601 with a zone: relative dates ("tomorrow") are never guessed
//! here, the assistant resolves them against the user's own calendar.
//!
//! A value that cannot be turned into a message is a [`Problem`]: a sentence naming the
//! field, which the tool returns as its error.

use chrono::{DateTime, Datelike, NaiveDate};
use schemars::JsonSchema;
use serde::Deserialize;
use taskmesh_proto::{
    google::r#type::Date,
    task::v1::{self as task, due, reminder::Trigger},
};

use super::views::{AnchorName, PriorityName};

/// Bad tool input, as a sentence for the model.
#[derive(Debug)]
pub(crate) struct Problem(pub(crate) String);

impl Problem {
    fn field(field: &str, what: &str) -> Self {
        Self(format!("invalid input: `{field}` {what}"))
    }
}

/// When a task is due.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DueInput {
    /// Due at this instant: ISO 8601 / RFC 3339 with an offset, e.g.
    /// `2026-12-08T09:00:00+01:00`. Give either `time` or `date`.
    #[schemars(extend("format" = "date-time"))]
    pub(crate) time: Option<String>,
    /// Due on this whole day, `YYYY-MM-DD`. Give either `time` or `date`.
    #[schemars(extend("format" = "date"))]
    pub(crate) date: Option<String>,
    /// The IANA time zone the user lives in, e.g. `Europe/Berlin` (repetition and
    /// date-only reminders follow its clock).
    pub(crate) time_zone: String,
}

impl DueInput {
    /// The protobuf `Due`.
    pub(crate) fn proto(&self, field: &str) -> Result<task::Due, Problem> {
        let value = match (&self.time, &self.date) {
            (Some(time), None) => due::Value::Time(timestamp(time, &format!("{field}.time"))?),
            (None, Some(date)) => {
                let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| {
                    Problem::field(&format!("{field}.date"), "must be a date, YYYY-MM-DD")
                })?;
                due::Value::Date(Date {
                    year: day.year(),
                    month: i32::try_from(day.month()).unwrap_or_default(),
                    day: i32::try_from(day.day()).unwrap_or_default(),
                })
            }
            _ => {
                return Err(Problem::field(
                    field,
                    "needs exactly one of `time` and `date`",
                ));
            }
        };
        Ok(task::Due {
            value: Some(value),
            time_zone: self.time_zone.clone(),
        })
    }
}

/// A reminder.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReminderInput {
    /// The id of a reminder the task has, to keep it (with its fired, snoozed or dismissed
    /// state) when the list is replaced; absent for a new reminder.
    #[schemars(length(min = 1, max = 64))]
    pub(crate) id: Option<String>,
    /// Fire at this instant, RFC 3339 with an offset. Give either `at` or
    /// `minutes_before_due`.
    #[schemars(extend("format" = "date-time"))]
    pub(crate) at: Option<String>,
    /// Fire this many minutes before the task's due time (0 at the due time, negative after
    /// it); the task needs a due date. For a date-only due, counted from the start of that
    /// day. Give either `at` or `minutes_before_due`.
    #[schemars(range(min = -527_040, max = 527_040))]
    pub(crate) minutes_before_due: Option<i64>,
}

impl ReminderInput {
    /// The protobuf `Reminder` (without an id, TaskService assigns one).
    pub(crate) fn proto(&self, field: &str) -> Result<task::Reminder, Problem> {
        let trigger = match (&self.at, self.minutes_before_due) {
            (Some(at), None) => Trigger::AbsoluteTime(timestamp(at, &format!("{field}.at"))?),
            (None, Some(minutes)) => Trigger::RelativeToDue(prost_types::Duration {
                seconds: minutes.saturating_mul(-60),
                nanos: 0,
            }),
            _ => {
                return Err(Problem::field(
                    field,
                    "needs exactly one of `at` and `minutes_before_due`",
                ));
            }
        };
        Ok(task::Reminder {
            id: self.id.clone().unwrap_or_default(),
            trigger: Some(trigger),
        })
    }
}

/// How a task repeats: a preset, or an RFC 5545 rule.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecurrenceInput {
    /// A common rule. Give either `preset` or `rrule`.
    pub(crate) preset: Option<Preset>,
    /// Every N days/weeks/months/years for a preset, 1 to 1000; default 1.
    #[schemars(range(min = 1, max = 1000))]
    pub(crate) interval: Option<i32>,
    /// For `weekly`: the days, RFC 5545 codes `MO` `TU` `WE` `TH` `FR` `SA` `SU`; default the
    /// due date's weekday.
    pub(crate) days: Option<Vec<Weekday>>,
    /// For `monthly`: the day of the month, 1 to 31 (months without it are skipped; use
    /// `monthly_last_day` for month ends); default the due date's day.
    #[schemars(range(min = 1, max = 31))]
    pub(crate) day_of_month: Option<i32>,
    /// An RFC 5545 `RRULE` value without the `RRULE:` prefix, e.g.
    /// `FREQ=MONTHLY;BYDAY=1MO`. Give either `preset` or `rrule`.
    pub(crate) rrule: Option<String>,
    /// What the next occurrence is computed from: `due` (default: the rule, from the due
    /// date) or `completion` (from the day the task is completed).
    pub(crate) anchor: Option<AnchorName>,
}

/// Common repetition rules.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Preset {
    /// Every day.
    Daily,
    /// Monday to Friday.
    Weekdays,
    /// Every week, on `days`.
    Weekly,
    /// Every month, on `day_of_month`.
    Monthly,
    /// Every month, on its last day.
    MonthlyLastDay,
    /// Every year, on the due date's month and day.
    Yearly,
}

/// An RFC 5545 weekday code.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub(crate) enum Weekday {
    /// Monday.
    MO,
    /// Tuesday.
    TU,
    /// Wednesday.
    WE,
    /// Thursday.
    TH,
    /// Friday.
    FR,
    /// Saturday.
    SA,
    /// Sunday.
    SU,
}

impl RecurrenceInput {
    /// The `RulePreset` to build the rule from, or the rule itself.
    pub(crate) fn rule(&self) -> Result<Rule, Problem> {
        use taskmesh_proto::recurrence::v1::{RulePreset, rule_preset};
        match (&self.preset, &self.rrule) {
            (None, Some(rrule)) => Ok(Rule::Text(rrule.trim().to_owned())),
            (Some(preset), None) => {
                let preset = match preset {
                    Preset::Daily => rule_preset::Preset::Daily(rule_preset::Daily {}),
                    Preset::Weekdays => rule_preset::Preset::Weekdays(rule_preset::Weekdays {}),
                    Preset::Weekly => rule_preset::Preset::Weekly(rule_preset::Weekly {
                        days: self
                            .days
                            .iter()
                            .flatten()
                            .map(|day| format!("{day:?}"))
                            .collect(),
                    }),
                    Preset::Monthly => match self.day_of_month {
                        Some(day) => {
                            rule_preset::Preset::MonthlyOnDay(rule_preset::MonthlyOnDay { day })
                        }
                        // The due date's day of the month (RFC 5545: from `DTSTART`).
                        None => {
                            let interval = self.interval.unwrap_or(1);
                            return Ok(Rule::Text(if interval > 1 {
                                format!("FREQ=MONTHLY;INTERVAL={interval}")
                            } else {
                                "FREQ=MONTHLY".to_owned()
                            }));
                        }
                    },
                    Preset::MonthlyLastDay => {
                        rule_preset::Preset::MonthlyOnLastDay(rule_preset::MonthlyOnLastDay {})
                    }
                    Preset::Yearly => rule_preset::Preset::Yearly(rule_preset::Yearly {}),
                };
                Ok(Rule::Preset(RulePreset {
                    preset: Some(preset),
                    interval: self.interval.unwrap_or_default(),
                }))
            }
            _ => Err(Problem::field(
                "recurrence",
                "needs exactly one of `preset` and `rrule`",
            )),
        }
    }

    /// The protobuf anchor.
    pub(crate) fn anchor(&self) -> task::recurrence::Anchor {
        match self.anchor {
            Some(AnchorName::Completion) => task::recurrence::Anchor::Completion,
            _ => task::recurrence::Anchor::Due,
        }
    }
}

/// A rule to set: built from a preset by RecurrenceService, or given as text.
pub(crate) enum Rule {
    /// Built by `BuildRule`.
    Preset(taskmesh_proto::recurrence::v1::RulePreset),
    /// An `RRULE` value.
    Text(String),
}

/// The protobuf timestamp of an RFC 3339 instant with an offset.
pub(crate) fn timestamp(text: &str, field: &str) -> Result<prost_types::Timestamp, Problem> {
    let instant = DateTime::parse_from_rfc3339(text.trim()).map_err(|_| {
        Problem::field(
            field,
            "must be an ISO 8601 date-time with an offset, e.g. 2026-12-08T09:00:00+01:00",
        )
    })?;
    Ok(prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: i32::try_from(instant.timestamp_subsec_nanos()).unwrap_or_default(),
    })
}

/// The priority's protobuf value, `PRIORITY_NONE` when absent.
pub(crate) fn priority(priority: Option<PriorityName>) -> i32 {
    priority.map_or(task::Priority::None, PriorityName::proto) as i32
}
