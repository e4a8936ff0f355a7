//! Scheduling, rescheduling, cancelling, snoozing, overdue notices and the DST cases, with an
//! injected clock: the mesh runs no scheduler, the tests call `Scheduler::fire_due(now)` with
//! the instants they choose.

use chrono::{DateTime, Duration as Span, Utc};
use taskmesh_platform::grpc::field_violations;
use taskmesh_proto::{
    reminder::v1::{
        DismissReminderRequest, SnoozeReminderRequest, notification::Kind,
        scheduled_reminder::State,
    },
    task::v1::{
        CompleteTaskRequest, DeleteTaskRequest, Due, UncompleteTaskRequest, UpdateTaskRequest,
    },
};
use taskmesh_reminder::Fired;
use taskmesh_testkit::authed;
use tonic::Code;

use crate::helpers::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn fired(reminders: usize, overdue: usize) -> Fired {
    Fired { reminders, overdue }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_fires_at_its_time_never_before_and_once() {
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    let due = now() + Span::hours(2);
    let task = create(
        &mut tasks,
        "alice",
        "Call the bank",
        Some(due_at(due, "Europe/Berlin")),
        vec![
            before_due("before", 15 * 60),
            at("exact", due + Span::hours(1)),
        ],
    )
    .await;
    let scheduled = reminders_when(&client, "alice", "", |r| r.len() == 2).await;
    let first = &scheduled[0];
    assert_eq!(first.name, format!("{}/reminders/before", task.name));
    assert_eq!(first.task_title, "Call the bank");
    assert_eq!(first.state, State::Scheduled as i32);
    let fire_time = time_of(first.fire_time.as_ref());
    assert_eq!(fire_time, due - Span::minutes(15));
    assert_eq!(
        time_of(scheduled[1].fire_time.as_ref()),
        due + Span::hours(1)
    );

    let scheduler = mesh.scheduler();
    // One microsecond early: nothing.
    let early = fire_time - Span::microseconds(1);
    assert_eq!(scheduler.fire_due(early).await.unwrap(), fired(0, 0));
    assert!(notifications(&mut client, "alice").await.is_empty());
    // At its time: exactly the first one.
    assert_eq!(scheduler.fire_due(fire_time).await.unwrap(), fired(1, 0));
    assert_eq!(scheduler.fire_due(fire_time).await.unwrap(), fired(0, 0));
    let listed = reminders(&mut client, "alice", "state = FIRED").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(time_of(listed[0].fired_time.as_ref()), fire_time);
    assert_eq!(listed[0].lateness, Some(prost_types::Duration::default()));
    let inbox = notifications(&mut client, "alice").await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].kind, Kind::Reminder as i32);
    assert_eq!(inbox[0].title, "Call the bank");
    assert_eq!(inbox[0].reminder, listed[0].name);
    assert!(inbox[0].body.contains("Europe/Berlin"), "{}", inbox[0].body);
    assert!(inbox[0].read_time.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_due_reschedules_relative_reminders_and_keeps_absolute_ones() {
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    let due = now() + Span::hours(3);
    let absolute = now() + Span::hours(1);
    let task = create(
        &mut tasks,
        "alice",
        "Dentist",
        Some(due_at(due, "UTC")),
        vec![before_due("hour-before", 3600), at("fixed", absolute)],
    )
    .await;
    reminders_when(&client, "alice", "", |r| r.len() == 2).await;
    // The fixed one fires; then the due moves a day later.
    assert_eq!(
        mesh.scheduler().fire_due(absolute).await.unwrap(),
        fired(1, 0)
    );
    let mut moved = task.clone();
    moved.due = Some(due_at(due + Span::days(1), "UTC"));
    tasks
        .update_task(authed(
            "alice",
            UpdateTaskRequest {
                task: Some(moved),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["due".into()],
                }),
            },
        ))
        .await
        .unwrap();
    let expected = due + Span::days(1) - Span::hours(1);
    let all = reminders_when(&client, "alice", "state = SCHEDULED", |r| {
        r.len() == 1 && time_of(r[0].fire_time.as_ref()) == expected
    })
    .await;
    assert!(all[0].name.ends_with("/hour-before"));
    // The absolute reminder did not move and stays fired (it is not re-armed).
    let fired_ones = reminders(&mut client, "alice", "state = FIRED").await;
    assert_eq!(fired_ones.len(), 1);
    assert_eq!(time_of(fired_ones[0].fire_time.as_ref()), absolute);
    // The old time fires nothing; the new one fires.
    let scheduler = mesh.scheduler();
    assert_eq!(
        scheduler
            .fire_due(due - Span::hours(1))
            .await
            .unwrap()
            .reminders,
        0
    );
    assert_eq!(scheduler.fire_due(expected).await.unwrap().reminders, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_cancels_uncompleting_restores_deleting_removes() {
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    let fire = now() + Span::hours(1);
    let task = create(
        &mut tasks,
        "alice",
        "Water plants",
        None,
        vec![at("r", fire)],
    )
    .await;
    reminders_when(&client, "alice", "", |r| r.len() == 1).await;
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
    reminders_when(&client, "alice", "state = CANCELLED", |r| r.len() == 1).await;
    let scheduler = mesh.scheduler();
    assert_eq!(
        scheduler.fire_due(fire + Span::days(1)).await.unwrap(),
        fired(0, 0)
    );

    tasks
        .uncomplete_task(authed(
            "alice",
            UncompleteTaskRequest {
                name: task.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    reminders_when(&client, "alice", "state = SCHEDULED", |r| r.len() == 1).await;

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
    let filter = format!("task = \"{}\"", task.name);
    reminders_when(&client, "alice", &filter, <[_]>::is_empty).await;
    assert_eq!(
        scheduler.fire_due(fire + Span::days(1)).await.unwrap(),
        fired(0, 0)
    );
    assert!(notifications(&mut client, "alice").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_reminder_snoozes_and_fires_again_and_bad_snoozes_change_nothing() {
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    let fire = now() + Span::seconds(1);
    create(&mut tasks, "alice", "Stretch", None, vec![at("r", fire)]).await;
    let listed = reminders_when(&client, "alice", "", |r| r.len() == 1).await;
    let name = listed[0].name.clone();

    // Not fired yet: snoozing is refused.
    let refused = client
        .snooze_reminder(authed(
            "alice",
            SnoozeReminderRequest {
                name: name.clone(),
                duration: Some(prost_types::Duration {
                    seconds: 600,
                    nanos: 0,
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Fire it with the real clock (its time has come by then).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(mesh.scheduler().fire_due(now()).await.unwrap().reminders, 1);

    // A snooze of 30 s is too short, 31 days too long: INVALID_ARGUMENT on `duration`.
    for seconds in [30, 31 * 24 * 3600] {
        let status = client
            .snooze_reminder(authed(
                "alice",
                SnoozeReminderRequest {
                    name: name.clone(),
                    duration: Some(prost_types::Duration { seconds, nanos: 0 }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(field_violations(&status)[0].0, "duration");
    }
    assert_eq!(
        reminders(&mut client, "alice", "state = FIRED").await.len(),
        1
    );

    let before = now();
    let request = SnoozeReminderRequest {
        name: name.clone(),
        duration: Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        }),
        request_id: "snooze-1".into(),
    };
    let snoozed = client
        .snooze_reminder(authed("alice", request.clone()))
        .await
        .unwrap()
        .into_inner()
        .reminder
        .unwrap();
    assert_eq!(snoozed.state, State::Snoozed as i32);
    let again_at = time_of(snoozed.fire_time.as_ref());
    assert!(again_at >= before + Span::minutes(10) && again_at <= now() + Span::minutes(10));
    // The same request_id returns the first result and does not snooze again.
    let retried = client
        .snooze_reminder(authed("alice", request))
        .await
        .unwrap()
        .into_inner()
        .reminder
        .unwrap();
    assert_eq!(retried, snoozed);

    let scheduler = mesh.scheduler();
    assert_eq!(
        scheduler
            .fire_due(again_at - Span::microseconds(1))
            .await
            .unwrap()
            .reminders,
        0
    );
    assert_eq!(scheduler.fire_due(again_at).await.unwrap().reminders, 1);
    assert_eq!(notifications(&mut client, "alice").await.len(), 2);

    // Dismissed: it never fires again, even when the snooze had been set again.
    let dismissed = client
        .dismiss_reminder(authed("alice", DismissReminderRequest { name }))
        .await
        .unwrap()
        .into_inner()
        .reminder
        .unwrap();
    assert_eq!(dismissed.state, State::Dismissed as i32);
    assert_eq!(
        scheduler
            .fire_due(again_at + Span::days(40))
            .await
            .unwrap()
            .reminders,
        0
    );
}

/// A date-only due (`2027-03-15`, `2027-11-08` in New York): offsets count in wall-clock
/// time from the start of the day, so "15 hours before" is 09:00 local on the day before,
/// whichever side of a DST change that is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_only_offsets_stay_on_the_wall_clock_across_dst() {
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    let date = |year, month, day| Due {
        value: Some(taskmesh_proto::task::v1::due::Value::Date(
            taskmesh_proto::google::r#type::Date { year, month, day },
        )),
        time_zone: "America/New_York".into(),
    };
    // 2027-03-14 is the day DST starts (02:00 EST -> 03:00 EDT); 2027-11-07 it ends.
    create(
        &mut tasks,
        "alice",
        "Spring",
        Some(date(2027, 3, 15)),
        vec![before_due("r", 15 * 3600)],
    )
    .await;
    create(
        &mut tasks,
        "alice",
        "Autumn",
        Some(date(2027, 11, 8)),
        vec![before_due("r", 15 * 3600)],
    )
    .await;
    let listed = reminders_when(&client, "alice", "", |r| r.len() == 2).await;
    let spring = utc("2027-03-14T13:00:00Z"); // 09:00 EDT
    let autumn = utc("2027-11-07T14:00:00Z"); // 09:00 EST
    assert_eq!(time_of(listed[0].fire_time.as_ref()), spring);
    assert_eq!(time_of(listed[1].fire_time.as_ref()), autumn);
    let scheduler = mesh.scheduler();
    assert_eq!(
        scheduler
            .fire_due(spring - Span::seconds(1))
            .await
            .unwrap()
            .reminders,
        0
    );
    assert_eq!(scheduler.fire_due(spring).await.unwrap().reminders, 1);
    // By the autumn, Spring's day has passed too: its overdue notice comes along.
    assert_eq!(scheduler.fire_due(autumn).await.unwrap(), fired(1, 1));
    // Notifications show the due as the person set it.
    let mut inbox: Vec<(String, String)> = notifications(&mut client, "alice")
        .await
        .into_iter()
        .map(|n| (n.title, n.body))
        .collect();
    inbox.sort();
    let expect = |title: &str, body: &str| (title.to_owned(), body.to_owned());
    assert_eq!(
        inbox,
        vec![
            expect("Autumn", "due 2027-11-08 (America/New_York)"),
            expect("Spring", "due 2027-03-15 (America/New_York)"),
            expect("Spring", "overdue: was due 2027-03-15 (America/New_York)"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_task_past_its_due_is_noticed_once_and_a_completed_one_never() {
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    let due = now() + Span::hours(1);
    create(
        &mut tasks,
        "alice",
        "Pay rent",
        Some(due_at(due, "UTC")),
        vec![],
    )
    .await;
    let done = create(
        &mut tasks,
        "alice",
        "Done early",
        Some(due_at(due, "UTC")),
        vec![],
    )
    .await;
    tasks
        .complete_task(authed(
            "alice",
            CompleteTaskRequest {
                name: done.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    // A task already past due when created is not "noticed": nothing passed while it was open.
    create(
        &mut tasks,
        "alice",
        "Yesterday",
        Some(due_at(now() - Span::days(1), "UTC")),
        vec![],
    )
    .await;
    // Wait until the completion was consumed (so the injected clock sees the final state).
    let scheduler = mesh.scheduler();
    taskmesh_testkit::eventually(std::time::Duration::from_secs(15), || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE NOT is_open")
            .fetch_one(&mesh.reminder_pool)
            .await
            .unwrap();
        (count == 1).then_some(())
    })
    .await
    .expect("completion consumed");

    assert_eq!(
        scheduler
            .fire_due(due - Span::seconds(1))
            .await
            .unwrap()
            .overdue,
        0
    );
    let late = due + Span::minutes(5);
    assert_eq!(scheduler.fire_due(late).await.unwrap(), fired(0, 1));
    assert_eq!(
        scheduler.fire_due(late + Span::days(2)).await.unwrap(),
        fired(0, 0)
    );
    let inbox = notifications(&mut client, "alice").await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].kind, Kind::Overdue as i32);
    assert_eq!(inbox[0].title, "Pay rent");
    assert_eq!(
        inbox[0].lateness,
        Some(prost_types::Duration {
            seconds: 300,
            nanos: 0
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_database_fire_each_reminder_exactly_once() {
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    let fire = now() + Span::hours(1);
    for i in 0..60 {
        create(
            &mut tasks,
            "alice",
            &format!("task {i}"),
            None,
            vec![at("a", fire), at("b", fire + Span::milliseconds(i))],
        )
        .await;
    }
    reminders_when(&client, "alice", "", |r| r.len() == 120).await;
    let (one, two) = (mesh.scheduler(), mesh.scheduler());
    let at_time = fire + Span::seconds(1);
    let (a, b) = tokio::join!(one.fire_due(at_time), two.fire_due(at_time));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.reminders + b.reminders, 120, "{a:?} {b:?}");
    let inbox = notifications(&mut client, "alice").await;
    assert_eq!(inbox.len(), 120);
    let mut names: Vec<&str> = inbox.iter().map(|n| n.reminder.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 120, "a reminder fired twice");
}
