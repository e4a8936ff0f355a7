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

use std::any::Any;

use tokio::net::TcpListener;
use tonic::service::Routes;

/// Serves a gRPC service component: `routes` (its services, already behind authentication)
/// plus `grpc.health.v1` and server reflection on `listener`, with `supervisor`'s tasks,
/// until shutdown or failure. `services` are the full names of the services in `routes`;
/// their health follows readiness.
///
/// # Errors
/// [`Failure`] of a task or of the server (already logged); a reflection set-up failure (a
/// build defect).
pub async fn serve_grpc(
    supervisor: Supervisor,
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
) -> anyhow::Result<()> {
    for service in services {
        supervisor.health().add_service(service);
    }
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let routes = crate::grpc::reflection(routes.add_service(health_service))?;
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
