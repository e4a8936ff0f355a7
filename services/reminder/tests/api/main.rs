//! ReminderService end to end: a real PostgreSQL database, an embedded Kafka-protocol broker,
//! TaskService producing the task events, and gRPC over loopback. One binary so it links
//! once.

mod events;
mod helpers;
mod live;
mod notifications;
mod scheduling;
