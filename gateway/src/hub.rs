//! The fan-out hub: one Kafka consumer per gateway reads every partition of `task-events` and
//! `reminders` (manual assignment, so each gateway instance sees all users) and hands each
//! change-log event to the live streams of its owner.
//!
//! It also tells the streams how the consumer is doing ([`Hub::health`]): while receives fail
//! an event may be missed, so idle streams fall back to re-reading the change logs at each
//! heartbeat, and every stream re-reads them once when receiving works again. While healthy,
//! an idle stream costs no upstream call at all.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::{FutureExt as _, future::BoxFuture};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use taskmesh_platform::{
    cloudevents::CloudEvent,
    kafka::{KafkaConfig, Topic},
    runtime::{Backoff, TaskContext},
};
use taskmesh_proto::catalogue;
use tokio::sync::{broadcast, watch};

/// How many events a slow stream may fall behind before it re-reads the change log. Each
/// streaming user's channel holds this many slots (tens of bytes each) from the start, so it
/// is kept small: falling behind costs one change-log page, not a lost event.
const CHANNEL_CAPACITY: usize = 64;

/// The change logs a live stream follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Log {
    /// TaskService's task change log (`task-events`).
    Tasks,
    /// ReminderService's notification change log (`reminders`).
    Notifications,
}

impl Log {
    /// Both logs, in the order a stream replays them.
    pub(crate) const ALL: [Log; 2] = [Log::Tasks, Log::Notifications];

    /// The change log whose events travel on `topic`, if a stream follows one there.
    pub(crate) fn on(topic: Topic) -> Option<Log> {
        match topic {
            Topic::TaskEvents => Some(Log::Tasks),
            Topic::Reminders => Some(Log::Notifications),
            Topic::TaskCommands | Topic::SeriesEvents => None,
        }
    }
}

/// One change as it arrived from Kafka.
#[derive(Clone, Debug)]
pub(crate) struct LiveEvent {
    /// Which change log it is in.
    pub(crate) log: Log,
    /// The owner's change-log sequence.
    pub(crate) sequence: i64,
    /// CloudEvent `id`.
    pub(crate) event_id: String,
    /// CloudEvent `type`.
    pub(crate) event_type: String,
    /// Protobuf payload.
    pub(crate) data: Vec<u8>,
}

/// Every partition of `topics`, each starting at its current end (high watermark), resolved
/// now rather than lazily by librdkafka, so every record produced after this call is
/// delivered. Runs on a blocking thread (librdkafka's calls block).
async fn current_ends(
    kafka: &KafkaConfig,
    topics: Vec<String>,
) -> anyhow::Result<TopicPartitionList> {
    let config = kafka.client_config();
    tokio::task::spawn_blocking(move || {
        let timeout = std::time::Duration::from_secs(10);
        let client: rdkafka::consumer::BaseConsumer = config.create()?;
        let mut assignment = TopicPartitionList::new();
        for topic in &topics {
            let metadata = client.fetch_metadata(Some(topic), timeout)?;
            let before = assignment.count();
            for t in metadata.topics() {
                for p in t.partitions() {
                    let (_, high) = client.fetch_watermarks(t.name(), p.id(), timeout)?;
                    assignment.add_partition_offset(t.name(), p.id(), Offset::Offset(high))?;
                }
            }
            if assignment.count() == before {
                anyhow::bail!("topic {topic} has no partitions (was it created?)");
            }
        }
        Ok(assignment)
    })
    .await?
}

/// How often a hub whose receives failed asks Kafka whether it is back.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How the hub's Kafka consumer is doing, as streams see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConsumerHealth {
    /// A receive failed and none has succeeded since: events may be missing.
    pub(crate) degraded: bool,
    /// How many times receiving recovered after failing; a stream that sees it change
    /// re-reads the change logs once.
    pub(crate) recoveries: u64,
}

/// Per-user broadcast channels and the consumer's health. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Hub {
    users: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<LiveEvent>>>>>,
    health: Arc<watch::Sender<ConsumerHealth>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            users: Arc::default(),
            health: Arc::new(watch::channel(ConsumerHealth::default()).0),
        }
    }
}

impl Hub {
    /// Watches the consumer's health (see the module docs).
    pub(crate) fn health(&self) -> watch::Receiver<ConsumerHealth> {
        self.health.subscribe()
    }

    fn receive_failed(&self) {
        self.health.send_if_modified(|health| {
            let changed = !health.degraded;
            health.degraded = true;
            changed
        });
    }

    fn receive_worked(&self) {
        self.health.send_if_modified(|health| {
            let changed = health.degraded;
            if changed {
                health.degraded = false;
                health.recoveries += 1;
            }
            changed
        });
    }

    /// Subscribes to `user`'s events from now on.
    pub(crate) fn subscribe(&self, user: &str) -> broadcast::Receiver<Arc<LiveEvent>> {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget users whose streams all ended, whenever the map reaches a power of two
        // (64, 128, ...): amortised cheap, and bounded by the users actually streaming.
        if users.len() >= 64 && users.len().is_power_of_two() {
            users.retain(|_, sender| sender.receiver_count() > 0);
        }
        users
            .entry(user.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Delivers an event to `user`'s subscribers; forgets users nobody listens to any more.
    pub(crate) fn publish(&self, user: &str, event: LiveEvent) {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(sender) = users.get(user) {
            if sender.receiver_count() == 0 {
                users.remove(user);
            } else {
                // An error means every receiver is gone meanwhile; nothing to do.
                let _ = sender.send(Arc::new(event));
            }
        }
    }

    /// Starts consuming `task-events` and `reminders` from the current end of every partition;
    /// returns once the positions are fixed (so no event committed after this returns is
    /// missed), with the future that publishes each event until shutdown (run it under the
    /// gateway's supervisor). Offsets are never committed: a gateway needs no position of its
    /// own, the change log covers anything before it started.
    ///
    /// # Errors
    /// The consumer cannot be created, or the topics' partitions cannot be read.
    pub(crate) async fn start(
        self,
        kafka: &KafkaConfig,
    ) -> anyhow::Result<impl FnOnce(TaskContext) -> BoxFuture<'static, anyhow::Result<()>>> {
        let tasks = kafka.topic(Topic::TaskEvents);
        // The topics that carry a change log, by their names in this installation.
        let logs: Vec<(String, Log)> = Topic::ALL
            .into_iter()
            .filter_map(|topic| Some((kafka.topic(topic), Log::on(topic)?)))
            .collect();
        let group = kafka.group_id(&format!("taskmesh-gateway-{}", uuid::Uuid::now_v7()));
        let consumer: StreamConsumer = kafka.consumer_config(&group).create()?;
        let topics = logs.iter().map(|(name, _)| name.clone()).collect();
        let assignment = current_ends(kafka, topics).await?;
        consumer.assign(&assignment)?;
        tracing::info!(
            partitions = assignment.count(),
            "gateway consuming live events"
        );
        let kafka = kafka.clone();
        Ok(move |ctx: TaskContext| self.run(consumer, tasks, logs, kafka, ctx).boxed())
    }

    async fn run(
        self,
        consumer: StreamConsumer,
        tasks_topic: String,
        logs: Vec<(String, Log)>,
        kafka: KafkaConfig,
        ctx: TaskContext,
    ) -> anyhow::Result<()> {
        // If forwarding ever stops (a panic), streams must not trust an idle hub any more.
        let _watchdog = Watchdog(self.clone());
        self.forward(&consumer, &tasks_topic, &logs, &kafka, &ctx)
            .await;
        taskmesh_platform::consumer::close(consumer).await;
        Ok(())
    }

    async fn forward(
        &self,
        consumer: &StreamConsumer,
        tasks_topic: &str,
        logs: &[(String, Log)],
        kafka: &KafkaConfig,
        ctx: &TaskContext,
    ) {
        let mut backoff = Backoff::new(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs(2),
        );
        let mut degraded = false;
        loop {
            let message = tokio::select! {
                () = ctx.shutdown.cancelled() => return,
                message = consumer.recv() => message,
                // Kafka says nothing when it is back: ask it, while receives are failing.
                () = tokio::time::sleep(PROBE_EVERY), if degraded => {
                    if kafka.ping(tasks_topic).await.is_ok() {
                        degraded = false;
                        self.receive_worked();
                        ctx.health.recovered();
                    }
                    continue;
                }
            };
            let message = match message {
                Ok(message) => {
                    self.receive_worked();
                    ctx.health.recovered();
                    backoff.reset();
                    message
                }
                Err(error) => {
                    self.receive_failed();
                    degraded = true;
                    let reason = format!("kafka receive failed: {error}");
                    if !ctx.retry_after(&mut backoff, &reason).await {
                        return;
                    }
                    continue;
                }
            };
            let event = match CloudEvent::from_message(&message) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, offset = message.offset(), "skipping a record that is not a taskmesh event");
                    continue;
                }
            };
            let Some(log) = logs
                .iter()
                .find(|(name, _)| name == message.topic())
                .map(|(_, log)| *log)
            else {
                continue;
            };
            let Ok(Some(context)) = catalogue::context_of(&event.data) else {
                tracing::warn!(event_id = %event.id, "skipping an event without context");
                continue;
            };
            // Sequence 0: an event outside the change logs (e.g. a snoozed reminder). Any
            // other reaches its owner's streams, also of a type this gateway does not know (a
            // newer producer's): the stream's position moves past it without showing it, so
            // it sees no gap.
            if context.sequence == 0 {
                continue;
            }
            // The event's trace reaches the live stream here: handed to its owner's streams.
            let span = tracing::info_span!("live.fanout", otel.name = %format!("live {}", event.event_type), event_id = %event.id);
            taskmesh_platform::trace::continue_trace(&span, event.traceparent.as_deref());
            span.in_scope(|| {
                self.publish(
                    &context.user,
                    LiveEvent {
                        log,
                        sequence: context.sequence,
                        event_id: event.id.to_string(),
                        event_type: event.event_type,
                        data: event.data,
                    },
                );
            });
        }
    }
}

/// Marks the hub degraded when dropped: when its consumer task ends, by shutdown or panic,
/// live streams fall back to re-reading the change logs at each heartbeat.
struct Watchdog(Hub);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.receive_failed();
    }
}

#[cfg(test)]
mod tests {
    use super::{ConsumerHealth, Hub};

    #[test]
    fn streams_see_the_consumer_degrade_recover_and_stop() {
        let hub = Hub::default();
        let mut health = hub.health();
        assert_eq!(*health.borrow_and_update(), ConsumerHealth::default());

        hub.receive_worked();
        assert!(!health.has_changed().unwrap(), "records flowing is no news");

        hub.receive_failed();
        hub.receive_failed();
        assert!(health.has_changed().unwrap());
        assert_eq!(
            *health.borrow_and_update(),
            ConsumerHealth {
                degraded: true,
                recoveries: 0
            }
        );
        assert!(
            !health.has_changed().unwrap(),
            "a second failure is the same state"
        );

        hub.receive_worked();
        hub.receive_worked();
        assert_eq!(
            *health.borrow_and_update(),
            ConsumerHealth {
                degraded: false,
                recoveries: 1
            },
            "one recovery, however many records follow"
        );

        // The consumer task ends (here: its watchdog is dropped as in a panic).
        drop(super::Watchdog(hub));
        assert!(health.borrow_and_update().degraded);
    }
}
