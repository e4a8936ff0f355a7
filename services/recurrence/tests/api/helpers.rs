//! Shared test helpers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use taskmesh_domain::{instant, timestamp};
use taskmesh_platform::{cloudevents::CloudEvent, kafka::Topic};
use taskmesh_proto::{
    recurrence::v1::{
        GetSeriesRequest, Series, recurrence_service_client::RecurrenceServiceClient,
    },
    task::v1::{
        CompleteTaskRequest, CreateTaskRequest, Due, ListTasksRequest, Recurrence, Task,
        task_service_client::TaskServiceClient,
    },
};
use taskmesh_testkit::{EventReader, Mesh, MeshOptions, authed, eventually};
use tonic::transport::Channel;

pub(crate) type Tasks = TaskServiceClient<Channel>;
pub(crate) type Recurrences = RecurrenceServiceClient<Channel>;

/// A mesh with TaskService and RecurrenceService clients through the gateway.
pub(crate) async fn start(options: MeshOptions) -> (Mesh, Tasks, Recurrences) {
    let mesh = Mesh::start(options).await.expect("mesh starts");
    let channel = mesh.gateway_channel().await.expect("connects");
    (
        mesh,
        TaskServiceClient::new(channel.clone()),
        RecurrenceServiceClient::new(channel),
    )
}

pub(crate) use taskmesh_domain::now;

/// An RFC 3339 instant.
pub(crate) fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// A due at `time` in `zone`.
pub(crate) fn due_at(time: DateTime<Utc>, zone: &str) -> Due {
    Due {
        value: Some(taskmesh_proto::task::v1::due::Value::Time(timestamp(time))),
        time_zone: zone.into(),
    }
}

/// The instant of a task's due time.
pub(crate) fn due_time(task: &Task) -> DateTime<Utc> {
    match task.due.as_ref().and_then(|d| d.value.as_ref()) {
        Some(taskmesh_proto::task::v1::due::Value::Time(ts)) => instant(ts).expect("valid"),
        other => panic!("{} has no due time: {other:?}", task.name),
    }
}

/// A recurrence with `rrule` anchored at the due (`anchor` 1) or the completion (2).
pub(crate) fn rule(rrule: &str, anchor: i32) -> Recurrence {
    Recurrence {
        rrule: rrule.into(),
        anchor,
        ..Default::default()
    }
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

/// A recurring task titled `title` due at `due` (in `zone`) with `recurrence`.
pub(crate) fn recurring(
    title: &str,
    due: DateTime<Utc>,
    zone: &str,
    recurrence: Recurrence,
) -> Task {
    Task {
        title: title.into(),
        due: Some(due_at(due, zone)),
        recurrence: Some(recurrence),
        ..Default::default()
    }
}

/// Completes `name` for `user`.
pub(crate) async fn complete(tasks: &mut Tasks, user: &str, name: &str) -> Task {
    tasks
        .complete_task(authed(
            user,
            CompleteTaskRequest {
                name: name.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("complete succeeds")
        .into_inner()
        .task
        .expect("task returned")
}

/// Every task of `user` in `series`, in creation order.
pub(crate) async fn series_tasks(tasks: &mut Tasks, user: &str, series: &str) -> Vec<Task> {
    tasks
        .list_tasks(authed(
            user,
            ListTasksRequest {
                page_size: 1000,
                order_by: "create_time".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list succeeds")
        .into_inner()
        .tasks
        .into_iter()
        .filter(|t| t.recurrence.as_ref().is_some_and(|r| r.series == series))
        .collect()
}

/// Waits (up to 15 s) until `user`'s tasks of `series` satisfy `done`; returns them.
pub(crate) async fn series_tasks_when(
    tasks: &Tasks,
    user: &str,
    series: &str,
    done: impl Fn(&[Task]) -> bool,
) -> Vec<Task> {
    let done = &done;
    eventually(Duration::from_secs(15), || {
        let mut tasks = tasks.clone();
        async move {
            let found = series_tasks(&mut tasks, user, series).await;
            done(&found).then_some(found)
        }
    })
    .await
    .unwrap_or_else(|| panic!("{user}'s series {series} never reached the expected state"))
}

/// `user`'s series `name`.
pub(crate) async fn get_series(client: &mut Recurrences, user: &str, name: &str) -> Series {
    client
        .get_series(authed(user, GetSeriesRequest { name: name.into() }))
        .await
        .expect("get series succeeds")
        .into_inner()
        .series
        .expect("series returned")
}

/// Waits (up to 15 s) until `user`'s series `name` satisfies `done`; returns it.
pub(crate) async fn series_when(
    client: &Recurrences,
    user: &str,
    name: &str,
    done: impl Fn(&Series) -> bool,
) -> Series {
    let done = &done;
    eventually(Duration::from_secs(15), || {
        let mut client = client.clone();
        async move {
            let found = client
                .get_series(authed(user, GetSeriesRequest { name: name.into() }))
                .await
                .ok()?
                .into_inner()
                .series?;
            done(&found).then_some(found)
        }
    })
    .await
    .unwrap_or_else(|| panic!("{user}'s series {name} never reached the expected state"))
}

/// The series name of a recurring task.
pub(crate) fn series_of(task: &Task) -> String {
    task.recurrence.as_ref().expect("recurs").series.clone()
}

/// Waits until the consumer `consumer` recorded event `id` in `pool`'s schema as processed.
pub(crate) async fn processed(pool: &sqlx::PgPool, consumer: &str, id: uuid::Uuid) {
    eventually(Duration::from_secs(15), || async {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2)",
        )
        .bind(consumer)
        .bind(id)
        .fetch_one(pool)
        .await
        .ok()?;
        done.then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{consumer} never processed {id}"));
}

/// Waits until `pool`'s outbox is empty (its relay published everything).
pub(crate) async fn outbox_drained(pool: &sqlx::PgPool) {
    eventually(Duration::from_secs(15), || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(pool)
            .await
            .ok()?;
        (pending == 0).then_some(())
    })
    .await
    .expect("the outbox drains");
}

/// Every event on `topic` so far (until a second passes without one).
pub(crate) async fn events_on(mesh: &Mesh, topic: Topic) -> Vec<CloudEvent> {
    EventReader::new(&mesh.kafka, topic)
        .await
        .expect("reader")
        .collect(10_000, Duration::from_secs(1))
        .await
        .expect("events")
}
