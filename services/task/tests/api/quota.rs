//! The tasks-per-user quota: past it CreateTask is `RESOURCE_EXHAUSTED` with a
//! `QuotaFailure` and writes nothing, other users are untouched, deleting makes room, a retry
//! of an earlier request still gets its task, a series' next occurrence is never refused, and
//! so a recurring task that would make one cannot be completed at the quota.

use std::{num::NonZeroU64, time::Duration};

use prost::Message as _;
use taskmesh_platform::kafka::Topic;
use taskmesh_proto::{
    events::v1::CreateTaskCommand,
    task::v1::{
        CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, ListTasksRequest, Priority,
        Recurrence, Task, UncompleteTaskRequest,
    },
};
use taskmesh_testkit::{Mesh, MeshOptions, authed, eventually, publish};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    commands::{command, context},
    helpers::{Client, create, due, task},
};

async fn count(client: &mut Client, user: &str) -> usize {
    client
        .list_tasks(authed(
            user,
            ListTasksRequest {
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .len()
}

fn create_request(title: &str, request_id: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        task: Some(task(title, Priority::Medium)),
        request_id: request_id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_at_the_task_quota_is_refused_and_nothing_else_is() {
    let mesh = Mesh::start_configured(MeshOptions::default(), |config| {
        config.max_tasks_per_user = NonZeroU64::new(3);
    })
    .await
    .unwrap();
    let mut client = Client::connect(format!("http://{}", mesh.task_addr))
        .await
        .unwrap();
    // Three tasks: one recurring daily, one made with a request id, one plain.
    let recurring = create(
        &mut client,
        "alice",
        Task {
            title: "water plants".into(),
            due: Some(due("2026-12-07T08:00:00Z", "Europe/Berlin")),
            recurrence: Some(Recurrence {
                rrule: "FREQ=DAILY".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let second = client
        .create_task(authed("alice", create_request("second", "req-2")))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let third = create(&mut client, "alice", task("third", Priority::Medium)).await;

    // The fourth is refused with the quota named, and nothing is written.
    let refused = client
        .create_task(authed("alice", create_request("fourth", "req-4")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let details = refused.get_error_details();
    let quota = details.quota_failure().expect("a QuotaFailure");
    assert_eq!(quota.violations[0].subject, "tasks per user");
    assert!(quota.violations[0].description.contains("at most 3 tasks"));
    assert!(
        details.retry_info().is_none(),
        "waiting does not help: no RetryInfo"
    );
    assert_eq!(count(&mut client, "alice").await, 3);

    // A retry of a request that succeeded still gets its task.
    let retried = client
        .create_task(authed("alice", create_request("second", "req-2")))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(retried.name, second.name);

    // Another user is untouched.
    create(&mut client, "bob", task("bob's", Priority::Medium)).await;

    // At the quota a recurring task cannot be completed: its series would add a task.
    let completer = client.clone();
    let complete = move |name: String, complete: bool| {
        let mut client = completer.clone();
        async move {
            if complete {
                client
                    .complete_task(authed(
                        "alice",
                        CompleteTaskRequest {
                            name,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop)
            } else {
                client
                    .uncomplete_task(authed(
                        "alice",
                        UncompleteTaskRequest {
                            name,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop)
            }
        }
    };
    let refused = complete(recurring.name.clone(), true).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("completing a recurring task"));

    // A series' next occurrence (its command) is applied even at the quota: a series never
    // stops half-way.
    let occurrence = CreateTaskCommand {
        context: context("quota/occurrence-2"),
        task: Some(Task {
            title: "next of a series".into(),
            due: Some(due("2026-12-08T08:00:00Z", "Europe/Berlin")),
            recurrence: Some(Recurrence {
                rrule: "FREQ=DAILY".into(),
                series: format!("series/{}", uuid::Uuid::now_v7()),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    publish(
        &mesh.kafka,
        Topic::TaskCommands,
        &command(
            "dev.taskmesh.task.create.v1",
            "taskmesh.events.v1.CreateTaskCommand",
            "",
            occurrence.encode_to_vec(),
        ),
    )
    .await
    .unwrap();
    let counter = client.clone();
    let alice_has = move |n: usize| {
        let client = counter.clone();
        async move {
            eventually(Duration::from_secs(20), || {
                let mut client = client.clone();
                async move { (count(&mut client, "alice").await == n).then_some(()) }
            })
            .await
            .is_some()
        }
    };
    assert!(
        alice_has(4).await,
        "the occurrence was created past the quota"
    );

    let deleter = client.clone();
    let delete = move |name: String| {
        let mut client = deleter.clone();
        async move {
            client
                .delete_task(authed(
                    "alice",
                    DeleteTaskRequest {
                        name,
                        etag: String::new(),
                    },
                ))
                .await
                .expect("delete succeeds");
        }
    };
    // At 4 of 3, deleting one is not enough to create; at 2 of 3 the recurring task can be
    // completed, and its next occurrence makes 3.
    delete(third.name.clone()).await;
    let still = client
        .create_task(authed("alice", create_request("fourth", "req-4")))
        .await
        .unwrap_err();
    assert_eq!(still.code(), Code::ResourceExhausted);
    delete(second.name.clone()).await;
    complete(recurring.name.clone(), true)
        .await
        .expect("completes below the quota");
    assert!(
        alice_has(3).await,
        "the series' next occurrence was created"
    );
    // Reopened and completed again at the quota: it led to its next occurrence already, so
    // completing it adds nothing and is allowed.
    complete(recurring.name.clone(), false).await.unwrap();
    complete(recurring.name.clone(), true)
        .await
        .expect("re-completing adds no task");

    // Deleting makes room again.
    delete(recurring.name.clone()).await;
    client
        .create_task(authed("alice", create_request("fourth", "req-4")))
        .await
        .expect("room again after deleting");
    assert_eq!(count(&mut client, "alice").await, 3);
}
