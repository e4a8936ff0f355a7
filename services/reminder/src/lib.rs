//! ReminderService (`taskmesh.reminder.v1.ReminderService`): exact-time reminders and in-app
//! notifications. It consumes `task-events` to learn each task's reminders and due time,
//! fires reminders at their time with a durable scheduler, and produces `reminder.fired`,
//! `task.overdue` and notification events on `reminders` through its transactional outbox.
//! Notifications have their own per-user change log, which the gateway's live stream reads.
//!
//! # Layout
//! - [`events`]: the `task-events` consumer (schedule, reschedule, cancel, restore).
//! - [`scheduler`]: claims and fires due reminders and overdue notices, exactly once.
//! - [`service`]: the tonic service (reminders, notifications, notification changes).
//! - `list`: filters and keyset pages of the List RPCs.
//! - `model`: rows and their protobuf resources; `error`: the error type.

mod error;
pub mod events;
mod list;
mod model;
pub mod scheduler;
pub mod service;

use std::time::Duration;

use anyhow::Context as _;

use sqlx::PgPool;
use taskmesh_platform::{
    auth::{Authenticated, Verifier},
    changelog::Log,
    consumer::{self, ConsumerSettings},
    grpc::MAX_REQUEST_BYTES,
    kafka::{KafkaConfig, Topic},
    outbox::Relay,
    pages::PageTokens,
    retention::WITH_CHANGE_LOG,
    runtime::{self, Introspection, Supervisor},
};
use taskmesh_proto::reminder::v1::reminder_service_server::ReminderServiceServer;
use tonic::{server::NamedService, service::Routes};

pub use scheduler::{Fired, Scheduler};
pub use service::ReminderServiceImpl;

/// The consumer (and consumer group) name of ReminderService's `task-events` consumer.
pub const CONSUMER: &str = "taskmesh-reminder";

/// The full name of ReminderService, its health service name.
pub const REMINDER_SERVICE: &str =
    <ReminderServiceServer<ReminderServiceImpl> as NamedService>::NAME;

/// The database schema ReminderService owns.
pub const SCHEMA: &str = "reminder";

/// Migrations of the `reminder` schema: `migrations/reminder` with the platform's
/// (`taskmesh_platform::db::PLATFORM_MIGRATOR`). `edited` lists the released migrations whose
/// text changed since: the platform's tables moved out of it on 2026-12-08.
pub static MIGRATIONS: taskmesh_platform::db::Migrations = taskmesh_platform::db::Migrations {
    own: &MIGRATOR,
    edited: &[taskmesh_platform::db::Edited {
        version: 20261122000001,
        applied_sha384: "74ed19d8b728ee3c66a49d279ed6986ac56a63258d1f3a1e3ef71a9f69ed1ae5078e6c1adada772bd23e2941ff391336",
    }],
};

/// The `reminder` schema's own migrations (`migrations/reminder`); see [`MIGRATIONS`].
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/reminder");

/// ReminderService's notification change log and outbox.
pub(crate) const LOG: Log = Log {
    source: "/taskmesh/reminder",
    channel: "taskmesh_reminder_outbox",
};

/// The outbox relay of the `reminder` schema, publishing to `kafka`.
///
/// # Errors
/// The producer cannot be created (a configuration error).
pub fn relay(pool: PgPool, kafka: &KafkaConfig) -> Result<Relay, rdkafka::error::KafkaError> {
    Relay::new(pool, kafka, LOG.channel)
}

/// gRPC routes of ReminderService, behind JWT verification, signing page tokens with
/// `tokens`.
pub fn routes(pool: PgPool, kafka: &KafkaConfig, verifier: Verifier, tokens: PageTokens) -> Routes {
    let service = ReminderServiceImpl::new(pool, kafka.topic_prefix.clone(), tokens);
    Routes::new(Authenticated::new(
        ReminderServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES),
        verifier,
    ))
}

/// Everything a running ReminderService needs.
#[derive(Clone, Debug)]
pub struct ReminderServer {
    /// Pool on the `reminder` schema (see [`taskmesh_platform::db::connect`]).
    pub pool: PgPool,
    /// Kafka: topic names, the consumer and the relay's producer.
    pub kafka: KafkaConfig,
    /// Token verification.
    pub verifier: Verifier,
    /// Change-log retention.
    pub retention: Duration,
    /// Whether to run the outbox relay in this process.
    pub relay: bool,
    /// Whether to run the scheduler in this process (tests drive [`Scheduler::fire_due`]
    /// with their own clock instead).
    pub scheduler: bool,
    /// Where `/metrics`, health and reflection are served (see [`Introspection`]).
    pub introspection: Introspection,
}

impl ReminderServer {
    /// Serves ReminderService (with health and reflection) on `listener` and runs the
    /// `task-events` consumer, the scheduler, the outbox relay and the retention job, until
    /// `shutdown`.
    ///
    /// # Errors
    /// A Kafka client that cannot be created; the [`runtime::Failure`] of a background task
    /// or the server.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new("reminder", shutdown);
        if self.relay {
            let relay = relay(self.pool.clone(), &self.kafka)?;
            supervisor.spawn("outbox relay", |ctx| relay.run(ctx));
        }
        if self.scheduler {
            let scheduler = Scheduler::new(self.pool.clone(), self.kafka.topic_prefix.clone());
            supervisor.spawn("scheduler", |ctx| scheduler.run(ctx));
        }
        let (pool, retention) = (self.pool.clone(), self.retention);
        supervisor.spawn("retention", |ctx| {
            taskmesh_platform::retention::run(pool, retention, WITH_CHANGE_LOG, ctx)
        });
        let settings = ConsumerSettings::new(CONSUMER, Topic::TaskEvents);
        let (pool, kafka) = (self.pool.clone(), self.kafka.clone());
        supervisor.spawn("task-events consumer", |ctx| {
            consumer::run(pool, kafka, settings, events::TaskEventHandler, ctx)
        });
        let tokens = PageTokens::load(&self.pool).await.context(
            "cannot read the page-token key (is the schema migrated? `taskmesh migrate`)",
        )?;
        let routes = routes(self.pool, &self.kafka, self.verifier, tokens);
        runtime::serve_grpc(
            supervisor,
            listener,
            routes,
            &[REMINDER_SERVICE],
            self.introspection,
        )
        .await
    }
}
