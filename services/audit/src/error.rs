//! The service's error type and its one mapping onto `tonic::Status`.

use taskmesh_platform::grpc::{self, Violations};
use tonic::{Code, Status};

/// Everything an AuditService operation can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    /// Bad input.
    #[error("invalid argument")]
    Invalid(Violations),
    /// No such object for this caller (also: another user's task).
    #[error("{0} not found")]
    NotFound(String),
    /// An admin RPC called without the `admin` role.
    #[error("{0} needs the admin role")]
    PermissionDenied(&'static str),
    /// A database failure.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<Violations> for AuditError {
    fn from(v: Violations) -> Self {
        AuditError::Invalid(v)
    }
}

impl From<AuditError> for Status {
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::Invalid(violations) => violations.into_status(),
            AuditError::NotFound(ref name) => grpc::error_with(
                Code::NotFound,
                "RESOURCE_NOT_FOUND",
                error.to_string(),
                &[("resource", name)],
            ),
            AuditError::PermissionDenied(_) => grpc::error(
                Code::PermissionDenied,
                "ADMIN_ROLE_REQUIRED",
                error.to_string(),
            ),
            AuditError::Database(e) => grpc::database_status(&e),
        }
    }
}
