//! AuditService end to end: a real PostgreSQL database, an embedded Kafka-protocol broker,
//! the services producing events, and gRPC through the gateway. One binary so it links once.

mod helpers;
mod history;
mod integrity;
mod poison;
mod query;
