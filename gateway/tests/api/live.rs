//! The live stream: order, isolation, resumption with a cursor, List cursors, resync.

use std::time::Duration;

use prost_types::FieldMask;
use taskmesh_proto::{
    gateway::v1::{StreamChangesRequest, StreamChangesResponse, stream_changes_response::Event},
    task::v1::{CompleteTaskRequest, CreateTaskRequest, ListTasksRequest, Task, UpdateTaskRequest},
};
use taskmesh_testkit::{Mesh, MeshOptions, authed};
use tonic::Streaming;

use crate::{live_web, tasks_grpc};

/// The next message that is not a heartbeat, or `None` after `wait` of silence.
async fn next(
    stream: &mut Streaming<StreamChangesResponse>,
    wait: Duration,
) -> Option<StreamChangesResponse> {
    loop {
        match tokio::time::timeout(wait, stream.message()).await {
            Ok(Ok(Some(message))) if matches!(message.event, Some(Event::Heartbeat(_))) => continue,
            Ok(Ok(message)) => return message,
            Ok(Err(status)) => panic!("stream failed: {status:?}"),
            Err(_) => return None,
        }
    }
}

pub(crate) async fn open(
    mesh: &Mesh,
    user: &str,
    cursor: &str,
) -> Streaming<StreamChangesResponse> {
    live_web(mesh)
        .stream_changes(authed(
            user,
            StreamChangesRequest {
                cursor: cursor.into(),
                also_cursor: String::new(),
            },
        ))
        .await
        .expect("stream opens")
        .into_inner()
}

/// Reads messages until `caught_up`, returning the event types before it.
pub(crate) async fn until_caught_up(
    stream: &mut Streaming<StreamChangesResponse>,
) -> (Vec<String>, String) {
    let mut types = Vec::new();
    loop {
        let message = next(stream, Duration::from_secs(10))
            .await
            .expect("stream catches up");
        match message.event {
            Some(Event::CaughtUp(_)) => return (types, message.cursor),
            _ => types.push(message.event_type),
        }
    }
}

pub(crate) async fn new_task(mesh: &Mesh, user: &str, title: &str) -> Task {
    tasks_grpc(mesh)
        .await
        .create_task(authed(
            user,
            CreateTaskRequest {
                task: Some(Task {
                    title: title.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sees_create_update_complete_in_order_and_only_its_owners() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let mut alice = open(&mesh, "alice", "").await;
    let mut bob = open(&mesh, "bob", "").await;
    assert_eq!(until_caught_up(&mut alice).await.0, Vec::<String>::new());
    assert_eq!(until_caught_up(&mut bob).await.0, Vec::<String>::new());

    let mut client = tasks_grpc(&mesh).await;
    let task = new_task(&mesh, "alice", "live one").await;
    let mut change = task.clone();
    change.title = "live one, renamed".into();
    client
        .update_task(authed(
            "alice",
            UpdateTaskRequest {
                task: Some(change),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .unwrap();
    client
        .complete_task(authed(
            "alice",
            CompleteTaskRequest {
                name: task.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..3 {
        let message = next(&mut alice, Duration::from_secs(10))
            .await
            .expect("change arrives");
        seen.push(message.event);
    }
    assert!(
        matches!(&seen[0], Some(Event::TaskCreated(e)) if e.task.as_ref().unwrap().title == "live one")
    );
    assert!(
        matches!(&seen[1], Some(Event::TaskUpdated(e)) if e.task.as_ref().unwrap().title == "live one, renamed")
    );
    assert!(
        matches!(&seen[2], Some(Event::TaskCompleted(e)) if e.task.as_ref().unwrap().name == task.name)
    );
    // Nothing more for alice, nothing at all for bob.
    assert!(next(&mut alice, Duration::from_secs(1)).await.is_none());
    assert!(next(&mut bob, Duration::from_secs(1)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_the_cursor_gets_exactly_the_missed_changes() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let mut stream = open(&mesh, "alice", "").await;
    until_caught_up(&mut stream).await;
    new_task(&mesh, "alice", "seen").await;
    let seen = next(&mut stream, Duration::from_secs(10)).await.unwrap();
    assert_eq!(seen.event_type, "dev.taskmesh.task.created.v1");
    drop(stream);

    for title in ["missed 1", "missed 2", "missed 3"] {
        new_task(&mesh, "alice", title).await;
    }
    let mut resumed = open(&mesh, "alice", &seen.cursor).await;
    let mut titles = Vec::new();
    loop {
        let message = next(&mut resumed, Duration::from_secs(10)).await.unwrap();
        match message.event {
            Some(Event::TaskCreated(e)) => titles.push(e.task.unwrap().title),
            Some(Event::CaughtUp(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(titles, ["missed 1", "missed 2", "missed 3"]);
    // And it stays live after the replay, without repeating anything.
    new_task(&mesh, "alice", "live again").await;
    let live = next(&mut resumed, Duration::from_secs(10)).await.unwrap();
    assert!(
        matches!(live.event, Some(Event::TaskCreated(e)) if e.task.as_ref().unwrap().title == "live again")
    );
    assert!(next(&mut resumed, Duration::from_secs(1)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_with_a_list_cursor_sees_exactly_the_changes_after_the_list() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    new_task(&mesh, "alice", "before 1").await;
    new_task(&mesh, "alice", "before 2").await;
    let listed = tasks_grpc(&mesh)
        .await
        .list_tasks(authed("alice", ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tasks.len(), 2);
    new_task(&mesh, "alice", "after").await;
    let mut stream = open(&mesh, "alice", &listed.cursor).await;
    let (types, _) = until_caught_up(&mut stream).await;
    assert_eq!(types, ["dev.taskmesh.task.created.v1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cursor_gets_resync_and_a_malformed_one_invalid_argument() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let mut stream = open(&mesh, "alice", "").await;
    let (_, start) = until_caught_up(&mut stream).await;
    drop(stream);
    new_task(&mesh, "alice", "one").await;
    new_task(&mesh, "alice", "two").await;
    // Retention removed the changes this cursor needs.
    sqlx::query("DELETE FROM changes")
        .execute(&mesh.pool)
        .await
        .unwrap();
    let mut stream = open(&mesh, "alice", &start).await;
    let message = next(&mut stream, Duration::from_secs(10)).await.unwrap();
    assert!(
        matches!(message.event, Some(Event::Resync(_))),
        "{message:?}"
    );
    assert!(next(&mut stream, Duration::from_secs(2)).await.is_none());

    let status = live_web(&mesh)
        .stream_changes(authed(
            "alice",
            StreamChangesRequest {
                cursor: "garbage!".into(),
                also_cursor: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}
