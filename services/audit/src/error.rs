//! The service's error type and its one mapping onto `tonic::Status`.

use taskmesh_platform::grpc::Violations;
use tonic::Status;

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
            AuditError::NotFound(_) => Status::not_found(error.to_string()),
            AuditError::PermissionDenied(_) => Status::permission_denied(error.to_string()),
            AuditError::Database(e) => taskmesh_platform::grpc::database_status(&e),
        }
    }
}
