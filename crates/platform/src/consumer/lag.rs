//! The lag probe: every few seconds, how many records of the topic the consumer group has
//! not committed yet (the sum over partitions of high watermark minus committed offset), as
//! `taskmesh_consumer_lag_records{consumer}`, and how many partitions the topic has (for the
//! leases). A reading that fails means Kafka is unreachable.
//!
//! The lag counts in records and from the group's committed offsets, so it shows a consumer
//! that makes no progress whether or not it handles anything (the event-age histogram only
//! moves when events are handled).

use std::{sync::Arc, time::Duration};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kafka::KafkaConfig;

/// How often the probe reads.
const EVERY: Duration = Duration::from_secs(5);

/// How long one request of a reading may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What the topic looks like now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Measure {
    /// The topic's partitions.
    pub(super) partitions: i32,
    /// Records not yet committed by the group, over every partition; `None` when a
    /// partition's offsets could not be read (a partition leader away): the partition count
    /// alone still lets the leases follow.
    pub(super) lag: Option<i64>,
}

/// One reading: the measure, or why Kafka could not be read.
#[derive(Clone, Debug)]
pub(super) struct Reading {
    pub(super) result: Result<Measure, String>,
}

/// A client of the consumer's group that only reads offsets (it never joins the group, and
/// is not the consumer's own client: a read in flight on a blocking thread may outlive the
/// consumer, and a consumer whose last handle is dropped there never finishes closing).
pub(super) struct Probe {
    client: Arc<BaseConsumer>,
    topic: String,
}

impl Probe {
    /// A probe of `group` on `topic`.
    pub(super) fn new(kafka: &KafkaConfig, group: &str, topic: &str) -> Result<Self, KafkaError> {
        let client: BaseConsumer = kafka.client_config().set("group.id", group).create()?;
        Ok(Self {
            client: Arc::new(client),
            topic: topic.to_owned(),
        })
    }

    /// Reads the topic's partitions, their high watermarks and the group's committed offsets
    /// (librdkafka's calls block: on a blocking thread).
    async fn read(&self) -> Result<Measure, KafkaError> {
        let client = Arc::clone(&self.client);
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || measure(&client, &topic))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }
}

fn measure(client: &BaseConsumer, topic: &str) -> Result<Measure, KafkaError> {
    let metadata = client.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions = crate::kafka::partition_ids(&metadata, topic);
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    let lag = lag(client, topic, &partitions)
        .inspect_err(|error| tracing::debug!(%error, %topic, "consumer lag not measured"))
        .ok();
    Ok(Measure {
        partitions: i32::try_from(partitions.len()).unwrap_or(i32::MAX),
        lag,
    })
}

/// High watermark minus committed offset, summed over `partitions`.
fn lag(client: &BaseConsumer, topic: &str, partitions: &[i32]) -> Result<i64, KafkaError> {
    let mut list = TopicPartitionList::new();
    for &partition in partitions {
        list.add_partition(topic, partition);
    }
    let committed = client.committed_offsets(list, TIMEOUT)?;
    let mut lag = 0;
    for &partition in partitions {
        let (low, high) = client.fetch_watermarks(topic, partition, TIMEOUT)?;
        let from = match committed
            .find_partition(topic, partition)
            .map(|p| p.offset())
        {
            Some(Offset::Offset(offset)) => offset.max(low),
            _ => low,
        };
        lag += (high - from).max(0);
    }
    Ok(lag)
}

/// Reads every [`EVERY`] (every second until the first reading works) until `shutdown`,
/// sending each reading and setting the lag gauge of `consumer`.
pub(super) async fn monitor(
    probe: Probe,
    consumer: String,
    readings: watch::Sender<Option<Reading>>,
    shutdown: CancellationToken,
) {
    let gauge = metrics::gauge!("taskmesh_consumer_lag_records", "consumer" => consumer);
    let mut worked = false;
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = probe.read() => result,
        };
        match &result {
            Ok(measure) => {
                worked = true;
                if let Some(lag) = measure.lag {
                    gauge.set(lag as f64);
                }
            }
            Err(error) => tracing::debug!(%error, "lag probe failed"),
        }
        readings.send_replace(Some(Reading {
            result: result.map_err(|e| e.to_string()),
        }));
        let wait = if worked {
            EVERY
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
