//! Shared test helpers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use taskmesh_domain::{instant, timestamp};
use taskmesh_proto::{
    reminder::v1::{
        ListNotificationsRequest, ListRemindersRequest, Notification, ScheduledReminder,
        reminder_service_client::ReminderServiceClient,
    },
    task::v1::{
        CreateTaskRequest, Due, Reminder, Task, reminder::Trigger,
        task_service_client::TaskServiceClient,
    },
};
use taskmesh_testkit::{Mesh, MeshOptions, authed, eventually};
use tonic::transport::Channel;

pub(crate) type Tasks = TaskServiceClient<Channel>;
pub(crate) type Reminders = ReminderServiceClient<Channel>;

/// A mesh with clients of TaskService and ReminderService (direct).
pub(crate) async fn start(options: MeshOptions) -> (Mesh, Tasks, Reminders) {
    taskmesh_testkit::init_tracing();
    let mesh = Mesh::start(options).await.expect("mesh starts");
    let tasks = TaskServiceClient::connect(format!("http://{}", mesh.task_addr))
        .await
        .expect("connects");
    let reminders = ReminderServiceClient::new(mesh.reminder_channel().await.expect("connects"));
    (mesh, tasks, reminders)
}

/// The mesh without its own scheduler: tests fire with [`Mesh::scheduler`] and a clock of
/// their choosing.
pub(crate) fn injected_clock() -> MeshOptions {
    MeshOptions {
        scheduler: false,
        ..MeshOptions::default()
    }
}

pub(crate) use taskmesh_domain::now;

/// A due at `time` in `zone`.
pub(crate) fn due_at(time: DateTime<Utc>, zone: &str) -> Due {
    Due {
        value: Some(taskmesh_proto::task::v1::due::Value::Time(timestamp(time))),
        time_zone: zone.into(),
    }
}

/// A reminder `id` at an absolute time.
pub(crate) fn at(id: &str, time: DateTime<Utc>) -> Reminder {
    Reminder {
        id: id.into(),
        trigger: Some(Trigger::AbsoluteTime(timestamp(time))),
    }
}

/// A reminder `id` at an offset from the due, in seconds (negative: before).
pub(crate) fn before_due(id: &str, seconds: i64) -> Reminder {
    Reminder {
        id: id.into(),
        trigger: Some(Trigger::RelativeToDue(prost_types::Duration {
            seconds: -seconds,
            nanos: 0,
        })),
    }
}

/// Creates a task for `user` and returns it.
pub(crate) async fn create(
    tasks: &mut Tasks,
    user: &str,
    title: &str,
    due: Option<Due>,
    reminders: Vec<Reminder>,
) -> Task {
    let task = Task {
        title: title.into(),
        due,
        reminders,
        ..Default::default()
    };
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

/// `user`'s reminders matching `filter` (one page of up to 1,000).
pub(crate) async fn reminders(
    client: &mut Reminders,
    user: &str,
    filter: &str,
) -> Vec<ScheduledReminder> {
    client
        .list_reminders(authed(
            user,
            ListRemindersRequest {
                page_size: 1000,
                page_token: String::new(),
                filter: filter.into(),
            },
        ))
        .await
        .expect("list succeeds")
        .into_inner()
        .reminders
}

/// Waits (up to 15 s) until `user`'s reminders matching `filter` satisfy `done`, which they
/// do once ReminderService consumed the task events; returns them.
pub(crate) async fn reminders_when(
    client: &Reminders,
    user: &str,
    filter: &str,
    done: impl Fn(&[ScheduledReminder]) -> bool,
) -> Vec<ScheduledReminder> {
    let done = &done;
    eventually(Duration::from_secs(15), || {
        let mut client = client.clone();
        async move {
            let found = reminders(&mut client, user, filter).await;
            done(&found).then_some(found)
        }
    })
    .await
    .unwrap_or_else(|| panic!("{user}'s reminders ({filter:?}) never reached the expected state"))
}

/// `user`'s notifications, newest first (one page of up to 1,000).
pub(crate) async fn notifications(client: &mut Reminders, user: &str) -> Vec<Notification> {
    client
        .list_notifications(authed(
            user,
            ListNotificationsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("list succeeds")
        .into_inner()
        .notifications
}

/// The instant of a timestamp field.
pub(crate) fn time_of(ts: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    instant(ts.expect("timestamp set")).expect("valid timestamp")
}
