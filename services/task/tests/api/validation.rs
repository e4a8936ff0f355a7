//! Bad input: `INVALID_ARGUMENT` with field violations, and nothing changes.

use prost_types::FieldMask;
use taskmesh_platform::grpc::field_violations;
use taskmesh_proto::task::v1::{
    CreateTaskRequest, Due, ListChangesRequest, ListTasksRequest, Priority, Recurrence, Reminder,
    UpdateTaskRequest, reminder,
};
use taskmesh_testkit::{MeshOptions, authed};
use tonic::Code;

use crate::helpers::{create, due, start, task};

fn fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    field_violations(status)
        .into_iter()
        .map(|(field, _)| field)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_with_field_violations_and_changes_nothing() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    let existing = create(&mut client, "alice", task("keep me", Priority::Low)).await;

    let mut bad = task("   ", Priority::None);
    bad.priority = 42;
    bad.due = Some(Due {
        value: None,
        time_zone: "Mars/Olympus_Mons".into(),
    });
    bad.reminders = vec![Reminder {
        id: "BAD ID".into(),
        trigger: Some(reminder::Trigger::RelativeToDue(prost_types::Duration {
            seconds: -900,
            nanos: 0,
        })),
    }];
    bad.tags = vec![String::new()];
    let status = client
        .create_task(authed(
            "alice",
            CreateTaskRequest {
                task: Some(bad),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    let violated = fields(&status);
    for field in [
        "task.title",
        "task.priority",
        "task.due.time_zone",
        "task.due",
        "task.reminders[0].id",
        "task.tags[0]",
    ] {
        assert!(
            violated.contains(&field.to_owned()),
            "{field} missing from {violated:?}"
        );
    }

    let nul = task("nul\u{0} in title", Priority::None);
    let status = client
        .create_task(authed(
            "alice",
            CreateTaskRequest {
                task: Some(nul),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["task.title"]);

    let mut no_due = task("recurring without due", Priority::None);
    no_due.recurrence = Some(Recurrence {
        rrule: "FREQ=DAILY".into(),
        ..Default::default()
    });
    let status = client
        .create_task(authed(
            "alice",
            CreateTaskRequest {
                task: Some(no_due),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert!(fields(&status).contains(&"task.recurrence".to_owned()));

    let mut bad_rule = task("bad rule", Priority::None);
    bad_rule.due = Some(due("2026-12-01T09:00:00Z", "America/New_York"));
    bad_rule.recurrence = Some(Recurrence {
        rrule: "FREQ=SOMETIMES".into(),
        ..Default::default()
    });
    let status = client
        .create_task(authed(
            "alice",
            CreateTaskRequest {
                task: Some(bad_rule),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["task.recurrence.rrule"]);

    for (request, field) in [
        (
            ListTasksRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListTasksRequest {
                filter: "priority >>> HIGH".into(),
                ..Default::default()
            },
            "filter",
        ),
        (
            ListTasksRequest {
                filter: "colour = red".into(),
                ..Default::default()
            },
            "filter",
        ),
        (
            ListTasksRequest {
                order_by: "favourite".into(),
                ..Default::default()
            },
            "order_by",
        ),
        (
            ListTasksRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let status = client
            .list_tasks(authed("alice", request))
            .await
            .unwrap_err();
        assert_eq!(fields(&status), [field]);
    }

    for mask in [
        vec![],
        vec!["state".to_owned()],
        vec!["title.foo".to_owned()],
        vec!["name".to_owned()],
    ] {
        let mut change = existing.clone();
        change.title = "changed".into();
        let status = client
            .update_task(authed(
                "alice",
                UpdateTaskRequest {
                    task: Some(change),
                    update_mask: Some(FieldMask { paths: mask }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(fields(&status), ["update_mask"]);
    }
    let mut empty_title = existing.clone();
    empty_title.title = String::new();
    let status = client
        .update_task(authed(
            "alice",
            UpdateTaskRequest {
                task: Some(empty_title),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["task.title"]);

    let status = client
        .get_task(authed(
            "alice",
            taskmesh_proto::task::v1::GetTaskRequest {
                name: "tasks/../etc".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["name"]);
    let status = client
        .list_changes(authed(
            "alice",
            ListChangesRequest {
                after_sequence: -5,
                page_size: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&status), ["after_sequence"]);

    // Nothing changed: one task, as it was, and only its creation in the change log.
    let listed = client
        .list_tasks(authed("alice", ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tasks, vec![existing]);
    let changes = client
        .list_changes(authed("alice", ListChangesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changes.latest_sequence, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_tokens_are_unauthenticated() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    let status = client
        .list_tasks(tonic::Request::new(ListTasksRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(ListTasksRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Bearer not.a.jwt".parse().unwrap());
    let status = client.list_tasks(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}
