//! TaskService: the only writer of tasks and tags (`taskmesh.task.v1.TaskService`). Each
//! change commits together with its row in the owner's change log and its CloudEvent in the
//! transactional outbox; the outbox relay publishes to `task-events`.
//!
//! # Layout
//! - [`service`]: the tonic service: authentication, validation, status mapping.
//! - `tasks`, `tags`: the write and read paths of each resource.
//! - `list`: ListTasks (filter, order, full-text query, keyset pages) and ListChanges.
//! - `filter`: the AIP-160 filter and AIP-132 order_by compiler.
//! - `changes`: the per-user change log and event recording.
//! - `validate`, `model`: input validation, rows and protobuf conversions.
//! - `error`: the error type and its one mapping onto `tonic::Status`.
//! - [`commands`]: the `task-commands` consumer.

mod changes;
pub mod commands;
mod error;
mod filter;
mod list;
mod model;
pub mod service;
mod tags;
mod tasks;
mod validate;

use std::time::Duration;

use sqlx::PgPool;
use taskmesh_platform::{
    auth::{AuthInterceptor, Verifier},
    consumer::{self, ConsumerSettings},
    kafka::{KafkaConfig, Topic},
    outbox::Relay,
};
use taskmesh_proto::task::v1::task_service_server::TaskServiceServer;
use tonic::service::Routes;

pub use service::TaskServiceImpl;

/// The consumer (and consumer group) name of TaskService's `task-commands` consumer.
pub const COMMANDS_CONSUMER: &str = "taskmesh-task";

/// The database schema TaskService owns.
pub const SCHEMA: &str = "task";

/// Migrations of the `task` schema (`migrations/task`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/task");

/// The outbox relay of the `task` schema, publishing with `producer`.
pub fn relay(pool: PgPool, producer: rdkafka::producer::FutureProducer) -> Relay {
    Relay::new(pool, producer, changes::CHANNEL)
}

/// gRPC routes of TaskService (behind JWT verification) and its health status.
pub fn routes(pool: PgPool, kafka: &KafkaConfig, verifier: Verifier) -> Routes {
    let service = TaskServiceImpl::new(
        pool,
        kafka.topic(taskmesh_platform::kafka::Topic::TaskEvents),
    );
    Routes::new(TaskServiceServer::with_interceptor(
        service,
        AuthInterceptor::new(verifier),
    ))
}

/// How long change-log entries and request ids are kept by default (7 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything a running TaskService needs.
#[derive(Clone, Debug)]
pub struct TaskServer {
    /// Pool on the `task` schema (see [`taskmesh_platform::db::connect`]).
    pub pool: PgPool,
    /// Kafka: topic names and the relay's producer.
    pub kafka: KafkaConfig,
    /// Token verification.
    pub verifier: Verifier,
    /// Change-log retention.
    pub retention: Duration,
    /// Whether to run the outbox relay in this process (tests turn it off to hold events).
    pub relay: bool,
}

impl TaskServer {
    /// Serves TaskService (with health and reflection) on `listener` and runs the outbox
    /// relay and the retention job, until `shutdown`.
    ///
    /// # Errors
    /// A Kafka client or transport error.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut background = tokio::task::JoinSet::new();
        if self.relay {
            let producer = self.kafka.producer()?;
            background.spawn(relay(self.pool.clone(), producer).run(shutdown.clone()));
        }
        background.spawn(taskmesh_platform::retention::run(
            self.pool.clone(),
            self.retention,
            taskmesh_platform::retention::WITH_CHANGE_LOG,
            shutdown.clone(),
        ));
        let handler = commands::CommandHandler {
            events_topic: self.kafka.topic(Topic::TaskEvents),
        };
        let settings = ConsumerSettings {
            name: COMMANDS_CONSUMER.to_owned(),
            topic: Topic::TaskCommands,
            max_attempts: 5,
            backoff: Duration::from_millis(200),
        };
        let (pool, kafka, stop) = (self.pool.clone(), self.kafka.clone(), shutdown.clone());
        background.spawn(async move {
            if let Err(error) = consumer::run(pool, kafka, settings, handler, stop).await {
                tracing::error!(error = %error, "task-commands consumer stopped");
            }
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<TaskServiceServer<TaskServiceImpl>>()
            .await;
        let routes = routes(self.pool, &self.kafka, self.verifier).add_service(health_service);
        let routes = taskmesh_platform::grpc::reflection(routes)?;
        tracing::info!(addr = %listener.local_addr()?, "task service listening");
        let served =
            taskmesh_platform::grpc::serve("task", listener, routes, shutdown.clone()).await;
        shutdown.cancel();
        while background.join_next().await.is_some() {}
        served?;
        Ok(())
    }
}
