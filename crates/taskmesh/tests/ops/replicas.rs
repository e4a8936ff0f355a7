//! Replicas of a component share its topic's partitions, and when one is killed with SIGKILL
//! the survivor takes its partitions within seconds: two `taskmesh serve reminder` and two
//! `taskmesh serve audit` processes, one of each killed, and every reminder still fires and
//! every event is still audited.

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use chrono::Utc;
use taskmesh_platform::{broker::EmbeddedBroker, kafka::KafkaConfig};
use taskmesh_proto::task::v1::{
    CreateTaskRequest, Reminder, Task, reminder, task_service_client::TaskServiceClient,
};
use taskmesh_testkit::{KillOnDrop, TestDb, eventually, metrics_text, with_token};

use crate::helpers::{SERVING, health, run, taskmesh};

const SECRET: &str = "a-test-secret-of-at-least-thirty-two-bytes";

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// One `taskmesh serve` process (killed when dropped).
struct Served {
    child: KillOnDrop,
    addr: SocketAddr,
    metrics: SocketAddr,
}

fn serve(component: &str, db: &TestDb, brokers: &str, task_service: SocketAddr) -> Served {
    serve_at(component, db, brokers, task_service, free_port())
}

fn serve_at(
    component: &str,
    db: &TestDb,
    brokers: &str,
    task_service: SocketAddr,
    addr: SocketAddr,
) -> Served {
    let metrics = free_port();
    let child = taskmesh()
        .args(["serve", component])
        .env("DATABASE_URL", db.url())
        .env("KAFKA_BROKERS", brokers)
        .env("TASKMESH_JWT_SECRET", SECRET)
        .env("TASKMESH_LISTEN", addr.to_string())
        .env("TASKMESH_METRICS_LISTEN", metrics.to_string())
        .env("TASKMESH_TASK_SERVICE", format!("http://{task_service}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("serve starts");
    Served {
        child,
        addr,
        metrics,
    }
}

/// Partitions `consumer` holds in `served`, by its metrics.
async fn owned(served: &Served, consumer: &str) -> Option<u32> {
    let text = metrics_text(served.metrics).await?;
    let line = format!("taskmesh_consumer_partitions_owned{{consumer=\"{consumer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u32)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replicas_partitions_move_to_the_survivor() {
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/")
        .await
        .expect("broker");
    let brokers = broker.bootstrap_servers();
    let db = TestDb::create().await.expect("db");
    let mut migrate = taskmesh();
    migrate
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("KAFKA_BROKERS", &brokers);
    let migrated = run(migrate, Duration::from_secs(60)).await;
    assert!(migrated.success, "{}", migrated.text);
    let partitions = KafkaConfig::local(brokers.clone()).partitions as u32;

    let task_addr = free_port();
    let task = serve_at("task", &db, &brokers, task_addr, task_addr);
    let mut reminders = [
        serve("reminder", &db, &brokers, task_addr),
        serve("reminder", &db, &brokers, task_addr),
    ];
    let mut audits = [
        serve("audit", &db, &brokers, task_addr),
        serve("audit", &db, &brokers, task_addr),
    ];
    for served in [&task].into_iter().chain(&reminders).chain(&audits) {
        let ready = eventually(Duration::from_secs(30), || async {
            (health(served.addr, "readiness").await == Some(SERVING)).then_some(())
        })
        .await;
        assert!(ready.is_some(), "{} is not ready", served.addr);
    }
    // Both replicas of each consumer share the partitions.
    for (consumer, replicas) in [
        ("taskmesh-reminder", &reminders),
        ("taskmesh-audit-task-events", &audits),
    ] {
        let shared = eventually(Duration::from_secs(20), || async {
            let a = owned(&replicas[0], consumer).await?;
            let b = owned(&replicas[1], consumer).await?;
            (a + b == partitions && a > 0 && b > 0).then_some(())
        })
        .await;
        assert!(
            shared.is_some(),
            "{consumer}: the replicas do not share the partitions"
        );
    }

    // One replica of each dies.
    let killed = Instant::now();
    reminders[0].child.kill();
    audits[0].child.kill();
    for (consumer, replicas) in [
        ("taskmesh-reminder", &reminders),
        ("taskmesh-audit-task-events", &audits),
    ] {
        let moved = eventually(Duration::from_secs(20), || async {
            (owned(&replicas[1], consumer).await? == partitions).then_some(())
        })
        .await;
        assert!(
            moved.is_some(),
            "{consumer}: the survivor did not take every partition"
        );
        eprintln!(
            "{consumer}: the survivor reads every partition {:.1} s after the kill",
            killed.elapsed().as_secs_f64()
        );
    }

    // Work for every partition (users hash to all of them): every reminder fires, every
    // creation is audited.
    let signer = taskmesh_platform::auth::Signer::hs256(&secrecy::SecretString::from(SECRET));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{task_addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut tasks = TaskServiceClient::new(channel);
    let fire = Utc::now() + chrono::Duration::seconds(3);
    let users = 24;
    for u in 0..users {
        let token = signer
            .mint(&format!("replica-user-{u}"), &[], Duration::from_secs(600))
            .expect("token");
        tasks
            .create_task(with_token(
                &token,
                CreateTaskRequest {
                    task: Some(Task {
                        title: format!("task of {u}"),
                        reminders: vec![Reminder {
                            id: "r".into(),
                            trigger: Some(reminder::Trigger::AbsoluteTime(
                                prost_types::Timestamp {
                                    seconds: fire.timestamp(),
                                    nanos: 0,
                                },
                            )),
                        }],
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("created");
    }
    let pool = sqlx::PgPool::connect(&db.url()).await.expect("pool");
    let done = eventually(Duration::from_secs(30), || async {
        let fired: i64 =
            sqlx::query_scalar("SELECT count(*) FROM reminder.notifications WHERE kind = 1")
                .fetch_one(&pool)
                .await
                .ok()?;
        let audited: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit.entries WHERE event_type = 'dev.taskmesh.task.created.v1'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (fired == users && audited == users).then_some(())
    })
    .await;
    assert!(
        done.is_some(),
        "every reminder fired and every creation was audited, once"
    );
    let late: Option<f64> = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM fired_time - fire_at))::float8 FROM reminder.reminders",
    )
    .fetch_one(&pool)
    .await
    .expect("lateness");
    eprintln!(
        "reminders fired at most {:.3} s late",
        late.unwrap_or_default()
    );

    drop((task, reminders, audits));
}
