//! The `task-events` consumer under redelivery and disorder, and recovery after downtime.

use std::time::Duration;

use chrono::Duration as Span;
use taskmesh_platform::{kafka::Topic, runtime::TaskContext};
use taskmesh_proto::task::v1::{DeleteTaskRequest, Task, UpdateTaskRequest};
use taskmesh_reminder::Scheduler;
use taskmesh_testkit::{EventReader, authed, eventually, publish};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

async fn update(tasks: &mut Tasks, task: Task, paths: &[&str]) -> Task {
    tasks
        .update_task(authed(
            "alice",
            UpdateTaskRequest {
                task: Some(task),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_out_of_order_task_events_change_nothing() {
    let (mesh, mut tasks, client) = start(injected_clock()).await;
    let (t1, t2) = (now() + Span::hours(1), now() + Span::hours(2));
    let task = create(&mut tasks, "alice", "v1", None, vec![at("r", t1)]).await;
    let mut changed = task.clone();
    changed.reminders = vec![at("r", t2)];
    let changed = update(&mut tasks, changed, &["reminders"]).await;
    reminders_when(&client, "alice", "", |r| {
        r.len() == 1 && time_of(r[0].fire_time.as_ref()) == t2
    })
    .await;

    // Redeliver the creation as it was (same ce_id), and as a new event (a producer retry
    // of an old version): neither may bring back t1.
    let reader = EventReader::new(&mesh.kafka, Topic::TaskEvents)
        .await
        .unwrap();
    let events = reader.collect(2, Duration::from_secs(5)).await.unwrap();
    assert_eq!(events.len(), 2);
    let created = events[0].clone();
    assert_eq!(created.event_type, "dev.taskmesh.task.created.v1");
    publish(&mesh.kafka, Topic::TaskEvents, &created)
        .await
        .unwrap();
    let mut replayed = created.clone();
    replayed.id = uuid::Uuid::now_v7();
    publish(&mesh.kafka, Topic::TaskEvents, &replayed)
        .await
        .unwrap();
    // A later real change (same user, so the same partition, after them) shows when the
    // consumer got past the stale ones.
    let mut renamed = changed.clone();
    renamed.title = "v3".into();
    update(&mut tasks, renamed, &["title"]).await;
    let listed = reminders_when(&client, "alice", "", |r| {
        r.len() == 1 && r[0].task_title == "v3"
    })
    .await;
    assert_eq!(time_of(listed[0].fire_time.as_ref()), t2);

    // Deleted, then a stale update arrives: the task stays gone.
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
    reminders_when(&client, "alice", "", <[_]>::is_empty).await;
    let mut stale = events[1].clone();
    stale.id = uuid::Uuid::now_v7();
    publish(&mesh.kafka, Topic::TaskEvents, &stale)
        .await
        .unwrap();
    let marker = create(&mut tasks, "alice", "marker", None, vec![at("m", t1)]).await;
    let listed = reminders_when(&client, "alice", "", |r| r.len() == 1).await;
    assert!(listed[0].task == marker.name, "the deleted task came back");
    assert_eq!(mesh.scheduler().fire_due(t2).await.unwrap().reminders, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_each_overdue_reminder_fires_once_on_recovery_marked_late() {
    // No scheduler runs while the reminders come due (the service is "down").
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    // Far enough ahead that five creates finish before it, on a busy machine too (a reminder
    // already past when its task is saved is not owed).
    let fire = now() + Span::seconds(3);
    for i in 0..5 {
        create(
            &mut tasks,
            "alice",
            &format!("t{i}"),
            None,
            vec![at("r", fire)],
        )
        .await;
    }
    reminders_when(&client, "alice", "", |r| r.len() == 5).await;
    let wait = (fire - now()).to_std().unwrap_or_default() + Duration::from_secs(1);
    tokio::time::sleep(wait).await;

    // Two replicas come back at once.
    let stop = CancellationToken::new();
    let topic_prefix = mesh.kafka.topic_prefix.clone();
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            let scheduler = Scheduler::new(mesh.reminder_pool.clone(), topic_prefix.clone());
            tokio::spawn(scheduler.run(TaskContext::detached("scheduler", stop.clone())))
        })
        .collect();
    eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move { (notifications(&mut client, "alice").await.len() >= 5).then_some(()) }
    })
    .await
    .expect("every overdue reminder fires");
    // Give them time to fire anything twice, then check they did not.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    for replica in replicas {
        replica.await.unwrap().unwrap();
    }
    let inbox = notifications(&mut client, "alice").await;
    assert_eq!(inbox.len(), 5);
    for notification in &inbox {
        let lateness = notification.lateness.unwrap();
        assert!(lateness.seconds >= 1, "not marked late: {lateness:?}");
    }
}
