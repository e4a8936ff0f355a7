//! Create, read, update, delete, complete; etags; request ids; isolation.

use prost_types::FieldMask;
use taskmesh_platform::grpc::reason;
use taskmesh_proto::task::v1::{
    CompleteTaskRequest, CreateTagRequest, CreateTaskRequest, DeleteTagRequest, DeleteTaskRequest,
    GetTagRequest, GetTaskRequest, ListTagsRequest, ListTasksRequest, Priority, Tag,
    UncompleteTaskRequest, UpdateTagRequest, UpdateTaskRequest, task,
};
use taskmesh_testkit::{MeshOptions, authed};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{create, due, start, task};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_complete_uncomplete_delete() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    let mut input = task("Write report", Priority::High);
    input.description = "quarterly numbers".into();
    input.tags = vec!["Work".into(), "work".into(), "urgent-ish".into()];
    input.due = Some(due("2026-12-01T09:00:00Z", "Europe/Berlin"));
    let created = create(&mut client, "alice", input).await;
    assert!(created.name.starts_with("tasks/"));
    assert_eq!(created.title, "Write report");
    assert_eq!(created.priority, Priority::High as i32);
    // Case-insensitive dedup keeps the first spelling; output is sorted.
    assert_eq!(
        created.tags,
        vec!["urgent-ish".to_owned(), "Work".to_owned()]
    );
    assert_eq!(created.state, task::State::Open as i32);
    assert_eq!(created.etag, "1");

    let got = client
        .get_task(authed(
            "alice",
            GetTaskRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(got, created);

    let mut change = created.clone();
    change.title = "Write the report".into();
    change.priority = Priority::Urgent as i32;
    change.description = "ignored: not in the mask".into();
    let updated = client
        .update_task(authed(
            "alice",
            UpdateTaskRequest {
                task: Some(change),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into(), "priority".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(updated.title, "Write the report");
    assert_eq!(updated.priority, Priority::Urgent as i32);
    assert_eq!(updated.description, "quarterly numbers");
    assert_eq!(updated.etag, "2");

    // A change that normalises to the stored value is no change: same etag.
    let mut same = updated.clone();
    same.title = "  Write the report  ".into();
    let unchanged = client
        .update_task(authed(
            "alice",
            UpdateTaskRequest {
                task: Some(same),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into(), "tags".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(unchanged.etag, "2");

    // A stale etag is ABORTED and changes nothing.
    let mut stale = updated.clone();
    stale.etag = "1".into();
    stale.title = "lost update".into();
    let status = client
        .update_task(authed(
            "alice",
            UpdateTaskRequest {
                task: Some(stale),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    // AIP-193: the cause a client branches on, beside the code.
    assert_eq!(reason(&status).as_deref(), Some("ETAG_MISMATCH"));

    let completed = client
        .complete_task(authed(
            "alice",
            CompleteTaskRequest {
                name: created.name.clone(),
                etag: "2".into(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(completed.state, task::State::Completed as i32);
    assert!(completed.complete_time.is_some());

    let reopened = client
        .uncomplete_task(authed(
            "alice",
            UncompleteTaskRequest {
                name: created.name.clone(),
                etag: String::new(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(reopened.state, task::State::Open as i32);
    assert!(reopened.complete_time.is_none());
    assert_eq!(reopened.title, "Write the report");

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
    let status = client
        .get_task(authed(
            "alice",
            GetTaskRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status).as_deref(), Some("RESOURCE_NOT_FOUND"));
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.domain, "taskmesh.dev");
    assert_eq!(info.metadata["resource"], created.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_create_with_same_request_id_returns_the_same_task() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    let request = || CreateTaskRequest {
        task: Some(task("Once", Priority::Low)),
        request_id: "7d3c3c5e-0b6f-4f43-9f51-2a7f0c1d1e01".into(),
    };
    let first = client
        .create_task(authed("alice", request()))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .create_task(authed("alice", request()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    // The same request id from another user is a different request.
    let bob = client
        .create_task(authed("bob", request()))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(bob.task.unwrap().name, first.task.clone().unwrap().name);
    let listed = client
        .list_tasks(authed("alice", ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tasks.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_task_is_not_found_everywhere() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    let secret = create(&mut client, "alice", task("alice's secret", Priority::High)).await;
    let name = secret.name.clone();
    let codes = vec![
        client
            .get_task(authed("bob", GetTaskRequest { name: name.clone() }))
            .await
            .unwrap_err()
            .code(),
        client
            .update_task(authed(
                "bob",
                UpdateTaskRequest {
                    task: Some(secret.clone()),
                    update_mask: Some(FieldMask {
                        paths: vec!["title".into()],
                    }),
                },
            ))
            .await
            .unwrap_err()
            .code(),
        client
            .complete_task(authed(
                "bob",
                CompleteTaskRequest {
                    name: name.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err()
            .code(),
        client
            .uncomplete_task(authed(
                "bob",
                UncompleteTaskRequest {
                    name: name.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err()
            .code(),
        client
            .delete_task(authed(
                "bob",
                DeleteTaskRequest {
                    name: name.clone(),
                    etag: String::new(),
                },
            ))
            .await
            .unwrap_err()
            .code(),
    ];
    assert!(codes.iter().all(|c| *c == Code::NotFound), "{codes:?}");
    let bobs = client
        .list_tasks(authed("bob", ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(bobs.tasks.is_empty());
    // Alice's task is untouched.
    let still = client
        .get_task(authed("alice", GetTaskRequest { name }))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(still, secret);

    // Tags too.
    let tag = client
        .create_tag(authed(
            "alice",
            CreateTagRequest {
                tag: Some(Tag {
                    display_name: "private".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tag
        .unwrap();
    let tag_codes = vec![
        client
            .get_tag(authed(
                "bob",
                GetTagRequest {
                    name: tag.name.clone(),
                },
            ))
            .await
            .unwrap_err()
            .code(),
        client
            .update_tag(authed(
                "bob",
                UpdateTagRequest {
                    tag: Some(tag.clone()),
                    update_mask: Some(FieldMask {
                        paths: vec!["color".into()],
                    }),
                },
            ))
            .await
            .unwrap_err()
            .code(),
        client
            .delete_tag(authed(
                "bob",
                DeleteTagRequest {
                    name: tag.name.clone(),
                    etag: String::new(),
                },
            ))
            .await
            .unwrap_err()
            .code(),
    ];
    assert!(
        tag_codes.iter().all(|c| *c == Code::NotFound),
        "{tag_codes:?}"
    );
    let bob_tags = client
        .list_tags(authed("bob", ListTagsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(bob_tags.tags.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_rename_recolour_delete_show_on_tasks() {
    let (_mesh, mut client) = start(MeshOptions::default()).await;
    let mut input = task("Groceries", Priority::None);
    input.tags = vec!["home".into()];
    let created = create(&mut client, "alice", input).await;
    let tags = client
        .list_tags(authed("alice", ListTagsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tags;
    assert_eq!(tags.len(), 1);
    let mut home = tags[0].clone();
    assert_eq!(home.display_name, "home");

    home.display_name = "Household".into();
    home.color = "#A0B1C2".into();
    let renamed = client
        .update_tag(authed(
            "alice",
            UpdateTagRequest {
                tag: Some(home.clone()),
                update_mask: Some(FieldMask {
                    paths: vec!["*".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tag
        .unwrap();
    assert_eq!(renamed.display_name, "Household");
    assert_eq!(renamed.color, "#a0b1c2");
    let task = client
        .get_task(authed(
            "alice",
            GetTaskRequest {
                name: created.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(task.tags, vec!["Household".to_owned()]);
    assert_ne!(
        task.etag, created.etag,
        "a renamed tag changes the task's etag"
    );

    // A second tag with the same name (any case) is ALREADY_EXISTS.
    let status = client
        .create_tag(authed(
            "alice",
            CreateTagRequest {
                tag: Some(Tag {
                    display_name: "HOUSEHOLD".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("TAG_NAME_TAKEN"));

    client
        .delete_tag(authed(
            "alice",
            DeleteTagRequest {
                name: renamed.name.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap();
    let task = client
        .get_task(authed("alice", GetTaskRequest { name: created.name }))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert!(task.tags.is_empty());
}
