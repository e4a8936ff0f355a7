//! Forwarded RPCs over both protocols, token checks at the edge, health and reflection.

use taskmesh_proto::task::v1::{CreateTaskRequest, GetTaskRequest, ListTasksRequest, Task};
use taskmesh_testkit::{Mesh, MeshOptions, authed};
use tonic::Code;

use crate::{tasks_grpc, tasks_web};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_are_forwarded_over_grpc_and_grpc_web() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let mut web = tasks_web(&mesh);
    let created = web
        .create_task(authed(
            "alice",
            CreateTaskRequest {
                task: Some(Task {
                    title: "from a browser".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let mut native = tasks_grpc(&mesh).await;
    let got = native
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

    // Errors, with their details, cross the gateway intact on both protocols.
    let status = web
        .create_task(authed(
            "alice",
            CreateTaskRequest {
                task: Some(Task::default()),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        taskmesh_platform::grpc::field_violations(&status)[0].0,
        "task.title"
    );
    let status = native
        .get_task(authed("bob", GetTaskRequest { name: created.name }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // No token, or a forged one: stopped at the gateway.
    for token in [None, Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.AAAA")] {
        let mut request = tonic::Request::new(ListTasksRequest::default());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", token.parse().unwrap());
        }
        let status = web.list_tasks(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_served() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(mesh.gateway_channel().await.unwrap());
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "taskmesh.gateway.v1.LiveService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // The forwarded TaskService reports its own server's status.
    let task = taskmesh_testkit::eventually(std::time::Duration::from_secs(10), || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "taskmesh.task.v1.TaskService".into(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            (status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
                .then_some(())
        }
    })
    .await;
    assert!(
        task.is_some(),
        "TaskService reported SERVING through the gateway"
    );
}
