//! The `task-commands` consumer: commands from other services are applied once, also when
//! redelivered or retried with a new event id; bad commands go to the dead-letter topic.

use std::time::Duration;

use chrono::Utc;
use prost::Message;
use taskmesh_platform::{
    cloudevents::{CloudEvent, data_schema},
    kafka::Topic,
};
use taskmesh_proto::{
    events::v1::{AddExdateCommand, ChangeContext, CreateTaskCommand, EndSeriesCommand},
    task::v1::{GetTaskRequest, ListTasksRequest, Recurrence, Task},
};
use taskmesh_testkit::{EventReader, MeshOptions, authed, eventually, publish, publish_all};

use crate::helpers::{Client, due, start};

pub(crate) fn command(event_type: &str, message: &str, subject: &str, data: Vec<u8>) -> CloudEvent {
    CloudEvent {
        id: uuid::Uuid::now_v7(),
        source: "/taskmesh/recurrence".into(),
        event_type: event_type.into(),
        time: Utc::now(),
        subject: subject.into(),
        data_schema: data_schema(message),
        key: "alice".into(),
        data,
        traceparent: None,
    }
}

pub(crate) fn context(request_id: &str) -> Option<ChangeContext> {
    Some(ChangeContext {
        user: "alice".into(),
        actor: "service:recurrence".into(),
        sequence: 0,
        request_id: request_id.into(),
    })
}

async fn tasks_of_alice(client: &mut Client) -> Vec<Task> {
    client
        .list_tasks(authed("alice", ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_apply_once_and_bad_ones_are_dead_lettered() {
    let (mesh, mut client) = start(MeshOptions::default()).await;
    let series = uuid::Uuid::now_v7();
    let create = CreateTaskCommand {
        context: context("series-1/occurrence-2"),
        task: Some(Task {
            title: "Water plants".into(),
            due: Some(due("2026-12-07T08:00:00Z", "Europe/Berlin")),
            recurrence: Some(Recurrence {
                rrule: "FREQ=WEEKLY".into(),
                series: format!("series/{series}"),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let event = command(
        "dev.taskmesh.task.create.v1",
        "taskmesh.events.v1.CreateTaskCommand",
        "",
        create.encode_to_vec(),
    );
    // Delivered twice (same ce_id), and retried by its producer with a new ce_id.
    publish(&mesh.kafka, Topic::TaskCommands, &event)
        .await
        .unwrap();
    publish(&mesh.kafka, Topic::TaskCommands, &event)
        .await
        .unwrap();
    let mut retry = event.clone();
    retry.id = uuid::Uuid::now_v7();
    publish(&mesh.kafka, Topic::TaskCommands, &retry)
        .await
        .unwrap();

    let created = eventually(Duration::from_secs(15), || {
        let mut client = client.clone();
        async move { tasks_of_alice(&mut client).await.into_iter().next() }
    })
    .await
    .expect("the command creates the task");
    let recurrence = created.recurrence.clone().unwrap();
    assert_eq!(
        recurrence.series,
        format!("series/{series}"),
        "the series is kept"
    );

    // Skip an occurrence, then end the series.
    let exdate: prost_types::Timestamp = "2026-12-14T08:00:00Z".parse().unwrap();
    let skip = AddExdateCommand {
        context: context("series-1/skip-1"),
        task: created.name.clone(),
        exdate: Some(exdate),
    };
    publish(
        &mesh.kafka,
        Topic::TaskCommands,
        &command(
            "dev.taskmesh.task.add_exdate.v1",
            "taskmesh.events.v1.AddExdateCommand",
            &created.name,
            skip.encode_to_vec(),
        ),
    )
    .await
    .unwrap();
    let name = created.name.clone();
    let skipped = eventually(Duration::from_secs(15), || {
        let (mut client, name) = (client.clone(), name.clone());
        async move {
            let task = client
                .get_task(authed("alice", GetTaskRequest { name }))
                .await
                .ok()?
                .into_inner()
                .task?;
            (task.recurrence.as_ref()?.exdates.len() == 1).then_some(task)
        }
    })
    .await
    .expect("the exdate is added");
    assert_eq!(skipped.recurrence.unwrap().exdates, vec![exdate]);

    let end = EndSeriesCommand {
        context: context("series-1/end"),
        task: created.name.clone(),
    };
    publish(
        &mesh.kafka,
        Topic::TaskCommands,
        &command(
            "dev.taskmesh.task.end_series.v1",
            "taskmesh.events.v1.EndSeriesCommand",
            &created.name,
            end.encode_to_vec(),
        ),
    )
    .await
    .unwrap();
    let name = created.name.clone();
    eventually(Duration::from_secs(15), || {
        let (mut client, name) = (client.clone(), name.clone());
        async move {
            let task = client
                .get_task(authed("alice", GetTaskRequest { name }))
                .await
                .ok()?
                .into_inner()
                .task?;
            task.recurrence.is_none().then_some(())
        }
    })
    .await
    .expect("the series ends");

    // A command without a request id is rejected and dead-lettered; the consumer goes on.
    let bad = CreateTaskCommand {
        context: context(""),
        task: Some(Task {
            title: "never".into(),
            ..Default::default()
        }),
    };
    let bad_event = command(
        "dev.taskmesh.task.create.v1",
        "taskmesh.events.v1.CreateTaskCommand",
        "",
        bad.encode_to_vec(),
    );
    publish(&mesh.kafka, Topic::TaskCommands, &bad_event)
        .await
        .unwrap();
    let reader = EventReader::new_named(
        &mesh.kafka,
        &mesh.kafka.dead_letter_topic(Topic::TaskCommands),
    )
    .await
    .unwrap();
    let letters = reader.collect(1, Duration::from_secs(15)).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, bad_event.id);

    let all = tasks_of_alice(&mut client).await;
    assert_eq!(
        all.len(),
        1,
        "exactly one task from three deliveries: {all:?}"
    );
}

/// Commands arriving together are applied in one transaction; a bad one among them fails the
/// batch, is dead-lettered alone, and the others (a redelivery included; the batch is then
/// applied event by event) take effect exactly once.
/// The events on `task-commands.dlq` (up to `limit`, until `quiet` passes without one),
/// each with the consumer that dead-lettered it, sorted by consumer.
async fn dead_letters(
    kafka: &taskmesh_platform::kafka::KafkaConfig,
    limit: usize,
    quiet: Duration,
) -> Vec<(uuid::Uuid, String)> {
    let reader = EventReader::new_named(kafka, &kafka.dead_letter_topic(Topic::TaskCommands))
        .await
        .unwrap();
    let letters = reader.collect_with_headers(limit, quiet).await.unwrap();
    let mut by: Vec<(uuid::Uuid, String)> = letters
        .iter()
        .map(|(event, headers)| {
            let consumer = headers
                .iter()
                .find(|(key, _)| key == "taskmesh_dlq_consumer")
                .map(|(_, value)| value.clone())
                .unwrap_or_default();
            (event.id, consumer)
        })
        .collect();
    by.sort_by(|a, b| a.1.cmp(&b.1));
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_command_among_good_ones_is_dead_lettered_alone() {
    let (mesh, mut client) = start(MeshOptions::default()).await;
    let create = |title: &str, request_id: &str| {
        let command = CreateTaskCommand {
            context: context(request_id),
            task: Some(Task {
                title: title.into(),
                ..Default::default()
            }),
        };
        self::command(
            "dev.taskmesh.task.create.v1",
            "taskmesh.events.v1.CreateTaskCommand",
            "",
            command.encode_to_vec(),
        )
    };
    let first = create("first", "together/1");
    let bad = create("never", "");
    let second = create("second", "together/2");
    let third = create("third", "together/3");
    // All at once, so they reach the consumer in one fetch.
    let kafka = &mesh.kafka;
    let sent = tokio::join!(
        publish(kafka, Topic::TaskCommands, &first),
        publish(kafka, Topic::TaskCommands, &first),
        publish(kafka, Topic::TaskCommands, &bad),
        publish(kafka, Topic::TaskCommands, &second),
        publish(kafka, Topic::TaskCommands, &third),
    );
    for result in [sent.0, sent.1, sent.2, sent.3, sent.4] {
        result.unwrap();
    }

    let titles = eventually(Duration::from_secs(15), || {
        let mut client = client.clone();
        async move {
            let mut titles: Vec<String> = tasks_of_alice(&mut client)
                .await
                .into_iter()
                .map(|t| t.title)
                .collect();
            titles.sort();
            (titles.len() >= 3).then_some(titles)
        }
    })
    .await
    .expect("the good commands create their tasks");
    assert_eq!(titles, ["first", "second", "third"]);
    // The bad command was dead-lettered before the commands after it were applied: once by
    // TaskService, once by AuditService (which records only valid commands).
    assert_eq!(
        dead_letters(kafka, 5, Duration::from_secs(3)).await,
        vec![
            (bad.id, "taskmesh-audit-task-commands".to_owned()),
            (bad.id, "taskmesh-task".to_owned())
        ],
        "only the bad command is dead-lettered, once by each consumer"
    );
    // Nothing more arrives later (the redelivered `first` included).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(tasks_of_alice(&mut client).await.len(), 3);
}

/// A backlog of commands from several users (so several partitions), more than one
/// transaction takes, with a bad command early in it: every good command takes effect
/// exactly once (the partitions' transactions ran concurrently, the bad one's partition went
/// one by one for the failed transaction and then on in batches), and only the bad one is
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_over_partitions_with_a_bad_command_applies_every_good_one_once() {
    let (mesh, _client) = start(MeshOptions::default()).await;
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let create = |user: &str, title: String, request_id: String| {
        let command = CreateTaskCommand {
            context: Some(ChangeContext {
                user: user.into(),
                actor: "service:recurrence".into(),
                sequence: 0,
                request_id,
            }),
            task: Some(Task {
                title,
                ..Default::default()
            }),
        };
        let mut event = self::command(
            "dev.taskmesh.task.create.v1",
            "taskmesh.events.v1.CreateTaskCommand",
            "",
            command.encode_to_vec(),
        );
        event.key = user.into();
        event
    };
    let per_user = 100;
    let mut events = Vec::new();
    for i in 0..per_user {
        for user in users {
            events.push(create(user, format!("backlog {i}"), format!("backlog/{i}")));
        }
        if i == 5 {
            // No request id: an invalid command.
            events.push(create("alice", "never".into(), String::new()));
        }
    }
    let bad = events[users.len() * 6].id;
    let kafka = &mesh.kafka;
    publish_all(kafka, Topic::TaskCommands, &events)
        .await
        .unwrap();

    let expected = (users.len() * per_user) as i64;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE title LIKE 'backlog %'")
            .fetch_one(&mesh.pool)
            .await
            .unwrap()
    };
    let created = eventually(Duration::from_secs(60), || async {
        let n = count().await;
        (n >= expected).then_some(n)
    })
    .await;
    assert_eq!(created, Some(expected), "every good command, once");
    let per_user: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, count(*) FROM tasks WHERE title LIKE 'backlog %' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&mesh.pool)
    .await
    .unwrap();
    assert!(
        per_user.iter().all(|(_, n)| *n == 100) && per_user.len() == users.len(),
        "{per_user:?}"
    );
    let reader = EventReader::new_named(kafka, &kafka.dead_letter_topic(Topic::TaskCommands))
        .await
        .unwrap();
    let letters = reader
        .collect_with_headers(3, Duration::from_secs(3))
        .await
        .unwrap();
    let ids: Vec<uuid::Uuid> = letters.iter().map(|(event, _)| event.id).collect();
    assert_eq!(
        ids,
        [bad, bad],
        "only the bad command, once per consumer: {ids:?}"
    );
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count().await, expected);
}

/// Records as the previous release wrote them keep working: a `series.ended` on
/// `task-commands` (its placement before `series-events`) is skipped by TaskService and
/// recorded by AuditService, neither dead-letters it; a type no consumer knows (a newer
/// producer's) is dead-lettered by both, not silently skipped, and the commands around it
/// apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_series_ended_is_read_and_an_unknown_type_is_dead_lettered() {
    let (mesh, mut client) = start(MeshOptions::default()).await;
    let ended = taskmesh_proto::events::v1::SeriesEnded {
        context: context("series/0190b9a4-0000-7000-8000-000000000001/ended"),
        series: "series/0190b9a4-0000-7000-8000-000000000001".into(),
        last_task: "tasks/0190b9a4-0000-7000-8000-000000000002".into(),
        reason: 3,
    };
    let legacy = command(
        "dev.taskmesh.series.ended.v1",
        "taskmesh.events.v1.SeriesEnded",
        "series/0190b9a4-0000-7000-8000-000000000001",
        ended.encode_to_vec(),
    );
    let unknown = command(
        "dev.taskmesh.task.archive.v1",
        "taskmesh.events.v1.ArchiveTaskCommand",
        "tasks/0190b9a4-0000-7000-8000-000000000002",
        EndSeriesCommand {
            context: context("archive-1"),
            task: "tasks/0190b9a4-0000-7000-8000-000000000002".into(),
        }
        .encode_to_vec(),
    );
    let after = command(
        "dev.taskmesh.task.create.v1",
        "taskmesh.events.v1.CreateTaskCommand",
        "",
        CreateTaskCommand {
            context: context("after-legacy/1"),
            task: Some(Task {
                title: "after".into(),
                ..Default::default()
            }),
        }
        .encode_to_vec(),
    );
    let kafka = &mesh.kafka;
    publish_all(
        kafka,
        Topic::TaskCommands,
        &[legacy.clone(), unknown.clone(), after],
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(15), || {
        let mut client = client.clone();
        async move { (!tasks_of_alice(&mut client).await.is_empty()).then_some(()) }
    })
    .await
    .expect("the command after them applies");
    assert_eq!(tasks_of_alice(&mut client).await[0].title, "after");

    // AuditService may be a few seconds behind TaskService on a busy machine.
    assert_eq!(
        dead_letters(kafka, 3, Duration::from_secs(10)).await,
        vec![
            (unknown.id, "taskmesh-audit-task-commands".to_owned()),
            (unknown.id, "taskmesh-task".to_owned())
        ],
        "only the unknown type is dead-lettered, once by each consumer; series.ended is not"
    );
    let pool = mesh.audit_pool.clone();
    eventually(Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            let recorded: i64 =
                sqlx::query_scalar("SELECT count(*) FROM entries WHERE event_id = $1")
                    .bind(legacy.id)
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (recorded == 1).then_some(())
        }
    })
    .await
    .expect("AuditService records the legacy series.ended");
}
