//! Moving records that can never be applied to the topic's dead-letter topic
//! (`<topic>.dlq`), with why and from where in headers (`taskmesh_dlq_reason`,
//! `taskmesh_dlq_consumer`, `taskmesh_dlq_origin` = `topic/partition/offset`). The record's own
//! key, payload and headers (its CloudEvent attributes, `ce_id` included) are kept, so
//! `taskmesh dlq replay` can put it back as it was.

use std::time::Duration;

use rdkafka::{
    Message,
    error::KafkaError,
    message::{Header, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
};

use crate::{
    kafka::{KafkaConfig, Topic},
    runtime::{Backoff, TaskContext},
};

/// The header naming why a record was dead-lettered.
pub const REASON_HEADER: &str = "taskmesh_dlq_reason";
/// The header naming the consumer that dead-lettered a record.
pub const CONSUMER_HEADER: &str = "taskmesh_dlq_consumer";
/// The header naming where a dead-lettered record came from: `topic/partition/offset`.
pub const ORIGIN_HEADER: &str = "taskmesh_dlq_origin";

/// Longest reason kept in a header, in bytes (the rest is cut).
const MAX_REASON: usize = 1024;

/// A consumer's dead-letter producer.
pub(super) struct DeadLetters {
    kafka: KafkaConfig,
    topic: String,
    producer: Option<FutureProducer>,
}

impl DeadLetters {
    /// The dead letters of `topic`. The producer is created at the first dead letter (most
    /// consumers never need one; its configuration is the relays' and `check-config`'s).
    pub(super) fn new(kafka: &KafkaConfig, topic: Topic) -> Self {
        Self {
            producer: None,
            topic: kafka.dead_letter_topic(topic),
            kafka: kafka.clone(),
        }
    }

    /// Copies `message` to the dead-letter topic, retrying (with a fresh producer after each
    /// failure, reported as degraded) until the broker acknowledges it. `false` when
    /// shutdown came first: the offset must then stay unstored.
    pub(super) async fn send(
        &mut self,
        message: &OwnedMessage,
        consumer: &str,
        reason: &str,
        ctx: &TaskContext,
    ) -> bool {
        tracing::error!(%consumer, source_topic = message.topic(), partition = message.partition(), offset = message.offset(), %reason, "moving event to the dead-letter topic");
        let mut backoff = Backoff::default();
        loop {
            let topic = self.topic.clone();
            let result = match self.producer() {
                Ok(producer) => send(producer, &topic, message, consumer, reason).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => return true,
                Err(error) => {
                    // A fresh producer gets a fresh producer id: an idempotent producer can
                    // wedge on a sequence or epoch the broker no longer agrees with. (Dropping
                    // one blocks while it purges: off the async runtime.)
                    if let Some(old) = self.producer.take() {
                        tokio::task::spawn_blocking(move || drop(old));
                    }
                    let reason = format!("cannot dead-letter to {}: {error}", self.topic);
                    if !ctx.retry_after(&mut backoff, &reason).await {
                        return false;
                    }
                }
            }
        }
    }

    fn producer(&mut self) -> Result<&FutureProducer, KafkaError> {
        if self.producer.is_none() {
            self.producer = Some(self.kafka.producer()?);
        }
        // Just set when it was missing.
        self.producer.as_ref().ok_or(KafkaError::Canceled)
    }
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    message: &OwnedMessage,
    consumer: &str,
    reason: &str,
) -> Result<(), KafkaError> {
    let mut headers = message.headers().cloned().unwrap_or_default();
    let origin = format!(
        "{}/{}/{}",
        message.topic(),
        message.partition(),
        message.offset()
    );
    let reason = truncate(reason, MAX_REASON);
    for (key, value) in [
        (REASON_HEADER, reason),
        (CONSUMER_HEADER, consumer),
        (ORIGIN_HEADER, origin.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(drop)
        .map_err(|(error, _)| error)
}

/// `text` cut to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
