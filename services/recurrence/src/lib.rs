//! RecurrenceService (`taskmesh.recurrence.v1.RecurrenceService`): recurring tasks per RFC 5545.
//! It validates and previews rules, keeps the bookkeeping of every series (which task is
//! current, how many occurrences it used, whether it ended), and moves a series on: when the
//! current task is completed it asks TaskService, the only writer of tasks, to create the next
//! occurrence with a command on `task-commands` whose `request_id` is derived from the series
//! and the occurrence, so redelivery or a crash creates it exactly once.
//!
//! # Layout
//! - [`events`]: the `task-events` consumer (series bookkeeping, next occurrences, ends).
//! - [`service`]: the tonic service (validate, preview, presets, skip, stop, delete, get).
//! - `series`: the `series` and `occurrences` tables, and the commands and events a series
//!   change sends through the outbox.
//! - `occurrence`: the next task of a series, built from the current one.
//! - `rules`: rule validation, preview and presets, without I/O.
//! - `error`: the error type and its one mapping onto `tonic::Status`.

mod error;
pub mod events;
mod occurrence;
mod rules;
mod series;
pub mod service;

use std::time::Duration;

use rdkafka::producer::FutureProducer;
use sqlx::PgPool;
use taskmesh_platform::{
    auth::{AuthInterceptor, Verifier},
    changelog::Log,
    consumer::{self, ConsumerSettings},
    kafka::{KafkaConfig, Topic},
    outbox::Relay,
};
use taskmesh_proto::{
    recurrence::v1::recurrence_service_server::RecurrenceServiceServer,
    task::v1::task_service_client::TaskServiceClient,
};
use tonic::{service::Routes, transport::Channel};

pub use service::RecurrenceServiceImpl;

/// The consumer (and consumer group) name of RecurrenceService's `task-events` consumer.
pub const CONSUMER: &str = "taskmesh-recurrence";

/// The database schema RecurrenceService owns.
pub const SCHEMA: &str = "recurrence";

/// Migrations of the `recurrence` schema (`migrations/recurrence`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/recurrence");

/// RecurrenceService's outbox: CloudEvent source and relay channel. It has no change log of
/// its own (it changes no user-visible resource directly); its events have sequence 0.
pub(crate) const LOG: Log = Log {
    source: "/taskmesh/recurrence",
    channel: "taskmesh_recurrence_outbox",
};

/// The actor of the commands RecurrenceService sends on its own (a completion moved a series
/// on), as `ChangeContext.actor`.
pub const ACTOR: &str = "service:recurrence";

/// The outbox relay of the `recurrence` schema, publishing with `producer`.
pub fn relay(pool: PgPool, producer: FutureProducer) -> Relay {
    Relay::new(pool, producer, LOG.channel)
}

/// gRPC routes of RecurrenceService, behind JWT verification. `tasks` reaches TaskService,
/// which task-scoped RPCs read the caller's task from (with the caller's own token).
pub fn routes(
    pool: PgPool,
    kafka: &KafkaConfig,
    verifier: Verifier,
    tasks: TaskServiceClient<Channel>,
) -> Routes {
    let service = RecurrenceServiceImpl::new(pool, kafka.topic(Topic::TaskCommands), tasks);
    Routes::new(RecurrenceServiceServer::with_interceptor(
        service,
        AuthInterceptor::new(verifier),
    ))
}

/// Everything a running RecurrenceService needs.
#[derive(Clone, Debug)]
pub struct RecurrenceServer {
    /// Pool on the `recurrence` schema (see [`taskmesh_platform::db::connect`]).
    pub pool: PgPool,
    /// Kafka: topic names, the consumer and the relay's producer.
    pub kafka: KafkaConfig,
    /// Token verification.
    pub verifier: Verifier,
    /// TaskService's address, e.g. `http://127.0.0.1:50051`.
    pub task_service: String,
    /// How long request ids and consumed-event records are kept.
    pub retention: Duration,
    /// Whether to run the outbox relay in this process (tests turn it off to hold commands
    /// in the outbox).
    pub relay: bool,
}

impl RecurrenceServer {
    /// Serves RecurrenceService (with health and reflection) on `listener` and runs the
    /// `task-events` consumer, the outbox relay and the retention job, until `shutdown`.
    ///
    /// # Errors
    /// A bad TaskService address, a Kafka client or a transport error.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let tasks = TaskServiceClient::new(
            tonic::transport::Endpoint::from_shared(self.task_service.clone())?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .connect_lazy(),
        );
        let mut background = tokio::task::JoinSet::new();
        if self.relay {
            let producer = self.kafka.producer()?;
            background.spawn(relay(self.pool.clone(), producer).run(shutdown.clone()));
        }
        background.spawn(taskmesh_platform::retention::run(
            self.pool.clone(),
            self.retention,
            taskmesh_platform::retention::WITHOUT_CHANGE_LOG,
            shutdown.clone(),
        ));
        let settings = ConsumerSettings {
            name: CONSUMER.to_owned(),
            topic: Topic::TaskEvents,
            max_attempts: 5,
            backoff: Duration::from_millis(200),
        };
        let handler = events::TaskEventHandler::new(self.kafka.topic(Topic::TaskCommands));
        let (pool, kafka, stop) = (self.pool.clone(), self.kafka.clone(), shutdown.clone());
        background.spawn(async move {
            if let Err(error) = consumer::run(pool, kafka, settings, handler, stop).await {
                tracing::error!(error = %error, "task-events consumer stopped");
            }
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<RecurrenceServiceServer<RecurrenceServiceImpl>>()
            .await;
        let routes =
            routes(self.pool, &self.kafka, self.verifier, tasks).add_service(health_service);
        let routes = taskmesh_platform::grpc::reflection(routes)?;
        tracing::info!(addr = %listener.local_addr()?, "recurrence service listening");
        let served =
            taskmesh_platform::grpc::serve("recurrence", listener, routes, shutdown.clone()).await;
        shutdown.cancel();
        while background.join_next().await.is_some() {}
        served?;
        Ok(())
    }
}
