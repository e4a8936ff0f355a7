//! A series' next occurrence: what completing (or skipping past) the current task of a
//! recurring series leads to.
//!
//! The rule is expanded with the current task's due as `DTSTART`, so an edit of the due or
//! of the rule takes effect from the next occurrence on. `COUNT` is kept by the series as the
//! number of rule occurrences used so far ([`SeriesPosition::used`]): every occurrence the
//! series moves past counts, whether it became a task, was skipped by an `EXDATE`, or passed
//! while the task was overdue, which is the occurrence set RFC 5545 defines from the series'
//! first `DTSTART`.

use chrono::{DateTime, NaiveTime, Utc};

use super::{Rule, RuleViolation, parts::Parts, wall_clock};
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
    /// in the due's zone, at the due's time of day (midnight for a date-only due), and the
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
    /// What the next occurrence is computed from.
    pub anchor: Anchor,
    /// Occurrences to skip (UTC instants; a date-only occurrence is the start of its day).
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

/// The next occurrence of `series` when its current task is done at `done` (UTC): completed,
/// or, for "skip" and "delete this one only", the time of that request.
///
/// # Errors
/// The rule's violations, should the stored rule not be valid.
pub fn next_occurrence(
    series: &SeriesPosition<'_>,
    done: DateTime<Utc>,
) -> Result<Next, Vec<RuleViolation>> {
    let due = series.due;
    let zone = due.time_zone;
    let mut parts = Parts::parse(series.rrule)?;
    let count = parts.get("COUNT").and_then(|c| c.parse::<u64>().ok());
    parts.remove("COUNT");
    let start = due.start();
    let time_of_day = match due.kind {
        DueKind::Time(time) => wall_clock(time, zone).time(),
        DueKind::Date(_) => NaiveTime::MIN,
    };
    let start = match series.anchor {
        Anchor::Due => start,
        Anchor::Completion => {
            local_instant(wall_clock(done, zone).date().and_time(time_of_day), zone)
        }
    };
    if parts.until(zone).is_some_and(|until| until < start) {
        return Ok(Next::Ended(EndReason::UntilPassed));
    }
    let rule = Rule::build(parts, start, zone)?;
    let passed = |time: DateTime<Utc>| match (series.anchor, due.kind) {
        (Anchor::Completion, _) => false,
        (Anchor::Due, DueKind::Time(_)) => time <= done,
        (Anchor::Due, DueKind::Date(_)) => {
            wall_clock(time, zone).date() <= wall_clock(done, zone).date()
        }
    };
    let mut used = series.used;
    let mut next = Next::Ended(EndReason::UntilPassed);
    rule.walk(|time| {
        if time <= start {
            return true;
        }
        used += 1;
        if count.is_some_and(|count| used > count) {
            next = Next::Ended(EndReason::CountReached);
            return false;
        }
        if series.exdates.contains(&time) || passed(time) {
            return true;
        }
        let kind = match due.kind {
            DueKind::Time(_) => DueKind::Time(time),
            DueKind::Date(_) => DueKind::Date(wall_clock(time, zone).date()),
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
    Ok(next)
}
