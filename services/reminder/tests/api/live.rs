//! End to end with real time: the mesh's own scheduler fires reminders a moment ahead, and
//! the owner's live stream (through the gateway) delivers them, never before their time.

use std::time::Duration;

use chrono::{Duration as Span, Utc};
use taskmesh_proto::{
    gateway::v1::{
        StreamChangesRequest, StreamChangesResponse, live_service_client::LiveServiceClient,
        stream_changes_response::Event,
    },
    reminder::v1::{
        ListNotificationsRequest, MarkNotificationReadRequest,
        reminder_service_client::ReminderServiceClient,
    },
    task::v1::{CompleteTaskRequest, ListTasksRequest},
};
use taskmesh_testkit::{Mesh, MeshOptions, authed};
use tonic::Streaming;

use crate::helpers::*;

type Stream = Streaming<StreamChangesResponse>;

async fn open(mesh: &Mesh, user: &str, cursor: &str, also: &str) -> Stream {
    LiveServiceClient::new(mesh.gateway_channel().await.unwrap())
        .stream_changes(authed(
            user,
            StreamChangesRequest {
                cursor: cursor.into(),
                also_cursor: also.into(),
            },
        ))
        .await
        .expect("stream opens")
        .into_inner()
}

/// The next message that is not a heartbeat, or `None` after `wait` of silence.
async fn next(stream: &mut Stream, wait: Duration) -> Option<StreamChangesResponse> {
    loop {
        match tokio::time::timeout(wait, stream.message()).await {
            Ok(Ok(Some(m))) if matches!(m.event, Some(Event::Heartbeat(_))) => continue,
            Ok(Ok(m)) => return m,
            Ok(Err(status)) => panic!("stream failed: {status:?}"),
            Err(_) => return None,
        }
    }
}

/// Messages until `caught_up` (exclusive).
async fn until_caught_up(stream: &mut Stream) -> Vec<StreamChangesResponse> {
    let mut seen = Vec::new();
    loop {
        let m = next(stream, Duration::from_secs(10))
            .await
            .expect("stream catches up");
        if matches!(m.event, Some(Event::CaughtUp(_))) {
            return seen;
        }
        seen.push(m);
    }
}

/// Reads until a message satisfies `wanted`, failing after `wait` of silence.
async fn until(
    stream: &mut Stream,
    wait: Duration,
    wanted: impl Fn(&StreamChangesResponse) -> bool,
) -> StreamChangesResponse {
    loop {
        let m = next(stream, wait)
            .await
            .expect("the awaited change arrives");
        if wanted(&m) {
            return m;
        }
    }
}

fn is_fired(m: &StreamChangesResponse) -> bool {
    matches!(m.event, Some(Event::ReminderFired(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_arrives_on_the_owners_stream_at_its_time_not_before() {
    let (mesh, mut tasks, _) = start(MeshOptions::default()).await;
    let mut alice = open(&mesh, "alice", "", "").await;
    let mut bob = open(&mesh, "bob", "", "").await;
    until_caught_up(&mut alice).await;
    until_caught_up(&mut bob).await;

    let fire_time = now() + Span::milliseconds(1500);
    create(
        &mut tasks,
        "alice",
        "Stand up",
        None,
        vec![at("soon", fire_time)],
    )
    .await;
    let message = until(&mut alice, Duration::from_secs(10), is_fired).await;
    let arrived = Utc::now();
    let Some(Event::ReminderFired(fired)) = message.event else {
        unreachable!()
    };
    let reminder = fired.reminder.unwrap();
    let notification = fired.notification.unwrap();
    let fired_time = time_of(reminder.fired_time.as_ref());
    assert!(arrived >= fire_time, "arrived {arrived} before {fire_time}");
    assert!(
        fired_time >= fire_time,
        "fired {fired_time} before {fire_time}"
    );
    assert_eq!(time_of(reminder.fire_time.as_ref()), fire_time);
    assert_eq!(notification.title, "Stand up");
    assert_eq!(fired.context.unwrap().sequence, 1);
    println!(
        "reminder: fired {} ms after its time, on the stream {} ms after",
        (fired_time - fire_time).num_milliseconds(),
        (arrived - fire_time).num_milliseconds()
    );
    // Bob's stream carries nothing of it.
    assert!(next(&mut bob, Duration::from_secs(1)).await.is_none());

    // Reading it on one device shows on the stream too.
    let mut reminders = ReminderServiceClient::new(mesh.gateway_channel().await.unwrap());
    reminders
        .mark_notification_read(authed(
            "alice",
            MarkNotificationReadRequest {
                name: notification.name.clone(),
            },
        ))
        .await
        .unwrap();
    let read = until(&mut alice, Duration::from_secs(10), |m| {
        matches!(m.event, Some(Event::NotificationRead(_)))
    })
    .await;
    let Some(Event::NotificationRead(read)) = read.event else {
        unreachable!()
    };
    assert_eq!(read.notifications, vec![notification.name]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_the_task_before_its_time_cancels_the_reminder() {
    let (mesh, mut tasks, mut client) = start(MeshOptions::default()).await;
    let mut alice = open(&mesh, "alice", "", "").await;
    until_caught_up(&mut alice).await;
    let fire_time = now() + Span::seconds(2);
    let task = create(&mut tasks, "alice", "Nap", None, vec![at("r", fire_time)]).await;
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
    // Well past its time: no notification, and the stream showed only the task's changes.
    let wait = (fire_time + Span::seconds(1) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    assert!(notifications(&mut client, "alice").await.is_empty());
    while let Some(m) = next(&mut alice, Duration::from_millis(500)).await {
        assert!(!is_fired(&m), "a cancelled reminder fired");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_with_both_list_cursors_replays_exactly_what_came_after() {
    let (mesh, mut tasks, mut client) = start(MeshOptions::default()).await;
    let first = now() + Span::seconds(2);
    create(&mut tasks, "alice", "First", None, vec![at("r", first)]).await;
    reminders_when(&client, "alice", "state = FIRED", |r| r.len() == 1).await;

    // The browser's start: list tasks and notifications, keep both cursors.
    let task_cursor = tasks
        .list_tasks(authed("alice", ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .cursor;
    let listed = client
        .list_notifications(authed("alice", ListNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.notifications.len(), 1);

    // Meanwhile: one more task and one more reminder fire.
    let second = now() + Span::seconds(2);
    create(&mut tasks, "alice", "Second", None, vec![at("r", second)]).await;
    reminders_when(&client, "alice", "state = FIRED", |r| r.len() == 2).await;

    let mut alice = open(&mesh, "alice", &task_cursor, &listed.cursor).await;
    let replayed = until_caught_up(&mut alice).await;
    let types: Vec<&str> = replayed.iter().map(|m| m.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "dev.taskmesh.task.created.v1",
            "dev.taskmesh.reminder.fired.v1"
        ]
    );
    let Some(Event::ReminderFired(fired)) = &replayed[1].event else {
        unreachable!()
    };
    assert_eq!(fired.notification.as_ref().unwrap().title, "Second");
}
