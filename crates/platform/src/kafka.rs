//! Kafka plumbing: topic names, topic creation, and client configuration (producers are
//! idempotent with `acks=all`; consumers never auto-commit).

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::Consumer,
    error::KafkaError,
    producer::FutureProducer,
    types::RDKafkaErrorCode,
};
use secrecy::{ExposeSecret as _, SecretString};

impl KafkaConfig {
    /// Which of `names` the cluster has. Asks per topic (some brokers answer an all-topics
    /// request with nothing); librdkafka's metadata call blocks, so it runs on a blocking
    /// thread.
    async fn existing_topics(&self, names: Vec<String>) -> Result<Vec<String>, KafkaError> {
        let config = self.client_config();
        tokio::task::spawn_blocking(move || {
            let client: rdkafka::consumer::BaseConsumer = config.create()?;
            let mut existing = Vec::new();
            for name in names {
                let metadata = client.fetch_metadata(Some(&name), Duration::from_secs(10))?;
                let found = !partition_ids(&metadata, &name).is_empty();
                if found {
                    existing.push(name);
                }
            }
            Ok(existing)
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }
}

impl KafkaConfig {
    /// Whether the cluster answers a metadata request for `topic` (the full name) that names
    /// at least one partition, within 10 s.
    ///
    /// # Errors
    /// The client cannot be created, the cluster does not answer, or the topic has no
    /// partitions.
    pub async fn ping(&self, topic: &str) -> Result<(), KafkaError> {
        let found = self.existing_topics(vec![topic.to_owned()]).await?;
        if found.is_empty() {
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        Ok(())
    }
}

/// The partition ids of `topic` in `metadata` (empty when the topic is missing or in error).
pub fn partition_ids(metadata: &rdkafka::metadata::Metadata, topic: &str) -> Vec<i32> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// The mesh's topics, generated from the events' `(event).topic` options (see
/// [`taskmesh_proto::catalogue`]). Each has a dead-letter topic `<topic>.dlq`.
pub use taskmesh_proto::catalogue::Topic;

/// How to reach Kafka and how topics are laid out.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Prefix for every topic name, e.g. `staging.`; empty for none.
    pub topic_prefix: String,
    /// Prefix for every consumer group id (and partition-lease name), e.g. `staging.`, so two
    /// installations on one cluster never share a group; the topic prefix unless configured.
    pub group_prefix: String,
    /// Partitions of topics this process creates.
    pub partitions: i32,
    /// Replication factor of topics this process creates (1 for a single broker).
    pub replication_factor: i32,
    /// Longest a consumer's fetch waits at the broker for data, in milliseconds (the live
    /// stream's hub uses it as is; the services' consumers wait at least 100 ms). A Kafka
    /// broker answers a waiting fetch as soon as data arrives, so this costs no latency there
    /// and longer waits only mean fewer empty fetches; the embedded dev broker (tansu 0.6)
    /// holds every fetch for the whole wait, so there it is the latency a record adds, and
    /// shorter waits cost idle CPU (20 ms by default: 50 empty fetches a second).
    pub fetch_wait_max_ms: u32,
    /// Extra librdkafka properties (e.g. `security.protocol`, `sasl.mechanism`), applied to
    /// every client.
    pub extra: Vec<(String, String)>,
    /// Secret librdkafka properties (`sasl.password`, `ssl.key.password`), applied to every
    /// client and never shown.
    pub secrets: Vec<(String, SecretString)>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("group_prefix", &self.group_prefix)
            .field("extra", &self.extra)
            .field(
                "secrets",
                &self.secrets.iter().map(|(key, _)| key).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl KafkaConfig {
    /// A configuration for a single local broker at `brokers`.
    pub fn local(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: String::new(),
            group_prefix: String::new(),
            partitions: 3,
            replication_factor: 1,
            fetch_wait_max_ms: 20,
            extra: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// The full name of `topic`.
    pub fn topic(&self, topic: Topic) -> String {
        format!("{}{}", self.topic_prefix, topic.base_name())
    }

    /// The consumer group id of the consumer named `name` (e.g. `taskmesh-task`):
    /// [`KafkaConfig::group_prefix`] then the name.
    pub fn group_id(&self, name: &str) -> String {
        format!("{}{name}", self.group_prefix)
    }

    /// The full name of `topic`'s dead-letter topic.
    pub fn dead_letter_topic(&self, topic: Topic) -> String {
        format!("{}.dlq", self.topic(topic))
    }

    /// Base client configuration: brokers and the extra properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        for (key, value) in &self.secrets {
            config.set(key, value.expose_secret());
        }
        config
    }

    /// An idempotent producer with `acks=all` (no duplicates or reordering from producer
    /// retries).
    ///
    /// # Errors
    /// A client creation error (bad property).
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .create()
    }

    /// A consumer configuration for `group_id` that never auto-commits and never
    /// auto-stores offsets: callers store an offset only after its effect is durable.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string());
        config
    }

    /// Creates every topic and its dead-letter topic; existing topics are left as they are.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses to create a topic.
    pub async fn create_topics(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let mut names = Vec::new();
        for topic in Topic::ALL {
            names.push(self.topic(topic));
            names.push(self.dead_letter_topic(topic));
        }
        let existing = self.existing_topics(names.clone()).await?;
        // Only ask for missing topics: some brokers log "already exists" as an error.
        names.retain(|name| !existing.contains(name));
        if names.is_empty() {
            return Ok(());
        }
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.partitions,
                    TopicReplication::Fixed(self.replication_factor),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(&topics, &options).await? {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    tracing::error!(topic = %name, ?code, "cannot create topic");
                    return Err(KafkaError::AdminOp(code));
                }
            }
        }
        Ok(())
    }
}

/// What [`KafkaConfig::check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterReport {
    /// Brokers the cluster named.
    pub brokers: usize,
    /// Each topic asked for, with its partitions (`None`: the topic does not exist).
    pub topics: Vec<(String, Option<usize>)>,
}

/// Why [`KafkaConfig::check`] failed, with what the client reported and what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{problem}. Fix: {fix}")]
pub struct ClusterError {
    /// What went wrong, with the client's own words.
    pub problem: String,
    /// What to change.
    pub fix: &'static str,
}

/// A client context that keeps the last error the client reported (an authentication or TLS
/// failure arrives there, while the request itself only times out).
#[derive(Default)]
struct LastError(std::sync::Mutex<Option<(RDKafkaErrorCode, String)>>);

impl rdkafka::ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The first cause tells more than the "all brokers down" that follows it.
        if last.is_none() || code != RDKafkaErrorCode::AllBrokersDown {
            *last = Some((code, reason.to_owned()));
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LastError {}

impl KafkaConfig {
    /// Connects with this configuration (TLS and SASL included), as every client of the
    /// mesh would: creates a producer and a consumer (which validates the properties for
    /// both), asks the cluster for its brokers and for each of `topics` (full names).
    ///
    /// # Errors
    /// [`ClusterError`] saying what failed and what to fix: a bad property, a TLS or
    /// authentication failure, unreachable brokers.
    pub async fn check(&self, topics: Vec<String>) -> Result<ClusterReport, ClusterError> {
        let bad_property = |error: KafkaError| ClusterError {
            problem: format!("the Kafka client refuses the configuration: {error}"),
            fix: "correct TASKMESH_KAFKA_PROPERTIES (librdkafka property names and values)",
        };
        let _producer: FutureProducer = self.client_config().create().map_err(bad_property)?;
        let mut config = self.consumer_config(&self.group_id("taskmesh-check-config"));
        config.set("enable.auto.commit", "false");
        let consumer: rdkafka::consumer::BaseConsumer<LastError> = config
            .create_with_context(LastError::default())
            .map_err(bad_property)?;
        let brokers = self.brokers.clone();
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(15);
            let cluster = consumer.fetch_metadata(None, timeout);
            let cluster = match cluster {
                Ok(cluster) => cluster,
                Err(error) => return Err(explain(&consumer, &brokers, &error)),
            };
            let mut report = ClusterReport {
                brokers: cluster.brokers().len(),
                topics: Vec::new(),
            };
            for topic in topics {
                let metadata = consumer
                    .fetch_metadata(Some(&topic), timeout)
                    .map_err(|error| explain(&consumer, &brokers, &error))?;
                let partitions = Some(partition_ids(&metadata, &topic).len()).filter(|&n| n > 0);
                report.topics.push((topic, partitions));
            }
            Ok(report)
        })
        .await
        .unwrap_or_else(|_| {
            Err(ClusterError {
                problem: "the check was interrupted".to_owned(),
                fix: "run it again",
            })
        })
    }
}

/// A failed request explained by what the client reported before it.
fn explain(
    consumer: &rdkafka::consumer::BaseConsumer<LastError>,
    brokers: &str,
    error: &KafkaError,
) -> ClusterError {
    // Errors reach the context when the client's events are served: serve them for a while.
    let last = || {
        consumer
            .context()
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    };
    for _ in 0..20 {
        if last().is_some() {
            break;
        }
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let last = last();
    let (code, reason) = last.unwrap_or((
        error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
        error.to_string(),
    ));
    // The code says which, or else the client's words do (a failed handshake is sometimes
    // reported as a transport failure).
    let lower = reason.to_ascii_lowercase();
    // (Not the broker's name: `ssl://` and `sasl_ssl://` prefix every message.)
    let code = if code == RDKafkaErrorCode::Authentication
        || lower.contains("sasl authentication")
        || lower.contains("authentication failed")
    {
        RDKafkaErrorCode::Authentication
    } else if code == RDKafkaErrorCode::SSL
        || lower.contains("handshake")
        || lower.contains("certificate")
        || lower.contains("ssl routines")
    {
        RDKafkaErrorCode::SSL
    } else {
        code
    };
    let fix = match code {
        RDKafkaErrorCode::Authentication => {
            "check sasl.mechanisms and sasl.username in TASKMESH_KAFKA_PROPERTIES and the password in TASKMESH_KAFKA_SASL_PASSWORD(_FILE)"
        }
        RDKafkaErrorCode::SSL => {
            "check ssl.ca.location (the CA that signed the brokers' certificates), the broker host names against their certificates, and for mutual TLS ssl.certificate.location and ssl.key.location"
        }
        _ => {
            "check KAFKA_BROKERS (host:port of the bootstrap servers), that they are reachable from here, and that security.protocol matches their listener (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
        }
    };
    ClusterError {
        problem: format!("cannot talk to Kafka at {brokers}: {reason}"),
        fix,
    }
}
