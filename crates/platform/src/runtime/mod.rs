//! The component runtime: what every `taskmesh serve` component, `taskmesh dev` and the test
//! harness run a component with.
//!
//! A component is a gRPC server plus background tasks (consumers, outbox relays, the
//! scheduler, retention, the gateway's hub). [`Supervisor`] runs both: a task that ends or
//! panics before shutdown fails the component loudly (NOT_SERVING, the cause logged once,
//! everything else stopped, a non-zero exit); a transient failure is retried inside its task
//! with [`Backoff`] and reported as degraded health and a metric. [`Health`] publishes
//! liveness, readiness and overall health on `grpc.health.v1`.
//!
//! # Layout
//! - [`supervisor`]: [`Supervisor`], [`TaskContext`], [`TaskHealth`], [`Failure`].
//! - [`health`]: [`Health`] and its service names ([`health::LIVENESS`],
//!   [`health::READINESS`]).
//! - [`backoff`]: [`Backoff`], capped exponential delays with jitter.

pub mod backoff;
pub mod health;
pub mod supervisor;

pub use backoff::Backoff;
pub use health::Health;
pub use supervisor::{Failure, Supervisor, TaskContext, TaskHealth};

use std::{any::Any, net::SocketAddr};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::pb::health_server::{Health as HealthCheck, HealthServer};

/// Where a component answers the unauthenticated introspection endpoints: `/metrics`,
/// `grpc.health.v1` and server reflection (v1 and v1alpha).
///
/// With an internal listener (`taskmesh serve`: `TASKMESH_METRICS_LISTEN`), all three are
/// served there, apart from the public port's connection cap, load shedding and clients:
/// Kubernetes probes and Prometheus use it, and a flood on the public port fails neither.
/// Health stays on the public port too (gRPC clients and the gateway's health mirror ask
/// there); reflection does unless [`Introspection::public_reflection`] is off.
#[derive(Clone, Copy, Debug)]
pub struct Introspection {
    /// The internal listener's address; `None`: no internal listener (`taskmesh dev`, whose
    /// gateway serves `/metrics` on its own port).
    pub internal_listen: Option<SocketAddr>,
    /// Whether server reflection is also served on the public port.
    pub public_reflection: bool,
}

impl Default for Introspection {
    /// No internal listener, reflection on the public port.
    fn default() -> Self {
        Self {
            internal_listen: None,
            public_reflection: true,
        }
    }
}

impl Introspection {
    /// `routes` for the public port: with `health`, and reflection unless it is internal
    /// only.
    ///
    /// # Errors
    /// A reflection set-up failure (a build defect).
    pub fn public_routes<H: HealthCheck>(
        &self,
        routes: Routes,
        health: HealthServer<H>,
    ) -> anyhow::Result<Routes> {
        let routes = routes.add_service(health);
        Ok(if self.public_reflection {
            crate::grpc::reflection(routes)?
        } else {
            routes
        })
    }

    /// Binds the internal listener, when there is one, and serves `/metrics`, `health` and
    /// reflection on it (HTTP/1.1 and HTTP/2) as a task of `supervisor`, until shutdown.
    ///
    /// # Errors
    /// The address cannot be bound; a reflection set-up failure (a build defect).
    pub async fn serve_internal<H: HealthCheck>(
        &self,
        supervisor: &mut Supervisor,
        health: HealthServer<H>,
    ) -> anyhow::Result<()> {
        let Some(addr) = self.internal_listen else {
            return Ok(());
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (internal: /metrics, health)"))?;
        let router = crate::grpc::reflection(Routes::new(health))?
            .into_axum_router()
            .merge(crate::metrics::router());
        tracing::info!(%addr, "internal listener: /metrics, grpc.health.v1, reflection");
        supervisor.spawn("internal listener", move |ctx| async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(ctx.shutdown.cancelled_owned())
                .await
                .context("internal listener")
        });
        Ok(())
    }
}

/// Serves a gRPC service component: `routes` (its services, already behind authentication)
/// plus `grpc.health.v1` and server reflection on `listener` and the internal listener (as
/// `introspection` says), with `supervisor`'s tasks, until shutdown or failure. `services`
/// are the full names of the services in `routes`; their health follows readiness.
///
/// # Errors
/// [`Failure`] of a task or of the server (already logged); the internal listener cannot be
/// bound; a reflection set-up failure (a build defect).
pub async fn serve_grpc(
    mut supervisor: Supervisor,
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    introspection: Introspection,
) -> anyhow::Result<()> {
    for service in services {
        supervisor.health().add_service(service);
    }
    let (reporter, health_service) = tonic_health::server::health_reporter();
    introspection
        .serve_internal(&mut supervisor, health_service.clone())
        .await?;
    let routes = introspection.public_routes(routes, health_service)?;
    let component = supervisor.component();
    tracing::info!(%component, addr = %listener.local_addr()?, "listening");
    let server = crate::grpc::serve(component, listener, routes, supervisor.shutdown());
    supervisor.run(reporter, server).await?;
    Ok(())
}

/// The message a panic carried (`panic!("...")` or a formatted one), or `"a panic"`.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}
