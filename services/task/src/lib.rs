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

use std::{num::NonZeroU64, time::Duration};

use anyhow::Context as _;

use sqlx::PgPool;
use taskmesh_platform::{
    auth::{Authenticated, Verifier},
    consumer::{self, ConsumerSettings},
    grpc::MAX_REQUEST_BYTES,
    kafka::{KafkaConfig, Topic},
    outbox::Relay,
    pages::PageTokens,
    retention::WITH_CHANGE_LOG,
    runtime::{self, Introspection, Supervisor},
};
use taskmesh_proto::task::v1::task_service_server::TaskServiceServer;
use tonic::{server::NamedService, service::Routes};

pub use service::TaskServiceImpl;

/// The consumer (and consumer group) name of TaskService's `task-commands` consumer.
pub const COMMANDS_CONSUMER: &str = "taskmesh-task";

/// The full name of TaskService, its health service name.
pub const TASK_SERVICE: &str = <TaskServiceServer<TaskServiceImpl> as NamedService>::NAME;

/// The database schema TaskService owns.
pub const SCHEMA: &str = "task";

/// Migrations of the `task` schema: `migrations/task` with the platform's
/// (`taskmesh_platform::db::PLATFORM_MIGRATOR`). `edited` lists the released migrations whose
/// text changed since: the platform's tables moved out of them on 2026-12-08, and
/// `20261122000002` is the platform's processed events now.
pub static MIGRATIONS: taskmesh_platform::db::Migrations = taskmesh_platform::db::Migrations {
    own: &MIGRATOR,
    edited: &[
        taskmesh_platform::db::Edited {
            version: 20261122000001,
            applied_sha384: "bf5d7d2d7642932eb29308d4172efb2cb89186e7912872313a7f4a2f90bfce517be0452e3ee864e7452a145bb89cff12",
        },
        taskmesh_platform::db::Edited {
            version: 20261122000002,
            applied_sha384: "9f886033938975030d112d3f23774afb5f72d4608539a381884f9f7f225b6ecf18a23ca219cb8741df162f1557ca8e6a",
        },
    ],
};

/// The `task` schema's own migrations (`migrations/task`); see [`MIGRATIONS`].
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/task");

/// The outbox relay of the `task` schema, publishing to `kafka`.
///
/// # Errors
/// The producer cannot be created (a configuration error).
pub fn relay(pool: PgPool, kafka: &KafkaConfig) -> Result<Relay, rdkafka::error::KafkaError> {
    Relay::new(pool, kafka, changes::CHANNEL)
}

/// gRPC routes of TaskService (behind JWT verification), signing page tokens with `tokens`
/// and refusing a user's CreateTask past `max_tasks` tasks (`None`: no limit).
pub fn routes(
    pool: PgPool,
    kafka: &KafkaConfig,
    verifier: Verifier,
    tokens: PageTokens,
    max_tasks: Option<NonZeroU64>,
) -> Routes {
    let service = TaskServiceImpl::new(pool, kafka.topic_prefix.clone(), tokens, max_tasks);
    Routes::new(Authenticated::new(
        TaskServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES),
        verifier,
    ))
}

/// Tasks one user may have by default (see [`TaskServer::max_tasks_per_user`]).
pub const DEFAULT_MAX_TASKS_PER_USER: u64 = 100_000;

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
    /// Tasks one user may have (completed ones count; deleted ones do not): CreateTask past
    /// it gets `RESOURCE_EXHAUSTED` with a `QuotaFailure`. The occurrences a series creates
    /// count but are never refused. `None`: no limit.
    pub max_tasks_per_user: Option<NonZeroU64>,
    /// Where `/metrics`, health and reflection are served (see [`Introspection`]).
    pub introspection: Introspection,
}

impl TaskServer {
    /// Serves TaskService (with health and reflection) on `listener` and runs the outbox
    /// relay, the `task-commands` consumer and the retention job under a supervisor, until
    /// `shutdown` (see [`taskmesh_platform::runtime`]).
    ///
    /// # Errors
    /// A Kafka client that cannot be created; the [`runtime::Failure`] of a background task
    /// or the server.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new("task", shutdown);
        if self.relay {
            let relay = relay(self.pool.clone(), &self.kafka)?;
            supervisor.spawn("outbox relay", |ctx| relay.run(ctx));
        }
        let (pool, retention) = (self.pool.clone(), self.retention);
        supervisor.spawn("retention", |ctx| {
            taskmesh_platform::retention::run(pool, retention, WITH_CHANGE_LOG, ctx)
        });
        let handler = commands::CommandHandler {
            topic_prefix: self.kafka.topic_prefix.clone(),
        };
        let settings = ConsumerSettings::new(COMMANDS_CONSUMER, Topic::TaskCommands);
        let (pool, kafka) = (self.pool.clone(), self.kafka.clone());
        supervisor.spawn("task-commands consumer", |ctx| {
            consumer::run(pool, kafka, settings, handler, ctx)
        });
        let tokens = PageTokens::load(&self.pool).await.context(
            "cannot read the page-token key (is the schema migrated? `taskmesh migrate`)",
        )?;
        let routes = routes(
            self.pool,
            &self.kafka,
            self.verifier,
            tokens,
            self.max_tasks_per_user,
        );
        runtime::serve_grpc(
            supervisor,
            listener,
            routes,
            &[TASK_SERVICE],
            self.introspection,
        )
        .await
    }
}
