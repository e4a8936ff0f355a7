//! A series' next occurrence: what completing (or skipping past) the current task of a
//! recurring series leads to.
//!
//! The rule is expanded with the current task's due as `DTSTART`, so an edit of the due or
//! of the rule takes effect from the next occurrence on. The time of day is the series'
//! wall-clock time ([`SeriesPosition::wall_time`]) rather than the current due's, so an
//! occurrence that a DST gap moved (02:30 to 03:30) does not move the ones after it.
//! `COUNT` is kept by the series as the number of rule occurrences used so far
//! ([`SeriesPosition::used`]): every occurrence the series moves past counts, whether it
//! became a task, was skipped by an `EXDATE`, or passed while the task was overdue, which is
//! the occurrence set RFC 5545 defines from the series' first `DTSTART`.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};

use super::{Rule, RuleViolation, Walked, parts::Parts, wall_clock};
use crate::{DueKind, DueValue, local_instant};

/// What the next occurrence is computed from (`taskmesh.task.v1.Recurrence.Anchor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// The rule from the due date. The next occurrence is the first one after the current
    /// due that is not an `EXDATE` and not already past when the task is done: for a due
    /// with a time, after the completion instant; for a date-only due, on a later day than
    /// the completion's day in the due's zone. So completing an overdue task never creates
    /// one that is overdue already.
    Due,
    /// From the completion (Todoist's "every!"): the rule restarts at the completion's date
    /// in the due's zone, at the series' time of day (midnight for a date-only due), and the
    /// next occurrence is the first one after that start.
    Completion,
}

/// A series at its current occurrence.
#[derive(Clone, Copy, Debug)]
pub struct SeriesPosition<'a> {
    /// The rule (`RRULE` value) on the current task.
    pub rrule: &'a str,
    /// The current task's due; its zone is the zone the rule expands in.
    pub due: &'a DueValue,
    /// The wall-clock time of day the series' occurrences are at, when it differs from the
    /// current due's (a due a DST gap moved); `None` means the due's own.
    pub wall_time: Option<NaiveTime>,
    /// What the next occurrence is computed from.
    pub anchor: Anchor,
    /// Occurrences to skip (UTC instants; for a date-only due, any instant of the day).
    pub exdates: &'a [DateTime<Utc>],
    /// Rule occurrences used so far, the current one included (1 for a series' first task);
    /// `COUNT` bounds it.
    pub used: u64,
}

/// Why a series has no next occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// `COUNT` occurrences were used.
    CountReached,
    /// The rule has no occurrence left: `UNTIL` passed (or the rule ran out).
    UntilPassed,
}

/// The outcome of [`next_occurrence`].
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// The next task's due (same kind and zone as the current one), and the occurrences
    /// used once it exists.
    Occurrence {
        /// The next due.
        due: DueValue,
        /// [`SeriesPosition::used`] for the next task.
        used: u64,
    },
    /// The series ends.
    Ended(EndReason),
}

/// Why [`next_occurrence`] has no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextError {
    /// The stored rule is not valid (any more).
    Invalid(Vec<RuleViolation>),
    /// The next occurrence is too far from the current one to be found within the
    /// expansion's budget (500,000 occurrences or 500,000 periods of the rule), e.g. an hourly rule from a due
    /// decades ago.
    TooFar,
}

impl std::fmt::Display for NextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextError::Invalid(problems) => {
                let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
                write!(f, "the rule is invalid: {}", text.join("; "))
            }
            NextError::TooFar => f.write_str("the next occurrence is too far to compute"),
        }
    }
}

/// The time of day a date-only series expands at: noon, which every zone has on every day
/// (midnight is skipped by some DST changes, and the `rrule` crate drops an occurrence
/// whose day has no midnight).
const DATE_ONLY_TIME: NaiveTime = match NaiveTime::from_hms_opt(12, 0, 0) {
    Some(noon) => noon,
    None => NaiveTime::MIN,
};

/// The wall-clock time of day of `due` in its zone (for a date-only due, the time its
/// series expands at).
pub fn wall_time_of(due: &DueValue) -> NaiveTime {
    match due.kind {
        DueKind::Time(time) => wall_clock(time, due.time_zone).time(),
        DueKind::Date(_) => DATE_ONLY_TIME,
    }
}

/// The next occurrence of `series` when its current task is done at `done` (UTC): completed,
/// or, for "skip" and "delete this one only", the time of that request.
///
/// # Errors
/// [`NextError`].
pub fn next_occurrence(
    series: &SeriesPosition<'_>,
    done: DateTime<Utc>,
) -> Result<Next, NextError> {
    let due = series.due;
    let zone = due.time_zone;
    let mut parts = Parts::parse(series.rrule).map_err(NextError::Invalid)?;
    let count = parts.get("COUNT").and_then(|c| c.parse::<u64>().ok());
    parts.remove("COUNT");
    let wall_time = match due.kind {
        DueKind::Time(_) => series.wall_time.unwrap_or_else(|| wall_time_of(due)),
        DueKind::Date(_) => DATE_ONLY_TIME,
    };
    // Pin the time of day to the series' own, so the crate does not take it from a DTSTART
    // that a DST gap moved. Hourly rules have no time of day to keep.
    let pinned = ["BYHOUR", "BYMINUTE", "BYSECOND"]
        .iter()
        .all(|p| parts.get(p).is_none())
        && parts.get("FREQ") != Some("HOURLY");
    if pinned {
        parts.set("BYHOUR", wall_time.hour().to_string());
        parts.set("BYMINUTE", wall_time.minute().to_string());
        parts.set("BYSECOND", wall_time.second().to_string());
    }
    let start = match (series.anchor, due.kind) {
        (Anchor::Due, DueKind::Time(time)) => time,
        (Anchor::Due, DueKind::Date(date)) => local_instant(date.and_time(wall_time), zone),
        (Anchor::Completion, _) => {
            local_instant(wall_clock(done, zone).date().and_time(wall_time), zone)
        }
    };
    if parts.until(zone).is_some_and(|until| until < start) {
        return Ok(Next::Ended(EndReason::UntilPassed));
    }
    let rule = Rule::build(parts, start, zone).map_err(NextError::Invalid)?;
    let date_only = matches!(due.kind, DueKind::Date(_));
    let day = |time: DateTime<Utc>| wall_clock(time, zone).date();
    let current_day: Option<NaiveDate> = match due.kind {
        DueKind::Date(date) => Some(date),
        DueKind::Time(_) => None,
    };
    let exact: HashSet<DateTime<Utc>> = series.exdates.iter().copied().collect();
    let days: HashSet<NaiveDate> = series.exdates.iter().map(|t| day(*t)).collect();
    let passed = |time: DateTime<Utc>| match series.anchor {
        Anchor::Completion => false,
        Anchor::Due if date_only => day(time) <= day(done),
        Anchor::Due => time <= done,
    };
    let mut used = series.used;
    let mut next = Next::Ended(EndReason::UntilPassed);
    let walked = rule.walk(false, |time| {
        // A date-only series moves a day at least, whatever the rule says within a day.
        if time <= start || current_day.is_some_and(|d| day(time) <= d) {
            return true;
        }
        used += 1;
        if count.is_some_and(|count| used > count) {
            next = Next::Ended(EndReason::CountReached);
            return false;
        }
        let excluded = if date_only {
            days.contains(&day(time))
        } else {
            exact.contains(&time)
        };
        if excluded || passed(time) {
            return true;
        }
        let kind = if date_only {
            DueKind::Date(day(time))
        } else {
            DueKind::Time(time)
        };
        next = Next::Occurrence {
            due: DueValue {
                kind,
                time_zone: zone,
            },
            used,
        };
        false
    });
    match walked {
        Walked::GaveUp => Err(NextError::TooFar),
        Walked::Stopped | Walked::RanOut => Ok(next),
    }
}
