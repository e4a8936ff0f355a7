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
//! - `requests`: AIP-155 request-id deduplication.
//! - `validate`, `model`: input validation, rows and protobuf conversions.
//! - `error`: the error type and its one mapping onto `tonic::Status`.
//! - [`retention`]: the job that drops change-log entries and request ids past retention.

mod changes;
mod error;
mod filter;
mod list;
mod model;
mod requests;
pub mod retention;
pub mod service;
mod tags;
mod tasks;
mod validate;

use std::time::Duration;

use sqlx::PgPool;
use taskmesh_platform::{
    auth::{AuthInterceptor, Verifier},
    kafka::KafkaConfig,
    outbox::Relay,
};
use taskmesh_proto::task::v1::task_service_server::TaskServiceServer;
use tonic::service::Routes;

pub use service::TaskServiceImpl;

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
    let service = TaskServiceImpl::new(pool, kafka.topic(taskmesh_platform::kafka::Topic::TaskEvents));
    Routes::new(TaskServiceServer::with_interceptor(
        service,
        AuthInterceptor::new(verifier),
    ))
}

/// How long change-log entries and request ids are kept by default (7 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
