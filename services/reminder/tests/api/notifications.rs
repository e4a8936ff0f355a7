//! The notifications API (AIP-158 pages, newest first, unread filter, read marks, counts),
//! the notification change log, and isolation between users.

use chrono::Duration as Span;
use taskmesh_platform::grpc::field_violations;
use taskmesh_proto::reminder::v1::{
    DismissReminderRequest, GetUnreadCountRequest, ListNotificationChangesRequest,
    ListNotificationsRequest, ListRemindersRequest, MarkAllNotificationsReadRequest,
    MarkNotificationReadRequest, SnoozeReminderRequest,
};
use taskmesh_testkit::authed;
use tonic::Code;

use crate::helpers::*;

async fn unread(client: &mut Reminders, user: &str) -> i64 {
    client
        .get_unread_count(authed(user, GetUnreadCountRequest {}))
        .await
        .unwrap()
        .into_inner()
        .unread_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_page_newest_first_filter_unread_and_mark_read() {
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    let base = now() + Span::hours(1);
    for i in 0..5 {
        create(
            &mut tasks,
            "alice",
            &format!("task {i}"),
            None,
            vec![at("r", base + Span::minutes(i))],
        )
        .await;
    }
    reminders_when(&client, "alice", "", |r| r.len() == 5).await;
    let scheduler = mesh.scheduler();
    for i in 0..5 {
        scheduler.fire_due(base + Span::minutes(i)).await.unwrap();
    }
    assert_eq!(unread(&mut client, "alice").await, 5);

    // Pages of two, newest first.
    let mut titles = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_notifications(authed(
                "alice",
                ListNotificationsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    filter: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.notifications.len() <= 2);
        titles.extend(page.notifications.into_iter().map(|n| n.title));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(titles, ["task 4", "task 3", "task 2", "task 1", "task 0"]);

    let newest = notifications(&mut client, "alice").await[0].clone();
    let read = client
        .mark_notification_read(authed(
            "alice",
            MarkNotificationReadRequest {
                name: newest.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification
        .unwrap();
    assert!(read.read_time.is_some());
    // Marking it again changes nothing (same read time).
    let again = client
        .mark_notification_read(authed(
            "alice",
            MarkNotificationReadRequest {
                name: newest.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notification
        .unwrap();
    assert_eq!(again.read_time, read.read_time);
    assert_eq!(unread(&mut client, "alice").await, 4);
    let unread_only = client
        .list_notifications(authed(
            "alice",
            ListNotificationsRequest {
                filter: "unread = true".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(unread_only.len(), 4);
    assert!(unread_only.iter().all(|n| n.name != newest.name));

    let marked = client
        .mark_all_notifications_read(authed("alice", MarkAllNotificationsReadRequest {}))
        .await
        .unwrap()
        .into_inner()
        .marked_count;
    assert_eq!(marked, 4);
    assert_eq!(unread(&mut client, "alice").await, 0);

    // The change log: 5 fired, 1 read, 1 read-all, gapless from 1.
    let changes = client
        .list_notification_changes(authed(
            "alice",
            ListNotificationChangesRequest {
                after_sequence: 0,
                page_size: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let sequences: Vec<i64> = changes.changes.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<_>>());
    assert_eq!(changes.latest_sequence, 7);
    assert_eq!(
        changes.changes[6].r#type,
        "dev.taskmesh.notification.read.v1"
    );
    // A position beyond the log is not this user's: FAILED_PRECONDITION (resync).
    let beyond = client
        .list_notification_changes(authed(
            "alice",
            ListNotificationChangesRequest {
                after_sequence: 99,
                page_size: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(beyond.code(), Code::FailedPrecondition);

    // Bad input: INVALID_ARGUMENT naming the field.
    for (request, field) in [
        (
            ListNotificationsRequest {
                filter: "unread = maybe".into(),
                ..Default::default()
            },
            "filter",
        ),
        (
            ListNotificationsRequest {
                page_size: 5000,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListNotificationsRequest {
                page_token: token.clone(),
                filter: "unread = true".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let status = client
            .list_notifications(authed("alice", request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(field_violations(&status)[0].0, field);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_reminders_and_notifications_are_invisible_and_not_found() {
    let (mesh, mut tasks, mut client) = start(injected_clock()).await;
    let fire = now() + Span::hours(1);
    create(&mut tasks, "alice", "Secret", None, vec![at("r", fire)]).await;
    let listed = reminders_when(&client, "alice", "", |r| r.len() == 1).await;
    mesh.scheduler().fire_due(fire).await.unwrap();
    let notification = notifications(&mut client, "alice").await[0].clone();

    assert!(
        reminders(&mut client, "bob", "state = FIRED")
            .await
            .is_empty()
    );
    assert!(notifications(&mut client, "bob").await.is_empty());
    assert_eq!(unread(&mut client, "bob").await, 0);
    let name = listed[0].name.clone();
    let snooze = client
        .snooze_reminder(authed(
            "bob",
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
    assert_eq!(snooze.code(), Code::NotFound);
    let dismiss = client
        .dismiss_reminder(authed("bob", DismissReminderRequest { name }))
        .await
        .unwrap_err();
    assert_eq!(dismiss.code(), Code::NotFound);
    let read = client
        .mark_notification_read(authed(
            "bob",
            MarkNotificationReadRequest {
                name: notification.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::NotFound);
    let marked = client
        .mark_all_notifications_read(authed("bob", MarkAllNotificationsReadRequest {}))
        .await
        .unwrap()
        .into_inner()
        .marked_count;
    assert_eq!(marked, 0);
    // Alice's notification is untouched.
    assert_eq!(unread(&mut client, "alice").await, 1);

    // Malformed names and filters are INVALID_ARGUMENT, not NOT_FOUND.
    let bad = client
        .dismiss_reminder(authed(
            "alice",
            DismissReminderRequest {
                name: "reminders/1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = client
        .list_reminders(authed(
            "alice",
            ListRemindersRequest {
                filter: "state = SOMETIME".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(field_violations(&bad)[0].0, "filter");
}
