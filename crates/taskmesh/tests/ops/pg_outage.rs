//! PostgreSQL stopped for longer than any bounded retry budget (a cluster of the test's own):
//! events that arrive meanwhile are never dead-lettered; the consumers report themselves
//! degraded, RPCs answer UNAVAILABLE or DEADLINE_EXCEEDED, and once the database is back
//! every effect is applied, once.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sqlx::Row as _;
use taskmesh_platform::{
    broker::EmbeddedBroker,
    cloudevents::CloudEvent,
    kafka::{KafkaConfig, Topic},
};
use taskmesh_proto::task::v1::{GetTaskRequest, task_service_client::TaskServiceClient};
use taskmesh_testkit::{
    Mesh, MeshOptions, authed, eventually, pgcluster::PgCluster, publish, records_in,
};
use tonic::Code;

use crate::helpers::{SERVING, create, health};

/// Longer than five attempts with the pool's 5 s acquire timeout and their backoff: a
/// bounded retry budget would have dead-lettered by now.
const OUTAGE: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread")]
async fn a_long_database_outage_dead_letters_nothing() {
    taskmesh_testkit::init_tracing();
    let cluster = PgCluster::create(None).expect("a cluster of our own");
    let url = cluster.url("taskmesh");
    taskmesh_platform::db::ensure_database(&url)
        .await
        .expect("database");
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/")
        .await
        .expect("broker");
    let kafka = KafkaConfig::local(broker.bootstrap_servers());
    // TaskService's relay is held: the test publishes the events itself, while the database
    // is down.
    let options = MeshOptions {
        relay: false,
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(options, kafka.clone(), Some(broker), |config| {
        config.database_url = url.clone();
    })
    .await
    .expect("mesh");
    let mut names = Vec::new();
    for i in 0..12 {
        names.push(
            create(&mesh, &format!("pg-user-{}", i % 4), &format!("task {i}"))
                .await
                .name,
        );
    }
    let events = outbox(&mesh).await;
    assert_eq!(events.len(), 12);

    cluster.stop().expect("PostgreSQL stops");
    let stopped = Instant::now();
    for event in &events {
        publish(&kafka, Topic::TaskEvents, event)
            .await
            .expect("published");
    }
    // Calls fail with retryable codes, not INTERNAL or CANCELLED.
    let mut tasks = TaskServiceClient::new(mesh.gateway_channel().await.expect("channel"));
    let request = || {
        authed(
            "pg-user-0",
            GetTaskRequest {
                name: names[0].clone(),
            },
        )
    };
    let status = tasks.get_task(request()).await.expect_err("no database");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let mut hurried = request();
    // (The server answers a 20th of the timeout early, at most 50 ms: the client's own timer
    // would answer CANCELLED.)
    hurried.set_timeout(Duration::from_secs(2));
    let status = tasks.get_task(hurried).await.expect_err("no database");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let degraded = eventually(Duration::from_secs(20), || async {
        (health(mesh.audit_addr, "").await != Some(SERVING)).then_some(())
    })
    .await;
    assert!(degraded.is_some(), "AuditService reports the outage");

    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    let back = Instant::now();
    cluster.start().expect("PostgreSQL starts");
    let started = back.elapsed();

    let applied = eventually(Duration::from_secs(90), || async {
        let mut counts = Vec::new();
        for (pool, consumer) in [
            (&mesh.reminder_pool, "taskmesh-reminder"),
            (&mesh.recurrence_pool, "taskmesh-recurrence"),
            (&mesh.audit_pool, "taskmesh-audit-task-events"),
        ] {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE consumer = $1")
                    .bind(consumer)
                    .fetch_one(pool)
                    .await
                    .ok()?;
            counts.push(n);
        }
        (counts == [12, 12, 12]).then_some(())
    })
    .await;
    assert!(
        applied.is_some(),
        "every consumer applied every event after the outage"
    );
    eprintln!(
        "database down {:.0} s; every event applied {:.1} s after starting it again ({:.1} s of which the server's start-up)",
        OUTAGE.as_secs_f64(),
        back.elapsed().as_secs_f64(),
        started.as_secs_f64()
    );
    let entries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM entries WHERE event_type = 'dev.taskmesh.task.created.v1'",
    )
    .fetch_one(&mesh.audit_pool)
    .await
    .expect("counts");
    assert_eq!(entries, 12, "each creation audited once");
    let dead = records_in(&kafka, &kafka.dead_letter_topic(Topic::TaskEvents))
        .await
        .expect("reads the dead-letter topic");
    assert_eq!(dead, 0, "nothing was dead-lettered");
    for addr in [mesh.reminder_addr, mesh.audit_addr, mesh.recurrence_addr] {
        let healthy = eventually(Duration::from_secs(30), || async {
            (health(addr, "").await == Some(SERVING)).then_some(())
        })
        .await;
        assert!(healthy.is_some(), "{addr} is SERVING again");
    }
}

/// The events waiting in TaskService's outbox, in order.
async fn outbox(mesh: &Mesh) -> Vec<CloudEvent> {
    let rows = sqlx::query(
        "SELECT record_key, event_id, event_type, source, subject, event_time, data_schema, \
         payload, traceparent FROM outbox ORDER BY id",
    )
    .fetch_all(&mesh.pool)
    .await
    .expect("outbox");
    rows.into_iter()
        .map(|row| CloudEvent {
            key: row.get("record_key"),
            id: row.get("event_id"),
            event_type: row.get("event_type"),
            source: row.get("source"),
            subject: row.get("subject"),
            time: row.get("event_time"),
            data_schema: row.get("data_schema"),
            data: row.get("payload"),
            traceparent: row.get("traceparent"),
        })
        .collect()
}
