//! The service's error type and its one mapping onto `tonic::Status`.

use taskmesh_platform::grpc::{self, Violations};
use tonic::{Code, Status};

/// Everything a RecurrenceService operation can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecurrenceError {
    /// Bad input; nothing changed.
    #[error("invalid argument")]
    Invalid(Violations),
    /// No such object for this caller (also: another user's object).
    #[error("{0} not found")]
    NotFound(String),
    /// The object is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// TaskService answered a read with an error the caller should see as is (not found,
    /// unauthenticated, unavailable).
    #[error("task service: {}", .0.message())]
    Upstream(Status),
    /// The database is briefly unavailable; the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// An unexpected failure, described.
    #[error("{0}")]
    Internal(String),
    /// A database failure.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A stored protobuf did not decode.
    #[error("stored response does not decode")]
    Decode(#[from] prost::DecodeError),
}

impl From<Violations> for RecurrenceError {
    fn from(v: Violations) -> Self {
        RecurrenceError::Invalid(v)
    }
}

impl From<RecurrenceError> for Status {
    fn from(error: RecurrenceError) -> Self {
        match error {
            RecurrenceError::Invalid(violations) => violations.into_status(),
            RecurrenceError::NotFound(ref name) => grpc::error_with(
                Code::NotFound,
                "RESOURCE_NOT_FOUND",
                error.to_string(),
                &[("resource", name)],
            ),
            RecurrenceError::FailedPrecondition(_) => {
                grpc::error(Code::FailedPrecondition, "SERIES_STATE", error.to_string())
            }
            RecurrenceError::Upstream(status) => match status.code() {
                Code::NotFound | Code::Unauthenticated | Code::PermissionDenied => status,
                Code::Unavailable | Code::DeadlineExceeded => grpc::error(
                    Code::Unavailable,
                    "UPSTREAM_UNAVAILABLE",
                    "the task service is unavailable; retry",
                ),
                _ => {
                    tracing::error!(code = ?status.code(), message = status.message(), "task service read failed");
                    grpc::internal()
                }
            },
            RecurrenceError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                grpc::error(
                    Code::Unavailable,
                    "DATABASE_UNAVAILABLE",
                    "the database is unavailable; retry",
                )
            }
            RecurrenceError::Database(e) => grpc::database_status(&e),
            RecurrenceError::Internal(_) | RecurrenceError::Decode(_) => {
                // Logged once here with its cause; the client sees an opaque message.
                tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "internal error");
                grpc::internal()
            }
        }
    }
}
