//! The production path and failure handling, against real endpoints: Kafka over TLS, mutual
//! TLS and SASL/SCRAM (through a TLS terminator in front of the embedded broker), PostgreSQL
//! over TLS (the local server's own certificate), `taskmesh check-config`, supervision of
//! background tasks (the real binary exits), a broker that goes away and comes back, and the
//! upgrade of a database made by the release before.

mod check_config;
mod crash;
mod dlq;
mod helpers;
mod kafka_tls;
mod outage;
mod pg_outage;
mod postgres_tls;
mod replicas;
mod supervision;
mod upgrade;
