//! Completing the current task of a series creates the next one, exactly once.

use std::{net::SocketAddr, time::Duration};

use prost::Message;
use taskmesh_platform::kafka::Topic;
use taskmesh_proto::{
    events::v1::{SeriesEnded, series_ended::Reason},
    recurrence::v1::series::EndReason,
    task::v1::{DeleteTaskRequest, Reminder, UncompleteTaskRequest, reminder::Trigger},
};
use taskmesh_recurrence::RecurrenceServer;
use taskmesh_testkit::{MeshOptions, authed, publish};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

fn offset(id: &str, seconds: i64) -> Reminder {
    Reminder {
        id: id.into(),
        trigger: Some(Trigger::RelativeToDue(prost_types::Duration {
            seconds,
            nanos: 0,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_creates_exactly_one_next_task_also_when_redelivered() {
    let (mesh, mut tasks, mut recurrences) = start(MeshOptions::default()).await;
    // 09:00 in Berlin on 2027-03-27 (CET); clocks go forward the next night.
    let due = utc("2027-03-27T08:00:00Z");
    let mut first = recurring(
        "Water the plants",
        due,
        "Europe/Berlin",
        rule("FREQ=DAILY", 1),
    );
    first.description = "the big ones first".into();
    first.priority = 4;
    first.tags = vec!["home".into()];
    first.reminders = vec![
        offset("early", -900),
        Reminder {
            id: "fixed".into(),
            trigger: Some(Trigger::AbsoluteTime(taskmesh_domain::timestamp(utc(
                "2027-03-27T07:00:00Z",
            )))),
        },
    ];
    let first = create(&mut tasks, "alice", first).await;
    let series = series_of(&first);
    complete(&mut tasks, "alice", &first.name).await;

    let found = series_tasks_when(&tasks, "alice", &series, |t| t.len() == 2).await;
    let next = &found[1];
    assert_ne!(next.name, first.name);
    assert_eq!(next.title, "Water the plants");
    assert_eq!(next.description, "the big ones first");
    assert_eq!(
        (next.priority, next.tags.clone()),
        (4, vec!["home".to_owned()])
    );
    assert_eq!(next.state, 1, "the next occurrence is open");
    // 09:00 Berlin summer time, not 10:00: expanded in wall-clock time.
    assert_eq!(
        next.due,
        Some(due_at(utc("2027-03-28T07:00:00Z"), "Europe/Berlin"))
    );
    assert_eq!(
        next.reminders,
        [offset("early", -900), offset("fixed", -3600)]
    );
    let recurrence = next.recurrence.as_ref().unwrap();
    assert_eq!(recurrence.rrule, "FREQ=DAILY");
    assert_eq!(recurrence.previous_task, first.name);
    // RecurrenceService learns of the new task from its task.created event.
    let current = series_when(&recurrences, "alice", &series, |s| {
        s.current_task == next.name
    })
    .await;
    assert_eq!(current.occurrence_count, 2);
    assert!(!current.ended);

    // The completion is delivered again: as the same record, and re-sent with a new id.
    let completed = events_on(&mesh, Topic::TaskEvents)
        .await
        .into_iter()
        .find(|e| e.event_type == "dev.taskmesh.task.completed.v1" && e.subject == first.name)
        .expect("the completion is on task-events");
    publish(&mesh.kafka, Topic::TaskEvents, &completed)
        .await
        .unwrap();
    let mut resent = completed.clone();
    resent.id = uuid::Uuid::now_v7();
    publish(&mesh.kafka, Topic::TaskEvents, &resent)
        .await
        .unwrap();
    processed(
        &mesh.recurrence_pool,
        taskmesh_recurrence::CONSUMER,
        resent.id,
    )
    .await;

    // Re-completing the first task after uncompleting it moves nothing either.
    tasks
        .uncomplete_task(authed(
            "alice",
            UncompleteTaskRequest {
                name: first.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    complete(&mut tasks, "alice", &first.name).await;
    // The second completes: the third follows (events of one user are handled in order, so
    // everything before has been handled by then).
    complete(&mut tasks, "alice", &next.name).await;
    let found = series_tasks_when(&tasks, "alice", &series, |t| t.len() == 3).await;
    assert_eq!(
        found[2].due,
        Some(due_at(utc("2027-03-29T07:00:00Z"), "Europe/Berlin"))
    );
    assert_eq!(
        found[2].recurrence.as_ref().unwrap().previous_task,
        next.name
    );
    outbox_drained(&mesh.recurrence_pool).await;
    let creates = events_on(&mesh, Topic::TaskCommands)
        .await
        .into_iter()
        .filter(|e| e.event_type == "dev.taskmesh.task.create.v1")
        .count();
    assert_eq!(creates, 2, "one create command per completed occurrence");
    assert_eq!(series_tasks(&mut tasks, "alice", &series).await.len(), 3);
    assert_eq!(
        get_series(&mut recurrences, "alice", &series)
            .await
            .occurrence_count,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_instance_publishes_pending_commands_once() {
    // RecurrenceService handles the completion but dies before its relay publishes.
    let (mesh, mut tasks, _) = start(MeshOptions {
        recurrence_relay: false,
        ..MeshOptions::default()
    })
    .await;
    let first = create(
        &mut tasks,
        "alice",
        recurring(
            "Stretch",
            utc("2027-01-04T09:00:00Z"),
            "UTC",
            rule("FREQ=DAILY", 1),
        ),
    )
    .await;
    let series = series_of(&first);
    complete(&mut tasks, "alice", &first.name).await;
    taskmesh_testkit::eventually(Duration::from_secs(15), || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&mesh.recurrence_pool)
            .await
            .ok()?;
        (pending == 1).then_some(())
    })
    .await
    .expect("the create command waits in the outbox");
    assert_eq!(series_tasks(&mut tasks, "alice", &series).await.len(), 1);
    // The completion is delivered again (re-sent with a new id) while the next task does
    // not exist yet: the series remembers it asked for it, and asks nothing more.
    let completed = events_on(&mesh, Topic::TaskEvents)
        .await
        .into_iter()
        .find(|e| e.event_type == "dev.taskmesh.task.completed.v1" && e.subject == first.name)
        .expect("the completion is on task-events");
    let mut again = completed.clone();
    again.id = uuid::Uuid::now_v7();
    publish(&mesh.kafka, Topic::TaskEvents, &again)
        .await
        .unwrap();
    processed(
        &mesh.recurrence_pool,
        taskmesh_recurrence::CONSUMER,
        again.id,
    )
    .await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&mesh.recurrence_pool)
        .await
        .unwrap();
    assert_eq!(pending, 1, "still the one create command");
    // A relay that published but died before deleting publishes the same record again; a
    // service that recomputed after a crash would send the same request id with a new id.
    let resent_id = uuid::Uuid::now_v7();
    for event_id in ["event_id", "$1"] {
        sqlx::query(&format!(
            "INSERT INTO outbox (topic, record_key, event_id, event_type, source, subject, \
             event_time, data_schema, payload) SELECT topic, record_key, {event_id}, event_type, \
             source, subject, event_time, data_schema, payload FROM outbox ORDER BY id LIMIT 1"
        ))
        .bind(resent_id)
        .execute(&mesh.recurrence_pool)
        .await
        .unwrap();
    }

    // A replacement instance (same database and broker) takes over and publishes all three.
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let replacement = RecurrenceServer {
        pool: mesh.recurrence_pool.clone(),
        kafka: mesh.kafka.clone(),
        verifier: taskmesh_platform::auth::Verifier::hs256(&secrecy::SecretString::from(
            taskmesh_testkit::TEST_SECRET,
        )),
        task_service: format!("http://{}", mesh.task_addr),
        retention: Duration::from_secs(3600),
        relay: true,
        introspection: Default::default(),
    };
    let handle = tokio::spawn(replacement.serve(listener, shutdown.clone()));
    outbox_drained(&mesh.recurrence_pool).await;
    let found = series_tasks_when(&tasks, "alice", &series, |t| t.len() == 2).await;
    assert_eq!(
        found[1].due,
        Some(due_at(utc("2027-01-05T09:00:00Z"), "UTC"))
    );
    processed(&mesh.pool, taskmesh_task::COMMANDS_CONSUMER, resent_id).await;
    assert_eq!(
        series_tasks(&mut tasks, "alice", &series).await.len(),
        2,
        "three deliveries of one command created one task"
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

/// The `series.ended` events on `series-events`, decoded.
async fn series_ended(mesh: &taskmesh_testkit::Mesh) -> Vec<SeriesEnded> {
    outbox_drained(&mesh.recurrence_pool).await;
    events_on(mesh, Topic::SeriesEvents)
        .await
        .into_iter()
        .filter(|e| e.event_type == "dev.taskmesh.series.ended.v1")
        .map(|e| SeriesEnded::decode(e.data.as_slice()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_until_and_deletion_end_series() {
    let (mesh, mut tasks, recurrences) = start(MeshOptions::default()).await;
    let start_at = utc("2027-01-04T09:00:00Z");
    let counted = create(
        &mut tasks,
        "alice",
        recurring("Counted", start_at, "UTC", rule("FREQ=DAILY;COUNT=2", 1)),
    )
    .await;
    let until = create(
        &mut tasks,
        "alice",
        recurring(
            "Until",
            start_at,
            "UTC",
            rule("FREQ=WEEKLY;UNTIL=20270111T090000Z", 1),
        ),
    )
    .await;
    let deleted = create(
        &mut tasks,
        "alice",
        recurring("Deleted", start_at, "UTC", rule("FREQ=DAILY", 1)),
    )
    .await;

    // COUNT=2: the second occurrence is the last.
    complete(&mut tasks, "alice", &counted.name).await;
    let found = series_tasks_when(&tasks, "alice", &series_of(&counted), |t| t.len() == 2).await;
    complete(&mut tasks, "alice", &found[1].name).await;
    let ended = series_when(&recurrences, "alice", &series_of(&counted), |s| s.ended).await;
    assert_eq!(ended.end_reason, EndReason::CountReached as i32);
    assert_eq!(
        (ended.current_task.as_str(), ended.last_task.as_str()),
        ("", found[1].name.as_str())
    );
    assert_eq!(ended.occurrence_count, 2);

    // UNTIL is inclusive: 01-11 09:00 is the last occurrence.
    complete(&mut tasks, "alice", &until.name).await;
    let found = series_tasks_when(&tasks, "alice", &series_of(&until), |t| t.len() == 2).await;
    assert_eq!(
        found[1].due,
        Some(due_at(utc("2027-01-11T09:00:00Z"), "UTC"))
    );
    complete(&mut tasks, "alice", &found[1].name).await;
    let ended = series_when(&recurrences, "alice", &series_of(&until), |s| s.ended).await;
    assert_eq!(ended.end_reason, EndReason::UntilPassed as i32);

    // Deleting the current task (TaskService.DeleteTask) ends its series.
    tasks
        .delete_task(authed(
            "alice",
            DeleteTaskRequest {
                name: deleted.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let ended = series_when(&recurrences, "alice", &series_of(&deleted), |s| s.ended).await;
    assert_eq!(ended.end_reason, EndReason::Deleted as i32);

    let mut events: Vec<(String, i32)> = series_ended(&mesh)
        .await
        .into_iter()
        .map(|e| (e.series, e.reason))
        .collect();
    events.sort();
    let mut expected = vec![
        (series_of(&counted), Reason::CountReached as i32),
        (series_of(&until), Reason::UntilPassed as i32),
        (series_of(&deleted), Reason::Deleted as i32),
    ];
    expected.sort();
    assert_eq!(events, expected, "one series.ended event per ended series");
    assert_eq!(
        series_tasks(&mut tasks, "alice", &series_of(&counted))
            .await
            .len(),
        2,
        "no task after the last occurrence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_and_completion_anchored_series() {
    let (_mesh, mut tasks, _) = start(MeshOptions::default()).await;
    let today = now().date_naive();
    let nine = |date: chrono::NaiveDate| date.and_hms_opt(9, 0, 0).unwrap().and_utc();

    // Due three days ago, daily: completing now moves to the first 09:00 after now, not to
    // an occurrence already past.
    let overdue = create(
        &mut tasks,
        "alice",
        recurring(
            "Overdue",
            nine(today - chrono::Days::new(3)),
            "UTC",
            rule("FREQ=DAILY", 1),
        ),
    )
    .await;
    let done = complete(&mut tasks, "alice", &overdue.name).await;
    let done_at = taskmesh_domain::instant(done.complete_time.as_ref().unwrap()).unwrap();
    let found = series_tasks_when(&tasks, "alice", &series_of(&overdue), |t| t.len() == 2).await;
    let expected = if nine(done_at.date_naive()) > done_at {
        nine(done_at.date_naive())
    } else {
        nine(done_at.date_naive() + chrono::Days::new(1))
    };
    assert_eq!(due_time(&found[1]), expected);

    // Every third day from completion ("every!"), at the due's time of day.
    let every = create(
        &mut tasks,
        "alice",
        recurring(
            "Every third day",
            nine(today - chrono::Days::new(10)),
            "UTC",
            rule("FREQ=DAILY;INTERVAL=3", 2),
        ),
    )
    .await;
    let done = complete(&mut tasks, "alice", &every.name).await;
    let done_at = taskmesh_domain::instant(done.complete_time.as_ref().unwrap()).unwrap();
    let found = series_tasks_when(&tasks, "alice", &series_of(&every), |t| t.len() == 2).await;
    assert_eq!(
        due_time(&found[1]),
        nine(done_at.date_naive() + chrono::Days::new(3))
    );
    assert_eq!(found[1].recurrence.as_ref().unwrap().anchor, 2);
    // Done again the same day: the next one is due on the same day as the one just done,
    // and it is a new task (each task leads to its own next one).
    complete(&mut tasks, "alice", &found[1].name).await;
    let found = series_tasks_when(&tasks, "alice", &series_of(&every), |t| t.len() == 3).await;
    assert_eq!(found[2].due, found[1].due);
    assert_eq!(
        found[2].recurrence.as_ref().unwrap().previous_task,
        found[1].name
    );
}
