//! Live-update latency: from a change's commit to its arrival on its owner's grpc-web stream
//! (HTTP/1.1, tonic-web's client, as a browser reads it), with changes arriving open-loop at
//! a fixed rate across many users, beside the broker's own produce-to-consume latency for a
//! message of the same size at the same rate (the Kafka leg's limit).
//!
//! The change's time is its task's `update_time`, set in the committing transaction (so at
//! or just before the commit); arrival is this process's clock when the stream message is
//! decoded. Same machine, same clock.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use rdkafka::{
    Message as _,
    consumer::{Consumer as _, StreamConsumer},
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};
use taskmesh_platform::kafka::{KafkaConfig, Topic};
use taskmesh_proto::{
    gateway::v1::{
        StreamChangesRequest, live_service_client::LiveServiceClient,
        stream_changes_response::Event,
    },
    task::v1::Task,
};
use taskmesh_testkit::MeshOptions;
use tonic_web::GrpcWebClientLayer;

use crate::{Scale, load::open_loop, rpc, table::Table};

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// An empty latency histogram (microseconds, up to 10 minutes, 3 significant digits).
pub(crate) fn histogram() -> Arc<Mutex<Histogram<u64>>> {
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
    ))
}

/// Records `micros` (at least 1).
pub(crate) fn record(histogram: &Mutex<Histogram<u64>>, micros: i64) {
    let micros = u64::try_from(micros.max(1)).unwrap_or(1);
    histogram
        .lock()
        .expect("histogram")
        .saturating_record(micros);
}

/// A quantile (0..=1) of `histogram`, in milliseconds.
pub(crate) fn ms(histogram: &Mutex<Histogram<u64>>, quantile: f64) -> f64 {
    histogram
        .lock()
        .expect("histogram")
        .value_at_quantile(quantile) as f64
        / 1000.0
}

/// Waits until `counter` reaches `target` or `limit` passes; the count reached.
pub(crate) async fn wait_for(counter: &AtomicU64, target: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counter.load(Ordering::Relaxed)
}

/// Runs the scenario and its broker baseline; adds their rows to `table`.
pub(crate) async fn run(scale: &Scale, table: &mut Table) -> anyhow::Result<()> {
    let mesh = crate::mesh::start(MeshOptions::default()).await?;
    let users = scale.live_users;
    let tokens = rpc::bearer_tokens("live-", users)?;

    // One grpc-web stream per user, each caught up before the changes start.
    let latency = histogram();
    let received = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let origin: tonic::codegen::http::Uri = mesh.gateway_url().parse()?;
    for token in &tokens {
        let web = tower::ServiceBuilder::new()
            .layer(GrpcWebClientLayer::new())
            .service(Client::builder(TokioExecutor::new()).build_http());
        let mut client = LiveServiceClient::with_origin(web, origin.clone());
        let mut request = tonic::Request::new(StreamChangesRequest::default());
        request
            .metadata_mut()
            .insert("authorization", token.clone());
        let (latency, received, ready) = (latency.clone(), received.clone(), ready.clone());
        tokio::spawn(async move {
            let Ok(response) = client.stream_changes(request).await else {
                return;
            };
            let mut stream = response.into_inner();
            while let Ok(Some(message)) = stream.message().await {
                match message.event {
                    Some(Event::CaughtUp(_)) => {
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Event::TaskCreated(created)) => {
                        let arrived = now_micros();
                        if let Some(time) = created.task.and_then(|task| task.update_time) {
                            record(
                                &latency,
                                arrived
                                    - (time.seconds * 1_000_000 + i64::from(time.nanos) / 1_000),
                            );
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    let caught_up = wait_for(&ready, users as u64, Duration::from_secs(60)).await;
    anyhow::ensure!(
        caught_up == users as u64,
        "only {caught_up} of {users} streams caught up"
    );

    let channel = mesh.gateway_channel().await?;
    let create = |i: u64| {
        let task = Task {
            title: format!("live {i}"),
            ..Default::default()
        };
        rpc::create_task(channel.clone(), &tokens[i as usize % users], task)
    };
    let rate = scale.live_rate;
    let outcome = open_loop(rate, scale.fixed, create).await;
    let expected = outcome.sent - outcome.errors;
    let arrived = wait_for(&received, expected, Duration::from_secs(60)).await;
    table.note_errors("live update (CreateTask)", &outcome);
    if arrived < expected {
        table.note(format!(
            "live update: only {arrived} of {expected} changes arrived within 60 s"
        ));
    }

    let broker = broker_latency(&mesh.kafka, rate, scale.fixed, scale.message_bytes).await?;
    for (label, quantile) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        table.ratio_row(
            "live update",
            &format!("commit->stream {label} @ {rate}/s, ms"),
            ms(&latency, quantile),
            "broker produce->consume",
            ms(&broker, quantile),
            outcome.cpu,
        );
    }
    Ok(())
}

/// A consumer of a fresh `prefix`-named copy of `task-events` that records each record's
/// latency (its first 8 bytes: the send time in microseconds) and counts them.
struct BaselineReader {
    kafka: KafkaConfig,
    topic: String,
    latency: Arc<Mutex<Histogram<u64>>>,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BaselineReader {
    async fn start(kafka: &KafkaConfig, prefix: &str) -> anyhow::Result<Self> {
        let kafka = KafkaConfig {
            topic_prefix: prefix.to_owned(),
            ..kafka.clone()
        };
        kafka.create_topics().await?;
        let topic = kafka.topic(Topic::TaskEvents);
        let consumer: StreamConsumer = kafka.consumer_config(&format!("{prefix}bench")).create()?;
        consumer.subscribe(&[&topic])?;
        let latency = histogram();
        let received = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (latency, received) = (latency.clone(), received.clone());
            async move {
                while let Ok(message) = consumer.recv().await {
                    let arrived = now_micros();
                    if let Some(sent) = message
                        .payload()
                        .and_then(|p| p.get(..8))
                        .and_then(|p| <[u8; 8]>::try_from(p).ok())
                    {
                        record(&latency, arrived - i64::from_be_bytes(sent));
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        // Let the consumer join its group before anything is sent.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(Self {
            kafka,
            topic,
            latency,
            received,
            task,
        })
    }

    /// Sends record `i` (`bytes` long, stamped with the time) with the relay's producer
    /// settings (idempotent, `acks=all`, `linger.ms=1`); resolves to whether it was acked.
    fn send(&self, producer: &FutureProducer, i: u64, bytes: usize) -> Result<DeliveryFuture, ()> {
        let mut payload = vec![0_u8; bytes.max(8)];
        payload[..8].copy_from_slice(&now_micros().to_be_bytes());
        let key = format!("user-{}", i % 100);
        producer
            .send_result(FutureRecord::to(&self.topic).key(&key).payload(&payload))
            .map_err(|_| ())
    }
}

impl Drop for BaselineReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The broker's produce-to-consume latency for `bytes`-byte records produced open-loop at
/// `rate` for `duration`.
async fn broker_latency(
    kafka: &KafkaConfig,
    rate: f64,
    duration: Duration,
    bytes: usize,
) -> anyhow::Result<Arc<Mutex<Histogram<u64>>>> {
    let reader = BaselineReader::start(kafka, "baseline-latency-").await?;
    let producer = reader.kafka.producer()?;
    let outcome = open_loop(rate, duration, |i| {
        // `send_result` copies the record into librdkafka's queue; the future owns nothing
        // borrowed.
        let delivery = reader.send(&producer, i, bytes);
        async move {
            match delivery {
                Ok(delivery) => matches!(delivery.await, Ok(Ok(_))),
                Err(()) => false,
            }
        }
    })
    .await;
    let expected = outcome.sent - outcome.errors;
    wait_for(&reader.received, expected, Duration::from_secs(30)).await;
    Ok(reader.latency.clone())
}

/// The broker's produce-and-consume rate: `count` records of `bytes` bytes produced as fast
/// as the producer's queue takes them and read by one consumer; records per second from the
/// first send to the last receipt.
pub(crate) async fn broker_throughput(
    kafka: &KafkaConfig,
    count: u64,
    bytes: usize,
) -> anyhow::Result<f64> {
    let reader = BaselineReader::start(kafka, "baseline-throughput-").await?;
    let producer = reader.kafka.producer()?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(usize::try_from(count)?);
    for i in 0..count {
        loop {
            match reader.send(&producer, i, bytes) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                // The local queue is full: let deliveries drain.
                Err(()) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    let mut acked = 0_u64;
    for delivery in deliveries {
        if matches!(delivery.await, Ok(Ok(_))) {
            acked += 1;
        }
    }
    let received = wait_for(&reader.received, acked, Duration::from_secs(300)).await;
    anyhow::ensure!(
        received >= acked,
        "the baseline consumer read {received} of {acked} records"
    );
    Ok(acked as f64 / started.elapsed().as_secs_f64())
}
