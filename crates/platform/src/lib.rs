//! The shared runtime of taskmesh services: everything a component needs that is not its own
//! domain. Services depend on it; it depends on no service.
//!
//! # Layout
//! - [`auth`]: JWT verification (HS256 secret, RS256/EdDSA public keys with `kid` rotation),
//!   token minting, and the [`auth::Caller`] every RPC acts for.
//! - [`changelog`]: the per-user change log (gapless sequences) every live-streamed change
//!   goes through.
//! - [`cloudevents`]: the CloudEvents 1.0 Kafka binary-mode envelope.
//! - [`compute`]: CPU-heavy request work on a bounded pool, off the async workers.
//! - [`consumer`]: idempotent Kafka consumers with retries and dead-lettering.
//! - [`cursor`]: the opaque live-stream cursor (one position per change log).
//! - [`db`]: PostgreSQL pools bound to a service's own schema, database creation, migrations.
//! - [`dlq`]: replaying dead letters to the topic they came from.
//! - [`grpc`]: server plumbing (health, reflection, serving with shutdown) and error mapping
//!   helpers (`INVALID_ARGUMENT` with field violations).
//! - [`kafka`]: topic names, topic creation, the idempotent producer.
//! - [`metrics`]: Prometheus metrics, `/metrics`, and the gRPC metrics layer.
//! - [`net`]: accepting connections within limits (how many, how long idle).
//! - [`outbox`]: the transactional outbox and its relay to Kafka.
//! - [`pages`]: AIP-158 page tokens, HMAC-signed.
//! - [`quota`]: per-user request quotas (`RESOURCE_EXHAUSTED` with `RetryInfo`).
//! - [`requests`]: AIP-155 request-id deduplication.
//! - [`retention`]: the hourly purge of change-log entries, request ids and dedupe records.
//! - [`runtime`]: the component runtime: supervised background tasks, health, backoff.
//! - [`shed`]: load shedding (`UNAVAILABLE` past a number of calls in flight).
//! - [`shutdown`]: SIGTERM/ctrl-c handling.
//! - [`telemetry`]: `tracing` subscriber set-up, OTLP export of spans.
//! - [`trace`]: W3C trace context through gRPC, the outbox and Kafka.
//! - `broker` (feature `embedded-broker`): an in-process Kafka-compatible broker (tansu).

pub mod auth;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod changelog;
pub mod cloudevents;
pub mod compute;
pub mod consumer;
pub mod cursor;
pub mod db;
pub mod dlq;
pub mod filter;
pub mod grpc;
pub mod kafka;
pub mod metrics;
pub mod net;
pub mod oidc;
pub mod outbox;
pub mod pages;
pub mod quota;
pub mod requests;
pub mod retention;
pub mod runtime;
pub mod shed;
pub mod shutdown;
pub mod telemetry;
pub mod trace;

/// `error` and its sources, `: `-separated (for a log field or a message that must carry the
/// whole cause).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
