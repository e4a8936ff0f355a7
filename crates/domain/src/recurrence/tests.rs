//! Rule cases checked against dates worked out by hand from the calendar and the zones' DST
//! rules (2026: US DST starts March 8 and ends November 1; UK BST starts March 29; Lord Howe
//! moves 30 minutes on October 4 2026 and April 4 2027).

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::*;
use crate::{DueKind, DueValue};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn zone(name: &str) -> Tz {
    parse_zone(name).unwrap()
}

/// Expands `rule` from `dtstart` (RFC 3339) in `zone`, at most `limit` occurrences.
fn expand(rule: &str, dtstart: &str, zone_name: &str, limit: usize) -> (Vec<String>, bool) {
    let rule = Rule::parse(rule, utc(dtstart), zone(zone_name))
        .unwrap_or_else(|v| panic!("{rule}: {v:?}"));
    let (times, exhausted) = rule.occurrences(None, &[], limit);
    let times = times
        .iter()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect();
    (times, exhausted)
}

#[test]
fn rule_table() {
    struct Case {
        what: &'static str,
        rule: &'static str,
        dtstart: &'static str,
        zone: &'static str,
        expect: &'static [&'static str],
    }
    let cases = [
        Case {
            what: "New York, 09:00 daily across the spring change (EST -> EDT)",
            rule: "FREQ=DAILY",
            dtstart: "2026-03-07T14:00:00Z",
            zone: "America/New_York",
            expect: &[
                "2026-03-07T14:00:00Z",
                "2026-03-08T13:00:00Z",
                "2026-03-09T13:00:00Z",
            ],
        },
        Case {
            what: "New York, 09:00 daily across the autumn change (EDT -> EST)",
            rule: "FREQ=DAILY",
            dtstart: "2026-10-31T13:00:00Z",
            zone: "America/New_York",
            expect: &[
                "2026-10-31T13:00:00Z",
                "2026-11-01T14:00:00Z",
                "2026-11-02T14:00:00Z",
            ],
        },
        Case {
            what: "New York, weekly 02:30 falls in the spring gap and moves forward to 03:30 EDT",
            rule: "FREQ=WEEKLY",
            dtstart: "2026-03-01T07:30:00Z",
            zone: "America/New_York",
            expect: &[
                "2026-03-01T07:30:00Z",
                "2026-03-08T07:30:00Z",
                "2026-03-15T06:30:00Z",
            ],
        },
        Case {
            what: "London, 08:00 daily across the start of BST",
            rule: "FREQ=DAILY;COUNT=3",
            dtstart: "2026-03-28T08:00:00Z",
            zone: "Europe/London",
            expect: &[
                "2026-03-28T08:00:00Z",
                "2026-03-29T07:00:00Z",
                "2026-03-30T07:00:00Z",
            ],
        },
        Case {
            what: "Lord Howe, 09:00 daily across its 30-minute spring change (+10:30 -> +11)",
            rule: "FREQ=DAILY",
            dtstart: "2026-10-02T22:30:00Z",
            zone: "Australia/Lord_Howe",
            expect: &[
                "2026-10-02T22:30:00Z",
                "2026-10-03T22:00:00Z",
                "2026-10-04T22:00:00Z",
            ],
        },
        Case {
            what: "Lord Howe, 09:00 daily across its 30-minute autumn change (+11 -> +10:30)",
            rule: "FREQ=DAILY",
            dtstart: "2027-04-02T22:00:00Z",
            zone: "Australia/Lord_Howe",
            expect: &[
                "2027-04-02T22:00:00Z",
                "2027-04-03T22:30:00Z",
                "2027-04-04T22:30:00Z",
            ],
        },
        Case {
            what: "yearly from February 29 occurs in leap years only",
            rule: "FREQ=YEARLY",
            dtstart: "2028-02-29T09:00:00Z",
            zone: "UTC",
            expect: &[
                "2028-02-29T09:00:00Z",
                "2032-02-29T09:00:00Z",
                "2036-02-29T09:00:00Z",
            ],
        },
        Case {
            what: "monthly on the 29th skips February of a common year",
            rule: "FREQ=MONTHLY;BYMONTHDAY=29",
            dtstart: "2027-01-29T09:00:00Z",
            zone: "UTC",
            expect: &[
                "2027-01-29T09:00:00Z",
                "2027-03-29T09:00:00Z",
                "2027-04-29T09:00:00Z",
            ],
        },
        Case {
            what: "monthly on the 29th keeps February of a leap year",
            rule: "FREQ=MONTHLY;BYMONTHDAY=29",
            dtstart: "2028-01-29T09:00:00Z",
            zone: "UTC",
            expect: &[
                "2028-01-29T09:00:00Z",
                "2028-02-29T09:00:00Z",
                "2028-03-29T09:00:00Z",
            ],
        },
        Case {
            what: "monthly on the 31st skips months without one (RFC 5545)",
            rule: "FREQ=MONTHLY;BYMONTHDAY=31",
            dtstart: "2026-01-31T09:00:00Z",
            zone: "UTC",
            expect: &[
                "2026-01-31T09:00:00Z",
                "2026-03-31T09:00:00Z",
                "2026-05-31T09:00:00Z",
                "2026-07-31T09:00:00Z",
                "2026-08-31T09:00:00Z",
            ],
        },
        Case {
            what: "the last day of the month is BYMONTHDAY=-1",
            rule: "FREQ=MONTHLY;BYMONTHDAY=-1",
            dtstart: "2028-01-31T09:00:00Z",
            zone: "UTC",
            expect: &[
                "2028-01-31T09:00:00Z",
                "2028-02-29T09:00:00Z",
                "2028-03-31T09:00:00Z",
                "2028-04-30T09:00:00Z",
            ],
        },
        Case {
            what: "the last Friday of the month",
            rule: "FREQ=MONTHLY;BYDAY=-1FR",
            dtstart: "2026-01-30T17:00:00Z",
            zone: "Europe/London",
            expect: &[
                "2026-01-30T17:00:00Z",
                "2026-02-27T17:00:00Z",
                "2026-03-27T17:00:00Z",
                "2026-04-24T16:00:00Z",
            ],
        },
        Case {
            what: "every weekday, over a weekend",
            rule: "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
            dtstart: "2026-11-20T14:00:00Z",
            zone: "America/New_York",
            expect: &[
                "2026-11-20T14:00:00Z",
                "2026-11-23T14:00:00Z",
                "2026-11-24T14:00:00Z",
                "2026-11-25T14:00:00Z",
            ],
        },
        Case {
            what: "the last workday of the month (BYSETPOS=-1)",
            rule: "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
            dtstart: "2026-01-30T09:00:00Z",
            zone: "UTC",
            expect: &[
                "2026-01-30T09:00:00Z",
                "2026-02-27T09:00:00Z",
                "2026-03-31T09:00:00Z",
                "2026-04-30T09:00:00Z",
                "2026-05-29T09:00:00Z",
            ],
        },
        Case {
            what: "WKST=MO (RFC 5545 section 3.3.10 example)",
            rule: "FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=MO",
            dtstart: "1997-08-05T13:00:00Z",
            zone: "America/New_York",
            expect: &[
                "1997-08-05T13:00:00Z",
                "1997-08-10T13:00:00Z",
                "1997-08-19T13:00:00Z",
                "1997-08-24T13:00:00Z",
            ],
        },
        Case {
            what: "WKST=SU changes the same rule (RFC 5545 section 3.3.10 example)",
            rule: "FREQ=WEEKLY;INTERVAL=2;COUNT=4;BYDAY=TU,SU;WKST=SU",
            dtstart: "1997-08-05T13:00:00Z",
            zone: "America/New_York",
            expect: &[
                "1997-08-05T13:00:00Z",
                "1997-08-17T13:00:00Z",
                "1997-08-19T13:00:00Z",
                "1997-08-31T13:00:00Z",
            ],
        },
        Case {
            what: "BYMONTH with BYMONTHDAY: January and July 1st",
            rule: "FREQ=YEARLY;BYMONTH=1,7;BYMONTHDAY=1",
            dtstart: "2026-01-01T09:00:00Z",
            zone: "UTC",
            expect: &[
                "2026-01-01T09:00:00Z",
                "2026-07-01T09:00:00Z",
                "2027-01-01T09:00:00Z",
            ],
        },
    ];
    for case in cases {
        let (times, _) = expand(case.rule, case.dtstart, case.zone, case.expect.len());
        assert_eq!(times, case.expect, "{}", case.what);
    }
}

#[test]
fn count_runs_out_and_until_is_inclusive() {
    let (times, exhausted) = expand("FREQ=DAILY;COUNT=3", "2026-11-23T09:00:00Z", "UTC", 10);
    assert_eq!(times.len(), 3);
    assert!(exhausted);
    let (times, exhausted) = expand("FREQ=DAILY", "2026-11-23T09:00:00Z", "UTC", 3);
    assert_eq!(times.len(), 3);
    assert!(!exhausted, "an endless rule is not exhausted");

    let (times, exhausted) = expand(
        "FREQ=DAILY;UNTIL=20261125T090000Z",
        "2026-11-23T09:00:00Z",
        "UTC",
        10,
    );
    assert_eq!(
        times,
        [
            "2026-11-23T09:00:00Z",
            "2026-11-24T09:00:00Z",
            "2026-11-25T09:00:00Z"
        ]
    );
    assert!(exhausted);
    // A date UNTIL includes that whole day in the rule's zone.
    let (times, _) = expand(
        "FREQ=DAILY;UNTIL=20261125",
        "2026-11-23T14:00:00Z",
        "America/New_York",
        10,
    );
    assert_eq!(
        times.last().map(String::as_str),
        Some("2026-11-25T14:00:00Z")
    );
}

#[test]
fn exdates_are_left_out_and_still_count() {
    let rule = Rule::parse("FREQ=DAILY;COUNT=4", utc("2026-11-23T09:00:00Z"), Tz::UTC).unwrap();
    let (times, exhausted) = rule.occurrences(None, &[utc("2026-11-24T09:00:00Z")], 10);
    assert_eq!(
        times,
        [
            utc("2026-11-23T09:00:00Z"),
            utc("2026-11-25T09:00:00Z"),
            utc("2026-11-26T09:00:00Z")
        ]
    );
    assert!(exhausted);
    let (after, _) = rule.occurrences(Some(utc("2026-11-25T09:00:00Z")), &[], 10);
    assert_eq!(after, [utc("2026-11-26T09:00:00Z")]);
}

#[test]
fn normalizes_case_order_and_prefix() {
    let rule = Rule::parse(
        "rrule:byday=mo,we;interval=2;freq=weekly",
        utc("2026-11-23T09:00:00Z"),
        Tz::UTC,
    )
    .unwrap();
    assert_eq!(rule.normalized(), "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE");
}

fn problems(rule: &str) -> Vec<RuleViolation> {
    Rule::parse(rule, utc("2026-11-23T09:00:00Z"), zone("Europe/Berlin"))
        .err()
        .unwrap_or_else(|| panic!("{rule} should be invalid"))
}

fn parts_of(rule: &str) -> Vec<String> {
    problems(rule).into_iter().map(|v| v.part).collect()
}

#[test]
fn invalid_rules_name_the_part_at_fault() {
    assert_eq!(
        parts_of("FREQ=DAILY;COUNT=3;UNTIL=20261130T000000Z"),
        ["COUNT"]
    );
    assert_eq!(parts_of("INTERVAL=2;BYDAY=MO"), ["FREQ"]);
    assert_eq!(parts_of("FREQ=FORTNIGHTLY"), ["FREQ"]);
    assert_eq!(parts_of("FREQ=MINUTELY"), ["FREQ"]);
    assert_eq!(parts_of(""), ["RRULE"]);
    assert_eq!(parts_of("FREQ=DAILY;FOO=1"), ["FOO"]);
    assert_eq!(parts_of("FREQ=DAILY;FREQ=WEEKLY"), ["FREQ"]);
    assert_eq!(parts_of("FREQ=DAILY;COUNT"), ["RRULE"]);
    assert_eq!(parts_of("FREQ=WEEKLY;BYDAY=XX"), ["BYDAY"]);
    assert_eq!(parts_of("FREQ=MONTHLY;BYMONTHDAY=32"), ["BYMONTHDAY"]);
    assert_eq!(parts_of("FREQ=DAILY;BYSETPOS=1"), ["BYSETPOS"]);
    assert_eq!(parts_of("FREQ=DAILY;COUNT=0"), ["COUNT"]);
    assert_eq!(parts_of("FREQ=DAILY;UNTIL=20261201T000000"), ["UNTIL"]);
    assert_eq!(parts_of("FREQ=DAILY;UNTIL=20261101T000000Z"), ["UNTIL"]);
    // February 30th never happens: the expansion is empty.
    let empty = problems("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30");
    assert_eq!(empty[0].part, "RRULE");
    assert!(empty[0].description.contains("no occurrence"), "{empty:?}");
    assert_eq!(
        parse_zone("Mars/Olympus_Mons").unwrap_err().part,
        "time_zone"
    );
    // Every problem at once, not only the first.
    assert_eq!(parts_of("COUNT=2;UNTIL=2026;FOO=1").len(), 4);
}

fn due_at(text: &str, zone_name: &str) -> DueValue {
    DueValue {
        kind: DueKind::Time(utc(text)),
        time_zone: zone(zone_name),
    }
}

fn due_on(y: i32, m: u32, d: u32, zone_name: &str) -> DueValue {
    DueValue {
        kind: DueKind::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap()),
        time_zone: zone(zone_name),
    }
}

fn next_of(rule: &str, due: &DueValue, anchor: Anchor, used: u64, done: &str) -> Next {
    next_with(rule, due, anchor, &[], used, done)
}

fn next_with(
    rule: &str,
    due: &DueValue,
    anchor: Anchor,
    exdates: &[DateTime<Utc>],
    used: u64,
    done: &str,
) -> Next {
    let series = SeriesPosition {
        rrule: rule,
        due,
        wall_time: None,
        anchor,
        exdates,
        used,
    };
    next_occurrence(&series, utc(done)).unwrap()
}

#[test]
fn next_occurrence_from_the_due() {
    // Completed on time, across the DST change: 09:00 stays 09:00.
    let due = due_at("2026-03-07T14:00:00Z", "America/New_York");
    assert_eq!(
        next_of("FREQ=DAILY", &due, Anchor::Due, 1, "2026-03-07T15:00:00Z"),
        Next::Occurrence {
            due: due_at("2026-03-08T13:00:00Z", "America/New_York"),
            used: 2
        }
    );
    // Completed early: still the occurrence after the current one.
    assert_eq!(
        next_of("FREQ=DAILY", &due, Anchor::Due, 1, "2026-03-05T15:00:00Z"),
        Next::Occurrence {
            due: due_at("2026-03-08T13:00:00Z", "America/New_York"),
            used: 2
        }
    );
    // Completed overdue on 03-09 at 12:00 EDT: not 03-08 or 03-09 09:00 (past), but 03-10.
    assert_eq!(
        next_of("FREQ=DAILY", &due, Anchor::Due, 1, "2026-03-09T16:00:00Z"),
        Next::Occurrence {
            due: due_at("2026-03-10T13:00:00Z", "America/New_York"),
            used: 4
        }
    );
    // Monthly from January 31st goes to March 31st; the last day of the month to February's.
    let due = due_at("2026-01-31T09:00:00Z", "UTC");
    assert_eq!(
        next_of("FREQ=MONTHLY", &due, Anchor::Due, 1, "2026-01-31T10:00:00Z"),
        Next::Occurrence {
            due: due_at("2026-03-31T09:00:00Z", "UTC"),
            used: 2
        }
    );
    assert_eq!(
        next_of(
            "FREQ=MONTHLY;BYMONTHDAY=-1",
            &due,
            Anchor::Due,
            1,
            "2026-01-31T10:00:00Z"
        ),
        Next::Occurrence {
            due: due_at("2026-02-28T09:00:00Z", "UTC"),
            used: 2
        }
    );
}

#[test]
fn next_occurrence_of_a_date_only_due() {
    let due = due_on(2026, 3, 5, "America/New_York");
    // On time (the day itself, evening local): the next day.
    assert_eq!(
        next_of("FREQ=DAILY", &due, Anchor::Due, 1, "2026-03-06T02:00:00Z"),
        Next::Occurrence {
            due: due_on(2026, 3, 6, "America/New_York"),
            used: 2
        }
    );
    // Three days overdue, done on 03-08 local: 03-09, not a day already past or today.
    assert_eq!(
        next_of("FREQ=DAILY", &due, Anchor::Due, 1, "2026-03-08T20:00:00Z"),
        Next::Occurrence {
            due: due_on(2026, 3, 9, "America/New_York"),
            used: 5
        }
    );
}

#[test]
fn next_occurrence_from_the_completion() {
    // Every third day from completion, at the due's time of day.
    let due = due_at("2026-01-01T09:00:00Z", "Europe/London");
    assert_eq!(
        next_of(
            "FREQ=DAILY;INTERVAL=3",
            &due,
            Anchor::Completion,
            1,
            "2026-01-10T15:00:00Z"
        ),
        Next::Occurrence {
            due: due_at("2026-01-13T09:00:00Z", "Europe/London"),
            used: 2
        }
    );
    // In summer time the same wall-clock time is an hour earlier in UTC.
    assert_eq!(
        next_of(
            "FREQ=WEEKLY",
            &due,
            Anchor::Completion,
            1,
            "2026-06-10T15:00:00Z"
        ),
        Next::Occurrence {
            due: due_at("2026-06-17T08:00:00Z", "Europe/London"),
            used: 2
        }
    );
}

#[test]
fn series_end_with_count_and_until() {
    let due = due_at("2026-11-23T09:00:00Z", "UTC");
    assert_eq!(
        next_of(
            "FREQ=DAILY;COUNT=2",
            &due,
            Anchor::Due,
            2,
            "2026-11-23T10:00:00Z"
        ),
        Next::Ended(EndReason::CountReached)
    );
    assert!(matches!(
        next_of(
            "FREQ=DAILY;COUNT=3",
            &due,
            Anchor::Due,
            2,
            "2026-11-23T10:00:00Z"
        ),
        Next::Occurrence { used: 3, .. }
    ));
    // Overdue past the remaining occurrences: they count, and the series ends.
    assert_eq!(
        next_of(
            "FREQ=DAILY;COUNT=3",
            &due,
            Anchor::Due,
            1,
            "2026-11-29T10:00:00Z"
        ),
        Next::Ended(EndReason::CountReached)
    );
    assert_eq!(
        next_of(
            "FREQ=DAILY;UNTIL=20261124T090000Z",
            &due,
            Anchor::Due,
            1,
            "2026-11-23T10:00:00Z"
        ),
        Next::Occurrence {
            due: due_at("2026-11-24T09:00:00Z", "UTC"),
            used: 2
        }
    );
    assert_eq!(
        next_of(
            "FREQ=DAILY;UNTIL=20261123T235959Z",
            &due,
            Anchor::Due,
            1,
            "2026-11-23T10:00:00Z"
        ),
        Next::Ended(EndReason::UntilPassed)
    );
    assert_eq!(
        next_of(
            "FREQ=DAILY;UNTIL=20261130",
            &due,
            Anchor::Completion,
            1,
            "2026-12-03T10:00:00Z"
        ),
        Next::Ended(EndReason::UntilPassed)
    );
}

#[test]
fn next_occurrence_skips_exdates() {
    let due = due_at("2026-11-23T09:00:00Z", "UTC");
    assert_eq!(
        next_with(
            "FREQ=DAILY",
            &due,
            Anchor::Due,
            &[utc("2026-11-24T09:00:00Z")],
            1,
            "2026-11-23T10:00:00Z"
        ),
        Next::Occurrence {
            due: due_at("2026-11-25T09:00:00Z", "UTC"),
            used: 3
        }
    );
}

#[test]
fn dtstart_is_the_first_occurrence_even_off_the_rule() {
    // 2026-11-25 is a Wednesday; the rule says Mondays. RFC 5545: DTSTART counts, COUNT too.
    let (times, exhausted) = expand(
        "FREQ=WEEKLY;BYDAY=MO;COUNT=3",
        "2026-11-25T09:00:00Z",
        "UTC",
        10,
    );
    assert_eq!(
        times,
        [
            "2026-11-25T09:00:00Z",
            "2026-11-30T09:00:00Z",
            "2026-12-07T09:00:00Z"
        ]
    );
    assert!(exhausted);
}

#[test]
fn a_time_moved_by_a_dst_gap_does_not_move_the_series() {
    // Daily at 02:30 in New York: 2026-03-08 02:30 does not exist and moves to 03:30 EDT.
    let zone = "America/New_York";
    let due = due_at("2026-03-07T07:30:00Z", zone);
    let gap = due_at("2026-03-08T07:30:00Z", zone);
    assert_eq!(
        next_of("FREQ=DAILY", &due, Anchor::Due, 1, "2026-03-07T08:00:00Z"),
        Next::Occurrence {
            due: gap.clone(),
            used: 2
        }
    );
    // From the moved occurrence, the series' own 02:30 comes back (06:30Z in EDT).
    let series = SeriesPosition {
        rrule: "FREQ=DAILY",
        due: &gap,
        wall_time: Some(chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap()),
        anchor: Anchor::Due,
        exdates: &[],
        used: 2,
    };
    assert_eq!(
        next_occurrence(&series, utc("2026-03-08T08:00:00Z")).unwrap(),
        Next::Occurrence {
            due: due_at("2026-03-09T06:30:00Z", zone),
            used: 3
        }
    );
    assert_eq!(
        wall_time_of(&due),
        chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap()
    );
}

#[test]
fn date_only_series_move_by_days_and_skip_exdates_by_day() {
    // Chile starts DST at midnight (00:00 -> 01:00 on 2026-09-06): that day starts at 01:00.
    let zone = "America/Santiago";
    let mut due = due_on(2026, 9, 5, zone);
    let mut seen = Vec::new();
    // 09-07 is skipped, given as some instant of that day (local noon).
    let exdate = crate::local_instant(
        NaiveDate::from_ymd_opt(2026, 9, 7)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap(),
        zone.parse().unwrap(),
    );
    for used in 1..=3 {
        let next = next_with(
            "FREQ=DAILY",
            &due,
            Anchor::Due,
            &[exdate],
            used,
            "2026-09-01T12:00:00Z",
        );
        let Next::Occurrence { due: next, .. } = next else {
            panic!("the series goes on");
        };
        seen.push(next.clone());
        due = next;
    }
    assert_eq!(
        seen,
        [
            due_on(2026, 9, 6, zone),
            due_on(2026, 9, 8, zone),
            due_on(2026, 9, 9, zone)
        ]
    );
}

#[test]
fn sub_daily_rules_on_date_only_dues_move_a_day_at_least() {
    // (TaskService refuses such rules on date-only dues; a stored one still moves by days,
    // and the hours of the current day do not count.)
    let due = due_on(2026, 11, 23, "UTC");
    assert!(matches!(
        next_of("FREQ=HOURLY", &due, Anchor::Due, 1, "2026-11-23T01:00:00Z"),
        Next::Occurrence { due, .. } if due == due_on(2026, 11, 24, "UTC")
    ));
}

#[test]
fn an_expansion_that_would_run_too_long_gives_up() {
    // Hourly from a due two centuries back: more than the walk's budget.
    let due = due_at("1826-01-01T00:00:00Z", "UTC");
    let series = SeriesPosition {
        rrule: "FREQ=HOURLY",
        due: &due,
        wall_time: None,
        anchor: Anchor::Due,
        exdates: &[],
        used: 1,
    };
    assert_eq!(
        next_occurrence(&series, utc("2026-11-23T10:00:00Z")),
        Err(NextError::TooFar)
    );
}

#[test]
fn the_walk_budget_counts_periods_not_time() {
    // Daily at 10:00, walked hour by hour: a series 50 years behind (438,000 hours, 18,000
    // occurrences) is within the budget of 500,000 periods, on any machine however busy;
    // one 60 years behind (525,960 hours, but only 22,000 occurrences, far below the
    // occurrence budget) is not.
    let next_from = |due: &str| {
        let due = due_at(due, "UTC");
        next_occurrence(
            &SeriesPosition {
                rrule: "FREQ=HOURLY;BYHOUR=10;BYMINUTE=0;BYSECOND=0",
                due: &due,
                wall_time: None,
                anchor: Anchor::Due,
                exdates: &[],
                used: 1,
            },
            utc("2026-11-23T10:30:00Z"),
        )
    };
    assert!(matches!(
        next_from("1976-11-23T10:00:00Z"),
        Ok(Next::Occurrence { due, .. }) if due == due_at("2026-11-24T10:00:00Z", "UTC")
    ));
    assert_eq!(next_from("1966-11-23T10:00:00Z"), Err(NextError::TooFar));
}

#[test]
fn a_rule_that_rarely_matches_stops_at_the_period_budget() {
    // Noon of each February 29, walked hour by hour: the budget of 500,000 hours (about 57
    // years) holds the 15 leap days from 2000 to 2056, and the expansion gives up there.
    let (times, exhausted) = expand(
        "FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=12;BYMINUTE=0;BYSECOND=0",
        "2000-02-29T12:00:00Z",
        "UTC",
        100,
    );
    assert!(!exhausted, "gave up, did not run out");
    let expected: Vec<String> = (2000..=2056)
        .step_by(4)
        .map(|year| format!("{year}-02-29T12:00:00Z"))
        .collect();
    assert_eq!(times, expected);
}
