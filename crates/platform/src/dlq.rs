//! Replaying dead letters (`taskmesh dlq replay`): the records of a topic's dead-letter
//! topic (`<topic>.dlq`) go back to the topic they came from, as they were (key, payload and
//! CloudEvent headers, so the same `ce_id`), without the headers that said why they were
//! dead-lettered. Consumers that applied an event before skip it (they dedupe by `ce_id`,
//! within their dedupe retention, 7 days by default); those that could not apply it get it
//! again. Replaying the same records twice within that window is therefore harmless, and
//! nothing keeps a position: each run reads the whole dead-letter topic and picks records by
//! the filter, one copy per `ce_id`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::{Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::{
    consumer::dead_letter::{CONSUMER_HEADER, ORIGIN_HEADER, REASON_HEADER},
    kafka::{KafkaConfig, Topic},
};

/// Which dead letters to replay; every condition given must hold.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Dead-lettered at or after this instant (UTC; the dead letter's record timestamp).
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before this instant (UTC).
    pub until: Option<DateTime<Utc>>,
    /// Of this CloudEvent type (`ce_type`), e.g. `dev.taskmesh.task.created.v1`.
    pub event_type: Option<String>,
}

/// One dead letter the replay looked at.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// `ce_id` (empty when the record had none).
    pub event_id: String,
    /// `ce_type` (empty when the record had none).
    pub event_type: String,
    /// When it was dead-lettered (UTC).
    pub dead_lettered: Option<DateTime<Utc>>,
    /// Why (`taskmesh_dlq_reason`).
    pub reason: String,
    /// Which consumer gave up on it (`taskmesh_dlq_consumer`).
    pub consumer: String,
    /// Whether it matched the filter (and was put back, unless a dry run).
    pub selected: bool,
}

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A Kafka client failed (creation, metadata, a fetch or a produce).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The dead-letter topic does not exist.
    #[error("the dead-letter topic {0} does not exist")]
    NoTopic(String),
}

/// Reads every record of `topic`'s dead-letter topic up to its current end and, unless
/// `dry_run`, puts each one `filter` selects back on `topic` (waiting for the broker's
/// acknowledgement). Returns every dead letter seen, in order per partition, with whether it
/// was selected.
///
/// # Errors
/// [`ReplayError`]; records put back before the error stay put back (a second run replays
/// them again, harmlessly).
pub async fn replay(
    kafka: &KafkaConfig,
    topic: Topic,
    filter: &Filter,
    dry_run: bool,
) -> Result<Vec<DeadLetter>, ReplayError> {
    let dead_letters = kafka.dead_letter_topic(topic);
    let target = kafka.topic(topic);
    let records = read_all(kafka, dead_letters).await?;
    let producer: FutureProducer = kafka.producer()?;
    let mut seen = Vec::with_capacity(records.len());
    // Several consumers may dead-letter the same event (and an event that failed again after
    // a replay is there twice): one copy per `ce_id` goes back.
    let mut replayed = std::collections::HashSet::new();
    for record in records {
        let header = |name: &str| record.header(name).unwrap_or_default();
        let dead_lettered = record.timestamp.and_then(DateTime::from_timestamp_millis);
        let event_type = header("ce_type");
        let event_id = header("ce_id");
        let matches = filter
            .since
            .is_none_or(|since| dead_lettered.is_some_and(|t| t >= since))
            && filter
                .until
                .is_none_or(|until| dead_lettered.is_some_and(|t| t < until))
            && filter
                .event_type
                .as_ref()
                .is_none_or(|wanted| *wanted == event_type);
        let selected = matches && (event_id.is_empty() || replayed.insert(event_id.clone()));
        if selected && !dry_run {
            let mut put_back = FutureRecord::to(&target).headers(record.original_headers());
            if let Some(key) = &record.key {
                put_back = put_back.key(key);
            }
            if let Some(payload) = &record.payload {
                put_back = put_back.payload(payload);
            }
            producer
                .send(put_back, Duration::from_secs(30))
                .await
                .map_err(|(error, _)| error)?;
        }
        seen.push(DeadLetter {
            event_id,
            event_type,
            dead_lettered,
            reason: header(REASON_HEADER),
            consumer: header(CONSUMER_HEADER),
            selected,
        });
    }
    Ok(seen)
}

/// A dead letter as read.
struct Record {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: Option<i64>,
}

impl Record {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }

    /// The headers it had before it was dead-lettered.
    fn original_headers(&self) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &self.headers {
            if ![REASON_HEADER, CONSUMER_HEADER, ORIGIN_HEADER].contains(&key.as_str()) {
                headers = headers.insert(rdkafka::message::Header {
                    key: key.as_str(),
                    value: Some(value.as_slice()),
                });
            }
        }
        headers
    }
}

/// Every record of `topic` from the beginning to the end it had when this started (on a
/// blocking thread: librdkafka's calls block).
async fn read_all(kafka: &KafkaConfig, topic: String) -> Result<Vec<Record>, ReplayError> {
    // A group id is needed to read, never used to commit: nothing keeps a position.
    let config = kafka.consumer_config(&kafka.group_id("taskmesh-dlq-replay"));
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let consumer: BaseConsumer = config.create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions = crate::kafka::partition_ids(&metadata, &topic);
        if partitions.is_empty() {
            return Err(ReplayError::NoTopic(topic));
        }
        let mut assignment = TopicPartitionList::new();
        let mut remaining = std::collections::HashMap::new();
        for &partition in &partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            if high > low {
                assignment.add_partition_offset(&topic, partition, Offset::Offset(low))?;
                remaining.insert(partition, high);
            }
        }
        let mut records = Vec::new();
        if remaining.is_empty() {
            return Ok(records);
        }
        consumer.assign(&assignment)?;
        while !remaining.is_empty() {
            let Some(message) = consumer.poll(timeout) else {
                // The broker said these offsets exist; a silent fetch means it is away.
                return Err(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
                )
                .into());
            };
            let message = message?;
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                headers,
                timestamp: message.timestamp().to_millis(),
            });
            if let Some(&end) = remaining.get(&message.partition())
                && message.offset() + 1 >= end
            {
                remaining.remove(&message.partition());
            }
        }
        Ok(records)
    })
    .await
    .unwrap_or(Err(ReplayError::Kafka(
        rdkafka::error::KafkaError::Canceled,
    )))
}
