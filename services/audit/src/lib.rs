//! AuditService (`taskmesh.audit.v1.AuditService`): the complete, immutable, queryable history
//! of every change in the mesh. It consumes every topic (`task-events`, `reminders`,
//! `task-commands`, `series-events`) and records each event once, by its `ce_id`, as an entry in its owner's
//! hash chain: who (actor), whose (user), what (type, resource, and for updates each changed
//! field with its before and after values), when, from which request and trace.
//!
//! Immutable by construction: a trigger refuses UPDATE, DELETE and TRUNCATE of entries; only
//! the retention function deletes (a prefix of each chain), and each user's chain of SHA-256
//! hashes makes an entry altered behind the trigger's back detectable (VerifyChain).
//!
//! # Layout
//! - [`events`]: the consumers (one per topic).
//! - [`service`]: the tonic service (task history, activity, admin query, chain check).
//! - [`retention`]: the periodic purge of old entries (default 90 days).
//! - `entries`: appending to a chain, rows and resources, chain verification.
//! - `chain`: the canonical form and its hash; `changes`: field changes through reflection.
//! - `list`: the List queries, filters and page tokens; `error`: the error type.

mod chain;
mod changes;
mod entries;
mod error;
pub mod events;
mod list;
pub mod retention;
pub mod service;

use std::time::Duration;

use anyhow::Context as _;

use sqlx::PgPool;
use taskmesh_platform::{
    auth::{Authenticated, Verifier},
    consumer::{self, ConsumerSettings},
    grpc::MAX_REQUEST_BYTES,
    kafka::{KafkaConfig, Topic},
    pages::PageTokens,
    runtime::{self, Introspection, Supervisor},
};
use taskmesh_proto::audit::v1::audit_service_server::AuditServiceServer;
use tonic::{server::NamedService, service::Routes};

pub use service::AuditServiceImpl;

/// The full name of AuditService, its health service name.
pub const AUDIT_SERVICE: &str = <AuditServiceServer<AuditServiceImpl> as NamedService>::NAME;

/// The database schema AuditService owns.
pub const SCHEMA: &str = "audit";

/// Migrations of the `audit` schema: `migrations/audit` with the platform's
/// (`taskmesh_platform::db::PLATFORM_MIGRATOR`). `edited` lists the released migrations whose
/// text changed since: the platform's tables moved out of it on 2026-12-08.
pub static MIGRATIONS: taskmesh_platform::db::Migrations = taskmesh_platform::db::Migrations {
    own: &MIGRATOR,
    edited: &[taskmesh_platform::db::Edited {
        version: 20261123000001,
        applied_sha384: "e5411cc3de9be381805f32440c61de3812edc963aa4e08f211b7aebf4bf5b85999e3505a4b0fe8de7168e573e1aa0b06",
    }],
};

/// The `audit` schema's own migrations (`migrations/audit`); see [`MIGRATIONS`].
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/audit");

/// The consumer (and consumer group) name for `topic`: `taskmesh-audit-<topic>`.
pub fn consumer_name(topic: Topic) -> String {
    format!("taskmesh-audit-{}", topic.base_name())
}

/// gRPC routes of AuditService, behind JWT verification, signing page tokens with `tokens`.
pub fn routes(pool: PgPool, verifier: Verifier, tokens: PageTokens) -> Routes {
    Routes::new(Authenticated::new(
        AuditServiceServer::new(AuditServiceImpl::new(pool, tokens))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        verifier,
    ))
}

/// Everything a running AuditService needs.
#[derive(Clone, Debug)]
pub struct AuditServer {
    /// Pool on the `audit` schema (see [`taskmesh_platform::db::connect`]).
    pub pool: PgPool,
    /// Kafka: topic names and the consumers.
    pub kafka: KafkaConfig,
    /// Token verification.
    pub verifier: Verifier,
    /// How long audit entries are kept ([`retention::DEFAULT_RETENTION`]: 90 days).
    pub retention: Duration,
    /// How long consumed-event records (dedupe) are kept.
    pub dedupe_retention: Duration,
    /// Where `/metrics`, health and reflection are served (see [`Introspection`]).
    pub introspection: Introspection,
}

impl AuditServer {
    /// Serves AuditService (with health and reflection) on `listener` and runs a consumer
    /// per topic and the retention job, until `shutdown`.
    ///
    /// # Errors
    /// The [`runtime::Failure`] of a background task or the server.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut supervisor = Supervisor::new("audit", shutdown);
        let (pool, retention, dedupe) = (self.pool.clone(), self.retention, self.dedupe_retention);
        supervisor.spawn("retention", |ctx| {
            retention::run(pool, retention, dedupe, ctx)
        });
        for topic in Topic::ALL {
            let mut settings = ConsumerSettings::new(&consumer_name(topic), topic);
            // Series end rarely: one transaction at a time leaves the pool to the busy
            // topics' consumers and the RPCs (README, Sizing).
            if topic == Topic::SeriesEvents {
                settings.max_in_flight = 1;
            }
            let handler = events::AuditHandler::new(topic, self.kafka.topic(topic));
            let (pool, kafka) = (self.pool.clone(), self.kafka.clone());
            supervisor.spawn(&format!("{} consumer", topic.base_name()), |ctx| {
                consumer::run(pool, kafka, settings, handler, ctx)
            });
        }
        let tokens = PageTokens::load(&self.pool).await.context(
            "cannot read the page-token key (is the schema migrated? `taskmesh migrate`)",
        )?;
        let routes = routes(self.pool, self.verifier, tokens);
        runtime::serve_grpc(
            supervisor,
            listener,
            routes,
            &[AUDIT_SERVICE],
            self.introspection,
        )
        .await
    }
}
