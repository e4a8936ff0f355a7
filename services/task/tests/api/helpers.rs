//! Shared test helpers.

use taskmesh_proto::task::v1::{
    CreateTaskRequest, Due, Priority, Task, task_service_client::TaskServiceClient,
};
use taskmesh_testkit::{Mesh, MeshOptions, authed};
use tonic::transport::Channel;

pub(crate) type Client = TaskServiceClient<Channel>;

/// A mesh and a TaskService client connected directly to the service.
pub(crate) async fn start(options: MeshOptions) -> (Mesh, Client) {
    let mesh = Mesh::start(options).await.expect("mesh starts");
    let client = TaskServiceClient::connect(format!("http://{}", mesh.task_addr))
        .await
        .expect("connects");
    (mesh, client)
}

/// A task with a title and the given priority.
pub(crate) fn task(title: &str, priority: Priority) -> Task {
    Task {
        title: title.into(),
        priority: priority as i32,
        ..Default::default()
    }
}

/// A due at an RFC 3339 instant in `zone`.
pub(crate) fn due(rfc3339: &str, zone: &str) -> Due {
    let time: prost_types::Timestamp = rfc3339.parse().expect("timestamp");
    Due {
        value: Some(taskmesh_proto::task::v1::due::Value::Time(time)),
        time_zone: zone.into(),
    }
}

/// Creates `task` for `user` and returns it.
pub(crate) async fn create(client: &mut Client, user: &str, task: Task) -> Task {
    client
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
