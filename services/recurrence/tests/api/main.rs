//! RecurrenceService end to end: a real PostgreSQL database, an embedded Kafka-protocol broker,
//! TaskService applying the commands, and gRPC through the gateway. One binary so it links
//! once.

mod helpers;
mod rules;
mod series;
mod series_rpcs;
