//! `taskmesh dev`, the real binary with its durable broker storage, killed with SIGKILL
//! under load and restarted on the same data directory after 3, 8 and 15 seconds, twice each:
//! every consumer resumes, and every effect is applied exactly once (an audit entry per task,
//! a notification per reminder that came due, a next occurrence per completed recurring task),
//! with no acknowledged write lost and nothing dead-lettered.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use sqlx::PgPool;
use taskmesh_platform::kafka::{KafkaConfig, Topic};
use taskmesh_proto::task::v1::{
    CompleteTaskRequest, CreateTaskRequest, Due, Recurrence, Reminder, Task, due, reminder,
    task_service_client::TaskServiceClient,
};
use taskmesh_testkit::{KillOnDrop, TestDb, eventually, records_in, with_token};

use crate::helpers::{SERVING, health, taskmesh};

/// The development secret `dev` uses when none is set, to sign the load's tokens.
const DEV_SECRET: &str = taskmesh_platform::auth::DEV_SECRET;

/// How far ahead each task's reminder fires.
const REMINDER_AHEAD: Duration = Duration::from_secs(4);

struct Dev {
    database_url: String,
    data_dir: PathBuf,
    gateway: SocketAddr,
    kafka: SocketAddr,
    log: PathBuf,
}

impl Dev {
    fn start(&self) -> KillOnDrop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let relative = self
            .data_dir
            .strip_prefix(std::env::current_dir().expect("cwd"))
            .expect("inside the working directory")
            .to_path_buf();
        taskmesh()
            .args(["dev", "--skip-web-build", "--listen"])
            .arg(self.gateway.to_string())
            .arg("--kafka-listen")
            .arg(self.kafka.to_string())
            .arg("--data-dir")
            .arg(relative)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .map(KillOnDrop)
            .expect("dev starts")
    }

    /// Waits until the gateway and every service it forwards to are ready.
    async fn ready(&self, limit: Duration) {
        let services = [
            "readiness",
            "taskmesh.task.v1.TaskService",
            "taskmesh.reminder.v1.ReminderService",
            "taskmesh.recurrence.v1.RecurrenceService",
            "taskmesh.audit.v1.AuditService",
        ];
        let ready = eventually(limit, || async {
            for service in services {
                if health(self.gateway, service).await != Some(SERVING) {
                    return None;
                }
            }
            Some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "dev was not ready within {limit:?}; see {}",
            self.log.display()
        );
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// What the load got acknowledged.
#[derive(Default)]
struct Acked {
    created: Vec<String>,
    completed: Vec<String>,
    failed: usize,
}

/// Creates tasks for eight users until `stop`: each with a reminder [`REMINDER_AHEAD`]; every
/// fourth one recurring daily instead (no reminder), completed at once.
async fn load(gateway: SocketAddr, stop: Arc<AtomicBool>, acked: Arc<Mutex<Acked>>) {
    let signer = taskmesh_platform::auth::Signer::hs256(&secrecy::SecretString::from(DEV_SECRET));
    let tokens: Vec<String> = (0..8)
        .map(|u| {
            signer
                .mint(&format!("crash-{u}"), &[], Duration::from_secs(3600))
                .expect("token")
        })
        .collect();
    let mut k = 0_usize;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let token = &tokens[k % tokens.len()];
        let result = async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{gateway}"))?
                .connect_timeout(Duration::from_millis(300))
                .timeout(Duration::from_secs(5))
                .connect()
                .await?;
            let mut tasks = TaskServiceClient::new(channel);
            let recurring = k.is_multiple_of(4);
            let fire = Utc::now() + chrono::Duration::from_std(REMINDER_AHEAD)?;
            let task = Task {
                title: format!("load {k}"),
                reminders: if recurring {
                    Vec::new()
                } else {
                    vec![Reminder {
                        id: "r".into(),
                        trigger: Some(reminder::Trigger::AbsoluteTime(prost_types::Timestamp {
                            seconds: fire.timestamp(),
                            nanos: 0,
                        })),
                    }]
                },
                due: recurring.then(|| Due {
                    value: Some(due::Value::Time(prost_types::Timestamp {
                        seconds: (Utc::now() + chrono::Duration::days(1)).timestamp(),
                        nanos: 0,
                    })),
                    time_zone: "UTC".into(),
                }),
                recurrence: recurring.then(|| Recurrence {
                    rrule: "FREQ=DAILY".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let created = tasks
                .create_task(with_token(
                    token,
                    CreateTaskRequest {
                        task: Some(task),
                        request_id: String::new(),
                    },
                ))
                .await?
                .into_inner()
                .task
                .unwrap_or_default();
            acked
                .lock()
                .expect("lock")
                .created
                .push(created.name.clone());
            if recurring {
                tasks
                    .complete_task(with_token(
                        token,
                        CompleteTaskRequest {
                            name: created.name.clone(),
                            ..Default::default()
                        },
                    ))
                    .await?;
                acked.lock().expect("lock").completed.push(created.name);
            }
            anyhow::Ok(())
        }
        .await;
        if result.is_err() {
            acked.lock().expect("lock").failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Effects still missing for the tasks created before `before` (none: every consumer caught
/// up with them), or the duplicates found (a failure).
#[derive(Debug, Default, PartialEq, Eq)]
struct Check {
    missing_audit: i64,
    missing_notifications: i64,
    missing_occurrences: i64,
    duplicates: i64,
}

async fn check(pool: &PgPool, before: chrono::DateTime<Utc>) -> Check {
    let missing_audit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task.tasks t WHERE t.create_time < $1 AND NOT EXISTS \
         (SELECT 1 FROM audit.entries e WHERE e.resource = 'tasks/' || t.id \
          AND e.event_type = 'dev.taskmesh.task.created.v1')",
    )
    .bind(before)
    .fetch_one(pool)
    .await
    .expect("audit check");
    // Reminders due more than 2 s ago on open tasks fired once.
    let missing_notifications: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task.tasks t, jsonb_array_elements(t.reminders) r \
         WHERE t.create_time < $1 AND t.state = 1 \
           AND (r->>'absolute_time')::timestamptz < now() - interval '2 seconds' \
           AND NOT EXISTS (SELECT 1 FROM reminder.notifications n \
                           WHERE n.task_id = t.id AND n.kind = 1 AND n.reminder_id = r->>'id')",
    )
    .bind(before)
    .fetch_one(pool)
    .await
    .expect("reminder check");
    let missing_occurrences: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task.tasks t WHERE t.create_time < $1 AND t.rrule IS NOT NULL \
         AND t.complete_time IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM task.tasks n WHERE n.previous_task_id = t.id)",
    )
    .bind(before)
    .fetch_one(pool)
    .await
    .expect("occurrence check");
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM (SELECT resource FROM audit.entries \
                 WHERE event_type = 'dev.taskmesh.task.created.v1' GROUP BY resource \
                 HAVING count(*) > 1) a) \
              + (SELECT count(*) FROM (SELECT task_id FROM reminder.notifications WHERE kind = 1 \
                 GROUP BY task_id, reminder_id HAVING count(*) > 1) n) \
              + (SELECT count(*) FROM (SELECT previous_task_id FROM task.tasks \
                 WHERE previous_task_id IS NOT NULL GROUP BY previous_task_id \
                 HAVING count(*) > 1) o)",
    )
    .fetch_one(pool)
    .await
    .expect("duplicate check");
    Check {
        missing_audit,
        missing_notifications,
        missing_occurrences,
        duplicates,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_dev_resumes_every_consumer_and_applies_each_effect_once() {
    let db = TestDb::create().await.expect("db");
    let data_dir = std::env::current_dir()
        .expect("cwd")
        .join("target-test-brokers")
        .join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let dev = Dev {
        database_url: db.url(),
        log: data_dir.join("dev.log"),
        data_dir,
        gateway: free_port(),
        kafka: free_port(),
    };
    let mut child = dev.start();
    dev.ready(Duration::from_secs(60)).await;
    let pool = PgPool::connect(&db.url()).await.expect("pool");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let loader = tokio::spawn(load(dev.gateway, stop.clone(), acked.clone()));
    let mut report = Vec::new();
    for outage in [3, 8, 15, 3, 8, 15] {
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(child);
        tokio::time::sleep(Duration::from_secs(outage)).await;
        let restarted = Instant::now();
        let restart_at = Utc::now();
        child = dev.start();
        dev.ready(Duration::from_secs(60)).await;
        let ready = restarted.elapsed();
        // Caught up: every effect of what existed at the restart is there.
        let caught_up = eventually(Duration::from_secs(90), || async {
            (check(&pool, restart_at).await == Check::default()).then_some(())
        })
        .await;
        let state = check(&pool, restart_at).await;
        assert!(
            caught_up.is_some(),
            "after a {outage} s outage the consumers did not catch up: {state:?}; see {}",
            dev.log.display()
        );
        report.push(format!(
            "{outage:>2} s down: ready {:.1} s, caught up {:.1} s after restart",
            ready.as_secs_f64(),
            restarted.elapsed().as_secs_f64()
        ));
    }
    stop.store(true, Ordering::Relaxed);
    loader.await.expect("load stops");
    // Everything, including the last reminders, comes due and is applied.
    tokio::time::sleep(REMINDER_AHEAD + Duration::from_secs(2)).await;
    let end = Utc::now();
    let settled = eventually(Duration::from_secs(90), || async {
        (check(&pool, end).await == Check::default()).then_some(())
    })
    .await;
    let state = check(&pool, end).await;
    assert!(
        settled.is_some(),
        "not every effect applied once: {state:?}"
    );

    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    let names: Vec<String> = sqlx::query_scalar("SELECT 'tasks/' || id FROM task.tasks")
        .fetch_all(&pool)
        .await
        .expect("tasks");
    let lost: Vec<&String> = acked
        .created
        .iter()
        .filter(|n| !names.contains(n))
        .collect();
    assert!(lost.is_empty(), "acknowledged creates lost: {lost:?}");
    assert!(
        acked.created.len() > 100,
        "the load ran: {} creates",
        acked.created.len()
    );

    let kafka = KafkaConfig::local(dev.kafka.to_string());
    for topic in Topic::ALL {
        let dead = records_in(&kafka, &kafka.dead_letter_topic(topic))
            .await
            .expect("reads the dead-letter topic");
        assert_eq!(dead, 0, "{topic:?}: nothing dead-lettered");
    }
    drop(child);
    eprintln!(
        "{} creates acknowledged ({} completions, {} calls failed during outages)\n{}",
        acked.created.len(),
        acked.completed.len(),
        acked.failed,
        report.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dev.data_dir);
}
