//! Test harness for taskmesh's integration tests: everything real, nothing shared between
//! tests.
//!
//! # Layout
//! - [`TestDb`]: a fresh, uniquely named PostgreSQL database, dropped afterwards.
//! - [`Mesh`]: an in-memory Kafka-compatible broker (tansu), TaskService, ReminderService,
//!   RecurrenceService, AuditService and the gateway on free loopback ports.
//! - [`EventReader`]: reads CloudEvents off a topic, from the beginning.
//! - [`token`], [`authed`], [`authed_admin`]: tokens signed with the test secret.
//! - [`tls`]: certificates made in the test and a TLS terminator in front of the broker.
//! - [`proxy`]: a TCP proxy that can take the broker away and bring it back.
//! - [`pgcluster`]: a PostgreSQL cluster of the test's own, to stop, start or give a certificate.

pub mod idp;
pub mod pgcluster;
pub mod proxy;
pub mod tls;

use std::{net::SocketAddr, time::Duration};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use secrecy::SecretString;
use sqlx::{Connection, PgConnection};
use taskmesh::mesh::MeshConfig;
use taskmesh_platform::{
    auth::{Signer, Verifier},
    broker::EmbeddedBroker,
    cloudevents::CloudEvent,
    kafka::{KafkaConfig, Topic},
};
use taskmesh_reminder::Scheduler;
use tokio_util::sync::CancellationToken;

/// The HS256 secret tests sign with.
pub const TEST_SECRET: &str = "taskmesh-test-secret";

/// The server the tests use (`DATABASE_URL`'s server, default the local one).
fn server_url() -> String {
    std::env::var("TASKMESH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A fresh database, dropped (with its connections) when this value is dropped.
#[derive(Debug)]
pub struct TestDb {
    name: String,
}

impl TestDb {
    /// Creates `taskmesh_test_<uuid>`.
    pub async fn create() -> anyhow::Result<Self> {
        let name = format!("taskmesh_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&format!("{}/postgres", server_url())).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(Self { name })
    }

    /// Its URL, without TLS (`sslmode=disable`: the test server is on this machine, where
    /// TLS would only cost CPU; `prefer`, the default, would use it since the server offers
    /// it).
    pub fn url(&self) -> String {
        self.url_with("sslmode=disable")
    }

    /// Its URL with the query `params` (e.g. `sslmode=verify-ca&sslrootcert=...`).
    pub fn url_with(&self, params: &str) -> String {
        format!("{}/{}?{params}", server_url(), self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context guarantees: use a thread with its own runtime.
        let joined = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&format!("{}/postgres", server_url())).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(joined, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Sends the test's logs (the mesh's included) to the test's output when `RUST_LOG` is set,
/// e.g. `RUST_LOG=taskmesh_platform=debug cargo test ...`; otherwise nothing is logged.
pub fn init_tracing() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A token for `user` signed with [`TEST_SECRET`], valid for an hour.
pub fn token(user: &str) -> String {
    Signer::hs256(&SecretString::from(TEST_SECRET))
        .mint(user, &[], Duration::from_secs(3600))
        .unwrap_or_default()
}

/// Wraps `message` in a request carrying `user`'s bearer token.
pub fn authed<T>(user: &str, message: T) -> tonic::Request<T> {
    with_token(&token(user), message)
}

/// Wraps `message` in a request carrying a token of `user` with the `admin` role.
pub fn authed_admin<T>(user: &str, message: T) -> tonic::Request<T> {
    let token = Signer::hs256(&SecretString::from(TEST_SECRET))
        .mint(user, &["admin".to_owned()], Duration::from_secs(3600))
        .unwrap_or_default();
    with_token(&token, message)
}

/// Wraps `message` in a request carrying `token` as its bearer token.
pub fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Options of [`Mesh::start`].
#[derive(Clone, Copy, Debug)]
pub struct MeshOptions {
    /// Run TaskService's outbox relay (off: events stay in the outbox).
    pub relay: bool,
    /// Run ReminderService's scheduler (off: tests fire with [`Mesh::scheduler`] and their
    /// own clock).
    pub scheduler: bool,
    /// Run RecurrenceService's outbox relay (off: its commands stay in the outbox).
    pub recurrence_relay: bool,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            relay: true,
            scheduler: true,
            recurrence_relay: true,
        }
    }
}

/// The mesh on free loopback ports, stopped when dropped: what `taskmesh dev` runs
/// ([`taskmesh::mesh`]), with a fresh database and an in-memory broker.
#[derive(Debug)]
pub struct Mesh {
    /// The database (dropped last).
    pub db: TestDb,
    /// Pool on the `task` schema.
    pub pool: sqlx::PgPool,
    /// Pool on the `reminder` schema.
    pub reminder_pool: sqlx::PgPool,
    /// Pool on the `recurrence` schema.
    pub recurrence_pool: sqlx::PgPool,
    /// Pool on the `audit` schema.
    pub audit_pool: sqlx::PgPool,
    /// Kafka settings pointing at the embedded broker.
    pub kafka: KafkaConfig,
    /// TaskService's address.
    pub task_addr: SocketAddr,
    /// ReminderService's address.
    pub reminder_addr: SocketAddr,
    /// RecurrenceService's address.
    pub recurrence_addr: SocketAddr,
    /// AuditService's address.
    pub audit_addr: SocketAddr,
    /// The gateway's address.
    pub gateway_addr: SocketAddr,
    shutdown: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _broker: Option<EmbeddedBroker>,
}

impl Mesh {
    /// Starts a broker (memory storage), migrates a fresh database, starts TaskService,
    /// ReminderService, RecurrenceService, AuditService and the gateway.
    pub async fn start(options: MeshOptions) -> anyhow::Result<Self> {
        init_tracing();
        let broker =
            EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/").await?;
        let mut kafka = KafkaConfig::local(broker.bootstrap_servers());
        if let Ok(debug) = std::env::var("TASKMESH_TEST_RDKAFKA_DEBUG") {
            kafka.extra.push(("debug".into(), debug));
        }
        Self::start_with(options, kafka, Some(broker), |_| {}).await
    }

    /// Like [`Mesh::start`], with a last say on the configuration (`customize`: limits,
    /// CORS, a verifier with an issuer or a rate limit, ...).
    pub async fn start_configured(
        options: MeshOptions,
        customize: impl FnOnce(&mut MeshConfig),
    ) -> anyhow::Result<Self> {
        init_tracing();
        let broker =
            EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/").await?;
        let kafka = KafkaConfig::local(broker.bootstrap_servers());
        Self::start_with(options, kafka, Some(broker), customize).await
    }

    /// Like [`Mesh::start`], on Kafka of the caller's (e.g. behind a TLS terminator; `broker`
    /// is kept running as long as the mesh), with a last say on the configuration
    /// (`customize`, e.g. a database URL asking for TLS).
    pub async fn start_with(
        options: MeshOptions,
        kafka: KafkaConfig,
        broker: Option<EmbeddedBroker>,
        customize: impl FnOnce(&mut MeshConfig),
    ) -> anyhow::Result<Self> {
        let db = TestDb::create().await?;
        kafka.create_topics().await?;
        let verifier = Verifier::hs256(&SecretString::from(TEST_SECRET));
        let mut config = MeshConfig::new(db.url(), kafka.clone(), verifier);
        config.gateway_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.pool_size = 8;
        config.relay = options.relay;
        config.scheduler = options.scheduler;
        config.recurrence_relay = options.recurrence_relay;
        customize(&mut config);
        let mesh = taskmesh::mesh::Mesh::bind(config).await?;
        let (pools, addrs) = (mesh.pools.clone(), mesh.addrs);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(mesh.run(shutdown.clone()));
        Ok(Self {
            db,
            pool: pools.task,
            reminder_pool: pools.reminder,
            recurrence_pool: pools.recurrence,
            audit_pool: pools.audit,
            kafka,
            task_addr: addrs.task,
            reminder_addr: addrs.reminder,
            recurrence_addr: addrs.recurrence,
            audit_addr: addrs.audit,
            gateway_addr: addrs.gateway,
            shutdown,
            handles: vec![handle],
            _broker: broker,
        })
    }

    /// `http://` URL of the gateway.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway_addr)
    }

    /// A gRPC channel to the gateway.
    pub async fn gateway_channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        Ok(tonic::transport::Endpoint::from_shared(self.gateway_url())?
            .connect()
            .await?)
    }

    /// Stops every service and waits for them; the broker and the database stay (e.g. to
    /// run a relay by hand, as after a crash).
    pub async fn stop_services(&mut self) {
        self.shutdown.cancel();
        for handle in &mut self.handles {
            let _ = handle.await;
        }
    }

    /// Waits until the mesh stops by itself (a component failed), with why.
    ///
    /// # Errors
    /// The mesh's failure; an error as well when it was already stopped and joined.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        let Some(handle) = self.handles.pop() else {
            anyhow::bail!("the mesh was already joined");
        };
        handle.await?
    }

    /// A scheduler on the mesh's `reminder` schema, for tests that fire with their own clock
    /// (start the mesh with `scheduler: false`).
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(self.reminder_pool.clone(), self.kafka.topic_prefix.clone())
    }

    /// A gRPC channel to ReminderService (direct, not through the gateway).
    pub async fn reminder_channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.reminder_addr))?
                .connect()
                .await?,
        )
    }
}

impl Drop for Mesh {
    /// Stops the services and waits (up to 10 s) until they have, while the broker still
    /// runs: a Kafka consumer closing against a vanished broker can block its thread for a
    /// long time, and with it the test runtime's shutdown.
    fn drop(&mut self) {
        self.shutdown.cancel();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        let handles = &mut self.handles;
        tokio::task::block_in_place(|| {
            runtime.block_on(async {
                let stopped = async {
                    for handle in handles.iter_mut() {
                        if !handle.is_finished() {
                            let _ = handle.await;
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
            });
        });
    }
}

/// Reads taskmesh CloudEvents off one topic, from the beginning of every partition.
pub struct EventReader {
    consumer: StreamConsumer,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventReader")
    }
}

impl EventReader {
    /// A reader of `topic` on `kafka`.
    pub async fn new(kafka: &KafkaConfig, topic: Topic) -> anyhow::Result<Self> {
        Self::new_named(kafka, &kafka.topic(topic)).await
    }

    /// A reader of the topic named `name` (e.g. a dead-letter topic).
    pub async fn new_named(kafka: &KafkaConfig, name: &str) -> anyhow::Result<Self> {
        let name = name.to_owned();
        let config = kafka.consumer_config(&format!("test-reader-{}", uuid::Uuid::new_v4()));
        // librdkafka's metadata call blocks: keep it off the runtime's threads (the broker
        // runs on them).
        let consumer = tokio::task::spawn_blocking(move || -> anyhow::Result<StreamConsumer> {
            let consumer: StreamConsumer = config.create()?;
            let metadata = consumer.fetch_metadata(Some(&name), Duration::from_secs(10))?;
            let mut assignment = TopicPartitionList::new();
            for t in metadata.topics() {
                for p in t.partitions() {
                    assignment.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
                }
            }
            consumer.assign(&assignment)?;
            Ok(consumer)
        })
        .await??;
        Ok(Self { consumer })
    }

    /// Like [`EventReader::collect`], with each record's headers (e.g. a dead letter's
    /// `taskmesh_dlq_consumer`) as `(name, value)` pairs.
    pub async fn collect_with_headers(
        &self,
        limit: usize,
        quiet: Duration,
    ) -> anyhow::Result<Vec<(CloudEvent, Vec<(String, String)>)>> {
        use rdkafka::{Message as _, message::Headers as _};
        let mut events = Vec::new();
        while events.len() < limit {
            match tokio::time::timeout(quiet, self.consumer.recv()).await {
                Ok(Ok(message)) => {
                    let headers = message
                        .headers()
                        .map(|headers| {
                            headers
                                .iter()
                                .map(|h| {
                                    let value = h.value.unwrap_or_default();
                                    (
                                        h.key.to_owned(),
                                        String::from_utf8_lossy(value).into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    events.push((CloudEvent::from_message(&message)?, headers));
                }
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => break,
            }
        }
        Ok(events)
    }

    /// Every event that arrives until `quiet` passes without one (or `limit` is reached).
    pub async fn collect(&self, limit: usize, quiet: Duration) -> anyhow::Result<Vec<CloudEvent>> {
        let mut events = Vec::new();
        while events.len() < limit {
            match tokio::time::timeout(quiet, self.consumer.recv()).await {
                Ok(Ok(message)) => events.push(CloudEvent::from_message(&message)?),
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => break,
            }
        }
        Ok(events)
    }
}

/// The Prometheus text a `/metrics` listener at `addr` serves (plain HTTP/1.1 GET), or `None`
/// when it does not answer within a few seconds.
pub async fn metrics_text(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: metrics\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    Some(text)
}

/// How many records the topic named `name` holds now (high minus low watermark, over its
/// partitions): unlike reading it, this cannot miss records that arrive slowly.
pub async fn records_in(kafka: &KafkaConfig, name: &str) -> anyhow::Result<i64> {
    let config = kafka.client_config();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let timeout = Duration::from_secs(10);
        let client: rdkafka::consumer::BaseConsumer = config.create()?;
        let metadata = client.fetch_metadata(Some(&name), timeout)?;
        let mut records = 0;
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                let (low, high) = client.fetch_watermarks(topic.name(), partition.id(), timeout)?;
                records += high - low;
            }
        }
        Ok(records)
    })
    .await?
}

/// Publishes `event` to `topic` as a service would (binary-mode CloudEvent).
pub async fn publish(kafka: &KafkaConfig, topic: Topic, event: &CloudEvent) -> anyhow::Result<()> {
    let producer = kafka.producer()?;
    let topic = kafka.topic(topic);
    let record = rdkafka::producer::FutureRecord::to(&topic)
        .key(&event.key)
        .payload(&event.data)
        .headers(event.headers());
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(error, _)| anyhow::anyhow!("publish failed: {error}"))?;
    Ok(())
}

/// Publishes `events` to `topic` with one producer, every record queued before any is
/// awaited (so they reach a consumer as a backlog), each keyed by its `key`.
///
/// # Errors
/// When the producer cannot be created or a record is not acknowledged within 30 s.
pub async fn publish_all(
    kafka: &KafkaConfig,
    topic: Topic,
    events: &[CloudEvent],
) -> anyhow::Result<()> {
    let producer = kafka.producer()?;
    let topic = kafka.topic(topic);
    let mut deliveries = Vec::with_capacity(events.len());
    for event in events {
        let record = rdkafka::producer::FutureRecord::to(&topic)
            .key(&event.key)
            .payload(&event.data)
            .headers(event.headers());
        deliveries.push(producer.send(record, Duration::from_secs(30)));
    }
    for delivery in deliveries {
        delivery
            .await
            .map_err(|(error, _)| anyhow::anyhow!("publish failed: {error}"))?;
    }
    Ok(())
}

/// A child process (e.g. the `taskmesh` binary under test) killed with SIGKILL and reaped when
/// dropped, so a failing test leaves no process behind holding ports.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Kills it now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
