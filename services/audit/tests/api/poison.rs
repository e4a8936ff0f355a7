//! Only valid events enter the history: garbage, an invalid command and a replay of an old
//! change under a new `ce_id` leave no entry; the first two are dead-lettered, the replay is
//! counted.

use std::time::Duration;

use prost::Message as _;
use prost_types::FieldMask;
use taskmesh_platform::{cloudevents::CloudEvent, kafka::Topic};
use taskmesh_proto::{
    events::v1::{ChangeContext, CreateTaskCommand},
    task::v1::{CompleteTaskRequest, Task, UpdateTaskRequest},
};
use taskmesh_testkit::{EventReader, authed, publish};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_invalid_commands_and_replays_leave_no_history() {
    let (mesh, mut tasks, audit) = start().await;
    let task = create(&mut tasks, "mallory", titled("Real")).await;
    tasks
        .complete_task(authed(
            "mallory",
            CompleteTaskRequest {
                name: task.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    activity_of(&audit, "mallory", 2).await;
    let events = events_of(&mesh, "mallory").await;
    let completed = events
        .iter()
        .find(|e| e.event_type == "dev.taskmesh.task.completed.v1")
        .expect("the completion's event")
        .clone();

    // 1. Garbage under a real type.
    let garbage = CloudEvent {
        id: uuid::Uuid::now_v7(),
        data: b"\xff\xff\xff not protobuf".to_vec(),
        ..completed.clone()
    };
    publish(&mesh.kafka, Topic::TaskEvents, &garbage)
        .await
        .unwrap();
    // 2. An invalid command: a creation without a task.
    let invalid = CloudEvent {
        id: uuid::Uuid::now_v7(),
        event_type: "dev.taskmesh.task.create.v1".into(),
        data_schema: taskmesh_platform::cloudevents::data_schema(
            "taskmesh.events.v1.CreateTaskCommand",
        ),
        subject: "tasks/-".into(),
        data: CreateTaskCommand {
            context: Some(ChangeContext {
                user: "mallory".into(),
                actor: "mallory".into(),
                request_id: "made-up".into(),
                ..Default::default()
            }),
            task: None,
        }
        .encode_to_vec(),
        ..completed.clone()
    };
    publish(&mesh.kafka, Topic::TaskCommands, &invalid)
        .await
        .unwrap();
    // 3. The old completion again, under a new id.
    let replay = CloudEvent {
        id: uuid::Uuid::now_v7(),
        ..completed.clone()
    };
    publish(&mesh.kafka, Topic::TaskEvents, &replay)
        .await
        .unwrap();
    // A real change after them, on the same partition (same key): once it is recorded, the
    // records before it have been handled.
    tasks
        .update_task(authed(
            "mallory",
            UpdateTaskRequest {
                task: Some(Task {
                    name: task.name.clone(),
                    title: "Still real".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .unwrap();
    let entries = activity_of(&audit, "mallory", 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let entries_after = activity_of(&audit, "mallory", 3).await;
    assert_eq!(entries.len(), entries_after.len());
    let types: Vec<&str> = entries_after
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "dev.taskmesh.task.updated.v1",
            "dev.taskmesh.task.completed.v1",
            "dev.taskmesh.task.created.v1"
        ],
        "no garbage, no command that was never applied, no second completion"
    );
    assert!(
        entries_after
            .iter()
            .all(|e| e.event_id != replay.id.to_string())
    );

    let dead = dead_letters(&mesh, Topic::TaskEvents).await;
    assert!(
        dead.iter().any(|e| e.id == garbage.id),
        "the garbage was dead-lettered"
    );
    assert!(
        dead.iter().all(|e| e.id != replay.id),
        "a replay is not poison"
    );
    let dead = dead_letters(&mesh, Topic::TaskCommands).await;
    assert!(
        dead.iter().any(|e| e.id == invalid.id),
        "the invalid command was dead-lettered"
    );

    let metrics = taskmesh_testkit::metrics_text(mesh.gateway_addr)
        .await
        .expect("/metrics answers");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("taskmesh_audit_replays_total") && !l.ends_with(" 0")),
        "the replay was counted:\n{metrics}"
    );
}

/// What `topic`'s dead-letter topic holds (until it is quiet for 3 s).
async fn dead_letters(mesh: &taskmesh_testkit::Mesh, topic: Topic) -> Vec<CloudEvent> {
    EventReader::new_named(&mesh.kafka, &mesh.kafka.dead_letter_topic(topic))
        .await
        .unwrap()
        .collect(10, Duration::from_secs(3))
        .await
        .unwrap()
}
