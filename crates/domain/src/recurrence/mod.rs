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

use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

pub use next::{Anchor, EndReason, Next, SeriesPosition, next_occurrence};
use parts::Parts;

/// The most occurrences one expansion walks through before it gives up (a rule that matches
/// nothing for a very long time, or an `after` far in the future of an hourly rule).
const MAX_STEPS: usize = 500_000;

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
        if rule.occurrences(None, &[], 1).0.is_empty() {
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
    /// or `UNTIL`) before `limit` were found. `COUNT` counts occurrences from `DTSTART`
    /// before `EXDATE`s are removed, as RFC 5545 section 3.8.5.1 says.
    pub fn occurrences(
        &self,
        after: Option<DateTime<Utc>>,
        exdates: &[DateTime<Utc>],
        limit: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut found = Vec::new();
        let mut exhausted = true;
        self.walk(|time| {
            if after.is_some_and(|after| time <= after) || exdates.contains(&time) {
                return true;
            }
            found.push(time);
            if found.len() >= limit {
                exhausted = false;
                return false;
            }
            true
        });
        (found, exhausted)
    }

    /// Calls `visit` with each occurrence (UTC, ascending) until it returns `false`, the
    /// rule ends, or [`MAX_STEPS`] occurrences were visited.
    fn walk(&self, mut visit: impl FnMut(DateTime<Utc>) -> bool) {
        let set = &self.set;
        // The crate's iterator asserts on internal states; a panic there ends the walk.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            for time in set.into_iter().take(MAX_STEPS) {
                if !visit(time.with_timezone(&Utc)) {
                    break;
                }
            }
        }));
    }
}

/// The wall-clock reading of `time` in `zone`.
pub(crate) fn wall_clock(time: DateTime<Utc>, zone: Tz) -> NaiveDateTime {
    time.with_timezone(&zone).naive_local()
}

#[cfg(test)]
mod tests;
