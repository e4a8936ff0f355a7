//! Shared test helpers.

use std::time::Duration;

use taskmesh_platform::{cloudevents::CloudEvent, kafka::Topic};
use taskmesh_proto::{
    audit::v1::{AuditEntry, ListActivityRequest, audit_service_client::AuditServiceClient},
    task::v1::{CreateTaskRequest, Task, task_service_client::TaskServiceClient},
};
use taskmesh_testkit::{EventReader, Mesh, MeshOptions, authed, eventually};
use tonic::transport::Channel;

pub(crate) type Tasks = TaskServiceClient<Channel>;
pub(crate) type Audit = AuditServiceClient<Channel>;

/// A mesh with TaskService and AuditService clients through the gateway.
pub(crate) async fn start() -> (Mesh, Tasks, Audit) {
    let mesh = Mesh::start(MeshOptions::default())
        .await
        .expect("mesh starts");
    let channel = mesh.gateway_channel().await.expect("connects");
    (
        mesh,
        TaskServiceClient::new(channel.clone()),
        AuditServiceClient::new(channel),
    )
}

/// Creates `task` for `user`.
pub(crate) async fn create(tasks: &mut Tasks, user: &str, task: Task) -> Task {
    tasks
        .create_task(authed(
            user,
            CreateTaskRequest {
                task: Some(task),
                request_id: String::new(),
            },
        ))
        .await
        .expect("create succeeds")
        .into_inner()
        .task
        .expect("task returned")
}

/// A task titled `title`.
pub(crate) fn titled(title: &str) -> Task {
    Task {
        title: title.into(),
        ..Default::default()
    }
}

/// All of `user`'s activity, newest first (pages of 1,000).
pub(crate) async fn activity(audit: &mut Audit, user: &str) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = audit
            .list_activity(authed(
                user,
                ListActivityRequest {
                    page_size: 1000,
                    page_token,
                },
            ))
            .await
            .expect("list succeeds")
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return entries;
        }
        page_token = page.next_page_token;
    }
}

/// Waits (up to 15 s) until `user` has `count` entries; returns them, newest first.
pub(crate) async fn activity_of(audit: &Audit, user: &str, count: usize) -> Vec<AuditEntry> {
    eventually(Duration::from_secs(15), || {
        let mut audit = audit.clone();
        async move {
            let entries = activity(&mut audit, user).await;
            (entries.len() >= count).then_some(entries)
        }
    })
    .await
    .unwrap_or_else(|| panic!("{user} never had {count} audit entries"))
}

/// Every event of `user` on every topic (until a second passes without one), per topic in
/// topic order.
pub(crate) async fn events_of(mesh: &Mesh, user: &str) -> Vec<CloudEvent> {
    let mut events = Vec::new();
    for topic in Topic::ALL {
        let reader = EventReader::new(&mesh.kafka, topic).await.expect("reader");
        let found = reader
            .collect(10_000, Duration::from_secs(1))
            .await
            .expect("events");
        events.extend(found.into_iter().filter(|e| e.key == user));
    }
    events
}
