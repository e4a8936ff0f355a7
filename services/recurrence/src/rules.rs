//! ValidateRule, PreviewOccurrences and BuildRule: rules without series or I/O.

use chrono::{DateTime, Utc};
use taskmesh_domain::{
    instant,
    recurrence::{Rule, RuleViolation, parse_zone},
    timestamp,
};
use taskmesh_platform::grpc::Violations;
use taskmesh_proto::recurrence::v1::{self as pb, rule_preset::Preset};

/// Most occurrences one preview returns.
const MAX_PREVIEW: i32 = 100;
/// Occurrences a preview returns when the request says 0.
const DEFAULT_PREVIEW: i32 = 10;
/// RFC 5545 weekday codes, Monday first.
const WEEKDAYS: [&str; 7] = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];

/// Parses `rrule` with `dtstart` in the zone named `zone`, collecting every problem: with an
/// unknown zone, the rule's own problems are found in UTC and reported after the zone's.
fn parse(rrule: &str, dtstart: DateTime<Utc>, zone: &str) -> Result<Rule, Vec<RuleViolation>> {
    match parse_zone(zone) {
        Ok(zone) => Rule::parse(rrule, dtstart, zone),
        Err(problem) => {
            let mut problems = vec![problem];
            if let Err(more) = Rule::parse(rrule, dtstart, chrono_tz::UTC) {
                problems.extend(more);
            }
            Err(problems)
        }
    }
}

/// ValidateRule: violations in the response, `dtstart` unset meaning `now`.
pub(crate) fn validate(
    req: &pb::ValidateRuleRequest,
    now: DateTime<Utc>,
) -> pb::ValidateRuleResponse {
    let dtstart = match req.dtstart.as_ref().map(instant) {
        None => Ok(now),
        Some(Some(time)) => Ok(time),
        Some(None) => Err(RuleViolation {
            part: "DTSTART".into(),
            description: "must be a timestamp in years 1 to 9999".into(),
        }),
    };
    let parsed = dtstart
        .map_err(|v| vec![v])
        .and_then(|dtstart| parse(&req.rrule, dtstart, &req.time_zone));
    match parsed {
        Ok(rule) => pb::ValidateRuleResponse {
            valid: true,
            violations: Vec::new(),
            normalized_rrule: rule.normalized(),
        },
        Err(problems) => pb::ValidateRuleResponse {
            valid: false,
            violations: problems
                .into_iter()
                .map(|p| pb::RuleViolation {
                    part: p.part,
                    description: p.description,
                })
                .collect(),
            normalized_rrule: String::new(),
        },
    }
}

/// PreviewOccurrences; every problem is a field violation.
pub(crate) fn preview(
    req: &pb::PreviewOccurrencesRequest,
) -> Result<pb::PreviewOccurrencesResponse, Violations> {
    let mut v = Violations::new();
    let dtstart = match req.dtstart.as_ref() {
        None => {
            v.add("dtstart", "is required");
            None
        }
        Some(ts) => instant(ts).or_else(|| {
            v.add("dtstart", "must be a timestamp in years 1 to 9999");
            None
        }),
    };
    let mut exdates = Vec::with_capacity(req.exdates.len());
    for (i, ts) in req.exdates.iter().enumerate() {
        match instant(ts) {
            Some(time) => exdates.push(time),
            None => v.add(format!("exdates[{i}]"), "must be a valid timestamp"),
        }
    }
    let after = req.after.as_ref().and_then(|ts| {
        instant(ts).or_else(|| {
            v.add("after", "must be a valid timestamp");
            None
        })
    });
    let count = match req.count {
        0 => DEFAULT_PREVIEW,
        n @ 1..=MAX_PREVIEW => n,
        _ => {
            v.add("count", format!("must be between 0 and {MAX_PREVIEW}"));
            DEFAULT_PREVIEW
        }
    };
    // Without a valid `dtstart` the rule and zone are still checked (from now).
    let parsed = parse(
        &req.rrule,
        dtstart.unwrap_or_else(taskmesh_domain::now),
        &req.time_zone,
    );
    let rule = match parsed {
        Ok(rule) => dtstart.map(|_| rule),
        Err(problems) => {
            for problem in problems {
                if problem.part == "time_zone" {
                    v.add("time_zone", problem.description);
                } else if problem.part == "DTSTART" {
                    v.add("dtstart", problem.description);
                } else {
                    v.add("rrule", problem.to_string());
                }
            }
            None
        }
    };
    match rule {
        Some(rule) if v.is_empty() => {
            let limit = usize::try_from(count).unwrap_or(10);
            let (times, exhausted) = rule.occurrences(after, &exdates, limit);
            Ok(pb::PreviewOccurrencesResponse {
                occurrences: times.into_iter().map(timestamp).collect(),
                exhausted,
            })
        }
        _ => Err(v),
    }
}

/// BuildRule: the `RRULE` of a preset (parts in RFC 5545 order).
pub(crate) fn build(preset: Option<&pb::RulePreset>) -> Result<String, Violations> {
    let mut v = Violations::new();
    let Some(preset) = preset else {
        v.add("preset", "is required");
        return Err(v);
    };
    let interval = match preset.interval {
        0 | 1 => None,
        n @ 2..=1000 => Some(n),
        _ => {
            v.add("preset.interval", "must be between 0 and 1000");
            None
        }
    };
    let (freq, by): (&str, Option<String>) = match &preset.preset {
        None => {
            v.add("preset.preset", "choose one preset");
            ("DAILY", None)
        }
        Some(Preset::Daily(_)) => ("DAILY", None),
        Some(Preset::Weekdays(_)) => ("WEEKLY", Some("BYDAY=MO,TU,WE,TH,FR".into())),
        Some(Preset::Weekly(weekly)) => {
            let mut days: Vec<usize> = Vec::new();
            for (i, day) in weekly.days.iter().enumerate() {
                match WEEKDAYS
                    .iter()
                    .position(|d| d.eq_ignore_ascii_case(day.trim()))
                {
                    Some(index) if !days.contains(&index) => days.push(index),
                    Some(_) => {}
                    None => v.add(
                        format!("preset.weekly.days[{i}]"),
                        "must be one of MO, TU, WE, TH, FR, SA, SU",
                    ),
                }
            }
            days.sort_unstable();
            let by = (!days.is_empty()).then(|| {
                let codes: Vec<&str> = days.iter().map(|d| WEEKDAYS[*d]).collect();
                format!("BYDAY={}", codes.join(","))
            });
            ("WEEKLY", by)
        }
        Some(Preset::MonthlyOnDay(monthly)) => {
            if !(1..=31).contains(&monthly.day) {
                v.add("preset.monthly_on_day.day", "must be between 1 and 31");
            }
            ("MONTHLY", Some(format!("BYMONTHDAY={}", monthly.day)))
        }
        Some(Preset::MonthlyOnLastDay(_)) => ("MONTHLY", Some("BYMONTHDAY=-1".into())),
        Some(Preset::Yearly(_)) => ("YEARLY", None),
    };
    if !v.is_empty() {
        return Err(v);
    }
    let mut rule = format!("FREQ={freq}");
    if let Some(interval) = interval {
        rule.push_str(&format!(";INTERVAL={interval}"));
    }
    if let Some(by) = by {
        rule.push(';');
        rule.push_str(&by);
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(p: Preset, interval: i32) -> pb::RulePreset {
        pb::RulePreset {
            preset: Some(p),
            interval,
        }
    }

    #[test]
    fn presets_map_onto_rules() {
        use pb::rule_preset::{Daily, MonthlyOnDay, MonthlyOnLastDay, Weekdays, Weekly, Yearly};
        let cases = [
            (preset(Preset::Daily(Daily {}), 0), "FREQ=DAILY"),
            (preset(Preset::Daily(Daily {}), 3), "FREQ=DAILY;INTERVAL=3"),
            (
                preset(Preset::Weekdays(Weekdays {}), 1),
                "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
            ),
            (
                preset(
                    Preset::Weekly(Weekly {
                        days: vec!["fr".into(), "MO".into(), "mo".into()],
                    }),
                    2,
                ),
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR",
            ),
            (
                preset(Preset::Weekly(Weekly { days: vec![] }), 0),
                "FREQ=WEEKLY",
            ),
            (
                preset(Preset::MonthlyOnDay(MonthlyOnDay { day: 31 }), 0),
                "FREQ=MONTHLY;BYMONTHDAY=31",
            ),
            (
                preset(Preset::MonthlyOnLastDay(MonthlyOnLastDay {}), 0),
                "FREQ=MONTHLY;BYMONTHDAY=-1",
            ),
            (preset(Preset::Yearly(Yearly {}), 0), "FREQ=YEARLY"),
        ];
        for (preset, expected) in cases {
            assert_eq!(build(Some(&preset)).unwrap(), expected);
        }
    }

    #[test]
    fn bad_presets_name_their_fields() {
        use pb::rule_preset::{MonthlyOnDay, Weekly};
        let fields = |p: Option<pb::RulePreset>| -> Vec<String> {
            let status = build(p.as_ref()).unwrap_err().into_status();
            taskmesh_platform::grpc::field_violations(&status)
                .into_iter()
                .map(|(field, _)| field)
                .collect()
        };
        assert_eq!(fields(None), ["preset"]);
        assert_eq!(
            fields(Some(preset(
                Preset::Weekly(Weekly {
                    days: vec!["MO".into(), "XX".into()]
                }),
                -1
            ))),
            ["preset.interval", "preset.weekly.days[1]"]
        );
        assert_eq!(
            fields(Some(preset(
                Preset::MonthlyOnDay(MonthlyOnDay { day: 0 }),
                0
            ))),
            ["preset.monthly_on_day.day"]
        );
    }
}
