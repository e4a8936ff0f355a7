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
                let found = metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty());
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

/// The mesh's topics. Each has a dead-letter topic `<topic>.dlq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `task-events`: every task and tag change, from TaskService.
    TaskEvents,
    /// `reminders`: fired reminders, overdue notices and notification changes.
    Reminders,
    /// `task-commands`: requests to TaskService from other services.
    TaskCommands,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 3] = [Topic::TaskEvents, Topic::Reminders, Topic::TaskCommands];

    /// The topic's base name (without prefix).
    pub fn base_name(self) -> &'static str {
        match self {
            Topic::TaskEvents => "task-events",
            Topic::Reminders => "reminders",
            Topic::TaskCommands => "task-commands",
        }
    }
}

/// How to reach Kafka and how topics are laid out.
#[derive(Clone, Debug)]
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
    /// Longest a consumer's fetch waits at the broker for data, in milliseconds. Small values
    /// keep live-update latency low.
    pub fetch_wait_max_ms: u32,
    /// Extra librdkafka properties (e.g. `security.protocol`, `sasl.mechanism`), applied to
    /// every client.
    pub extra: Vec<(String, String)>,
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
            fetch_wait_max_ms: 5,
            extra: Vec::new(),
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
