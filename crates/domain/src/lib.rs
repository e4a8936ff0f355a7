//! The task domain shared by taskmesh services: when a task is due, when its reminders fire,
//! and wall-clock time in IANA zones (RFC 5545 semantics). Pure functions, no I/O.
//!
//! - [`DueValue`]: a task's due, an instant or a whole day in a zone, and the instant
//!   filters, ordering and overdue notices use ([`DueValue::due_at`]).
//! - [`fire_time`]: the instant a reminder (RFC 5545 VALARM `TRIGGER`) fires.
//! - [`local_instant`], [`start_of_day`]: wall-clock time to UTC across DST changes.
//! - [`instant`], [`timestamp`]: protobuf timestamps to and from UTC instants; [`now`].
//! - [`recurrence`]: RFC 5545 rules, their expansion and a series' next occurrence.

pub mod recurrence;

use std::str::FromStr;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use prost_types::Timestamp;
use taskmesh_proto::task::v1 as pb;

/// A due: an instant or a whole day, in the IANA zone the user thinks in.
#[derive(Clone, Debug, PartialEq)]
pub struct DueValue {
    /// Instant or date.
    pub kind: DueKind,
    /// The zone dates, recurrence and date-only reminders resolve in.
    pub time_zone: Tz,
}

/// The two kinds of due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DueKind {
    /// An exact instant (UTC).
    Time(DateTime<Utc>),
    /// A whole day in the due's zone.
    Date(NaiveDate),
}

impl DueValue {
    /// Reads a `taskmesh.task.v1.Due` as TaskService stores it; `None` when it is not a valid
    /// due (no value, an unknown zone, an impossible date or a timestamp outside years 1 to
    /// 9999).
    pub fn from_proto(due: &pb::Due) -> Option<Self> {
        let time_zone = Tz::from_str(&due.time_zone).ok()?;
        let kind = match due.value.as_ref()? {
            pb::due::Value::Time(ts) => DueKind::Time(instant(ts)?),
            pb::due::Value::Date(date) => DueKind::Date(NaiveDate::from_ymd_opt(
                date.year,
                u32::try_from(date.month).ok()?,
                u32::try_from(date.day).ok()?,
            )?),
        };
        Some(Self { kind, time_zone })
    }

    /// The `taskmesh.task.v1.Due` of this value.
    pub fn to_proto(&self) -> pb::Due {
        let value = match self.kind {
            DueKind::Time(time) => pb::due::Value::Time(timestamp(time)),
            DueKind::Date(date) => pb::due::Value::Date(taskmesh_proto::google::r#type::Date {
                year: date.year(),
                month: i32::try_from(date.month()).unwrap_or_default(),
                day: i32::try_from(date.day()).unwrap_or_default(),
            }),
        };
        pb::Due {
            value: Some(value),
            time_zone: self.time_zone.name().to_owned(),
        }
    }

    /// Where the due starts: the due time, or for a date-only due the first instant of that
    /// day in its zone. A recurring task's `DTSTART` (RFC 5545 section 3.8.2.4).
    pub fn start(&self) -> DateTime<Utc> {
        match self.kind {
            DueKind::Time(time) => time,
            DueKind::Date(date) => start_of_day(date, self.time_zone),
        }
    }

    /// The instant the task counts as due for filters, ordering and overdue notices: the due
    /// time, or for a date-only due the first instant of the next day in the due's zone (the
    /// whole day is allowed).
    pub fn due_at(&self) -> DateTime<Utc> {
        match self.kind {
            DueKind::Time(time) => time,
            DueKind::Date(date) => start_of_day(date.succ_opt().unwrap_or(date), self.time_zone),
        }
    }
}

/// The UTC instant of a wall-clock time in `zone`: the earlier one when the time occurs
/// twice (DST ends), and the time shifted forward by the gap when it does not occur (DST
/// starts), as RFC 5545 section 3.3.5 prescribes for `DATE-TIME` values with `TZID`.
pub fn local_instant(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap the offset from before the gap applies (02:30 in a 02:00-03:00 gap is
            // 03:30 after it). Zones change offset at most once in any two days, so the
            // offset a day earlier is the one before the gap.
            let before = zone
                .offset_from_utc_datetime(&(local - chrono::Duration::days(1)))
                .fix();
            Utc.from_utc_datetime(
                &(local - chrono::Duration::seconds(i64::from(before.local_minus_utc()))),
            )
        }
    }
}

/// The first instant of `date` in `zone`: local midnight, or when midnight does not occur
/// (a DST change at 00:00) the first instant after the gap.
pub fn start_of_day(date: NaiveDate, zone: Tz) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    match zone.from_local_datetime(&midnight) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        // The day starts where the gap ends, which is the gap-shifted midnight.
        LocalResult::None => local_instant(midnight, zone),
    }
}

/// When a reminder fires (RFC 5545 section 3.8.6.3, `TRIGGER`): an absolute time as is; an
/// offset relative to the due added to the due instant in exact seconds, or for a date-only
/// due to the start of that day in wall-clock time (so `-PT15H` before 2026-03-08 in
/// America/New_York is 09:00 local the day before, whatever DST does). `None` for an offset
/// without a due, or a result outside years 1 to 9999.
pub fn fire_time(trigger: &pb::reminder::Trigger, due: Option<&DueValue>) -> Option<DateTime<Utc>> {
    let time = match trigger {
        pb::reminder::Trigger::AbsoluteTime(ts) => instant(ts)?,
        pb::reminder::Trigger::RelativeToDue(offset) => {
            let offset = chrono::Duration::try_seconds(offset.seconds)?;
            let due = due?;
            match due.kind {
                DueKind::Time(time) => time.checked_add_signed(offset)?,
                DueKind::Date(date) => {
                    let local = date.and_hms_opt(0, 0, 0)?.checked_add_signed(offset)?;
                    local_instant(local, due.time_zone)
                }
            }
        }
    };
    (1..=9999).contains(&time.year()).then_some(time)
}

/// A UTC instant from a protobuf timestamp within years 1 to 9999, truncated to
/// microseconds (PostgreSQL's precision). `None` outside that range or for bad nanos.
pub fn instant(ts: &Timestamp) -> Option<DateTime<Utc>> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    let time = DateTime::from_timestamp(ts.seconds, ts.nanos.unsigned_abs())?;
    let time = DateTime::from_timestamp_micros(time.timestamp_micros())?;
    (1..=9999).contains(&time.year()).then_some(time)
}

/// The current time (UTC) truncated to microseconds, the precision PostgreSQL keeps, so a
/// value returned before it is stored equals the value read back.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// A protobuf timestamp of a UTC instant.
pub fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Australia::Lord_Howe, Europe::London};
    use prost_types::Duration as PbDuration;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn relative(seconds: i64) -> pb::reminder::Trigger {
        pb::reminder::Trigger::RelativeToDue(PbDuration { seconds, nanos: 0 })
    }

    fn on(day: NaiveDate, zone: Tz) -> DueValue {
        DueValue {
            kind: DueKind::Date(day),
            time_zone: zone,
        }
    }

    #[test]
    fn local_times_in_gaps_move_forward_and_repeated_ones_take_the_first() {
        let local = |d: NaiveDate, h, m| d.and_hms_opt(h, m, 0).unwrap();
        // 2026-03-08 02:30 does not exist in New York (clocks go 02:00 EST -> 03:00 EDT).
        assert_eq!(
            local_instant(local(date(2026, 3, 8), 2, 30), New_York),
            utc("2026-03-08T07:30:00Z")
        );
        // 2026-11-01 01:30 happens twice; the first is EDT (UTC-4).
        assert_eq!(
            local_instant(local(date(2026, 11, 1), 1, 30), New_York),
            utc("2026-11-01T05:30:00Z")
        );
        // Lord Howe moves 30 minutes: 2026-10-04 02:15 does not exist (02:00 +10:30 -> 02:30 +11).
        assert_eq!(
            local_instant(local(date(2026, 10, 4), 2, 15), Lord_Howe),
            utc("2026-10-03T15:45:00Z")
        );
    }

    #[test]
    fn date_only_offsets_are_wall_clock_across_dst() {
        // Due on 2026-03-09 (the day after DST starts): -15h is 09:00 on 03-08, which is EDT.
        let due = on(date(2026, 3, 9), New_York);
        assert_eq!(
            fire_time(&relative(-15 * 3600), Some(&due)),
            Some(utc("2026-03-08T13:00:00Z"))
        );
        // -39h (09:00 two days before) lands before the change, in EST.
        assert_eq!(
            fire_time(&relative(-39 * 3600), Some(&due)),
            Some(utc("2026-03-07T14:00:00Z"))
        );
        // Europe/London after the autumn change: 2026-10-26 minus 1 day is 00:00 BST on 10-25.
        let due = on(date(2026, 10, 26), London);
        assert_eq!(
            fire_time(&relative(-24 * 3600), Some(&due)),
            Some(utc("2026-10-24T23:00:00Z"))
        );
        // +9h on the day itself: 09:00 GMT.
        assert_eq!(
            fire_time(&relative(9 * 3600), Some(&due)),
            Some(utc("2026-10-26T09:00:00Z"))
        );
    }

    #[test]
    fn instant_offsets_are_exact_and_absolute_triggers_ignore_the_due() {
        let due = DueValue {
            kind: DueKind::Time(utc("2026-03-08T15:00:00Z")),
            time_zone: New_York,
        };
        // 11:00 EDT on the 8th minus 24 h of elapsed time, across the DST change, is 10:00 EST
        // on the 7th.
        assert_eq!(
            fire_time(&relative(-24 * 3600), Some(&due)),
            Some(utc("2026-03-07T15:00:00Z"))
        );
        let absolute = pb::reminder::Trigger::AbsoluteTime(timestamp(utc("2026-01-01T08:00:00Z")));
        assert_eq!(
            fire_time(&absolute, None),
            Some(utc("2026-01-01T08:00:00Z"))
        );
        assert_eq!(fire_time(&relative(60), None), None);
    }

    #[test]
    fn a_date_only_due_is_due_at_the_end_of_its_day() {
        assert_eq!(
            on(date(2026, 11, 1), New_York).due_at(),
            utc("2026-11-02T05:00:00Z")
        );
        assert_eq!(
            on(date(2026, 3, 7), New_York).due_at(),
            utc("2026-03-08T05:00:00Z")
        );
    }

    #[test]
    fn reads_proto_dues_and_rejects_bad_ones() {
        let good = pb::Due {
            value: Some(pb::due::Value::Date(taskmesh_proto::google::r#type::Date {
                year: 2026,
                month: 2,
                day: 28,
            })),
            time_zone: "Europe/London".into(),
        };
        assert_eq!(
            DueValue::from_proto(&good),
            Some(on(date(2026, 2, 28), London))
        );
        let mut bad = good.clone();
        bad.time_zone = "Mars/Olympus".into();
        assert_eq!(DueValue::from_proto(&bad), None);
        let mut bad = good;
        bad.value = Some(pb::due::Value::Date(taskmesh_proto::google::r#type::Date {
            year: 2026,
            month: 2,
            day: 30,
        }));
        assert_eq!(DueValue::from_proto(&bad), None);
    }
}
