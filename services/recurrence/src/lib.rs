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

use sqlx::PgPool;
use taskmesh_platform::{
    auth::{Authenticated, Verifier},
    changelog::Log,
    consumer::{self, ConsumerSettings},
    grpc::MAX_REQUEST_BYTES,
    kafka::{KafkaConfig, Topic},
    outbox::Relay,
    retention::WITHOUT_CHANGE_LOG,
    runtime::{self, Introspection, Supervisor},
};
use taskmesh_proto::{
    recurrence::v1::recurrence_service_server::RecurrenceServiceServer,
    task::v1::task_service_client::TaskServiceClient,
};
use tonic::{server::NamedService, service::Routes, transport::Channel};

pub use service::RecurrenceServiceImpl;

/// The consumer (and consumer group) name of RecurrenceService's `task-events` consumer.
pub const CONSUMER: &str = "taskmesh-recurrence";

/// The full name of RecurrenceService, its health service name.
pub const RECURRENCE_SERVICE: &str =
    <RecurrenceServiceServer<RecurrenceServiceImpl> as NamedService>::NAME;

/// The database schema RecurrenceService owns.
pub const SCHEMA: &str = "recurrence";

/// Migrations of the `recurrence` schema: `migrations/recurrence` with the platform's
/// (`taskmesh_platform::db::PLATFORM_MIGRATOR`). `edited` lists the released migrations whose
/// text changed since: the platform's tables moved out of it on 2026-12-08.
pub static MIGRATIONS: taskmesh_platform::db::Migrations = taskmesh_platform::db::Migrations {
    own: &MIGRATOR,
    edited: &[taskmesh_platform::db::Edited {
        version: 20261123000001,
        applied_sha384: "f2c47e1312ee30527054a86ccdb9c26f0bff33d402665a204d383fa61f9e1915ebe05cf940c1b10e7142e9dec6616211",
    }],
};

/// The `recurrence` schema's own migrations (`migrations/recurrence`); see [`MIGRATIONS`].
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/recurrence");

/// RecurrenceService's outbox: CloudEvent source and relay channel. It has no change log of
/// its own (it changes no user-visible resource directly); its events have sequence 0.
pub(crate) const LOG: Log = Log {
    source: "/taskmesh/recurrence",
    channel: "taskmesh_recurrence_outbox",
};

/// The actor of the commands RecurrenceService sends on its own (a completion moved a series
/// on), as `ChangeContext.actor`.
pub const ACTOR: &str = "service:recurrence";

/// The outbox relay of the `recurrence` schema, publishing to `kafka`.
///
/// # Errors
/// The producer cannot be created (a configuration error).
pub fn relay(pool: PgPool, kafka: &KafkaConfig) -> Result<Relay, rdkafka::error::KafkaError> {
    Relay::new(pool, kafka, LOG.channel)
}

/// gRPC routes of RecurrenceService, behind JWT verification. `tasks` reaches TaskService,
/// which task-scoped RPCs read the caller's task from (with the caller's own token).
pub fn routes(
    pool: PgPool,
    kafka: &KafkaConfig,
    verifier: Verifier,
    tasks: TaskServiceClient<Channel>,
) -> Routes {
    let service = RecurrenceServiceImpl::new(pool, kafka.topic_prefix.clone(), tasks);
    Routes::new(Authenticated::new(
        RecurrenceServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES),
        verifier,
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
    /// Where `/metrics`, health and reflection are served (see [`Introspection`]).
    pub introspection: Introspection,
}

impl RecurrenceServer {
    /// Serves RecurrenceService (with health and reflection) on `listener` and runs the
    /// `task-events` consumer, the outbox relay and the retention job, until `shutdown`.
    ///
    /// # Errors
    /// A bad TaskService address, a Kafka client that cannot be created; the
    /// [`runtime::Failure`] of a background task or the server.
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
        let mut supervisor = Supervisor::new("recurrence", shutdown);
        if self.relay {
            let relay = relay(self.pool.clone(), &self.kafka)?;
            supervisor.spawn("outbox relay", |ctx| relay.run(ctx));
        }
        let (pool, retention) = (self.pool.clone(), self.retention);
        supervisor.spawn("retention", |ctx| {
            taskmesh_platform::retention::run(pool, retention, WITHOUT_CHANGE_LOG, ctx)
        });
        let settings = ConsumerSettings::new(CONSUMER, Topic::TaskEvents);
        let handler = events::TaskEventHandler::new(self.kafka.topic_prefix.clone());
        let (pool, kafka) = (self.pool.clone(), self.kafka.clone());
        supervisor.spawn("task-events consumer", |ctx| {
            consumer::run(pool, kafka, settings, handler, ctx)
        });
        let routes = routes(self.pool, &self.kafka, self.verifier, tasks);
        runtime::serve_grpc(
            supervisor,
            listener,
            routes,
            &[RECURRENCE_SERVICE],
            self.introspection,
        )
        .await
    }
}
