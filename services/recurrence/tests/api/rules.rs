//! ValidateRule, PreviewOccurrences and BuildRule through the gateway, and bad rules on
//! tasks.

use taskmesh_domain::timestamp;
use taskmesh_platform::grpc::field_violations;
use taskmesh_proto::{
    recurrence::v1::{
        BuildRuleRequest, PreviewOccurrencesRequest, RulePreset, ValidateRuleRequest,
        rule_preset::{MonthlyOnLastDay, Preset},
    },
    task::v1::{CreateTaskRequest, ListTasksRequest},
};
use taskmesh_testkit::{MeshOptions, authed};
use tonic::Code;

use crate::helpers::*;

fn preview_request(
    rrule: &str,
    dtstart: &str,
    zone: &str,
    count: i32,
) -> PreviewOccurrencesRequest {
    PreviewOccurrencesRequest {
        rrule: rrule.into(),
        dtstart: Some(timestamp(utc(dtstart))),
        time_zone: zone.into(),
        count,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_validated_previewed_and_built() {
    let (_mesh, mut tasks, mut recurrences) = start(MeshOptions::default()).await;

    // Valid: normalized. Invalid: violations in the body, each naming its part.
    let valid = recurrences
        .validate_rule(authed(
            "alice",
            ValidateRuleRequest {
                rrule: "byday=-1fr;freq=monthly".into(),
                dtstart: None,
                time_zone: "Europe/London".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid);
    assert_eq!(valid.normalized_rrule, "FREQ=MONTHLY;BYDAY=-1FR");
    let invalid = recurrences
        .validate_rule(authed(
            "alice",
            ValidateRuleRequest {
                rrule: "COUNT=3;UNTIL=20270101T000000Z;BYDAY=XX".into(),
                dtstart: None,
                time_zone: "Europe/London".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!invalid.valid);
    let parts: Vec<&str> = invalid.violations.iter().map(|v| v.part.as_str()).collect();
    assert_eq!(parts, ["FREQ", "COUNT"]);

    // 09:00 New York, across the spring change: 14:00Z, then 13:00Z.
    let preview = recurrences
        .preview_occurrences(authed(
            "alice",
            preview_request(
                "FREQ=DAILY;COUNT=3",
                "2026-03-07T14:00:00Z",
                "America/New_York",
                0,
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        preview.occurrences,
        [
            timestamp(utc("2026-03-07T14:00:00Z")),
            timestamp(utc("2026-03-08T13:00:00Z")),
            timestamp(utc("2026-03-09T13:00:00Z")),
        ]
    );
    assert!(preview.exhausted, "COUNT=3 ran out before 10");

    // Bad rules: INVALID_ARGUMENT with field violations, one per problem.
    let cases: [(PreviewOccurrencesRequest, &[(&str, &str)]); 4] = [
        (
            preview_request(
                "FREQ=DAILY;COUNT=2;UNTIL=20270101T000000Z",
                "2026-11-23T09:00:00Z",
                "UTC",
                5,
            ),
            &[("rrule", "COUNT:")],
        ),
        (
            preview_request("INTERVAL=2", "2026-11-23T09:00:00Z", "UTC", 5),
            &[("rrule", "FREQ:")],
        ),
        (
            preview_request(
                "FREQ=DAILY;INTERVAL=0",
                "2026-11-23T09:00:00Z",
                "Europe/Atlantis",
                5,
            ),
            &[("time_zone", ""), ("rrule", "INTERVAL:")],
        ),
        (
            preview_request(
                "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
                "2026-11-23T09:00:00Z",
                "UTC",
                500,
            ),
            &[("count", ""), ("rrule", "RRULE: has no occurrence")],
        ),
    ];
    for (request, expected) in cases {
        let rrule = request.rrule.clone();
        let status = recurrences
            .preview_occurrences(authed("alice", request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{rrule}");
        let violations = field_violations(&status);
        assert_eq!(violations.len(), expected.len(), "{rrule}: {violations:?}");
        for ((field, description), (want_field, want_start)) in violations.iter().zip(expected) {
            assert_eq!(field, want_field, "{rrule}");
            assert!(
                description.starts_with(want_start),
                "{rrule}: {description}"
            );
        }
    }

    let built = recurrences
        .build_rule(authed(
            "alice",
            BuildRuleRequest {
                preset: Some(RulePreset {
                    preset: Some(Preset::MonthlyOnLastDay(MonthlyOnLastDay {})),
                    interval: 2,
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(built.rrule, "FREQ=MONTHLY;INTERVAL=2;BYMONTHDAY=-1");

    // A task with a bad rule is refused with the part named, and nothing is created.
    let status = tasks
        .create_task(authed(
            "alice",
            CreateTaskRequest {
                task: Some(recurring(
                    "Bad",
                    utc("2026-11-23T09:00:00Z"),
                    "UTC",
                    rule("FREQ=DAILY;COUNT=2;UNTIL=20270101T000000Z", 1),
                )),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = field_violations(&status);
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].0, "task.recurrence.rrule");
    assert!(violations[0].1.starts_with("COUNT:"), "{violations:?}");
    let listed = tasks
        .list_tasks(authed("alice", ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tasks.is_empty());

    // A date-only due repeats by days at most.
    let mut hourly = recurring(
        "Hourly",
        utc("2026-11-23T09:00:00Z"),
        "UTC",
        rule("FREQ=HOURLY", 1),
    );
    hourly.due = Some(taskmesh_proto::task::v1::Due {
        value: Some(taskmesh_proto::task::v1::due::Value::Date(
            taskmesh_proto::google::r#type::Date {
                year: 2026,
                month: 11,
                day: 23,
            },
        )),
        time_zone: "UTC".into(),
    });
    let status = tasks
        .create_task(authed(
            "alice",
            CreateTaskRequest {
                task: Some(hourly),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    let violations = field_violations(&status);
    assert_eq!(violations[0].0, "task.recurrence.rrule");
    assert!(violations[0].1.starts_with("FREQ:"), "{violations:?}");

    // A stored rule is canonical.
    let task = create(
        &mut tasks,
        "alice",
        recurring(
            "Fine",
            utc("2026-11-23T09:00:00Z"),
            "UTC",
            rule("byday=mo,fr;freq=weekly", 0),
        ),
    )
    .await;
    assert_eq!(task.recurrence.unwrap().rrule, "FREQ=WEEKLY;BYDAY=MO,FR");
}
