//! Events on `task-events`: the CloudEvents envelope and payload of each change, one event per
//! retried create, and no loss when the relay is down between commit and publish.

use std::time::Duration;

use prost::Message;
use prost_types::FieldMask;
use taskmesh_platform::kafka::Topic;
use taskmesh_proto::{
    events::v1 as ev,
    task::v1::{
        CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, Priority, UpdateTaskRequest,
    },
};
use taskmesh_testkit::{EventReader, MeshOptions, authed};

use crate::helpers::{create, start, task};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_produces_exactly_the_expected_cloudevent() {
    let (mesh, mut client) = start(MeshOptions::default()).await;
    let mut input = task("Ship it", Priority::Medium);
    input.tags = vec!["release".into()];
    let request = || CreateTaskRequest {
        task: Some(input.clone()),
        request_id: "create-1".into(),
    };
    let created = client
        .create_task(authed("alice", request()))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    // A retry emits nothing new.
    client
        .create_task(authed("alice", request()))
        .await
        .unwrap();
    let mut change = created.clone();
    change.title = "Ship it now".into();
    change.description = "unchanged fields stay out of the mask".into();
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
                name: created.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    client
        .delete_task(authed(
            "alice",
            DeleteTaskRequest {
                name: created.name.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap();

    let reader = EventReader::new(&mesh.kafka, Topic::TaskEvents)
        .await
        .unwrap();
    let events = reader.collect(100, Duration::from_secs(3)).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "dev.taskmesh.tag.created.v1",
            "dev.taskmesh.task.created.v1",
            "dev.taskmesh.task.updated.v1",
            "dev.taskmesh.task.completed.v1",
            "dev.taskmesh.task.deleted.v1",
        ]
    );
    let mut ids: Vec<_> = events.iter().map(|e| e.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "ce_id unique");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.key, "alice");
        assert_eq!(event.source, "/taskmesh/task");
        assert_eq!(event.id.get_version_num(), 7, "ce_id is a UUIDv7");
        let ContextOnly {
            context: Some(context),
        } = ContextOnly::decode(event.data.as_slice()).unwrap()
        else {
            panic!("no context");
        };
        assert_eq!(context.sequence, i as i64 + 1, "gapless per-user sequence");
        assert_eq!(context.user, "alice");
        assert_eq!(context.actor, "alice");
    }
    assert_eq!(events[1].subject, created.name);
    assert_eq!(
        events[1].data_schema,
        "urn:taskmesh:proto:taskmesh.events.v1.TaskCreated"
    );
    let created_event = ev::TaskCreated::decode(events[1].data.as_slice()).unwrap();
    assert_eq!(created_event.task.as_ref(), Some(&created));
    assert_eq!(created_event.context.unwrap().request_id, "create-1");

    let updated = ev::TaskUpdated::decode(events[2].data.as_slice()).unwrap();
    assert_eq!(updated.update_mask.unwrap().paths, ["title"]);
    assert_eq!(updated.previous.unwrap().title, "Ship it");
    let after = updated.task.unwrap();
    assert_eq!(after.title, "Ship it now");
    assert_eq!(after.version, 2);

    let completed = ev::TaskCompleted::decode(events[3].data.as_slice()).unwrap();
    assert!(completed.task.unwrap().complete_time.is_some());
    let deleted = ev::TaskDeleted::decode(events[4].data.as_slice()).unwrap();
    assert_eq!(deleted.task.unwrap().name, created.name);
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContextOnly {
    #[prost(message, optional, tag = "1")]
    context: Option<ev::ChangeContext>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_between_commit_and_publish_loses_no_event() {
    // The relay does not run: committed changes wait in the outbox.
    let (mut mesh, mut client) = start(MeshOptions {
        relay: false,
        ..MeshOptions::default()
    })
    .await;
    for i in 0..5 {
        create(
            &mut client,
            "alice",
            task(&format!("held {i}"), Priority::None),
        )
        .await;
    }
    let reader = EventReader::new(&mesh.kafka, Topic::TaskEvents)
        .await
        .unwrap();
    assert!(
        reader
            .collect(10, Duration::from_secs(2))
            .await
            .unwrap()
            .is_empty()
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&mesh.pool)
        .await
        .unwrap();
    assert_eq!(pending, 5);

    // The service goes away; a relay started later (as after a crash) publishes everything.
    mesh.stop_services().await;
    let relay = taskmesh_task::relay(mesh.pool.clone(), &mesh.kafka).unwrap();
    let mut conn = mesh.pool.acquire().await.unwrap();
    assert_eq!(relay.publish_pending(&mut conn).await.unwrap(), 5);
    let events = reader.collect(10, Duration::from_secs(3)).await.unwrap();
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| {
            ContextOnly::decode(e.data.as_slice())
                .unwrap()
                .context
                .unwrap()
                .sequence
        })
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&mesh.pool)
        .await
        .unwrap();
    assert_eq!(pending, 0);
}
