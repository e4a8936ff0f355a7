//! gRPC server plumbing shared by every component: serving with graceful shutdown, health
//! (`grpc.health.v1`), server reflection (v1 and v1alpha, so `grpcurl` of any age works), and
//! the `INVALID_ARGUMENT` with field violations that bad input gets (AIP-193).

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, service::Routes, transport::server::TcpIncoming};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Server reflection services (v1 and v1alpha) over every taskmesh file.
///
/// # Errors
/// When the embedded descriptor set does not decode (a build defect).
pub fn reflection(routes: Routes) -> Result<Routes, tonic_reflection::server::Error> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(taskmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(taskmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(routes.add_service(v1).add_service(v1alpha))
}

/// Serves `routes` (HTTP/2 gRPC) of `component` (its label on the RPC metrics) on `listener`
/// until `shutdown` is cancelled, then finishes in-flight calls.
///
/// # Errors
/// A transport error of the server.
pub async fn serve(
    component: &'static str,
    listener: TcpListener,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .layer(crate::metrics::RpcLayer::new(component))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// Field violations collected while validating a request (`google.rpc.BadRequest`).
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` (a path such as `task.due.time_zone`) is wrong, and why.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, else the `INVALID_ARGUMENT` status carrying every violation.
    ///
    /// # Errors
    /// The status, as described.
    pub fn check(self) -> Result<(), Status> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.into_status())
        }
    }

    /// The `INVALID_ARGUMENT` status carrying every violation; its message lists them too, so
    /// clients that ignore details (grpcurl, browsers' consoles) still show what is wrong.
    pub fn into_status(self) -> Status {
        let message = self
            .0
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request(self.0),
        )
    }
}

/// The status of a call that failed on the database (SQLSTATE classes, see
/// [`crate::db::classify`]): `UNAVAILABLE` while it is unreachable, restarting or overloaded
/// (the client retries with backoff), `DEADLINE_EXCEEDED` when a statement or lock timeout
/// hit, else `INTERNAL` with an opaque message, the cause logged once here.
pub fn database_status(error: &sqlx::Error) -> Status {
    match crate::db::classify(error) {
        crate::db::Failure::Unavailable => {
            tracing::warn!(error = %crate::error_chain(error), "database unavailable");
            Status::unavailable("the database is unavailable; retry with backoff")
        }
        crate::db::Failure::Timeout => {
            Status::deadline_exceeded("the database did not answer in time")
        }
        crate::db::Failure::Other => {
            tracing::error!(error = %crate::error_chain(error), "internal error");
            Status::internal("internal error")
        }
    }
}

/// A single-violation `INVALID_ARGUMENT`.
pub fn invalid_argument(field: &str, description: &str) -> Status {
    let mut violations = Violations::new();
    violations.add(field, description);
    violations.into_status()
}

/// The field violations carried by a status, as `(field, description)` pairs (for clients
/// and tests).
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}
