//! Command-line arguments. Every option also reads an environment variable (shown in
//! `--help`); flags win over the environment, which wins over the defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum, builder::TypedValueParser as _};
use secrecy::SecretString;
use taskmesh_gateway::CorsOrigins;
use taskmesh_platform::kafka::Topic;

/// taskmesh: an event-driven task backend.
#[derive(Debug, Parser)]
#[command(name = "taskmesh", version, about)]
pub(crate) struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "TASKMESH_LOG_FORMAT",
        default_value = "text"
    )]
    pub(crate) log_format: LogFormat,

    /// OTLP/gRPC endpoint to export spans to (e.g. `http://otel-collector:4317`); unset: no
    /// span export.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub(crate) otlp_endpoint: Option<String>,

    /// The OpenTelemetry `service.name` of exported spans; unset: `taskmesh-<component>` for
    /// `serve <component>`, else `taskmesh`.
    #[arg(long, global = true, env = "OTEL_SERVICE_NAME")]
    pub(crate) otel_service_name: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// The OpenTelemetry `service.name`: `--otel-service-name`, else `taskmesh-<component>`
    /// for `serve`, else `taskmesh`.
    pub(crate) fn service_name(&self) -> String {
        if let Some(name) = &self.otel_service_name {
            return name.clone();
        }
        match &self.command {
            Command::Serve(args) => match args.component.to_possible_value() {
                Some(value) => format!("taskmesh-{}", value.get_name()),
                None => "taskmesh".to_owned(),
            },
            _ => "taskmesh".to_owned(),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormat> for taskmesh_platform::telemetry::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run every component in one process, for development.
    Dev(DevArgs),
    /// Run one component.
    Serve(ServeArgs),
    /// Apply database migrations and create Kafka topics.
    Migrate(Common),
    /// Check the configuration a component would run with: connect to PostgreSQL and Kafka
    /// (TLS and SASL included), load the token keys, look for the topics. One line per check;
    /// exits non-zero at the first failure, saying what to fix.
    CheckConfig(CheckArgs),
    /// Print a JWT (as the last line) that the services accept.
    Token(TokenArgs),
    /// Serve the MCP tools over stdin/stdout for a local MCP host (Claude Desktop, Claude
    /// Code, an IDE), calling a running gateway as the user of `TASKMESH_TOKEN`.
    Mcp(McpArgs),
    /// Dead-lettered events.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// Settings every running component shares.
#[derive(Debug, Args)]
pub(crate) struct Common {
    /// PostgreSQL URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/taskmesh?sslmode=disable",
        hide_env_values = true
    )]
    pub(crate) database_url: String,

    /// Connections of each service's PostgreSQL pool (per process; `dev` has one per
    /// service): the RPCs in flight plus, per consumer of the process, up to 4 transactions
    /// (one per partition applied at once). See the README's "Sizing".
    #[arg(long, env = "TASKMESH_DATABASE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub(crate) database_pool_size: u32,

    /// Kafka bootstrap servers (`host:port,...`). For `dev`, unset means the embedded broker.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub(crate) kafka_brokers: Option<String>,

    /// Prefix of every topic name.
    #[arg(long, env = "TASKMESH_TOPIC_PREFIX", default_value = "")]
    pub(crate) topic_prefix: String,

    /// Partitions of the topics `migrate`/`dev` create.
    #[arg(long, env = "TASKMESH_TOPIC_PARTITIONS", default_value_t = 3)]
    pub(crate) topic_partitions: i32,

    /// Replication factor of the topics `migrate`/`dev` create.
    #[arg(long, env = "TASKMESH_TOPIC_REPLICATION", default_value_t = 1)]
    pub(crate) topic_replication: i32,

    /// Prefix of every consumer group id (and partition-lease name); unset: the topic prefix.
    #[arg(long, env = "TASKMESH_GROUP_PREFIX")]
    pub(crate) group_prefix: Option<String>,

    /// Extra librdkafka properties, `key=value,key=value` (e.g.
    /// `security.protocol=SASL_SSL,sasl.mechanisms=SCRAM-SHA-512,sasl.username=taskmesh,ssl.ca.location=/etc/kafka/ca.crt`).
    /// No secrets here: passwords come from the variables below.
    #[arg(long, env = "TASKMESH_KAFKA_PROPERTIES", default_value = "")]
    pub(crate) kafka_properties: String,

    /// The SASL password (librdkafka `sasl.password`).
    #[arg(long, env = "TASKMESH_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub(crate) kafka_sasl_password: Option<SecretString>,

    /// A file holding the SASL password (e.g. a mounted Secret), when
    /// `TASKMESH_KAFKA_SASL_PASSWORD` is unset.
    #[arg(long, env = "TASKMESH_KAFKA_SASL_PASSWORD_FILE")]
    pub(crate) kafka_sasl_password_file: Option<PathBuf>,

    /// The password of the client key `ssl.key.location` (librdkafka `ssl.key.password`).
    #[arg(long, env = "TASKMESH_KAFKA_SSL_KEY_PASSWORD", hide_env_values = true)]
    pub(crate) kafka_ssl_key_password: Option<SecretString>,

    /// A file holding the client key's password, when `TASKMESH_KAFKA_SSL_KEY_PASSWORD` is
    /// unset.
    #[arg(long, env = "TASKMESH_KAFKA_SSL_KEY_PASSWORD_FILE")]
    pub(crate) kafka_ssl_key_password_file: Option<PathBuf>,

    /// HS256 secret for tokens (development).
    #[arg(long, env = "TASKMESH_JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<SecretString>,

    /// A PEM or JWKS file of RS256/EdDSA public keys (production).
    #[arg(long, env = "TASKMESH_JWT_PUBLIC_KEYS")]
    pub(crate) jwt_public_keys: Option<PathBuf>,

    /// Required `iss` claim, if any (a token without `iss` is then refused).
    #[arg(long, env = "TASKMESH_JWT_ISSUER")]
    pub(crate) jwt_issuer: Option<String>,

    /// OpenID Connect issuers whose access tokens are accepted, keys found by discovery and
    /// refreshed (instead of TASKMESH_JWT_PUBLIC_KEYS / TASKMESH_JWT_SECRET): comma-separated
    /// entries, each an issuer URL with optional `audience=…`, `user_prefix=…`,
    /// `roles_claim=…` (e.g. `https://idp.example.com/realms/main`).
    #[arg(long, env = "TASKMESH_OIDC_ISSUER")]
    pub(crate) oidc_issuer: Option<String>,

    /// The `aud` the identity providers' tokens must name (unless an issuer says otherwise).
    #[arg(long, env = "TASKMESH_OIDC_AUDIENCE", default_value = taskmesh_platform::oidc::DEFAULT_AUDIENCE)]
    pub(crate) oidc_audience: String,

    /// The claim (or dotted path, e.g. `realm_access.roles`) holding a token's roles; the
    /// role `admin` unlocks admin RPCs.
    #[arg(long, env = "TASKMESH_OIDC_ROLES_CLAIM", default_value = taskmesh_platform::oidc::DEFAULT_ROLES_CLAIM)]
    pub(crate) oidc_roles_claim: String,

    /// The web app's client id at the identity provider (a public client using the
    /// authorization code flow with PKCE); set, the web app offers "Sign in" with it.
    #[arg(long, env = "TASKMESH_WEB_OIDC_CLIENT_ID")]
    pub(crate) web_oidc_client_id: Option<String>,

    /// The identity provider the web app signs in with (default: the first of
    /// TASKMESH_OIDC_ISSUER).
    #[arg(long, env = "TASKMESH_WEB_OIDC_ISSUER")]
    pub(crate) web_oidc_issuer: Option<String>,

    /// The scopes the web app asks for, space-separated.
    #[arg(long, env = "TASKMESH_WEB_OIDC_SCOPES", default_value = taskmesh_gateway::sign_in::DEFAULT_SCOPES)]
    pub(crate) web_oidc_scopes: String,

    /// Longest time the identity providers' keys are kept before they are fetched again,
    /// whatever their cache headers allow, and how long the last good keys keep serving
    /// while a provider is unreachable (a token naming an unknown key fetches them at once).
    #[arg(long, env = "TASKMESH_OIDC_KEYS_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub(crate) oidc_keys_max_age: Duration,

    /// Clock skew allowed when checking a token's `exp` and `nbf` (whole seconds count; e.g.
    /// `30s`). A live stream ends this long after its token's `exp`.
    #[arg(long, env = "TASKMESH_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) jwt_leeway: Duration,

    /// Calls per second each user may make to this process (its sustained rate; over it a
    /// call gets RESOURCE_EXHAUSTED with RetryInfo). 0 turns the limit off.
    #[arg(long, env = "TASKMESH_RATE_LIMIT", default_value_t = 100)]
    pub(crate) rate_limit: u32,

    /// Calls each user may make at once above the sustained rate.
    #[arg(long, env = "TASKMESH_RATE_LIMIT_BURST", default_value_t = 200)]
    pub(crate) rate_limit_burst: u32,

    /// Live streams one user may hold on the gateway at once; opening one more ends the
    /// user's oldest with RESOURCE_EXHAUSTED.
    #[arg(long, env = "TASKMESH_MAX_STREAMS_PER_USER", default_value_t = 20)]
    pub(crate) max_streams_per_user: usize,

    /// Tasks one user may have (completed ones count, deleted ones do not); past it
    /// CreateTask gets RESOURCE_EXHAUSTED with a QuotaFailure. A series' next occurrences
    /// count but are never refused. 0 turns the limit off.
    #[arg(long, env = "TASKMESH_MAX_TASKS_PER_USER", default_value_t = taskmesh_task::DEFAULT_MAX_TASKS_PER_USER)]
    pub(crate) max_tasks_per_user: u64,

    /// Most connections the gateway holds open at once; past it new ones are closed at once
    /// (logged).
    #[arg(long, env = "TASKMESH_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub(crate) max_connections: usize,

    /// How long a gateway connection may have no call in progress before it is closed (an
    /// open live stream is a call in progress).
    #[arg(long, env = "TASKMESH_IDLE_CONNECTION_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) idle_connection_timeout: Duration,

    /// How long change-log entries are kept for stream resumption.
    #[arg(long, env = "TASKMESH_CHANGE_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub(crate) change_retention: Duration,

    /// How long audit entries are kept (AuditService's retention job).
    #[arg(long, env = "TASKMESH_AUDIT_RETENTION", default_value = "90d", value_parser = humantime::parse_duration)]
    pub(crate) audit_retention: Duration,
}

impl Common {
    /// The gateway's connection limits.
    pub(crate) fn connection_limits(&self) -> taskmesh_platform::net::ConnectionLimits {
        taskmesh_platform::net::ConnectionLimits {
            max_connections: self.max_connections,
            idle_timeout: self.idle_connection_timeout,
        }
    }
}

/// `taskmesh dev`.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    /// Do not build the web app (by default `dev` runs `npm run build` in `web/` when
    /// `--web-dir` is a checkout's `web/dist` that is missing or older than its sources).
    /// (`TASKMESH_SKIP_WEB_BUILD` takes the usual boolean spellings: `1`/`0`, `true`/`false`,
    /// `yes`/`no`, `on`/`off`.)
    #[arg(
        long,
        env = "TASKMESH_SKIP_WEB_BUILD",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) skip_web_build: bool,

    /// Gateway address: gRPC, grpc-web and the web app.
    #[arg(long, env = "TASKMESH_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// Address of the embedded Kafka-compatible broker (when `KAFKA_BROKERS` is unset).
    #[arg(long, env = "TASKMESH_KAFKA_LISTEN", default_value = "127.0.0.1:9092")]
    pub(crate) kafka_listen: SocketAddr,

    /// Directory for the embedded broker's durable storage, relative to the working
    /// directory.
    #[arg(long, env = "TASKMESH_DATA_DIR", default_value = ".taskmesh")]
    pub(crate) data_dir: PathBuf,

    /// Embedded broker storage URL; overrides `--data-dir` (e.g. `memory://tansu/`).
    #[arg(long, env = "TASKMESH_BROKER_STORAGE")]
    pub(crate) broker_storage: Option<String>,

    /// The built web app to serve.
    #[arg(long, env = "TASKMESH_WEB_DIR", default_value = "web/dist")]
    pub(crate) web_dir: PathBuf,

    /// Origins whose pages may call the gateway cross-origin (CORS), comma-separated
    /// `scheme://host[:port]`, `*` for any, empty for only its own.
    #[arg(long, env = "TASKMESH_CORS_ALLOWED_ORIGINS", default_value = "*")]
    pub(crate) cors_allowed_origins: CorsOrigins,

    #[command(flatten)]
    pub(crate) mcp: McpAccessArgs,
}

/// `taskmesh dlq`.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Put dead-lettered events back on the topic they came from, with their original
    /// `ce_id` (consumers that applied one before skip it), printing each.
    Replay(ReplayArgs),
}

/// `taskmesh dlq replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    /// The topic whose dead letters to replay (its `.dlq`), by base name.
    #[arg(long, value_parser = topic_parser())]
    pub(crate) topic: Topic,

    /// Only events dead-lettered at or after this instant (RFC 3339, e.g.
    /// `2026-11-30T08:00:00Z`).
    #[arg(long, value_parser = parse_time)]
    pub(crate) since: Option<chrono::DateTime<chrono::Utc>>,

    /// Only events dead-lettered before this instant (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub(crate) until: Option<chrono::DateTime<chrono::Utc>>,

    /// Only events of this CloudEvent type (e.g. `dev.taskmesh.task.created.v1`).
    #[arg(long = "type")]
    pub(crate) event_type: Option<String>,

    /// Print what would be replayed; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 instant ({e}), e.g. 2026-11-30T08:00:00Z"))
}

/// A topic of the mesh by its base name (`task-events`, ...): [`Topic::ALL`] are the choices.
fn topic_parser() -> impl clap::builder::TypedValueParser<Value = Topic> {
    clap::builder::PossibleValuesParser::new(Topic::ALL.map(Topic::base_name)).try_map(
        |name: String| {
            Topic::ALL
                .into_iter()
                .find(|topic| topic.base_name() == name)
                .ok_or_else(|| format!("no topic {name:?}"))
        },
    )
}

/// `taskmesh check-config`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) common: Common,

    /// Do not look for the topics (before `taskmesh migrate` has created them).
    #[arg(long)]
    pub(crate) skip_topics: bool,
}

/// `taskmesh serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Which component.
    pub(crate) component: Component,

    #[command(flatten)]
    pub(crate) common: Common,

    /// Listen address; defaults per component (task :50051, reminder :50052, recurrence
    /// :50053, audit :50054, gateway 127.0.0.1:8080).
    #[arg(long, env = "TASKMESH_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,

    /// The internal listener: Prometheus `/metrics` (HTTP), `grpc.health.v1` and server
    /// reflection (gRPC), for probes and scrapers, apart from the public port's limits.
    #[arg(long, env = "TASKMESH_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
    pub(crate) metrics_listen: SocketAddr,

    /// Whether server reflection is also served on the public port (`false`: only on the
    /// internal listener). Health is served on both.
    #[arg(
        long,
        env = "TASKMESH_PUBLIC_REFLECTION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) public_reflection: bool,

    /// TaskService address, for the gateway and RecurrenceService.
    #[arg(
        long,
        env = "TASKMESH_TASK_SERVICE",
        default_value = "http://127.0.0.1:50051"
    )]
    pub(crate) task_service: String,

    /// ReminderService address, for the gateway.
    #[arg(
        long,
        env = "TASKMESH_REMINDER_SERVICE",
        default_value = "http://127.0.0.1:50052"
    )]
    pub(crate) reminder_service: String,

    /// RecurrenceService address, for the gateway.
    #[arg(
        long,
        env = "TASKMESH_RECURRENCE_SERVICE",
        default_value = "http://127.0.0.1:50053"
    )]
    pub(crate) recurrence_service: String,

    /// AuditService address, for the gateway.
    #[arg(
        long,
        env = "TASKMESH_AUDIT_SERVICE",
        default_value = "http://127.0.0.1:50054"
    )]
    pub(crate) audit_service: String,

    /// The built web app, for the gateway; unset serves a short index page.
    #[arg(long, env = "TASKMESH_WEB_DIR")]
    pub(crate) web_dir: Option<PathBuf>,

    /// Origins whose pages may call the gateway cross-origin (CORS), comma-separated
    /// `scheme://host[:port]`, or `*` for any; empty: only the gateway's own origin (the web
    /// app it serves).
    #[arg(long, env = "TASKMESH_CORS_ALLOWED_ORIGINS", default_value = "")]
    pub(crate) cors_allowed_origins: CorsOrigins,

    #[command(flatten)]
    pub(crate) mcp: McpAccessArgs,
}

/// Who may reach the gateway's MCP endpoint (`/mcp`).
#[derive(Debug, Args)]
pub(crate) struct McpAccessArgs {
    /// Host names (or `host:port`) MCP requests may carry in `Host`, comma-separated; a name
    /// without a port matches any port; `*` accepts any host; empty: the loopback names
    /// (`localhost`, `127.0.0.1`, `::1`). Guards against DNS rebinding: list the names
    /// clients reach the gateway by.
    #[arg(long, env = "TASKMESH_MCP_ALLOWED_HOSTS", default_value = "")]
    pub(crate) mcp_allowed_hosts: String,

    /// Browser origins allowed to call `/mcp` (`scheme://host[:port]`, `:*` for any port),
    /// comma-separated; empty: the loopback origins on any port. A request with another
    /// `Origin` gets 403 (requests without `Origin`, i.e. not from a browser page, pass).
    #[arg(long, env = "TASKMESH_MCP_ALLOWED_ORIGINS", default_value = "")]
    pub(crate) mcp_allowed_origins: String,
}

impl McpAccessArgs {
    /// The gateway's setting.
    ///
    /// # Errors
    /// An entry that is not a host (or `host:port`), or not an origin.
    pub(crate) fn access(
        &self,
    ) -> Result<taskmesh_gateway::McpAccess, taskmesh_gateway::mcp::BadAccess> {
        taskmesh_gateway::McpAccess::new([&self.mcp_allowed_hosts], [&self.mcp_allowed_origins])
    }
}

/// `taskmesh mcp`.
#[derive(Debug, Args)]
pub(crate) struct McpArgs {
    /// Speak MCP over stdin/stdout (the only transport of this command; Streamable HTTP is
    /// served by the gateway at `/mcp`).
    #[arg(long, required = true)]
    pub(crate) stdio: bool,

    /// The gateway to call, e.g. `http://127.0.0.1:8080`.
    #[arg(
        long,
        env = "TASKMESH_GATEWAY",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) gateway: String,

    /// The bearer token the tools act with (e.g. the last line of `taskmesh token --sub
    /// alice`).
    #[arg(long, env = "TASKMESH_TOKEN", hide_env_values = true)]
    pub(crate) token: SecretString,
}

/// The mesh's components.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Component {
    /// TaskService (:50051).
    Task,
    /// ReminderService (:50052).
    Reminder,
    /// RecurrenceService (:50053).
    Recurrence,
    /// AuditService (:50054).
    Audit,
    /// The grpc-web gateway (127.0.0.1:8080).
    Gateway,
}

/// `taskmesh token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub(crate) sub: String,

    /// Add the `admin` role.
    #[arg(long)]
    pub(crate) admin: bool,

    /// Validity, e.g. `1h`, `30m`, `7d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub(crate) ttl: Duration,

    /// HS256 secret; unset means the development secret `taskmesh dev` uses.
    #[arg(long, env = "TASKMESH_JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<SecretString>,

    /// PEM private key (RS256 or EdDSA) to sign with instead of the secret.
    #[arg(long, env = "TASKMESH_JWT_PRIVATE_KEY", hide_env_values = true)]
    pub(crate) jwt_private_key: Option<SecretString>,

    /// `kid` header for a private-key signature.
    #[arg(long, env = "TASKMESH_JWT_KID")]
    pub(crate) jwt_kid: Option<String>,

    /// `iss` claim.
    #[arg(long, env = "TASKMESH_JWT_ISSUER")]
    pub(crate) jwt_issuer: Option<String>,
}
