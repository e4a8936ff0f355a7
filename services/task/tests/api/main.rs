//! TaskService end to end: a real PostgreSQL database, an embedded Kafka-protocol broker and
//! gRPC over loopback. One binary so it links once.

mod commands;
mod crud;
mod events;
mod helpers;
mod list;
mod quota;
mod validation;
