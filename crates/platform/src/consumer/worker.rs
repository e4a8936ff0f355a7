//! The consuming loop of one consumer: receives batches from the partitions it holds leases
//! on, applies them, stores offsets after the commit, dead-letters what can never be applied,
//! and waits (receiving nothing) after transient failures. Between batches it applies lease
//! changes to the Kafka client (assigning partitions it took, unassigning those it gives up
//! before releasing them) and follows the lag probe's readings.

use std::collections::{BTreeMap, BTreeSet};

use futures::{FutureExt as _, StreamExt as _};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::OwnedMessage,
};
use sqlx::PgPool;
use tokio::{sync::watch, time::Instant};

use super::{
    BATCH, ConsumerSettings, Handler, PARTITIONS_IN_FLIGHT,
    apply::{self, Failure, Outcome},
    dead_letter::DeadLetters,
    lag,
    leases::{self, Leases},
};
use crate::{
    cloudevents::CloudEvent,
    runtime::{Backoff, TaskContext},
};

/// Most messages taken from the client for one pass: a full transaction for each partition
/// applied at once.
const GATHER: usize = BATCH * PARTITIONS_IN_FLIGHT;

/// One consumer's state; see the module docs.
pub(super) struct Worker<H> {
    pool: PgPool,
    settings: ConsumerSettings,
    handler: H,
    ctx: TaskContext,
    leases: Leases,
    dead_letters: DeadLetters,
    topic: String,
    /// Delays between tries of an event that failed transiently.
    backoff: Backoff,
    /// Delays after a failed receive: short, since librdkafka reconnects by itself and this
    /// only keeps an error from spinning.
    receive_backoff: Backoff,
    /// While waiting after a transient failure (or a failed receive): when to try again.
    /// Nothing is received meanwhile, but the partitions are not paused in the client:
    /// pausing discards what librdkafka has fetched and fetches it again from after the last
    /// message handed out, which a broker that serves only whole stored record batches (the
    /// embedded one) may skip; and resuming can discard a just-assigned partition's
    /// committed-offset lookup. librdkafka stops fetching once its queue limits are full.
    paused_until: Option<Instant>,
    /// The next offset to consume of each assigned partition, as stored after a commit (what
    /// is committed when a partition is given up).
    stored: BTreeMap<i32, i64>,
    /// The partitions assigned in the Kafka client (a subset of the leases held).
    assigned: BTreeSet<i32>,
    /// Received events not applied yet, after a transient failure: applied first when the
    /// wait is over. Held here rather than fetched again by seeking back, because a fetch
    /// from an offset inside a stored record batch is not served by every broker (the
    /// embedded one returns only the batches that start at or after it).
    carry: Vec<OwnedMessage>,
    /// What is failing now; the task is healthy again when nothing is.
    failing: Failing,
}

/// The transient failures a consumer can be in, each cleared by its own sign of recovery.
#[derive(Clone, Copy, Debug, Default)]
struct Failing {
    /// Kafka does not answer (cleared by a lag reading or a received record).
    kafka: bool,
    /// The lease session broke (cleared by a lease round that worked).
    leases: bool,
    /// An event failed transiently (cleared by a batch applied).
    events: bool,
}

impl Failing {
    fn any(self) -> bool {
        self.kafka || self.leases || self.events
    }
}

impl<H: Handler> Worker<H> {
    pub(super) fn new(
        pool: PgPool,
        settings: ConsumerSettings,
        handler: H,
        ctx: TaskContext,
        leases: Leases,
        dead_letters: DeadLetters,
        topic: String,
    ) -> Self {
        let backoff = Backoff::new(settings.backoff, settings.max_backoff);
        Self {
            pool,
            settings,
            handler,
            ctx,
            leases,
            dead_letters,
            topic,
            backoff,
            receive_backoff: Backoff::new(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(2),
            ),
            paused_until: None,
            stored: BTreeMap::new(),
            assigned: BTreeSet::new(),
            carry: Vec::new(),
            failing: Failing::default(),
        }
    }

    /// Consumes until shutdown, with the lag probe running beside; then commits what was
    /// applied and gives up every lease.
    ///
    /// # Errors
    /// None today (everything is retried); the signature leaves room for failures that
    /// must stop the consumer.
    pub(super) async fn run(
        mut self,
        consumer: &StreamConsumer,
        probe: lag::Probe,
    ) -> anyhow::Result<()> {
        let (readings_tx, readings) = watch::channel(None);
        // The probe runs as long as the loop: until shutdown, or until the loop fails.
        let probing = tokio_util::sync::CancellationToken::new();
        let monitor = lag::monitor(
            probe,
            self.settings.name.clone(),
            readings_tx,
            probing.clone(),
        );
        let consume = async {
            let result = self.consume(consumer, readings).await;
            probing.cancel();
            result
        };
        let ((), result) = tokio::join!(monitor, consume);
        self.stop(consumer).await;
        result
    }

    async fn consume(
        &mut self,
        consumer: &StreamConsumer,
        mut readings: watch::Receiver<Option<lag::Reading>>,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(leases::INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let paused_until = self.paused_until;
            let assigned = !self.assigned.is_empty();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    let reading = readings.borrow_and_update().clone();
                    self.follow(consumer, reading).await;
                }
                // The first readings, without waiting for the next round.
                Ok(()) = readings.changed(), if !assigned => {
                    let reading = readings.borrow_and_update().clone();
                    self.follow(consumer, reading).await;
                }
                () = sleep_until(paused_until), if paused_until.is_some() => {
                    self.paused_until = None;
                    let carried = std::mem::take(&mut self.carry);
                    if !carried.is_empty() {
                        self.handle(consumer, &carried).await?;
                    }
                }
                first = consumer.recv(), if paused_until.is_none() && assigned => {
                    match first {
                        Ok(first) => {
                            self.receive_backoff.reset();
                            self.healed(|f| f.kafka = false);
                            let batch = more(consumer, first.detach());
                            self.handle(consumer, &batch).await?;
                        }
                        Err(error) => {
                            // The broker is away or refused a fetch: librdkafka retries by
                            // itself; the lag probe's next reading tells when it is back.
                            self.failing.kafka = true;
                            self.ctx.health.degraded(&format_args!("kafka receive failed: {error}"));
                            let delay = self.receive_backoff.next_delay();
                            self.paused_until = Some(Instant::now() + delay);
                        }
                    }
                }
            }
        }
    }

    /// A lease round with the probe's latest reading: take and give up partitions, and report
    /// the task recovered once Kafka answers again (unless the database is still failing).
    async fn follow(&mut self, consumer: &StreamConsumer, reading: Option<lag::Reading>) {
        let Some(reading) = reading else {
            return;
        };
        match &reading.result {
            Ok(measure) => {
                self.healed(|f| f.kafka = false);
                self.rebalance(consumer, measure.partitions).await;
            }
            Err(reason) => {
                self.failing.kafka = true;
                self.ctx
                    .health
                    .degraded(&format_args!("kafka unreachable: {reason}"));
                // Keep the leases: they are PostgreSQL's, and the partitions are still ours
                // when Kafka returns.
                self.renew(consumer).await;
            }
        }
    }

    /// One lease round for a topic of `partitions` partitions.
    async fn rebalance(&mut self, consumer: &StreamConsumer, partitions: i32) {
        match self.leases.rebalance(partitions).await {
            Ok(plan) => {
                self.healed(|f| f.leases = false);
                // Giving up can break the session; then what this round locked is gone too.
                if !plan.surplus.is_empty() && !self.give_up(consumer, &plan.surplus).await {
                    return;
                }
                if !plan.acquired.is_empty() {
                    self.take(consumer, &plan.acquired);
                }
            }
            Err(error) => self.lost(consumer, &error),
        }
    }

    /// Checks the lease session is alive while Kafka is away.
    async fn renew(&mut self, consumer: &StreamConsumer) {
        match self.leases.renew().await {
            Ok(()) => self.healed(|f| f.leases = false),
            Err(error) => self.lost(consumer, &error),
        }
    }

    /// The lease session broke (the database is away): the leases are gone with it, so stop
    /// consuming every partition at once; the next rounds take them again.
    fn lost(&mut self, consumer: &StreamConsumer, error: &dyn std::fmt::Display) {
        self.leases.forget();
        let assigned: Vec<i32> = self.assigned.iter().copied().collect();
        if !assigned.is_empty() {
            self.unassign(consumer, &assigned);
            tracing::warn!(consumer = %self.settings.name, partitions = ?assigned, %error, "partition leases lost");
        }
        self.failing.leases = true;
        self.ctx
            .health
            .degraded(&format_args!("partition leases unavailable: {error}"));
    }

    /// Starts reading `partitions` (just leased) from the group's committed offsets. If the
    /// client refuses, the leases are given back (by dropping the session) rather than held
    /// by a replica that does not read them.
    fn take(&mut self, consumer: &StreamConsumer, partitions: &[i32]) {
        let new: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !self.assigned.contains(p))
            .collect();
        if new.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for &partition in &new {
            // The group's committed offset, or the beginning when there is none.
            if let Err(error) = list.add_partition_offset(&self.topic, partition, Offset::Stored) {
                tracing::warn!(%error, partition, "cannot assign partition");
            }
        }
        match consumer.incremental_assign(&list) {
            Ok(()) => {
                self.assigned.extend(&new);
                tracing::info!(consumer = %self.settings.name, partitions = ?new, "consuming partitions");
            }
            Err(error) => {
                let reason = format!("the Kafka client refused partitions {new:?}: {error}");
                self.lost(consumer, &reason);
            }
        }
        self.publish_owned();
    }

    /// Stops consuming `partitions`, commits what was applied of them, and releases their
    /// leases for another replica. `false` when the lease session broke meanwhile.
    async fn give_up(&mut self, consumer: &StreamConsumer, partitions: &[i32]) -> bool {
        self.unassign(consumer, partitions);
        if let Err(error) = self.leases.release(partitions).await {
            self.lost(consumer, &error);
            return false;
        }
        tracing::info!(consumer = %self.settings.name, ?partitions, "gave partitions to another replica");
        self.publish_owned();
        true
    }

    /// Stops reading those of `partitions` the client reads, after committing what was
    /// applied of them.
    fn unassign(&mut self, consumer: &StreamConsumer, partitions: &[i32]) {
        let present: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| self.assigned.contains(p))
            .collect();
        if present.is_empty() {
            return;
        }
        self.commit(consumer, &present);
        // Their new owner reads what was not applied, from the committed offsets.
        self.carry.retain(|m| !present.contains(&m.partition()));
        let mut list = TopicPartitionList::new();
        for &partition in &present {
            list.add_partition(&self.topic, partition);
            self.stored.remove(&partition);
            self.assigned.remove(&partition);
        }
        if let Err(error) = consumer.incremental_unassign(&list) {
            // Start over with exactly what is still ours (from the committed offsets).
            tracing::warn!(consumer = %self.settings.name, %error, "cannot unassign partitions; assigning anew");
            let mut keep = TopicPartitionList::new();
            for &partition in &self.assigned {
                let _ = keep.add_partition_offset(&self.topic, partition, Offset::Stored);
            }
            if let Err(error) = consumer.assign(&keep) {
                tracing::error!(consumer = %self.settings.name, %error, "cannot reset the assignment");
            }
        }
        if self.assigned.is_empty() {
            // Whatever failed is no longer ours to retry.
            self.paused_until = None;
            self.failing.events = false;
        }
        self.publish_owned();
    }

    /// Commits the stored offsets of `partitions` now, without waiting for the answer
    /// (auto-commit would do it within seconds; this narrows what a successor applies again,
    /// and applies again only as duplicates).
    fn commit(&self, consumer: &StreamConsumer, partitions: &[i32]) {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            if let Some(&offset) = self.stored.get(partition) {
                let _ = list.add_partition_offset(&self.topic, *partition, Offset::Offset(offset));
            }
        }
        if list.count() > 0
            && let Err(error) = consumer.commit(&list, CommitMode::Async)
        {
            tracing::debug!(%error, "offsets not committed");
        }
    }

    fn publish_owned(&self) {
        metrics::gauge!("taskmesh_consumer_partitions_owned", "consumer" => self.settings.name.clone())
            .set(self.assigned.len() as f64);
    }

    /// After a transient failure: keep `unapplied` to apply first, and try again after the
    /// next backoff delay (receiving nothing meanwhile).
    fn pause(&mut self, unapplied: Vec<OwnedMessage>, why: &str) {
        self.carry = unapplied;
        self.failing.events = true;
        self.ctx.health.degraded(&why);
        self.paused_until = Some(Instant::now() + self.backoff.next_delay());
    }

    /// Applies a batch: together first (one transaction when it fits in [`BATCH`]; else each
    /// partition's events in transactions of up to [`BATCH`], in order, the partitions
    /// concurrently, up to [`PARTITIONS_IN_FLIGHT`] transactions at once); the events of a transaction that failed, and
    /// those after them in their partition, then one by one (with retries), so a bad event
    /// costs its batch one retry and is dead-lettered alone. After a transient failure the
    /// events not applied yet are kept and applied first when the wait is over; the other
    /// partitions' applied events still have their offsets stored.
    ///
    /// # Errors
    /// None today; the signature leaves room for failures that must stop the consumer.
    async fn handle(
        &mut self,
        consumer: &StreamConsumer,
        batch: &[OwnedMessage],
    ) -> anyhow::Result<()> {
        let mut batch = std::borrow::Cow::Borrowed(batch);
        loop {
            let later = self.handle_once(consumer, &batch).await?;
            if later.is_empty() || self.ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            batch = std::borrow::Cow::Owned(later);
        }
    }

    /// One pass of [`Worker::handle`]; returns the events of partitions whose transaction
    /// failed that came after it (not applied yet, for the next pass: the one-by-one events
    /// cover only the failed transaction, so a bad event costs one batch).
    async fn handle_once(
        &mut self,
        consumer: &StreamConsumer,
        batch: &[OwnedMessage],
    ) -> anyhow::Result<Vec<OwnedMessage>> {
        let name = self.settings.name.clone();
        let events: Vec<_> = batch.iter().map(CloudEvent::from_message).collect();
        let together = self.together(batch, &events).await;
        // Once an event failed transiently: why, and the events kept to apply after the wait.
        let mut pausing: Option<(String, Vec<OwnedMessage>)> = None;
        let mut later = Vec::new();
        for (i, (message, event)) in batch.iter().zip(&events).enumerate() {
            let started = std::time::Instant::now();
            let settled = together[i];
            if let Some((_, kept)) = &mut pausing
                && !matches!(settled, Some(Settled::Applied(_) | Settled::Malformed))
            {
                // Applied together events precede, in their partition, every kept one; the
                // rest waits with the event that failed.
                kept.push(message.clone());
                continue;
            }
            if matches!(settled, Some(Settled::Later)) {
                later.push(message.clone());
                continue;
            }
            let outcome = match (settled, event) {
                (Some(Settled::Applied(outcome)), _) => Ok(outcome),
                (_, Err(error)) => Err(Failure::DeadLetter(format!(
                    "not a taskmesh CloudEvent: {error}"
                ))),
                // Shutting down: leave the rest unstored; they are delivered again.
                (_, Ok(_)) if self.ctx.shutdown.is_cancelled() => return Ok(Vec::new()),
                (_, Ok(event)) => {
                    tracing::Instrument::instrument(
                        apply::one(
                            &self.pool,
                            &self.settings,
                            &self.handler,
                            event,
                            &self.ctx.shutdown,
                        ),
                        apply::event_span(&name, event),
                    )
                    .await
                }
            };
            let label = match outcome {
                Ok(Outcome::Applied) => "applied",
                Ok(Outcome::Duplicate) => {
                    tracing::debug!(consumer = %name, offset = message.offset(), "duplicate event skipped");
                    "duplicate"
                }
                Err(Failure::DeadLetter(reason)) => {
                    if !self
                        .dead_letters
                        .send(message, &name, &reason, &self.ctx)
                        .await
                    {
                        return Ok(Vec::new());
                    }
                    "dead_lettered"
                }
                Err(Failure::Transient(reason)) => {
                    metrics::counter!("taskmesh_consumer_events_total", "consumer" => name.clone(), "outcome" => "retried")
                        .increment(1);
                    pausing = Some((reason, vec![message.clone()]));
                    continue;
                }
                Err(Failure::Interrupted) => return Ok(Vec::new()),
            };
            metrics::counter!("taskmesh_consumer_events_total", "consumer" => name.clone(), "outcome" => label)
                .increment(1);
            metrics::histogram!("taskmesh_consumer_processing_seconds", "consumer" => name.clone())
                .record(started.elapsed().as_secs_f64());
            if let Ok(event) = event {
                let age = (chrono::Utc::now() - event.time).as_seconds_f64().max(0.0);
                metrics::histogram!("taskmesh_consumer_event_age_seconds", "consumer" => name.clone())
                    .record(age);
            }
            self.store(consumer, message);
        }
        if let Some((reason, kept)) = pausing {
            self.pause(kept, &reason);
            return Ok(Vec::new());
        }
        // The events that failed went through.
        if self.failing.events {
            self.backoff.reset();
        }
        self.healed(|f| f.events = false);
        Ok(later)
    }

    /// The first pass over a batch: a batch of up to [`BATCH`] in one transaction; a larger
    /// one, each partition's events in transactions of up to [`BATCH`], in order, the
    /// partitions concurrently (up to [`PARTITIONS_IN_FLIGHT`], see [`in_flight`]); a
    /// partition stops at its first transaction that fails, or at shutdown. Per event, what
    /// became of it ([`Settled::Later`] after the transaction that stopped its partition),
    /// or `None` when it is left to the one-by-one pass (its transaction failed, or it was
    /// alone).
    async fn together(
        &self,
        batch: &[OwnedMessage],
        events: &[Result<CloudEvent, crate::cloudevents::EnvelopeError>],
    ) -> Vec<Option<Settled>> {
        // What fits in one transaction goes in one (fewest statements); more than that is
        // split by partition, the partitions applied concurrently. Either way a group keeps
        // each partition's events in their order.
        let mut partitions: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, message) in batch.iter().enumerate() {
            let group = if batch.len() <= BATCH {
                0
            } else {
                message.partition()
            };
            partitions.entry(group).or_default().push(i);
        }
        let name = self.settings.name.as_str();
        let (pool, handler, shutdown) = (&self.pool, &self.handler, &self.ctx.shutdown);
        let applied: Vec<Vec<(usize, Option<Settled>)>> =
            futures::stream::iter(partitions.into_values().map(|positions| async move {
                let mut settled = Vec::with_capacity(positions.len());
                let mut chunks = positions.chunks(BATCH);
                for chunk in chunks.by_ref() {
                    // A lone event goes the one-by-one way (fewer statements).
                    if chunk.len() < 2 || shutdown.is_cancelled() {
                        break;
                    }
                    let slice: Vec<_> = chunk.iter().map(|&i| &events[i]).collect();
                    let Ok(outcomes) = apply::batch(pool, name, handler, &slice).await else {
                        break;
                    };
                    settled.extend(chunk.iter().zip(outcomes).map(|(&i, outcome)| {
                        (
                            i,
                            Some(outcome.map_or(Settled::Malformed, Settled::Applied)),
                        )
                    }));
                }
                // The chunk that stopped the partition goes one by one; the ones after it
                // wait for the next pass.
                settled.extend(chunks.flatten().map(|&i| (i, Some(Settled::Later))));
                settled
            }))
            .buffer_unordered(in_flight(pool, self.settings.max_in_flight))
            .collect()
            .await;
        let mut together = vec![None; batch.len()];
        for (i, settled) in applied.into_iter().flatten() {
            together[i] = settled;
        }
        together
    }

    /// Clears a failure; reports the task recovered when none is left.
    fn healed(&mut self, clear: impl FnOnce(&mut Failing)) {
        clear(&mut self.failing);
        if !self.failing.any() {
            self.ctx.health.recovered();
        }
    }

    fn store(&mut self, consumer: &StreamConsumer, message: &OwnedMessage) {
        match consumer.store_offset(message.topic(), message.partition(), message.offset()) {
            Ok(()) => {
                self.stored
                    .insert(message.partition(), message.offset() + 1);
            }
            // The partition is no longer assigned (the client refused to unassign it and was
            // reset): its new owner gets the event again and skips it as a duplicate.
            Err(error) => {
                tracing::info!(%error, consumer = %self.settings.name, partition = message.partition(), offset = message.offset(), "offset not stored");
            }
        }
    }

    /// On shutdown: commit what was applied and give up every lease, so another replica
    /// takes over at once.
    async fn stop(&mut self, consumer: &StreamConsumer) {
        let assigned: Vec<i32> = self.assigned.iter().copied().collect();
        self.commit(consumer, &assigned);
        self.leases.close().await;
    }
}

/// What the first, set-based pass made of an event.
#[derive(Clone, Copy, Debug)]
enum Settled {
    /// Its transaction committed: applied now, or a redelivery.
    Applied(Outcome),
    /// It is not a CloudEvent (its transaction committed without it): dead-letter it.
    Malformed,
    /// Not tried: an earlier transaction of its partition failed (or shutdown came), and
    /// that one's events go one by one first. Left for the next pass.
    Later,
}

/// Transactions of one consumer at once: its `max_in_flight` (at most
/// [`PARTITIONS_IN_FLIGHT`]), fewer on a small pool (a quarter of its connections, at least
/// one), so consumers sharing a pool leave connections to the RPCs.
fn in_flight(pool: &PgPool, max_in_flight: usize) -> usize {
    let connections = usize::try_from(pool.options().get_max_connections()).unwrap_or(1);
    (connections / 4)
        .min(max_in_flight)
        .clamp(1, PARTITIONS_IN_FLIGHT)
}

/// Waits until `deadline` (never, for `None`).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `first` and up to [`GATHER`] - 1 more messages that have already arrived, as owned copies
/// (a transient failure keeps the unapplied ones past the next receive).
fn more(consumer: &StreamConsumer, first: OwnedMessage) -> Vec<OwnedMessage> {
    let mut batch = vec![first];
    while batch.len() < GATHER {
        match consumer.recv().now_or_never() {
            Some(Ok(message)) => batch.push(message.detach()),
            Some(Err(error)) => {
                tracing::warn!(%error, "kafka receive failed");
                break;
            }
            None => break,
        }
    }
    batch
}
