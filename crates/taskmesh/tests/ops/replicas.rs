//! Replicas of a component share its topic's partitions, and when one is killed with SIGKILL
//! the survivor takes its partitions within seconds: two `taskmesh serve reminder` and two
//! `taskmesh serve audit` processes, one of each killed, and every reminder still fires and
//! every event is still audited. And with two replicas of each consumer, bad events in the
//! middle of batches cost their batches one retry and are dead-lettered alone.

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use chrono::Utc;
use taskmesh_platform::{
    broker::EmbeddedBroker,
    cloudevents::{self, CloudEvent},
    kafka::{KafkaConfig, Topic},
};
use taskmesh_proto::{
    events::v1 as ev,
    task::v1::{
        CreateTaskRequest, Reminder, Task, reminder, task_service_client::TaskServiceClient,
    },
};
use taskmesh_testkit::{KillOnDrop, TestDb, eventually, metrics_text, records_in, with_token};

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
    /// Where its standard error goes (warnings and errors), for a failure message.
    log: std::path::PathBuf,
    /// What it was started with, to start it again on other ports.
    component: String,
    database_url: String,
    brokers: String,
    task_service: Option<SocketAddr>,
}

impl Served {
    /// Starts `taskmesh serve component` on free ports (TaskService at `task_service`; `None`:
    /// this is TaskService).
    fn start(
        component: &str,
        database_url: &str,
        brokers: &str,
        task_service: Option<SocketAddr>,
    ) -> Self {
        let (addr, metrics) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!(
            "taskmesh-replicas-{}-{component}-{}.log",
            std::process::id(),
            addr.port()
        ));
        let stderr = std::fs::File::create(&log).expect("a log file");
        let child = taskmesh()
            .args(["serve", component])
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BROKERS", brokers)
            .env("TASKMESH_JWT_SECRET", SECRET)
            .env("TASKMESH_LISTEN", addr.to_string())
            .env("TASKMESH_METRICS_LISTEN", metrics.to_string())
            .env(
                "TASKMESH_TASK_SERVICE",
                format!("http://{}", task_service.unwrap_or(addr)),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map(KillOnDrop)
            .expect("serve starts");
        Self {
            child,
            addr,
            metrics,
            log,
            component: component.to_owned(),
            database_url: database_url.to_owned(),
            brokers: brokers.to_owned(),
            task_service,
        }
    }

    /// Waits until it is ready. A free port found by binding and closing can be taken by
    /// another process (an outgoing connection of a test running beside this one) before
    /// `serve` binds it: a process that exited because its address was in use is started
    /// again on other ports.
    async fn ready(&mut self) {
        for _ in 0..3 {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut ready = None;
            while ready.is_none() && Instant::now() < deadline {
                if matches!(self.child.0.try_wait(), Ok(Some(_))) {
                    ready = Some(false);
                } else if health(self.addr, "readiness").await == Some(SERVING) {
                    ready = Some(true);
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if ready == Some(true) {
                return;
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if ready.is_none() || !log.contains("in use") {
                break;
            }
            *self = Self::start(
                &self.component,
                &self.database_url,
                &self.brokers,
                self.task_service,
            );
        }
        panic!("not ready: {}", self.report());
    }

    /// Whether it exited, and the end of its log: what a failed test shows.
    fn report(&mut self) -> String {
        let exited = self.child.0.try_wait().ok().flatten();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: String = log
            .chars()
            .rev()
            .take(4_000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{} (exited: {exited:?}); its log ends:\n{tail}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_file(&self.log);
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

/// A broker, a migrated database, a TaskService and two replicas each of ReminderService
/// and AuditService, every one ready and each pair sharing its consumer's partitions.
struct Cluster {
    broker: EmbeddedBroker,
    db: TestDb,
    kafka: KafkaConfig,
    task_addr: SocketAddr,
    task: Served,
    reminders: [Served; 2],
    audits: [Served; 2],
}

impl Cluster {
    async fn start() -> Self {
        let broker =
            EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/")
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
        let kafka = KafkaConfig::local(brokers.clone());
        let partitions = kafka.partitions as u32;

        // TaskService first: the others are pointed at its address.
        let mut task = Served::start("task", &db.url(), &brokers, None);
        task.ready().await;
        let task_addr = task.addr;
        let mut reminders = [
            Served::start("reminder", &db.url(), &brokers, Some(task_addr)),
            Served::start("reminder", &db.url(), &brokers, Some(task_addr)),
        ];
        let mut audits = [
            Served::start("audit", &db.url(), &brokers, Some(task_addr)),
            Served::start("audit", &db.url(), &brokers, Some(task_addr)),
        ];
        for served in reminders.iter_mut().chain(&mut audits) {
            served.ready().await;
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
        Self {
            broker,
            db,
            kafka,
            task_addr,
            task,
            reminders,
            audits,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replicas_partitions_move_to_the_survivor() {
    let Cluster {
        broker: _broker,
        db,
        kafka,
        task_addr,
        task,
        mut reminders,
        mut audits,
    } = Cluster::start().await;
    let partitions = kafka.partitions as u32;

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

/// A `task.created` event of a task of `user`, as TaskService would publish it; with
/// `reminder`, due in an hour with a reminder ten minutes before.
fn task_created(user: &str, title: &str, reminder: bool) -> CloudEvent {
    use taskmesh_proto::task::v1::{Due, due};
    let id = uuid::Uuid::now_v7();
    let due = (Utc::now() + chrono::Duration::hours(1)).timestamp();
    let task = Task {
        name: format!("tasks/{id}"),
        title: title.into(),
        version: 1,
        state: taskmesh_proto::task::v1::task::State::Open as i32,
        due: reminder.then(|| Due {
            value: Some(due::Value::Time(prost_types::Timestamp {
                seconds: due,
                nanos: 0,
            })),
            time_zone: "UTC".into(),
        }),
        reminders: if reminder {
            vec![Reminder {
                id: "before".into(),
                trigger: Some(reminder::Trigger::RelativeToDue(prost_types::Duration {
                    seconds: -600,
                    nanos: 0,
                })),
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let data = prost::Message::encode_to_vec(&ev::TaskCreated {
        context: Some(ev::ChangeContext {
            user: user.into(),
            actor: user.into(),
            sequence: 1,
            request_id: String::new(),
        }),
        task: Some(task),
    });
    CloudEvent {
        id: uuid::Uuid::now_v7(),
        source: "/taskmesh/task".into(),
        event_type: "dev.taskmesh.task.created.v1".into(),
        time: Utc::now(),
        subject: format!("tasks/{id}"),
        data_schema: cloudevents::data_schema("taskmesh.events.v1.TaskCreated"),
        key: user.into(),
        data,
        traceparent: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_events_inside_batches_are_dead_lettered_alone_under_two_replicas() {
    let Cluster {
        broker: _broker,
        db,
        kafka,
        task,
        reminders,
        audits,
        ..
    } = Cluster::start().await;

    // 60 good events of 12 users (every partition gets some), with a bad one (a payload that
    // does not decode) after every 15th, all published at once so that the consumers fetch
    // them in batches: each bad event fails its batch, which is then applied event by event.
    let (good, bad) = (60, 4);
    let mut events = Vec::new();
    for i in 0..good {
        events.push(task_created(
            &format!("batch-user-{}", i % 12),
            &format!("task {i}"),
            i % 3 == 0,
        ));
        if i % 15 == 7 {
            let mut poison = task_created(&format!("batch-user-{}", i % 12), "poison", false);
            poison.data = vec![0xff; 7];
            events.push(poison);
        }
    }
    let producer = kafka.producer().expect("producer");
    let topic = kafka.topic(Topic::TaskEvents);
    let sends = events.iter().map(|event| {
        let record = rdkafka::producer::FutureRecord::to(&topic)
            .key(&event.key)
            .payload(&event.data)
            .headers(event.headers());
        producer.send(record, Duration::from_secs(10))
    });
    for sent in futures::future::join_all(sends).await {
        sent.expect("published");
    }

    let pool = sqlx::PgPool::connect(&db.url()).await.expect("pool");
    let counts = || async {
        let audited: (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT event_id) FROM audit.entries \
             WHERE event_type = 'dev.taskmesh.task.created.v1'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        let known: i64 = sqlx::query_scalar("SELECT count(*) FROM reminder.tasks")
            .fetch_one(&pool)
            .await
            .ok()?;
        let letters = records_in(&kafka, &kafka.dead_letter_topic(Topic::TaskEvents))
            .await
            .ok()?;
        Some((audited, known, letters))
    };
    let settled = eventually(Duration::from_secs(60), || async {
        let (audited, known, letters) = counts().await?;
        (audited.0 >= good && known >= good && letters >= 2 * bad).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "the consumers did not get through: {:?}",
        counts().await
    );
    // Nothing more arrives later: every good event applied once, every bad one dead-lettered
    // once by each consumer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (audited, known, letters) = counts().await.expect("counts");
    assert_eq!(
        audited,
        (good, good),
        "each good event audited exactly once"
    );
    assert_eq!(known, good, "ReminderService knows each task once");
    assert_eq!(
        letters,
        2 * bad,
        "each bad event dead-lettered once per consumer"
    );
    // Applied set-based, the effects are those of one event at a time: every third task's
    // reminder is scheduled, and each user's audit chain is gapless and linked, its head on
    // its last entry.
    let scheduled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reminder.reminders WHERE state = 1")
            .fetch_one(&pool)
            .await
            .expect("reminders");
    assert_eq!(
        scheduled,
        good / 3,
        "every third task has its reminder scheduled"
    );
    let (broken_links, gaps, heads): (i64, i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM audit.entries e JOIN audit.entries p \
              ON p.user_id = e.user_id AND p.chain_position = e.chain_position - 1 \
              WHERE e.previous_hash <> p.chain_hash), \
           (SELECT count(*) FROM (SELECT max(chain_position) AS last, count(*) AS n \
              FROM audit.entries GROUP BY user_id) c WHERE c.last <> c.n), \
           (SELECT count(*) FROM audit.chains c JOIN audit.entries e \
              ON e.user_id = c.user_id AND e.chain_position = c.last_position \
              AND e.chain_hash = c.last_hash)",
    )
    .fetch_one(&pool)
    .await
    .expect("chains");
    assert_eq!(
        (broken_links, gaps, heads),
        (0, 0, 12),
        "every chain is whole"
    );
    drop((task, reminders, audits));
}
