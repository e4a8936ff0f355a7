//! Shared helpers of the operations tests.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use taskmesh_platform::{
    broker::{BrokerOptions, EmbeddedBroker, Scram, add_scram_user},
    kafka::KafkaConfig,
};
use taskmesh_proto::{
    audit::v1::{ListActivityRequest, audit_service_client::AuditServiceClient},
    task::v1::{CreateTaskRequest, Task, task_service_client::TaskServiceClient},
};
use taskmesh_testkit::{
    Mesh, authed, eventually,
    tls::{Pki, Terminator},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The `taskmesh` binary of this build.
pub(crate) fn taskmesh() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskmesh"));
    command
        .env_remove("KAFKA_BROKERS")
        .env_remove("TASKMESH_KAFKA_PROPERTIES")
        .env_remove("DATABASE_URL")
        .env_remove("TASKMESH_JWT_SECRET")
        .env_remove("TASKMESH_JWT_PUBLIC_KEYS")
        .env("TASKMESH_LOG_FORMAT", "text")
        .env("RUST_LOG", "info");
    command
}

/// Output of a finished process: status and both streams.
pub(crate) struct Ran {
    pub(crate) success: bool,
    pub(crate) code: Option<i32>,
    pub(crate) text: String,
}

/// Runs `command` to completion (at most `limit`, then kills it).
pub(crate) async fn run(mut command: Command, limit: Duration) -> Ran {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("taskmesh starts");
    wait(child, limit).await
}

/// Waits for `child` to exit (at most `limit`, then kills it and fails).
pub(crate) async fn wait(child: Child, limit: Duration) -> Ran {
    let id = child.id();
    let waited = tokio::time::timeout(
        limit,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let Ok(output) = waited else {
        let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
        panic!("taskmesh (pid {id}) still ran after {limit:?}");
    };
    let output = output.expect("joins").expect("output");
    Ran {
        success: output.status.success(),
        code: output.status.code(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Creates a task titled `title` for `user` through the gateway.
pub(crate) async fn create(mesh: &Mesh, user: &str, title: &str) -> Task {
    let mut tasks = TaskServiceClient::new(mesh.gateway_channel().await.expect("connects"));
    tasks
        .create_task(authed(
            user,
            CreateTaskRequest {
                task: Some(Task {
                    title: title.to_owned(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("create succeeds")
        .into_inner()
        .task
        .expect("a task")
}

/// The titles of `user`'s audit entries of type `task.created`, newest first, once there
/// are `count` of them (or after `limit`).
pub(crate) async fn created_entries(
    mesh: &Mesh,
    user: &str,
    count: usize,
    limit: Duration,
) -> Vec<String> {
    let audit = AuditServiceClient::new(mesh.gateway_channel().await.expect("connects"));
    let read = || {
        let mut audit = audit.clone();
        async move {
            let entries = audit
                .list_activity(authed(
                    user,
                    ListActivityRequest {
                        page_size: 1000,
                        page_token: String::new(),
                    },
                ))
                .await
                .ok()?
                .into_inner()
                .entries;
            Some(
                entries
                    .into_iter()
                    .filter(|e| e.event_type == "dev.taskmesh.task.created.v1")
                    .map(|e| e.resource)
                    .collect::<Vec<String>>(),
            )
        }
    };
    let found = eventually(limit, || {
        let read = read();
        async move { read.await.filter(|created| created.len() >= count) }
    })
    .await;
    match found {
        Some(created) => created,
        None => read().await.unwrap_or_default(),
    }
}

/// `service`'s health status at `addr` (`""`: the whole server), or `None` when it does not
/// answer.
pub(crate) async fn health(addr: std::net::SocketAddr, service: &str) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    let response = tokio::time::timeout(
        Duration::from_secs(2),
        HealthClient::new(channel).check(HealthCheckRequest {
            service: service.to_owned(),
        }),
    )
    .await
    .ok()?
    .ok()?;
    Some(response.into_inner().status)
}

/// The SERVING status of `grpc.health.v1`.
pub(crate) const SERVING: i32 = 1;

/// The embedded broker behind a TLS terminator with `pki`'s server certificate; it
/// advertises the terminator's `localhost:port`, so every client talks TLS to it.
pub(crate) struct TlsBroker {
    _broker: EmbeddedBroker,
    /// `localhost:port` of the terminator.
    pub(crate) brokers: String,
    _terminator: Terminator,
    /// The broker's storage directory (SASL needs durable storage), removed on drop.
    dir: Option<std::path::PathBuf>,
}

impl TlsBroker {
    /// Starts one; `client_auth` requires client certificates, `sasl` a SCRAM-SHA-512 user
    /// and password.
    pub(crate) async fn start(pki: &Pki, client_auth: bool, sasl: Option<(&str, &str)>) -> Self {
        let (listener, tls_addr) = Terminator::bind().await.expect("binds");
        let advertised = format!("localhost:{}", tls_addr.port());
        let (storage, dir) = match sasl {
            None => ("memory://tansu/".to_owned(), None),
            Some(_) => {
                // SCRAM credentials live in durable storage (opened relative to the working
                // directory).
                let dir = std::env::current_dir()
                    .expect("cwd")
                    .join("target-test-brokers")
                    .join(uuid::Uuid::new_v4().to_string());
                std::fs::create_dir_all(&dir).expect("dir");
                let relative = dir
                    .strip_prefix(std::env::current_dir().expect("cwd"))
                    .expect("inside")
                    .join("broker.db");
                (format!("sqlite://{}", relative.display()), Some(dir))
            }
        };
        let broker = EmbeddedBroker::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &storage,
            &BrokerOptions {
                advertised: Some(advertised.clone()),
                sasl: sasl.is_some(),
            },
        )
        .await
        .expect("broker starts");
        if let Some((user, password)) = sasl {
            add_scram_user(&storage, user, password, Scram::Sha512)
                .await
                .expect("user added");
        }
        let upstream: SocketAddr = broker.bootstrap_servers().parse().expect("an address");
        let terminator =
            Terminator::start(listener, upstream, pki, client_auth).expect("terminator");
        Self {
            _broker: broker,
            brokers: advertised,
            _terminator: terminator,
            dir,
        }
    }

    /// Client settings for TLS to it, trusting `pki`'s CA (IPv4: the terminator listens on
    /// 127.0.0.1, and `localhost` may resolve to ::1 first).
    pub(crate) fn config(&self, pki: &Pki) -> KafkaConfig {
        let mut kafka = KafkaConfig::local(self.brokers.clone());
        kafka.extra = vec![
            ("security.protocol".into(), "SSL".into()),
            ("ssl.ca.location".into(), pki.ca.display().to_string()),
            ("broker.address.family".into(), "v4".into()),
        ];
        kafka
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
