//! ListTasks: filters, order, full-text search, keyset pages that survive inserts, and the
//! snapshot cursor.

use taskmesh_platform::cursor::Cursor;
use taskmesh_proto::task::v1::{
    CompleteTaskRequest, ListChangesRequest, ListTasksRequest, ListTasksResponse, Priority,
};
use taskmesh_testkit::{MeshOptions, authed};

use crate::helpers::{Client, create, due, start, task};

async fn list(client: &mut Client, user: &str, request: ListTasksRequest) -> ListTasksResponse {
    client
        .list_tasks(authed(user, request))
        .await
        .expect("list succeeds")
        .into_inner()
}

fn titles(response: &ListTasksResponse) -> Vec<&str> {
    response.tasks.iter().map(|t| t.title.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_order_and_search() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    let mut a = task("Pay electricity bill", Priority::Urgent);
    a.due = Some(due("2026-12-01T10:00:00Z", "UTC"));
    a.tags = vec!["money".into()];
    let mut b = task("Book dentist", Priority::Low);
    b.due = Some(due("2026-11-25T08:00:00Z", "Europe/London"));
    b.description = "call the practice about the bill".into();
    let mut c = task("Read novel", Priority::Medium);
    c.tags = vec!["fun".into(), "Money".into()];
    let d = task("Water plants", Priority::High);
    let a = create(&mut client, "alice", a).await;
    create(&mut client, "alice", b).await;
    create(&mut client, "alice", c).await;
    let d = create(&mut client, "alice", d).await;
    create(&mut client, "bob", task("Bob's bill", Priority::Urgent)).await;
    client
        .complete_task(authed(
            "alice",
            CompleteTaskRequest {
                name: d.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    // Default order: due time (tasks without one last), then priority desc, then creation.
    let all = list(&mut client, "alice", ListTasksRequest::default()).await;
    assert_eq!(
        titles(&all),
        [
            "Book dentist",
            "Pay electricity bill",
            "Water plants",
            "Read novel"
        ]
    );

    let high = list(
        &mut client,
        "alice",
        ListTasksRequest {
            filter: "priority >= HIGH".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(titles(&high), ["Pay electricity bill", "Water plants"]);

    let open_money = list(
        &mut client,
        "alice",
        ListTasksRequest {
            filter: "state = OPEN AND tags:\"MONEY\"".into(),
            order_by: "title".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(titles(&open_money), ["Pay electricity bill", "Read novel"]);

    let due_range = list(
        &mut client,
        "alice",
        ListTasksRequest {
            filter: "due_time >= \"2026-11-26T00:00:00Z\" AND due_time < \"2026-12-31T00:00:00Z\""
                .into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(titles(&due_range), [a.title.as_str()]);

    let completed = list(
        &mut client,
        "alice",
        ListTasksRequest {
            filter: "state = COMPLETED OR priority = LOW".into(),
            order_by: "priority desc".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(titles(&completed), ["Water plants", "Book dentist"]);

    let by_priority = list(
        &mut client,
        "alice",
        ListTasksRequest {
            order_by: "priority desc, title".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        titles(&by_priority),
        [
            "Pay electricity bill",
            "Water plants",
            "Read novel",
            "Book dentist"
        ]
    );

    // Full text over title and description, word prefixes, case-insensitive; bob's never.
    let bill = list(
        &mut client,
        "alice",
        ListTasksRequest {
            query: "BILL".into(),
            order_by: "title".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(titles(&bill), ["Book dentist", "Pay electricity bill"]);
    let prefix = list(
        &mut client,
        "alice",
        ListTasksRequest {
            query: "electr bi".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(titles(&prefix), ["Pay electricity bill"]);
    let nothing = list(
        &mut client,
        "alice",
        ListTasksRequest {
            query: "zebra".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(nothing.tasks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_survive_inserts_and_deletes() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    for i in 0..7 {
        create(
            &mut client,
            "alice",
            task(&format!("task {i}"), Priority::None),
        )
        .await;
    }
    let request = |token: String| ListTasksRequest {
        page_size: 3,
        page_token: token,
        order_by: "create_time".into(),
        ..Default::default()
    };
    let first = list(&mut client, "alice", request(String::new())).await;
    assert_eq!(titles(&first), ["task 0", "task 1", "task 2"]);
    assert!(!first.next_page_token.is_empty());
    // Inserting new tasks (which sort last) and deleting an already-seen one shifts nothing.
    create(&mut client, "alice", task("task 7", Priority::None)).await;
    let second = list(&mut client, "alice", request(first.next_page_token.clone())).await;
    assert_eq!(titles(&second), ["task 3", "task 4", "task 5"]);
    let third = list(
        &mut client,
        "alice",
        request(second.next_page_token.clone()),
    )
    .await;
    assert_eq!(titles(&third), ["task 6", "task 7"]);
    assert!(third.next_page_token.is_empty());

    // Descending order pages the other way.
    let desc = |token: String| ListTasksRequest {
        page_size: 5,
        page_token: token,
        order_by: "create_time desc".into(),
        ..Default::default()
    };
    let p1 = list(&mut client, "alice", desc(String::new())).await;
    let p2 = list(&mut client, "alice", desc(p1.next_page_token.clone())).await;
    assert_eq!(
        titles(&p1),
        ["task 7", "task 6", "task 5", "task 4", "task 3"]
    );
    assert_eq!(titles(&p2), ["task 2", "task 1", "task 0"]);

    // A token with a different order is rejected.
    let status = client
        .list_tasks(authed(
            "alice",
            ListTasksRequest {
                page_token: first.next_page_token,
                order_by: "title".into(),
                page_size: 3,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_cursor_is_the_change_log_position_of_its_snapshot() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    let mut first = task("first", Priority::None);
    first.tags = vec!["t".into()];
    create(&mut client, "alice", first).await; // tag.created + task.created
    let snapshot = list(&mut client, "alice", ListTasksRequest::default()).await;
    let cursor = Cursor::decode(&snapshot.cursor).unwrap();
    assert_eq!(cursor.task, Some(2));
    create(&mut client, "alice", task("second", Priority::None)).await;
    let changes = client
        .list_changes(authed(
            "alice",
            ListChangesRequest {
                after_sequence: cursor.task.unwrap(),
                page_size: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changes.latest_sequence, 3);
    assert_eq!(changes.changes.len(), 1);
    assert_eq!(changes.changes[0].sequence, 3);
    assert_eq!(changes.changes[0].r#type, "dev.taskmesh.task.created.v1");
    // A position beyond the log (a cursor from elsewhere) is FAILED_PRECONDITION.
    let status = client
        .list_changes(authed(
            "alice",
            ListChangesRequest {
                after_sequence: 99,
                page_size: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    // Bob has no changes, whatever alice did.
    let bob = client
        .list_changes(authed(
            "bob",
            ListChangesRequest {
                after_sequence: 0,
                page_size: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(bob.changes.is_empty());
    assert_eq!(bob.latest_sequence, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_only_due_counts_until_the_end_of_its_day_in_its_zone() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    // 2026-03-08 is the day US clocks spring forward: the day ends at 2026-03-09 00:00 EDT,
    // which is 04:00 UTC (not 05:00, as it would be in EST).
    let mut dated = task("file taxes", Priority::None);
    dated.due = Some(taskmesh_proto::task::v1::Due {
        value: Some(taskmesh_proto::task::v1::due::Value::Date(
            taskmesh_proto::google::r#type::Date {
                year: 2026,
                month: 3,
                day: 8,
            },
        )),
        time_zone: "America/New_York".into(),
    });
    let created = create(&mut client, "alice", dated).await;
    assert!(matches!(
        created.due.as_ref().and_then(|d| d.value.as_ref()),
        Some(taskmesh_proto::task::v1::due::Value::Date(_))
    ));
    let until = |instant: &str| ListTasksRequest {
        filter: format!("due_time < \"{instant}\""),
        ..Default::default()
    };
    let before_end = list(&mut client, "alice", until("2026-03-09T03:59:59Z")).await;
    assert!(before_end.tasks.is_empty());
    let after_end = list(&mut client, "alice", until("2026-03-09T04:00:01Z")).await;
    assert_eq!(titles(&after_end), ["file taxes"]);
}
