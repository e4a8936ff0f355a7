//! The whole mesh in one process: TaskService, ReminderService, RecurrenceService,
//! AuditService and the gateway, each under its own supervisor, sharing one shutdown token so
//! that one component failing stops them all. `taskmesh dev` runs it, and so does the test
//! harness (`taskmesh-testkit`), so tests run what developers run.

use std::{net::SocketAddr, num::NonZeroU64, path::PathBuf, time::Duration};

use anyhow::Context as _;
use taskmesh_audit::AuditServer;
use taskmesh_gateway::{CorsOrigins, Gateway, GatewayConfig};
use taskmesh_platform::{
    auth::Verifier,
    db,
    kafka::KafkaConfig,
    net::ConnectionLimits,
    runtime::{Failure, Introspection},
    shutdown::CancellationToken,
};
use taskmesh_recurrence::RecurrenceServer;
use taskmesh_reminder::ReminderServer;
use taskmesh_task::TaskServer;
use tokio::net::TcpListener;

/// What the mesh needs.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The PostgreSQL database (it must exist; each service migrates its own schema).
    pub database_url: String,
    /// Kafka, with the topics created.
    pub kafka: KafkaConfig,
    /// Token verification, shared by every component.
    pub verifier: Verifier,
    /// Change-log, request-id and dedupe retention.
    pub change_retention: Duration,
    /// Audit-log retention.
    pub audit_retention: Duration,
    /// The gateway's address (port 0 picks a free one); the services listen on free loopback
    /// ports.
    pub gateway_listen: SocketAddr,
    /// The built web app the gateway serves, if any.
    pub web_dir: Option<PathBuf>,
    /// Connections of each service's pool.
    pub pool_size: u32,
    /// Run TaskService's outbox relay (tests turn it off to hold events in the outbox).
    pub relay: bool,
    /// Run ReminderService's scheduler (tests turn it off to fire with their own clock).
    pub scheduler: bool,
    /// Run RecurrenceService's outbox relay (tests turn it off to hold its commands).
    pub recurrence_relay: bool,
    /// The origins whose pages may call the gateway cross-origin.
    pub cors: CorsOrigins,
    /// The `Host` and `Origin` values the gateway's MCP endpoint accepts.
    pub mcp: taskmesh_gateway::McpAccess,
    /// How the web app signs people in.
    pub web_sign_in: taskmesh_gateway::sign_in::WebSignIn,
    /// The gateway's connection limits.
    pub connection_limits: ConnectionLimits,
    /// Live streams one user may hold at once on the gateway.
    pub max_streams_per_user: usize,
    /// Tasks one user may have (see `TaskServer::max_tasks_per_user`); `None`: no limit.
    pub max_tasks_per_user: Option<NonZeroU64>,
}

impl MeshConfig {
    /// Everything on, as `taskmesh dev` runs it: pools of 16, retention 7 days (changes) and
    /// 90 days (audit), no web app, cross-origin calls from any origin, 100,000 tasks per
    /// user.
    pub fn new(database_url: String, kafka: KafkaConfig, verifier: Verifier) -> Self {
        Self {
            database_url,
            kafka,
            verifier,
            change_retention: taskmesh_task::DEFAULT_RETENTION,
            audit_retention: taskmesh_audit::retention::DEFAULT_RETENTION,
            gateway_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            web_dir: None,
            pool_size: 16,
            relay: true,
            scheduler: true,
            recurrence_relay: true,
            cors: CorsOrigins::Any,
            mcp: taskmesh_gateway::McpAccess::default(),
            web_sign_in: taskmesh_gateway::sign_in::WebSignIn::default(),
            connection_limits: ConnectionLimits::default(),
            max_streams_per_user: taskmesh_gateway::DEFAULT_MAX_STREAMS_PER_USER,
            max_tasks_per_user: NonZeroU64::new(taskmesh_task::DEFAULT_MAX_TASKS_PER_USER),
        }
    }
}

/// Each service's pool, on its own schema.
#[derive(Clone, Debug)]
pub struct Pools {
    /// Schema `task`.
    pub task: sqlx::PgPool,
    /// Schema `reminder`.
    pub reminder: sqlx::PgPool,
    /// Schema `recurrence`.
    pub recurrence: sqlx::PgPool,
    /// Schema `audit`.
    pub audit: sqlx::PgPool,
}

/// Where each component listens.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    /// TaskService.
    pub task: SocketAddr,
    /// ReminderService.
    pub reminder: SocketAddr,
    /// RecurrenceService.
    pub recurrence: SocketAddr,
    /// AuditService.
    pub audit: SocketAddr,
    /// The gateway (gRPC, grpc-web, the web app, `/metrics`).
    pub gateway: SocketAddr,
}

/// The mesh, migrated and bound, not yet running.
#[derive(Debug)]
pub struct Mesh {
    /// Each service's pool.
    pub pools: Pools,
    /// Each component's address.
    pub addrs: Addrs,
    config: MeshConfig,
    listeners: [TcpListener; 4],
    gateway: Gateway,
}

/// Applies every service's migrations to `database_url` (which must exist), one pool per
/// schema, and returns the pools.
///
/// # Errors
/// The database cannot be reached or a migration fails.
pub async fn migrate(database_url: &str, pool_size: u32) -> anyhow::Result<Pools> {
    let pool = |schema: &'static str, migrations: &'static db::Migrations| async move {
        let pool = db::connect(database_url, schema, pool_size)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL for schema {schema}"))?;
        db::migrate(&pool, migrations)
            .await
            .with_context(|| format!("migrating schema {schema}"))?;
        anyhow::Ok(pool)
    };
    Ok(Pools {
        task: pool(taskmesh_task::SCHEMA, &taskmesh_task::MIGRATIONS).await?,
        reminder: pool(taskmesh_reminder::SCHEMA, &taskmesh_reminder::MIGRATIONS).await?,
        recurrence: pool(
            taskmesh_recurrence::SCHEMA,
            &taskmesh_recurrence::MIGRATIONS,
        )
        .await?,
        audit: pool(taskmesh_audit::SCHEMA, &taskmesh_audit::MIGRATIONS).await?,
    })
}

impl Mesh {
    /// Migrates every schema and binds every listener.
    ///
    /// # Errors
    /// The database cannot be reached, a migration fails, or an address cannot be bound.
    pub async fn bind(config: MeshConfig) -> anyhow::Result<Self> {
        let pools = migrate(&config.database_url, config.pool_size).await?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = [
            TcpListener::bind(loopback).await?,
            TcpListener::bind(loopback).await?,
            TcpListener::bind(loopback).await?,
            TcpListener::bind(loopback).await?,
        ];
        let [task, reminder, recurrence, audit] = [
            listeners[0].local_addr()?,
            listeners[1].local_addr()?,
            listeners[2].local_addr()?,
            listeners[3].local_addr()?,
        ];
        let gateway = Gateway::bind(
            config.gateway_listen,
            GatewayConfig {
                task_service: format!("http://{task}"),
                reminder_service: format!("http://{reminder}"),
                recurrence_service: format!("http://{recurrence}"),
                audit_service: format!("http://{audit}"),
                kafka: config.kafka.clone(),
                verifier: config.verifier.clone(),
                metrics: true,
                web_dir: config.web_dir.clone(),
                cors: config.cors.clone(),
                mcp: config.mcp.clone(),
                web_sign_in: config.web_sign_in.clone(),
                connection_limits: config.connection_limits,
                max_streams_per_user: config.max_streams_per_user,
                introspection: Introspection::default(),
            },
        )
        .await
        .with_context(|| format!("cannot listen on {}", config.gateway_listen))?;
        let addrs = Addrs {
            task,
            reminder,
            recurrence,
            audit,
            gateway: gateway.local_addr()?,
        };
        Ok(Self {
            pools,
            addrs,
            config,
            listeners,
            gateway,
        })
    }

    /// Runs every component until `shutdown` is cancelled or one of them fails; a failure
    /// cancels `shutdown`, so the others stop too.
    ///
    /// # Errors
    /// The first component's failure: a [`Failure`] (already logged) of a background task or
    /// server, or an error starting a component.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            pools,
            addrs,
            config,
            listeners,
            gateway,
        } = self;
        let [
            task_listener,
            reminder_listener,
            recurrence_listener,
            audit_listener,
        ] = listeners;
        let task = TaskServer {
            pool: pools.task,
            kafka: config.kafka.clone(),
            verifier: config.verifier.clone(),
            retention: config.change_retention,
            relay: config.relay,
            max_tasks_per_user: config.max_tasks_per_user,
            introspection: Introspection::default(),
        };
        let reminder = ReminderServer {
            pool: pools.reminder,
            kafka: config.kafka.clone(),
            verifier: config.verifier.clone(),
            retention: config.change_retention,
            relay: true,
            scheduler: config.scheduler,
            introspection: Introspection::default(),
        };
        let recurrence = RecurrenceServer {
            pool: pools.recurrence,
            kafka: config.kafka.clone(),
            verifier: config.verifier.clone(),
            task_service: format!("http://{}", addrs.task),
            retention: config.change_retention,
            relay: config.recurrence_relay,
            introspection: Introspection::default(),
        };
        let audit = AuditServer {
            pool: pools.audit,
            kafka: config.kafka.clone(),
            verifier: config.verifier.clone(),
            retention: config.audit_retention,
            dedupe_retention: config.change_retention,
            introspection: Introspection::default(),
        };
        // A component that stops with an error (a failure, or one that never started) stops
        // the others.
        let stop_all = |component: &'static str, result: anyhow::Result<()>| {
            if result.is_err() {
                shutdown.cancel();
            }
            result.with_context(|| format!("{component} stopped"))
        };
        // Boxed: five servers' futures side by side would make one very large future.
        let (task, reminder, recurrence, audit, gateway) = tokio::join!(
            Box::pin(async {
                stop_all(
                    "task service",
                    task.serve(task_listener, shutdown.clone()).await,
                )
            }),
            Box::pin(async {
                stop_all(
                    "reminder service",
                    reminder.serve(reminder_listener, shutdown.clone()).await,
                )
            }),
            Box::pin(async {
                stop_all(
                    "recurrence service",
                    recurrence
                        .serve(recurrence_listener, shutdown.clone())
                        .await,
                )
            }),
            Box::pin(async {
                stop_all(
                    "audit service",
                    audit.serve(audit_listener, shutdown.clone()).await,
                )
            }),
            Box::pin(async { stop_all("gateway", gateway.serve(shutdown.clone()).await) }),
        );
        // The failure that came first is the cause; the others (if any) followed from it.
        let mut results = [task, reminder, recurrence, audit, gateway];
        if let Some(first) = results
            .iter()
            .position(|r| {
                r.as_ref()
                    .err()
                    .is_some_and(|e| e.downcast_ref::<Failure>().is_some())
            })
            .or_else(|| results.iter().position(Result::is_err))
        {
            return std::mem::replace(&mut results[first], Ok(()));
        }
        Ok(())
    }
}
