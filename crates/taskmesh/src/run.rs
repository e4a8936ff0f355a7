//! Starting components from the parsed command line.

use std::net::SocketAddr;

use anyhow::Context as _;
use secrecy::SecretString;
use taskmesh::mesh::{self, Mesh, MeshConfig};
use taskmesh_audit::AuditServer;
use taskmesh_gateway::{Gateway, GatewayConfig, sign_in::WebSignIn};
use taskmesh_platform::{
    auth::{DEV_SECRET, Signer, Verifier},
    db,
    kafka::KafkaConfig,
    runtime::Introspection,
    shutdown,
};
use taskmesh_recurrence::RecurrenceServer;
use taskmesh_reminder::ReminderServer;
use taskmesh_task::TaskServer;
use tokio::net::TcpListener;

use crate::{
    cli::{
        Cli, Command, Common, Component, DevArgs, DlqCommand, McpArgs, ReplayArgs, ServeArgs,
        TokenArgs,
    },
    config,
};

/// Runs the chosen subcommand to completion.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => dev(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Migrate(common) => migrate(&common).await,
        Command::CheckConfig(args) => crate::check::run(&args).await,
        Command::Dlq(DlqCommand::Replay(args)) => replay(&args).await,
        Command::Token(args) => token(&args),
        Command::Mcp(args) => mcp(&args).await,
    }
}

/// A pool on `schema` of `DATABASE_URL`.
async fn pool(common: &Common, schema: &str) -> anyhow::Result<sqlx::PgPool> {
    let pool = db::connect(&common.database_url, schema, common.database_pool_size)
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")?;
    Ok(pool)
}

/// Applies every service's migrations to its schema.
async fn migrate_all(common: &Common) -> anyhow::Result<()> {
    let pools = mesh::migrate(&common.database_url, 1).await?;
    for pool in [pools.task, pools.reminder, pools.recurrence, pools.audit] {
        pool.close().await;
    }
    Ok(())
}

async fn migrate(common: &Common) -> anyhow::Result<()> {
    db::ensure_database(&common.database_url)
        .await
        .context("cannot create the database (DATABASE_URL)")?;
    migrate_all(common).await?;
    tracing::info!("migrations applied");
    let brokers = common
        .kafka_brokers
        .clone()
        .context("KAFKA_BROKERS is required to create topics")?;
    let kafka = config::kafka(common, brokers)?;
    tracing::info!(config = %config::summary(common, Some(&kafka), None), "migrating");
    kafka
        .create_topics()
        .await
        .context("cannot create Kafka topics")?;
    tracing::info!("topics ready");
    Ok(())
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let common = &args.common;
    let (verifier, keys) = config::verifier(common, true)?;
    fetch_issuer_keys(&verifier);

    db::ensure_database(&common.database_url)
        .await
        .context("cannot reach PostgreSQL or create the database (DATABASE_URL)")?;

    #[cfg(feature = "embedded-broker")]
    let mut broker = None;
    let brokers = match &common.kafka_brokers {
        Some(brokers) => brokers.clone(),
        None => {
            #[cfg(feature = "embedded-broker")]
            {
                let started = start_broker(&args).await?;
                let servers = started.bootstrap_servers();
                broker = Some(started);
                servers
            }
            #[cfg(not(feature = "embedded-broker"))]
            anyhow::bail!("KAFKA_BROKERS is unset and this build has no embedded broker")
        }
    };
    let kafka = config::kafka(common, brokers)?;
    tracing::info!(config = %config::summary(common, Some(&kafka), Some(&keys)), "starting taskmesh dev");
    kafka
        .create_topics()
        .await
        .context("cannot create Kafka topics")?;

    if !args.skip_web_build {
        crate::web::ensure_built(args.web_dir.clone()).await;
    }
    let mut config = MeshConfig::new(common.database_url.clone(), kafka, verifier);
    config.pool_size = common.database_pool_size;
    config.change_retention = common.change_retention;
    config.audit_retention = common.audit_retention;
    config.gateway_listen = args.listen;
    config.cors = args.cors_allowed_origins.clone();
    config.mcp = args
        .mcp
        .access()
        .context("TASKMESH_MCP_ALLOWED_HOSTS / _ORIGINS")?;
    config.connection_limits = common.connection_limits();
    config.max_streams_per_user = common.max_streams_per_user;
    config.max_tasks_per_user = std::num::NonZeroU64::new(common.max_tasks_per_user);
    config.web_dir = args.web_dir.is_dir().then(|| args.web_dir.clone());
    config.web_sign_in = config::web_sign_in(common, &keys)?;
    let sign_in = match &config.web_sign_in {
        WebSignIn::Oidc { issuer, .. } => format!("the web app signs in with {issuer}"),
        WebSignIn::Development(_) => "the web app signs in anyone by name (development); \
             other clients use the last line of `taskmesh token --sub alice`"
            .to_owned(),
        WebSignIn::Token => "tokens: the last line of `taskmesh token --sub alice`".to_owned(),
    };
    let mesh = Mesh::bind(config).await?;
    let gateway_addr = mesh.addrs.gateway;
    tracing::info!(
        "taskmesh dev is up: gRPC and grpc-web at {gateway_addr}; the web app at http://{gateway_addr}/, MCP at http://{gateway_addr}/mcp ({sign_in})"
    );
    let run = mesh.run(shutdown.clone());
    #[cfg(feature = "embedded-broker")]
    let run = supervise_broker(run, broker, shutdown);
    run.await?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the mesh with the embedded broker (if any) supervised like a component: when the
/// broker stops, the mesh stops, with the broker's reason.
#[cfg(feature = "embedded-broker")]
async fn supervise_broker(
    run: impl std::future::Future<Output = anyhow::Result<()>>,
    broker: Option<taskmesh_platform::broker::EmbeddedBroker>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let Some(mut broker) = broker else {
        return run.await;
    };
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result,
        failure = broker.stopped() => {
            // Logged once, by main.
            shutdown.cancel();
            if let Err(error) = run.await {
                tracing::warn!(error = %format!("{error:#}"), "the mesh stopped with an error after the broker");
            }
            Err(failure.into())
        }
    }
}

#[cfg(feature = "embedded-broker")]
async fn start_broker(args: &DevArgs) -> anyhow::Result<taskmesh_platform::broker::EmbeddedBroker> {
    let storage = match &args.broker_storage {
        Some(storage) => storage.clone(),
        None => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
            sqlite_url(&args.data_dir)?
        }
    };
    tracing::info!(%storage, addr = %args.kafka_listen, "starting the embedded Kafka-compatible broker");
    Ok(taskmesh_platform::broker::EmbeddedBroker::start(args.kafka_listen, &storage).await?)
}

/// tansu opens `sqlite://FILE` relative to the working directory, so the path must be
/// relative.
#[cfg(feature = "embedded-broker")]
fn sqlite_url(dir: &std::path::Path) -> anyhow::Result<String> {
    let file = dir.join("broker.db");
    let relative = if file.is_absolute() {
        let cwd = std::env::current_dir()?;
        file.strip_prefix(&cwd)
            .map(std::path::Path::to_path_buf)
            .map_err(|_| anyhow::anyhow!("--data-dir must be inside the working directory"))?
    } else {
        file
    };
    Ok(format!("sqlite://{}", relative.display()))
}

/// Starts fetching the OpenID Connect issuers' keys, if the verifier uses any, so that the
/// first calls find them (a one-off task: a failure is logged and the keys are fetched again
/// when a token of that issuer arrives).
fn fetch_issuer_keys(verifier: &taskmesh_platform::auth::Verifier) {
    if let Some(oidc) = verifier.oidc() {
        tokio::spawn(async move {
            // Logged per issuer by fetch_all.
            let _ = oidc.fetch_all().await;
        });
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // The recorder first, so nothing a task records before the internal listener is up (a
    // degraded task, the partitions a consumer owns) is lost.
    taskmesh_platform::metrics::handle();
    let shutdown = shutdown::on_signal();
    let common = &args.common;
    let (verifier, keys) = config::verifier(common, false)?;
    fetch_issuer_keys(&verifier);
    let brokers = common
        .kafka_brokers
        .clone()
        .context("KAFKA_BROKERS is required")?;
    let kafka = config::kafka(common, brokers)?;
    tracing::info!(component = ?args.component, config = %config::summary(common, Some(&kafka), Some(&keys)), "starting");
    serve_component(&args, common, (verifier, keys), kafka, shutdown).await
}

/// Runs the component `args` names until `shutdown`.
async fn serve_component(
    args: &ServeArgs,
    common: &Common,
    (verifier, keys): (Verifier, config::KeySource),
    kafka: KafkaConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let introspection = Introspection {
        internal_listen: Some(args.metrics_listen),
        public_reflection: args.public_reflection,
    };
    match args.component {
        Component::Task => {
            let addr = args
                .listen
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 50051)));
            let pool = pool(common, taskmesh_task::SCHEMA).await?;
            let listener = TcpListener::bind(addr).await?;
            TaskServer {
                pool,
                kafka,
                verifier,
                retention: common.change_retention,
                relay: true,
                max_tasks_per_user: std::num::NonZeroU64::new(common.max_tasks_per_user),
                introspection,
            }
            .serve(listener, shutdown)
            .await
        }
        Component::Gateway => {
            let addr = args
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
            Gateway::bind(
                addr,
                GatewayConfig {
                    task_service: args.task_service.clone(),
                    reminder_service: args.reminder_service.clone(),
                    recurrence_service: args.recurrence_service.clone(),
                    audit_service: args.audit_service.clone(),
                    kafka,
                    verifier,
                    metrics: false,
                    web_dir: args.web_dir.clone(),
                    cors: args.cors_allowed_origins.clone(),
                    mcp: args
                        .mcp
                        .access()
                        .context("TASKMESH_MCP_ALLOWED_HOSTS / _ORIGINS")?,
                    web_sign_in: config::web_sign_in(common, &keys)?,
                    connection_limits: common.connection_limits(),
                    max_streams_per_user: common.max_streams_per_user,
                    introspection,
                },
            )
            .await?
            .serve(shutdown)
            .await
        }
        Component::Reminder => {
            let addr = args
                .listen
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 50052)));
            let pool = pool(common, taskmesh_reminder::SCHEMA).await?;
            let listener = TcpListener::bind(addr).await?;
            ReminderServer {
                pool,
                kafka,
                verifier,
                retention: common.change_retention,
                relay: true,
                scheduler: true,
                introspection,
            }
            .serve(listener, shutdown)
            .await
        }
        Component::Recurrence => {
            let addr = args
                .listen
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 50053)));
            let pool = pool(common, taskmesh_recurrence::SCHEMA).await?;
            let listener = TcpListener::bind(addr).await?;
            RecurrenceServer {
                pool,
                kafka,
                verifier,
                task_service: args.task_service.clone(),
                retention: common.change_retention,
                relay: true,
                introspection,
            }
            .serve(listener, shutdown)
            .await
        }
        Component::Audit => {
            let addr = args
                .listen
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 50054)));
            let pool = pool(common, taskmesh_audit::SCHEMA).await?;
            let listener = TcpListener::bind(addr).await?;
            AuditServer {
                pool,
                kafka,
                verifier,
                retention: common.audit_retention,
                dedupe_retention: common.change_retention,
                introspection,
            }
            .serve(listener, shutdown)
            .await
        }
    }
}

/// `taskmesh dlq replay`: prints one line per dead letter, then a summary.
async fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let brokers = common
        .kafka_brokers
        .clone()
        .context("KAFKA_BROKERS is required")?;
    let kafka = config::kafka(common, brokers)?;
    let filter = taskmesh_platform::dlq::Filter {
        since: args.since,
        until: args.until,
        event_type: args.event_type.clone(),
    };
    let topic = args.topic;
    let seen = taskmesh_platform::dlq::replay(&kafka, topic, &filter, args.dry_run)
        .await
        .with_context(|| format!("replaying {}", kafka.dead_letter_topic(topic)))?;
    let verb = if args.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    for letter in &seen {
        let when = letter
            .dead_lettered
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let what = if letter.selected { verb } else { "skipped" };
        println!(
            "{what} {} {} (dead-lettered {when} by {}: {})",
            letter.event_id, letter.event_type, letter.consumer, letter.reason
        );
    }
    let selected = seen.iter().filter(|l| l.selected).count();
    println!(
        "{verb} {selected} of {} dead letters to {}",
        seen.len(),
        kafka.topic(topic)
    );
    Ok(())
}

/// `taskmesh mcp --stdio`: the MCP tools on stdin/stdout (logs go to stderr), until the host
/// closes stdin or a shutdown signal.
async fn mcp(args: &McpArgs) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let shutdown = shutdown::on_signal();
    taskmesh_gateway::mcp::serve_stdio(&args.gateway, args.token.expose_secret(), shutdown)
        .await
        .context("MCP over stdio")
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let signer = match (&args.jwt_private_key, &args.jwt_secret) {
        (Some(pem), _) => Signer::from_private_key_pem(pem, args.jwt_kid.clone())?,
        (None, Some(secret)) => Signer::hs256(secret),
        (None, None) => Signer::hs256(&SecretString::from(DEV_SECRET)),
    }
    .with_issuer(args.jwt_issuer.clone());
    let roles = if args.admin {
        vec!["admin".to_owned()]
    } else {
        Vec::new()
    };
    let token = signer.mint(&args.sub, &roles, args.ttl)?;
    println!("{token}");
    Ok(())
}
