//! AuditService (`taskmesh.audit.v1.AuditService`): the complete, immutable, queryable history
//! of every change in the mesh. It consumes every topic (`task-events`, `reminders`,
//! `task-commands`) and records each event once, by its `ce_id`, as an entry in its owner's
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

use sqlx::PgPool;
use taskmesh_platform::{
    auth::{AuthInterceptor, Verifier},
    consumer::{self, ConsumerSettings},
    kafka::{KafkaConfig, Topic},
};
use taskmesh_proto::audit::v1::audit_service_server::AuditServiceServer;
use tonic::service::Routes;

pub use service::AuditServiceImpl;

/// The database schema AuditService owns.
pub const SCHEMA: &str = "audit";

/// Migrations of the `audit` schema (`migrations/audit`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/audit");

/// The consumer (and consumer group) name for `topic`: `taskmesh-audit-<topic>`.
pub fn consumer_name(topic: Topic) -> String {
    format!("taskmesh-audit-{}", topic.base_name())
}

/// gRPC routes of AuditService, behind JWT verification.
pub fn routes(pool: PgPool, verifier: Verifier) -> Routes {
    Routes::new(AuditServiceServer::with_interceptor(
        AuditServiceImpl::new(pool),
        AuthInterceptor::new(verifier),
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
}

impl AuditServer {
    /// Serves AuditService (with health and reflection) on `listener` and runs a consumer
    /// per topic and the retention job, until `shutdown`.
    ///
    /// # Errors
    /// A Kafka client or transport error.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut background = tokio::task::JoinSet::new();
        background.spawn(retention::run(
            self.pool.clone(),
            self.retention,
            self.dedupe_retention,
            shutdown.clone(),
        ));
        for topic in Topic::ALL {
            let settings = ConsumerSettings {
                name: consumer_name(topic),
                topic,
                max_attempts: 5,
                backoff: Duration::from_millis(200),
            };
            let handler = events::AuditHandler::new(self.kafka.topic(topic));
            let (pool, kafka, stop) = (self.pool.clone(), self.kafka.clone(), shutdown.clone());
            background.spawn(async move {
                if let Err(error) = consumer::run(pool, kafka, settings, handler, stop).await {
                    tracing::error!(error = %error, ?topic, "audit consumer stopped");
                }
            });
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<AuditServiceServer<AuditServiceImpl>>()
            .await;
        let routes = routes(self.pool, self.verifier).add_service(health_service);
        let routes = taskmesh_platform::grpc::reflection(routes)?;
        tracing::info!(addr = %listener.local_addr()?, "audit service listening");
        let served =
            taskmesh_platform::grpc::serve("audit", listener, routes, shutdown.clone()).await;
        shutdown.cancel();
        while background.join_next().await.is_some() {}
        served?;
        Ok(())
    }
}
