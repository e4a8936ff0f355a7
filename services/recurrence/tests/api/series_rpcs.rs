//! SkipOccurrence, StopSeries, DeleteOccurrences and GetSeries: their effect on the tasks,
//! their request ids, and isolation.

use std::time::Duration;

use prost::Message;
use taskmesh_domain::timestamp;
use taskmesh_platform::{grpc::field_violations, kafka::Topic};
use taskmesh_proto::{
    events::v1::CreateTaskCommand,
    recurrence::v1::{
        DeleteOccurrencesRequest, GetSeriesRequest, SkipOccurrenceRequest, StopSeriesRequest,
        delete_occurrences_request::Scope, series::EndReason,
    },
    task::v1::{GetTaskRequest, Task},
};
use taskmesh_testkit::{MeshOptions, authed, eventually};
use tonic::Code;

use crate::helpers::*;

async fn get_task(tasks: &Tasks, user: &str, name: &str) -> Task {
    tasks
        .clone()
        .get_task(authed(user, GetTaskRequest { name: name.into() }))
        .await
        .expect("get succeeds")
        .into_inner()
        .task
        .expect("task returned")
}

/// Waits (up to 15 s) until `done` holds for task `name`.
async fn task_when(tasks: &Tasks, user: &str, name: &str, done: impl Fn(&Task) -> bool) -> Task {
    let done = &done;
    eventually(Duration::from_secs(15), || async move {
        let task = get_task(tasks, user, name).await;
        done(&task).then_some(task)
    })
    .await
    .unwrap_or_else(|| panic!("{name} never reached the expected state"))
}

fn skip(task: &str, request_id: &str) -> SkipOccurrenceRequest {
    SkipOccurrenceRequest {
        task: task.into(),
        request_id: request_id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_stop_and_delete_occurrences() {
    let (mesh, mut tasks, mut recurrences) = start(MeshOptions::default()).await;
    let at = utc("2027-02-01T09:00:00Z");

    // Skip: the occurrence completing now would create (02-02) becomes an EXDATE; a retry
    // with the same request id answers the same and skips nothing more.
    let daily = create(
        &mut tasks,
        "alice",
        recurring("Daily", at, "UTC", rule("FREQ=DAILY", 1)),
    )
    .await;
    let request_id = "8d5e0b1e-7f0b-4b59-9d8e-6d1f1c7a0001";
    for _ in 0..2 {
        let skipped = recurrences
            .skip_occurrence(authed("alice", skip(&daily.name, request_id)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            skipped.skipped,
            Some(timestamp(utc("2027-02-02T09:00:00Z")))
        );
    }
    task_when(&tasks, "alice", &daily.name, |t| {
        t.recurrence.as_ref().is_some_and(|r| !r.exdates.is_empty())
    })
    .await;
    let exdates = get_task(&tasks, "alice", &daily.name)
        .await
        .recurrence
        .unwrap()
        .exdates;
    assert_eq!(exdates, [timestamp(utc("2027-02-02T09:00:00Z"))]);
    complete(&mut tasks, "alice", &daily.name).await;
    let found = series_tasks_when(&tasks, "alice", &series_of(&daily), |t| t.len() == 2).await;
    assert_eq!(
        found[1].due,
        Some(due_at(utc("2027-02-03T09:00:00Z"), "UTC"))
    );
    assert!(
        found[1].recurrence.as_ref().unwrap().exdates.is_empty(),
        "past EXDATEs stay behind"
    );

    // Stop: the series ends now, the task stays without its rule, completing it creates
    // nothing.
    let stopped = create(
        &mut tasks,
        "alice",
        recurring("Stopped", at, "UTC", rule("FREQ=DAILY", 1)),
    )
    .await;
    let series = recurrences
        .stop_series(authed(
            "alice",
            StopSeriesRequest {
                task: stopped.name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .series
        .unwrap();
    assert!(series.ended);
    assert_eq!(series.end_reason, EndReason::Stopped as i32);
    task_when(&tasks, "alice", &stopped.name, |t| t.recurrence.is_none()).await;
    // Stopping again, once the task has no rule: the ended series, unchanged.
    let again = recurrences
        .stop_series(authed(
            "alice",
            StopSeriesRequest {
                task: stopped.name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .series
        .unwrap();
    assert_eq!(again, series);
    complete(&mut tasks, "alice", &stopped.name).await;

    // Delete this occurrence only: it goes, and the series moves on to the next one.
    let weekly = create(
        &mut tasks,
        "alice",
        recurring("Weekly", at, "UTC", rule("FREQ=WEEKLY", 1)),
    )
    .await;
    let weekly_series = series_of(&weekly);
    let series = recurrences
        .delete_occurrences(authed(
            "alice",
            DeleteOccurrencesRequest {
                task: weekly.name.clone(),
                scope: Scope::ThisTask as i32,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .series
        .unwrap();
    assert!(!series.ended);
    let found = series_tasks_when(&tasks, "alice", &weekly_series, |t| {
        t.len() == 1 && t[0].name != weekly.name
    })
    .await;
    assert_eq!(
        found[0].due,
        Some(due_at(utc("2027-02-08T09:00:00Z"), "UTC"))
    );
    let next = found[0].name.clone();
    series_when(&recurrences, "alice", &weekly_series, |s| {
        s.current_task == next
    })
    .await;

    // Delete this and all following: the series ends and its task is gone. A retry with the
    // same request id answers the same, although the task no longer exists.
    let delete_all = DeleteOccurrencesRequest {
        task: next.clone(),
        scope: Scope::ThisAndFollowing as i32,
        request_id: "8d5e0b1e-7f0b-4b59-9d8e-6d1f1c7a0002".into(),
    };
    let series = recurrences
        .delete_occurrences(authed("alice", delete_all.clone()))
        .await
        .unwrap()
        .into_inner()
        .series
        .unwrap();
    assert_eq!(series.end_reason, EndReason::Deleted as i32);
    eventually(Duration::from_secs(15), || async {
        let status = tasks
            .clone()
            .get_task(authed("alice", GetTaskRequest { name: next.clone() }))
            .await
            .err()?;
        (status.code() == Code::NotFound).then_some(())
    })
    .await
    .expect("the task is deleted");
    let retried = recurrences
        .delete_occurrences(authed("alice", delete_all))
        .await
        .unwrap()
        .into_inner()
        .series
        .unwrap();
    assert_eq!(retried, series);

    // Everything is handled: the stopped task's completion created nothing.
    outbox_drained(&mesh.recurrence_pool).await;
    let events = events_on(&mesh, Topic::TaskEvents).await;
    let completion = events
        .iter()
        .find(|e| e.event_type == "dev.taskmesh.task.completed.v1" && e.subject == stopped.name)
        .expect("the stopped task's completion");
    processed(
        &mesh.recurrence_pool,
        taskmesh_recurrence::CONSUMER,
        completion.id,
    )
    .await;
    outbox_drained(&mesh.recurrence_pool).await;
    let titles: Vec<String> = events_on(&mesh, Topic::TaskEvents)
        .await
        .iter()
        .filter(|e| e.event_type == "dev.taskmesh.task.created.v1")
        .map(|e| e.subject.clone())
        .collect();
    assert_eq!(
        titles.len(),
        5,
        "3 created by alice, 2 next occurrences: {titles:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_rpcs_check_their_input_and_their_owner() {
    let (_mesh, mut tasks, mut recurrences) = start(MeshOptions::default()).await;
    let at = utc("2027-02-01T09:00:00Z");
    let alices = create(
        &mut tasks,
        "alice",
        recurring("Mine", at, "UTC", rule("FREQ=DAILY", 1)),
    )
    .await;
    let series = series_of(&alices);
    let from_completion = create(
        &mut tasks,
        "alice",
        recurring("Every!", at, "UTC", rule("FREQ=DAILY", 2)),
    )
    .await;
    let plain = create(
        &mut tasks,
        "alice",
        Task {
            title: "Once".into(),
            ..Default::default()
        },
    )
    .await;

    // Another user's task or series is NOT_FOUND, whatever the RPC.
    let status = recurrences
        .skip_occurrence(authed("bob", skip(&alices.name, "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = recurrences
        .stop_series(authed(
            "bob",
            StopSeriesRequest {
                task: alices.name.clone(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = recurrences
        .delete_occurrences(authed(
            "bob",
            DeleteOccurrencesRequest {
                task: alices.name.clone(),
                scope: Scope::ThisAndFollowing as i32,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    series_when(&recurrences, "alice", &series, |s| !s.ended).await;
    let status = recurrences
        .get_series(authed(
            "bob",
            GetSeriesRequest {
                name: series.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(!get_series(&mut recurrences, "alice", &series).await.ended);

    // Bad input names its fields and changes nothing.
    let status = recurrences
        .delete_occurrences(authed(
            "alice",
            DeleteOccurrencesRequest {
                task: "tasks/42".into(),
                scope: 0,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = field_violations(&status)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(fields, ["scope", "task"]);
    let status = recurrences
        .skip_occurrence(authed("alice", skip(&alices.name, "has spaces")))
        .await
        .unwrap_err();
    assert_eq!(field_violations(&status)[0].0, "request_id");
    let status = recurrences
        .get_series(authed(
            "alice",
            GetSeriesRequest {
                name: "tasks/x".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(field_violations(&status)[0].0, "name");

    // States that do not allow the operation.
    let status = recurrences
        .skip_occurrence(authed("alice", skip(&from_completion.name, "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = recurrences
        .skip_occurrence(authed("alice", skip(&plain.name, "")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    // None of it sent a command.
    outbox_drained(&_mesh.recurrence_pool).await;
    let commands = events_on(&_mesh, Topic::TaskCommands).await;
    assert!(commands.is_empty(), "{commands:?}");
    let unchanged = get_task(&tasks, "alice", &alices.name).await;
    assert_eq!(unchanged.version, alices.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_holds_when_the_completion_overtakes_its_command() {
    // RecurrenceService's commands wait in its outbox: the EXDATE never reaches the task
    // before the completion.
    let (mesh, mut tasks, mut recurrences) = start(MeshOptions {
        recurrence_relay: false,
        ..MeshOptions::default()
    })
    .await;
    let at = utc("2027-02-01T09:00:00Z");
    let daily = create(
        &mut tasks,
        "alice",
        recurring("Daily", at, "UTC", rule("FREQ=DAILY", 1)),
    )
    .await;
    // Two skips in a row skip two occurrences.
    for expected in ["2027-02-02T09:00:00Z", "2027-02-03T09:00:00Z"] {
        let skipped = recurrences
            .skip_occurrence(authed("alice", skip(&daily.name, "")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(skipped.skipped, Some(timestamp(utc(expected))));
    }
    complete(&mut tasks, "alice", &daily.name).await;
    let create = eventually(Duration::from_secs(15), || async {
        let payload: Vec<u8> = sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE event_type = 'dev.taskmesh.task.create.v1'",
        )
        .fetch_optional(&mesh.recurrence_pool)
        .await
        .ok()??;
        CreateTaskCommand::decode(payload.as_slice()).ok()
    })
    .await
    .expect("the create command waits in the outbox");
    let next = create.task.unwrap();
    assert_eq!(next.due, Some(due_at(utc("2027-02-04T09:00:00Z"), "UTC")));
}
