//! The next task of a series, built from the current one (see `Task.recurrence` in
//! `taskmesh/task/v1/task.proto` for what it inherits).

use chrono::{DateTime, Utc};
use taskmesh_domain::{DueKind, DueValue, instant};
use taskmesh_proto::task::v1::{self as pb, reminder::Trigger};

/// Longest reminder offset TaskService accepts (366 days), in seconds.
const MAX_OFFSET_SECONDS: i64 = 366 * 24 * 3600;

/// The task that follows `current` (a recurring task with a valid due) at `next`: title,
/// description, priority, tags, reminders, rule, anchor and the `EXDATE`s after `next`
/// carried over; `recurrence.previous_task` names `current`.
pub(crate) fn next_task(current: &pb::Task, current_due: &DueValue, next: &DueValue) -> pb::Task {
    let next_start = next.start();
    let recurrence = current.recurrence.as_ref().map(|r| pb::Recurrence {
        rrule: r.rrule.clone(),
        anchor: r.anchor,
        exdates: r
            .exdates
            .iter()
            .filter(|ts| instant(ts).is_some_and(|t| t > next_start))
            .copied()
            .collect(),
        series: r.series.clone(),
        previous_task: current.name.clone(),
    });
    pb::Task {
        title: current.title.clone(),
        description: current.description.clone(),
        priority: current.priority,
        tags: current.tags.clone(),
        due: Some(next.to_proto()),
        reminders: current
            .reminders
            .iter()
            .filter_map(|r| carried_reminder(r, current_due))
            .collect(),
        recurrence,
        ..Default::default()
    }
}

/// A reminder for the next occurrence: an offset from the due as is; an absolute time as
/// the same offset from the current due (exact seconds from a due time, wall-clock from the
/// start of a date-only due's day). `None` when that offset is out of range.
fn carried_reminder(reminder: &pb::Reminder, due: &DueValue) -> Option<pb::Reminder> {
    let trigger = match reminder.trigger.as_ref()? {
        Trigger::RelativeToDue(offset) => Trigger::RelativeToDue(*offset),
        Trigger::AbsoluteTime(ts) => {
            let seconds = offset_seconds(instant(ts)?, due);
            if seconds.unsigned_abs() > MAX_OFFSET_SECONDS.unsigned_abs() {
                return None;
            }
            Trigger::RelativeToDue(prost_types::Duration { seconds, nanos: 0 })
        }
    };
    Some(pb::Reminder {
        id: reminder.id.clone(),
        trigger: Some(trigger),
    })
}

/// Whole seconds from the due's reference point to `time` (see [`carried_reminder`]).
fn offset_seconds(time: DateTime<Utc>, due: &DueValue) -> i64 {
    match due.kind {
        DueKind::Time(due_time) => (time - due_time).num_seconds(),
        DueKind::Date(date) => {
            let local = time.with_timezone(&due.time_zone).naive_local();
            (local - date.and_time(chrono::NaiveTime::MIN)).num_seconds()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use taskmesh_domain::timestamp;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_next_task_inherits_and_links() {
        let zone = chrono_tz::Europe::Berlin;
        let due = DueValue {
            kind: DueKind::Time(utc("2026-11-23T08:00:00Z")),
            time_zone: zone,
        };
        let next = DueValue {
            kind: DueKind::Time(utc("2026-11-30T08:00:00Z")),
            time_zone: zone,
        };
        let current = pb::Task {
            name: "tasks/0193a1c4-0000-7000-8000-000000000001".into(),
            title: "Water plants".into(),
            description: "the big ones".into(),
            priority: 4,
            tags: vec!["home".into()],
            due: Some(due.to_proto()),
            reminders: vec![
                pb::Reminder {
                    id: "early".into(),
                    trigger: Some(Trigger::RelativeToDue(prost_types::Duration {
                        seconds: -900,
                        nanos: 0,
                    })),
                },
                pb::Reminder {
                    id: "fixed".into(),
                    trigger: Some(Trigger::AbsoluteTime(timestamp(utc(
                        "2026-11-22T18:00:00Z",
                    )))),
                },
            ],
            recurrence: Some(pb::Recurrence {
                rrule: "FREQ=WEEKLY".into(),
                anchor: 1,
                exdates: vec![
                    timestamp(utc("2026-11-30T08:00:00Z")),
                    timestamp(utc("2026-12-07T08:00:00Z")),
                ],
                series: "series/0193a1c4-0000-7000-8000-0000000000aa".into(),
                previous_task: String::new(),
            }),
            state: 2,
            etag: "v3".into(),
            version: 3,
            ..Default::default()
        };
        let task = next_task(&current, &due, &next);
        assert_eq!(task.name, "");
        assert_eq!(task.title, "Water plants");
        assert_eq!(task.description, "the big ones");
        assert_eq!(
            (task.priority, task.tags.clone()),
            (4, vec!["home".to_owned()])
        );
        assert_eq!(task.due, Some(next.to_proto()));
        assert_eq!((task.state, task.version, task.etag.as_str()), (0, 0, ""));
        let offsets: Vec<(String, i64)> = task
            .reminders
            .iter()
            .map(|r| match r.trigger {
                Some(Trigger::RelativeToDue(d)) => (r.id.clone(), d.seconds),
                _ => panic!("every carried reminder is relative"),
            })
            .collect();
        assert_eq!(
            offsets,
            [("early".to_owned(), -900), ("fixed".to_owned(), -14 * 3600)]
        );
        let recurrence = task.recurrence.unwrap();
        assert_eq!(recurrence.previous_task, current.name);
        assert_eq!(
            recurrence.series,
            "series/0193a1c4-0000-7000-8000-0000000000aa"
        );
        assert_eq!(recurrence.exdates, [timestamp(utc("2026-12-07T08:00:00Z"))]);
    }

    #[test]
    fn absolute_reminders_of_date_only_dues_become_wall_clock_offsets() {
        let zone = chrono_tz::America::New_York;
        let due = DueValue {
            kind: DueKind::Date(NaiveDate::from_ymd_opt(2026, 3, 7).unwrap()),
            time_zone: zone,
        };
        // 08:00 EST on the day: 8 hours after its start, wall clock.
        assert_eq!(offset_seconds(utc("2026-03-07T13:00:00Z"), &due), 8 * 3600);
    }
}
