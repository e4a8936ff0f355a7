//! The parts of an `RRULE` value (RFC 5545 section 3.3.10, `recur-rule-part`): split,
//! checked for what the `rrule` crate does not report by part, put in canonical order, and
//! the crate's errors mapped back to the part at fault.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rrule::{ParseError, RRuleError, ValidationError};

use super::RuleViolation;
use crate::start_of_day;

/// The rule parts in the order of RFC 5545's `recur-rule-part` list.
const ORDER: [&str; 14] = [
    "FREQ",
    "UNTIL",
    "COUNT",
    "INTERVAL",
    "BYSECOND",
    "BYMINUTE",
    "BYHOUR",
    "BYDAY",
    "BYMONTHDAY",
    "BYYEARDAY",
    "BYWEEKNO",
    "BYMONTH",
    "BYSETPOS",
    "WKST",
];

/// Frequencies a task may repeat at.
const FREQUENCIES: [&str; 5] = ["YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY"];

/// Longest accepted rule, in bytes.
const MAX_LEN: usize = 1000;

/// A rule's parts, upper case, in [`ORDER`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Parts(Vec<(&'static str, String)>);

impl Parts {
    /// Splits `text` into `NAME=VALUE` parts and checks names, duplicates, `FREQ`, `COUNT`
    /// with `UNTIL`, and the form of `UNTIL`.
    pub(super) fn parse(text: &str) -> Result<Self, Vec<RuleViolation>> {
        let body = text.trim();
        let body = match body.get(..6) {
            Some(prefix) if prefix.eq_ignore_ascii_case("RRULE:") => &body[6..],
            _ => body,
        };
        if body.is_empty() {
            return Err(vec![RuleViolation::new("RRULE", "must not be empty")]);
        }
        if body.len() > MAX_LEN {
            return Err(vec![RuleViolation::new(
                "RRULE",
                format!("must be at most {MAX_LEN} characters"),
            )]);
        }
        let mut violations = Vec::new();
        let mut parts: Vec<(&'static str, String)> = Vec::new();
        for segment in body.split(';').filter(|s| !s.trim().is_empty()) {
            let Some((name, value)) = segment.split_once('=') else {
                violations.push(RuleViolation::new(
                    "RRULE",
                    format!("{:?} is not NAME=VALUE", shorten(segment)),
                ));
                continue;
            };
            let name = name.trim().to_ascii_uppercase();
            let value = value.trim().to_ascii_uppercase();
            let Some(known) = ORDER.iter().find(|known| **known == name) else {
                violations.push(RuleViolation::new(
                    shorten(&name),
                    "is not an RRULE part (RFC 5545 section 3.3.10)",
                ));
                continue;
            };
            if parts.iter().any(|(n, _)| n == known) {
                violations.push(RuleViolation::new(*known, "must appear at most once"));
            } else if value.is_empty() || value.chars().any(|c| c.is_control()) {
                violations.push(RuleViolation::new(*known, "needs a value"));
            } else {
                parts.push((known, value));
            }
        }
        let parts = Self(parts);
        match parts.get("FREQ") {
            None => violations.push(RuleViolation::new("FREQ", "is required")),
            Some("MINUTELY" | "SECONDLY") => violations.push(RuleViolation::new(
                "FREQ",
                "must be YEARLY, MONTHLY, WEEKLY, DAILY or HOURLY for a task",
            )),
            Some(freq) if !FREQUENCIES.contains(&freq) => violations.push(RuleViolation::new(
                "FREQ",
                format!("{:?} is not a frequency", shorten(freq)),
            )),
            Some(_) => {}
        }
        if parts.get("COUNT").is_some() && parts.get("UNTIL").is_some() {
            violations.push(RuleViolation::new(
                "COUNT",
                "must not be used together with UNTIL (RFC 5545 section 3.3.10)",
            ));
        }
        for (name, max) in [("COUNT", 100_000), ("INTERVAL", 1_000)] {
            if let Some(value) = parts.get(name)
                && !value.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n))
            {
                violations.push(RuleViolation::new(
                    name,
                    format!("must be a whole number from 1 to {max}"),
                ));
            }
        }
        // The crate adds BYHOUR and friends from DTSTART before it checks this itself.
        if parts.get("BYSETPOS").is_some()
            && !parts
                .0
                .iter()
                .any(|(name, _)| name.starts_with("BY") && *name != "BYSETPOS")
        {
            violations.push(RuleViolation::new(
                "BYSETPOS",
                "must be used with another BYxxx part (RFC 5545 section 3.3.10)",
            ));
        }
        if let Some(until) = parts.get("UNTIL")
            && parse_until(until).is_none()
        {
            violations.push(RuleViolation::new(
                "UNTIL",
                "must be a UTC date-time (YYYYMMDDTHHMMSSZ) or a date (YYYYMMDD)",
            ));
        }
        if violations.is_empty() {
            let mut parts = parts;
            parts
                .0
                .sort_by_key(|(name, _)| ORDER.iter().position(|o| o == name));
            Ok(parts)
        } else {
            Err(violations)
        }
    }

    /// The value of part `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets part `name` (one of the known parts) to `value`, keeping the canonical order.
    pub(super) fn set(&mut self, name: &'static str, value: String) {
        self.remove(name);
        self.0.push((name, value));
        self.0
            .sort_by_key(|(name, _)| ORDER.iter().position(|o| o == name));
    }

    /// Removes part `name`.
    pub(super) fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| *n != name);
    }

    /// `UNTIL` as an instant: a date-time as is, a date as the last second of that day in
    /// `zone`.
    pub(super) fn until(&self, zone: Tz) -> Option<DateTime<Utc>> {
        match parse_until(self.get("UNTIL")?)? {
            Until::Instant(time) => Some(time),
            Until::Date(date) => {
                let next = date.succ_opt()?;
                Some(start_of_day(next, zone) - chrono::Duration::seconds(1))
            }
        }
    }

    /// The rule as the `rrule` crate reads it: a date `UNTIL` becomes its UTC instant.
    pub(super) fn for_crate(&self, zone: Tz) -> String {
        let until = self.until(zone);
        self.0
            .iter()
            .map(|(name, value)| match (*name, until) {
                ("UNTIL", Some(until)) => format!("UNTIL={}", until.format("%Y%m%dT%H%M%SZ")),
                _ => format!("{name}={value}"),
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

impl std::fmt::Display for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

enum Until {
    Instant(DateTime<Utc>),
    Date(NaiveDate),
}

fn parse_until(value: &str) -> Option<Until> {
    if value.len() == 8 {
        return NaiveDate::parse_from_str(value, "%Y%m%d")
            .ok()
            .map(Until::Date);
    }
    let local = value.strip_suffix('Z')?;
    chrono::NaiveDateTime::parse_from_str(local, "%Y%m%dT%H%M%S")
        .ok()
        .map(|t| Until::Instant(t.and_utc()))
}

/// At most 32 characters of user input, for a message.
fn shorten(text: &str) -> String {
    text.trim().chars().take(32).collect()
}

/// The part an error of the `rrule` crate is about, with the crate's own explanation.
pub(super) fn violation_of(error: &RRuleError) -> RuleViolation {
    let part: String = match error {
        RRuleError::ParserError(parse) => match parse {
            ParseError::InvalidFrequency(_) => "FREQ".into(),
            ParseError::InvalidWeekday(_) => "BYDAY".into(),
            ParseError::InvalidWeekdayStart(_) => "WKST".into(),
            ParseError::InvalidInterval(_) => "INTERVAL".into(),
            ParseError::InvalidCount(_) => "COUNT".into(),
            ParseError::InvalidByHour(_) => "BYHOUR".into(),
            ParseError::InvalidByWeekNo(_) => "BYWEEKNO".into(),
            ParseError::InvalidByYearDay(_) => "BYYEARDAY".into(),
            ParseError::InvalidByMonthDay(_) => "BYMONTHDAY".into(),
            ParseError::InvalidByMonth(_) => "BYMONTH".into(),
            ParseError::InvalidByMinute(_) => "BYMINUTE".into(),
            ParseError::InvalidBySecond(_) => "BYSECOND".into(),
            ParseError::InvalidBySetPos(_) => "BYSETPOS".into(),
            ParseError::InvalidDateTime { property, .. } => property.clone(),
            ParseError::DtStartUntilMismatchValue | ParseError::DtStartUntilMismatchTimezone => {
                "UNTIL".into()
            }
            _ => "RRULE".into(),
        },
        RRuleError::ValidationError(validation) => match validation {
            ValidationError::BySetPosWithoutByRule => "BYSETPOS".into(),
            ValidationError::InvalidFieldValue { field, .. }
            | ValidationError::InvalidFieldValueRange { field, .. }
            | ValidationError::InvalidFieldValueRangeWithFreq { field, .. } => field.to_uppercase(),
            ValidationError::InvalidByRuleAndFrequency { by_rule, .. } => by_rule.to_uppercase(),
            ValidationError::UntilBeforeStart { .. }
            | ValidationError::DtStartUntilMismatchTimezone { .. } => "UNTIL".into(),
            ValidationError::TooBigInterval(_) => "INTERVAL".into(),
            ValidationError::StartYearOutOfRange(_) => "DTSTART".into(),
            _ => "RRULE".into(),
        },
        RRuleError::IterError(_) => "RRULE".into(),
    };
    let description = match error {
        RRuleError::ValidationError(ValidationError::UntilBeforeStart { .. }) => {
            "must not be before DTSTART".to_owned()
        }
        RRuleError::ParserError(e) => e.to_string(),
        RRuleError::ValidationError(e) => e.to_string(),
        RRuleError::IterError(e) => e.clone(),
    };
    RuleViolation::new(part, description)
}
