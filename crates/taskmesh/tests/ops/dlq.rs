//! `taskmesh dlq replay`, the real binary: an event dead-lettered because its consumer failed
//! for good is put back once the cause is fixed, and its effect is applied once.

use std::time::Duration;

use taskmesh_platform::kafka::Topic;
use taskmesh_proto::{
    reminder::v1::{ListRemindersRequest, reminder_service_client::ReminderServiceClient},
    task::v1::{
        CreateTaskRequest, Reminder, Task, reminder, task_service_client::TaskServiceClient,
    },
};
use taskmesh_testkit::{EventReader, Mesh, MeshOptions, authed, eventually};

use crate::helpers::{created_entries, run, taskmesh};

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_replayed_after_the_fix_is_applied_once() {
    let mesh = Mesh::start(MeshOptions::default()).await.expect("mesh");
    // The cause: ReminderService cannot store any reminder (a constraint nothing satisfies),
    // an unexpected failure it retries a few times, then dead-letters.
    sqlx::query("ALTER TABLE reminders ADD CONSTRAINT broken_for_the_test CHECK (false) NOT VALID")
        .execute(&mesh.reminder_pool)
        .await
        .expect("breaks the table");
    let mut tasks = TaskServiceClient::new(mesh.gateway_channel().await.expect("channel"));
    let fire = chrono::Utc::now() + chrono::Duration::days(30);
    let task = tasks
        .create_task(authed(
            "replayer",
            CreateTaskRequest {
                task: Some(Task {
                    title: "Renew the passport".into(),
                    reminders: vec![Reminder {
                        id: "r1".into(),
                        trigger: Some(reminder::Trigger::AbsoluteTime(prost_types::Timestamp {
                            seconds: fire.timestamp(),
                            nanos: 0,
                        })),
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("created")
        .into_inner()
        .task
        .expect("a task");
    let dead = EventReader::new_named(
        &mesh.kafka,
        &mesh.kafka.dead_letter_topic(Topic::TaskEvents),
    )
    .await
    .expect("reader")
    .collect(1, Duration::from_secs(30))
    .await
    .expect("reads");
    assert_eq!(dead.len(), 1, "the creation was dead-lettered");
    assert_eq!(dead[0].subject, task.name);

    // The fix, then the replay.
    sqlx::query("ALTER TABLE reminders DROP CONSTRAINT broken_for_the_test")
        .execute(&mesh.reminder_pool)
        .await
        .expect("fixes the table");
    let replay = || {
        let mut command = taskmesh();
        command
            .args(["dlq", "replay", "--topic", "task-events"])
            .env("KAFKA_BROKERS", mesh.kafka.brokers.clone());
        command
    };
    let mut dry = replay();
    dry.arg("--dry-run");
    let ran = run(dry, Duration::from_secs(60)).await;
    assert!(ran.success, "{}", ran.text);
    assert!(
        ran.text.contains("would replay 1 of 1 dead letters"),
        "{}",
        ran.text
    );
    let ran = run(replay(), Duration::from_secs(60)).await;
    assert!(ran.success, "{}", ran.text);
    assert!(
        ran.text.contains("replayed 1 of 1 dead letters"),
        "{}",
        ran.text
    );
    assert!(
        ran.text.contains("dev.taskmesh.task.created.v1"),
        "{}",
        ran.text
    );

    let reminders = ReminderServiceClient::new(mesh.gateway_channel().await.expect("channel"));
    let scheduled = eventually(Duration::from_secs(30), || {
        let mut reminders = reminders.clone();
        async move {
            let list = reminders
                .list_reminders(authed("replayer", ListRemindersRequest::default()))
                .await
                .ok()?
                .into_inner()
                .reminders;
            (!list.is_empty()).then_some(list)
        }
    })
    .await
    .expect("the reminder is scheduled after the replay");
    assert_eq!(scheduled.len(), 1);

    // Every other consumer had applied it already and skipped the copy.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let created = created_entries(&mesh, "replayer", 1, Duration::from_secs(10)).await;
    assert_eq!(created, vec![task.name.clone()]);
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM processed_events WHERE consumer = 'taskmesh-reminder'",
    )
    .fetch_one(&mesh.reminder_pool)
    .await
    .expect("counts");
    assert_eq!(applied, 1, "the reminder consumer applied it once");

    // A second replay changes nothing.
    let ran = run(replay(), Duration::from_secs(60)).await;
    assert!(ran.success, "{}", ran.text);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let list = ReminderServiceClient::new(mesh.gateway_channel().await.expect("channel"))
        .list_reminders(authed("replayer", ListRemindersRequest::default()))
        .await
        .expect("lists")
        .into_inner()
        .reminders;
    assert_eq!(list.len(), 1);
}
