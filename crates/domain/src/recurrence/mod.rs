//! Recurrence rules: RFC 5545 section 3.3.10 `RRULE` with a `DTSTART` (section 3.8.2.4) in an
//! IANA zone, expanded in wall-clock time by the `rrule` crate, so 09:00 stays 09:00 across
//! DST changes. A local time that a DST change skips moves forward by the gap, and one that
//! occurs twice takes the first occurrence (RFC 5545 section 3.3.5).
//!
//! - [`Rule::parse`] validates a rule and names the part at fault in each [`RuleViolation`].
//! - [`Rule::occurrences`] expands it, skipping `EXDATE`s (section 3.8.5.1).
//! - [`next`](crate::recurrence::next_occurrence) computes a series' next occurrence.
//!
//! Month ends follow RFC 5545: `FREQ=MONTHLY;BYMONTHDAY=31` skips months without a 31st, and
//! `BYMONTHDAY=-1` is the last day of every month. `FREQ=YEARLY` from February 29 occurs in
//! leap years only.

mod next;
mod parts;

use std::{
    collections::HashSet,
    panic::{AssertUnwindSafe, catch_unwind},
};

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;

pub use next::{Anchor, EndReason, Next, NextError, SeriesPosition, next_occurrence, wall_time_of};
use parts::Parts;

/// The most occurrences one expansion walks through before it gives up (e.g. an `after` far
/// in the future of an hourly rule).
const MAX_STEPS: usize = 500_000;

/// The most periods (`INTERVAL` times the `FREQ` unit: years, months, weeks, days or hours,
/// in the rule's zone) one expansion walks from `DTSTART` before it gives up. The `rrule`
/// crate builds each period's candidate days whether or not they match, so this, not the
/// number of occurrences, bounds the work of a rule that rarely matches: 57 years of an
/// hourly rule. The crate gives up by itself after 100,000 periods in a row without an
/// occurrence, so one step is bounded too, and an expansion walks at most
/// `MAX_PERIODS + 100,000` periods. The budget is deterministic: the same rule gets the same
/// answer on a busy machine and an idle one.
const MAX_PERIODS: i64 = 500_000;

/// How a walk through the occurrences ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Walked {
    /// The visitor stopped it.
    Stopped,
    /// The rule has no more occurrences (`COUNT`, `UNTIL`).
    RanOut,
    /// The step or time budget ran out, or the crate failed: nothing is known past here.
    GaveUp,
}

/// One problem with a rule, e.g. `{part: "COUNT", description: "must not be used with UNTIL"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleViolation {
    /// The rule part at fault (`FREQ`, `BYMONTHDAY`, ...), `RRULE` for the rule as a whole,
    /// or `time_zone`.
    pub part: String,
    /// What is wrong, in plain English.
    pub description: String,
}

impl RuleViolation {
    pub(crate) fn new(part: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            part: part.into(),
            description: description.into(),
        }
    }
}

impl std::fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.part, self.description)
    }
}

/// Reads an IANA zone name; a violation of part `time_zone` when it is unknown.
///
/// # Errors
/// The violation.
pub fn parse_zone(name: &str) -> Result<Tz, RuleViolation> {
    if name.is_empty() {
        return Err(RuleViolation::new("time_zone", "must not be empty"));
    }
    name.parse::<Tz>().map_err(|_| {
        RuleViolation::new(
            "time_zone",
            format!("{name:?} is not an IANA time zone (e.g. Europe/Berlin)"),
        )
    })
}

/// A validated rule with its `DTSTART`, ready to expand.
#[derive(Clone, Debug)]
pub struct Rule {
    parts: Parts,
    zone: Tz,
    dtstart: DateTime<Utc>,
    set: rrule::RRuleSet,
}

impl Rule {
    /// Validates `rrule` (the `RRULE` value; an `RRULE:` prefix is accepted) with `DTSTART` =
    /// `dtstart` in `zone`.
    ///
    /// Accepted: `FREQ` (`YEARLY` to `HOURLY`; a task every minute is not a task), `UNTIL`
    /// (inclusive; a UTC date-time `YYYYMMDDTHHMMSSZ`, or a date `YYYYMMDD` meaning the end of
    /// that day in `zone`), `COUNT` (not with `UNTIL`), `INTERVAL`, `BYSECOND`, `BYMINUTE`,
    /// `BYHOUR`, `BYDAY` (with ordinals, e.g. `-1FR`), `BYMONTHDAY` (negative counts from the
    /// month's end), `BYYEARDAY`, `BYWEEKNO`, `BYMONTH`, `BYSETPOS`, `WKST`.
    ///
    /// # Errors
    /// Every problem found, each naming its part; a rule with no occurrence at or after
    /// `DTSTART` is a violation of part `RRULE`.
    pub fn parse(
        rrule: &str,
        dtstart: DateTime<Utc>,
        zone: Tz,
    ) -> Result<Self, Vec<RuleViolation>> {
        let parts = Parts::parse(rrule)?;
        let rule = Self::build(parts, dtstart, zone)?;
        // DTSTART always counts (RFC 5545 section 3.8.5.3), but a rule that generates nothing
        // by itself is a mistake.
        let mut generates = false;
        rule.walk(false, |_| {
            generates = true;
            false
        });
        if !generates {
            return Err(vec![RuleViolation::new(
                "RRULE",
                format!(
                    "has no occurrence at or after DTSTART ({})",
                    rule.dtstart
                        .with_timezone(&zone)
                        .format("%Y-%m-%d %H:%M %Z")
                ),
            )]);
        }
        Ok(rule)
    }

    /// Validates `rrule` as the rule of a task with `due`: `DTSTART` is the due's start in
    /// its zone, and a date-only due takes no rule that repeats within a day (`FREQ=HOURLY`,
    /// `BYHOUR`, `BYMINUTE`, `BYSECOND`).
    ///
    /// # Errors
    /// As [`Rule::parse`], plus the sub-daily parts of a date-only due's rule.
    pub fn for_due(rrule: &str, due: &crate::DueValue) -> Result<Self, Vec<RuleViolation>> {
        let rule = Self::parse(rrule, due.start(), due.time_zone)?;
        if matches!(due.kind, crate::DueKind::Date(_)) {
            let problems: Vec<RuleViolation> =
                ["BYHOUR", "BYMINUTE", "BYSECOND"]
                    .into_iter()
                    .filter(|part| rule.parts.get(part).is_some())
                    .map(|part| RuleViolation::new(part, "a date-only due repeats by days at most"))
                    .chain((rule.parts.get("FREQ") == Some("HOURLY")).then(|| {
                        RuleViolation::new("FREQ", "a date-only due repeats by days at most")
                    }))
                    .collect();
            if !problems.is_empty() {
                return Err(problems);
            }
        }
        Ok(rule)
    }

    /// The rule with its parts validated and handed to the `rrule` crate, not checked for an
    /// empty expansion.
    fn build(parts: Parts, dtstart: DateTime<Utc>, zone: Tz) -> Result<Self, Vec<RuleViolation>> {
        let start = dtstart.with_timezone(&rrule::Tz::Tz(zone));
        let text = parts.for_crate(zone);
        let built = catch_unwind(AssertUnwindSafe(|| {
            let rule: rrule::RRule<rrule::Unvalidated> = text.parse()?;
            let rule = rule.validate(start)?;
            // `limit()` turns on the crate's guard against rules that never match.
            Ok::<_, rrule::RRuleError>(rrule::RRuleSet::new(start).rrule(rule).limit())
        }));
        let set = match built {
            Ok(Ok(set)) => set,
            Ok(Err(error)) => return Err(vec![parts::violation_of(&error)]),
            Err(_) => return Err(vec![RuleViolation::new("RRULE", "cannot be expanded")]),
        };
        Ok(Self {
            parts,
            zone,
            dtstart,
            set,
        })
    }

    /// The rule in canonical form: upper case, parts in RFC 5545 order, no `RRULE:` prefix.
    pub fn normalized(&self) -> String {
        self.parts.to_string()
    }

    /// `COUNT`, when the rule has one.
    pub fn count(&self) -> Option<u64> {
        self.parts.get("COUNT").and_then(|c| c.parse().ok())
    }

    /// `UNTIL` as an instant (a date `UNTIL` is the last second of that day in the zone).
    pub fn until(&self) -> Option<DateTime<Utc>> {
        self.parts.until(self.zone)
    }

    /// The zone the rule expands in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// `DTSTART` (UTC).
    pub fn dtstart(&self) -> DateTime<Utc> {
        self.dtstart
    }

    /// Up to `limit` occurrences (UTC, ascending) strictly after `after` (or from `DTSTART`,
    /// inclusive, when `None`), leaving out `exdates`; and whether the rule ran out (`COUNT`
    /// or `UNTIL`) before `limit` were found (`false` also when the expansion gave up, after
    /// 500,000 occurrences or 500,000 periods from `DTSTART`). `DTSTART` is always the first occurrence, and `COUNT`
    /// counts it and the `EXDATE`s (RFC 5545 sections 3.8.5.3 and 3.8.5.1).
    pub fn occurrences(
        &self,
        after: Option<DateTime<Utc>>,
        exdates: &[DateTime<Utc>],
        limit: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let exdates: HashSet<DateTime<Utc>> = exdates.iter().copied().collect();
        let mut found = Vec::new();
        let walked = self.walk(true, |time| {
            if after.is_some_and(|after| time <= after) || exdates.contains(&time) {
                return true;
            }
            found.push(time);
            found.len() < limit
        });
        (found, walked == Walked::RanOut)
    }

    /// Calls `visit` with each occurrence (UTC, ascending; `DTSTART` first when
    /// `with_dtstart`, even if the rule does not generate it, and then at most `COUNT` in all)
    /// until it returns `false`, the rule ends, or the budget runs out.
    pub(crate) fn walk(
        &self,
        with_dtstart: bool,
        mut visit: impl FnMut(DateTime<Utc>) -> bool,
    ) -> Walked {
        let set = &self.set;
        let count = self
            .count()
            .map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(usize::MAX));
        let freq = self.parts.get("FREQ");
        let interval = self
            .parts
            .get("INTERVAL")
            .and_then(|i| i.parse::<i64>().ok())
            .unwrap_or(1)
            .max(1);
        let origin = calendar_place(freq, wall_clock(self.dtstart, self.zone));
        let too_far = |time: DateTime<Utc>| {
            (calendar_place(freq, wall_clock(time, self.zone)) - origin) / interval > MAX_PERIODS
        };
        let mut visited = 0;
        let mut visit = |time: DateTime<Utc>| {
            visited += 1;
            visit(time) && visited < count
        };
        // The crate's iterator asserts on internal states; a panic there ends the walk.
        let walked = catch_unwind(AssertUnwindSafe(|| {
            let mut times = set.into_iter().map(|t| t.with_timezone(&Utc)).peekable();
            if with_dtstart && times.peek() != Some(&self.dtstart) && !visit(self.dtstart) {
                return Walked::Stopped;
            }
            for (step, time) in times.enumerate() {
                if step >= MAX_STEPS || too_far(time) {
                    return Walked::GaveUp;
                }
                if !visit(time) {
                    return Walked::Stopped;
                }
            }
            Walked::RanOut
        }));
        match walked {
            // Stopped by reaching COUNT is running out.
            Ok(Walked::Stopped) if visited >= count => Walked::RanOut,
            Ok(walked) => walked,
            Err(_) => Walked::GaveUp,
        }
    }
}

/// A period's place on the calendar in the unit of `freq` (a `FREQ` value), counted from an
/// arbitrary origin: the year, the month (`year × 12 + month`), the week (days since the
/// common era divided by 7), the day or the hour, read on the wall clock of the rule's zone.
/// The difference of two places divided by `INTERVAL` is the number of periods the crate
/// walks between them.
fn calendar_place(freq: Option<&str>, wall: NaiveDateTime) -> i64 {
    let days = i64::from(wall.date().num_days_from_ce());
    match freq {
        Some("YEARLY") => i64::from(wall.year()),
        Some("MONTHLY") => i64::from(wall.year()) * 12 + i64::from(wall.month0()),
        Some("WEEKLY") => days.div_euclid(7),
        Some("HOURLY") => days * 24 + i64::from(wall.hour()),
        _ => days,
    }
}

/// The wall-clock reading of `time` in `zone`.
pub(crate) fn wall_clock(time: DateTime<Utc>, zone: Tz) -> NaiveDateTime {
    time.with_timezone(&zone).naive_local()
}

#[cfg(test)]
mod tests;
