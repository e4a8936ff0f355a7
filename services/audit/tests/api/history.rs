//! Every event is recorded once and in order; a task's history shows each change.

use std::time::Duration;

use prost_types::{FieldMask, value::Kind};
use taskmesh_platform::kafka::Topic;
use taskmesh_proto::{
    audit::v1::{ListTaskHistoryRequest, VerifyChainRequest},
    task::v1::{CompleteTaskRequest, DeleteTaskRequest, Due, Task, UpdateTaskRequest, due},
};
use taskmesh_testkit::{EventReader, authed, eventually, publish};
use tonic::Code;

use crate::helpers::*;

fn update(name: &str, task: Task, paths: &[&str]) -> UpdateTaskRequest {
    UpdateTaskRequest {
        task: Some(Task {
            name: name.into(),
            ..task
        }),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    }
}

fn string_of(value: Option<&prost_types::Value>) -> Option<String> {
    match value?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_recorded_once_in_order_with_its_changes() {
    let (mesh, mut tasks, mut audit) = start().await;
    let mut first = titled("Buy milk");
    first.tags = vec!["home".into()];
    let task = create(&mut tasks, "alice", first).await;
    tasks
        .update_task(authed(
            "alice",
            update(&task.name, titled("Buy oat milk"), &["title"]),
        ))
        .await
        .unwrap();
    let due = Due {
        value: Some(due::Value::Time(prost_types::Timestamp {
            seconds: 1_830_000_000,
            nanos: 0,
        })),
        time_zone: "Europe/Berlin".into(),
    };
    let with_due = Task {
        due: Some(due),
        ..titled("unused")
    };
    tasks
        .update_task(authed("alice", update(&task.name, with_due, &["due"])))
        .await
        .unwrap();
    tasks
        .complete_task(authed(
            "alice",
            CompleteTaskRequest {
                name: task.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    tasks
        .delete_task(authed(
            "alice",
            DeleteTaskRequest {
                name: task.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    create(&mut tasks, "bob", titled("Bob's")).await;

    // tag.created, task.created, 2 × task.updated, task.completed, task.deleted.
    let entries = activity_of(&audit, "alice", 6).await;
    let events = events_of(&mesh, "alice").await;
    assert_eq!(entries.len(), events.len(), "one entry per event");
    let mut recorded: Vec<String> = entries.iter().map(|e| e.event_id.clone()).collect();
    recorded.sort();
    let mut produced: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    produced.sort();
    assert_eq!(recorded, produced, "exactly the events produced, each once");
    // In chain order, alice's task-events entries are in the topic's order.
    let chain_order: Vec<String> = entries
        .iter()
        .rev()
        .filter(|e| {
            e.event_type.starts_with("dev.taskmesh.task.")
                || e.event_type.starts_with("dev.taskmesh.tag.")
        })
        .map(|e| e.event_id.clone())
        .collect();
    let topic_order: Vec<String> = events
        .iter()
        .filter(|e| e.source == "/taskmesh/task")
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(chain_order, topic_order);
    let positions: Vec<i64> = entries.iter().rev().map(|e| e.chain_position).collect();
    assert_eq!(positions, (1..=6).collect::<Vec<_>>());

    // Delivered again: nothing new. A sentinel re-sent with a new id follows the copies on
    // the same partition; once it is recorded, the copies have been consumed.
    for event in &events {
        publish(&mesh.kafka, Topic::TaskEvents, event)
            .await
            .unwrap();
    }
    // Copies on another topic are not events of that topic: each is dead-lettered, none is
    // recorded.
    for topic in [Topic::Reminders, Topic::TaskCommands] {
        for event in &events {
            publish(&mesh.kafka, topic, event).await.unwrap();
        }
    }
    // (A copy of the tag's creation, so the task's history below stays as it was.)
    let mut sentinel = events
        .iter()
        .find(|e| e.event_type == "dev.taskmesh.tag.created.v1")
        .unwrap()
        .clone();
    sentinel.id = uuid::Uuid::now_v7();
    publish(&mesh.kafka, Topic::TaskEvents, &sentinel)
        .await
        .unwrap();
    // (TaskService also dead-letters those on `task-commands`: they are not commands.)
    for topic in [Topic::Reminders, Topic::TaskCommands] {
        let audit = taskmesh_audit::consumer_name(topic);
        let limit = if topic == Topic::TaskCommands { 2 } else { 1 } * events.len();
        let dead = EventReader::new_named(&mesh.kafka, &mesh.kafka.dead_letter_topic(topic))
            .await
            .unwrap()
            .collect_with_headers(limit, Duration::from_secs(15))
            .await
            .unwrap();
        let by_audit: Vec<uuid::Uuid> = dead
            .iter()
            .filter(|(_, headers)| {
                headers
                    .iter()
                    .any(|(key, value)| key == "taskmesh_dlq_consumer" && *value == audit)
            })
            .map(|(event, _)| event.id)
            .collect();
        assert_eq!(
            by_audit,
            events.iter().map(|e| e.id).collect::<Vec<_>>(),
            "every copy on {topic:?} was dead-lettered by AuditService, in order"
        );
        assert_eq!(dead.len(), limit, "and by nothing else but TaskService");
    }
    let consumer = taskmesh_audit::consumer_name(Topic::TaskEvents);
    eventually(Duration::from_secs(15), || async {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2)",
        )
        .bind(&consumer)
        .bind(sentinel.id)
        .fetch_one(&mesh.audit_pool)
        .await
        .ok()?;
        done.then_some(())
    })
    .await
    .expect("the sentinel is recorded");
    let after = activity(&mut audit, "alice").await;
    assert_eq!(after.len(), 7, "the six events once, and the sentinel");
    assert_eq!(after[0].event_id, sentinel.id.to_string());

    // The task's history: created, title changed, due set, completed, deleted.
    let history = audit
        .list_task_history(authed(
            "alice",
            ListTaskHistoryRequest {
                task: task.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "dev.taskmesh.task.created.v1",
            "dev.taskmesh.task.updated.v1",
            "dev.taskmesh.task.updated.v1",
            "dev.taskmesh.task.completed.v1",
            "dev.taskmesh.task.deleted.v1",
        ]
    );
    assert!(
        history
            .iter()
            .all(|e| e.actor == "alice" && e.user == "alice")
    );
    let title = &history[1].changes;
    assert_eq!(title.len(), 1);
    assert_eq!(title[0].field, "title");
    assert_eq!(
        string_of(title[0].before.as_ref()).as_deref(),
        Some("Buy milk")
    );
    assert_eq!(
        string_of(title[0].after.as_ref()).as_deref(),
        Some("Buy oat milk")
    );
    let due_change = &history[2].changes[0];
    assert_eq!(due_change.field, "due");
    assert!(matches!(
        due_change.before.as_ref().and_then(|v| v.kind.as_ref()),
        Some(Kind::NullValue(_))
    ));
    let Some(Kind::StructValue(after)) = due_change.after.as_ref().and_then(|v| v.kind.as_ref())
    else {
        panic!("the due after is an object: {due_change:?}");
    };
    assert_eq!(
        string_of(after.fields.get("timeZone")).as_deref(),
        Some("Europe/Berlin")
    );

    // Another user's task history is NOT_FOUND; the chain verifies.
    let status = audit
        .list_task_history(authed(
            "bob",
            ListTaskHistoryRequest {
                task: task.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let verified = audit
        .verify_chain(authed("alice", VerifyChainRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(verified.valid);
    assert_eq!(verified.checked_count, 7);
}
