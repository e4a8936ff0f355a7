//! The service's error type and its one mapping onto `tonic::Status`.

use taskmesh_platform::{
    changelog::ReadError,
    grpc::{self, Violations},
};
use tonic::{Code, Status};

/// Everything a ReminderService operation can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReminderError {
    /// Bad input; nothing changed.
    #[error("invalid argument")]
    Invalid(Violations),
    /// No such object for this caller (also: another user's object).
    #[error("{0} not found")]
    NotFound(String),
    /// The object is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The change log no longer holds the changes after the requested position.
    #[error("changes after sequence {0} are no longer retained")]
    ChangesExpired(i64),
    /// A database failure.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A stored protobuf did not decode.
    #[error("stored response does not decode")]
    Decode(#[from] prost::DecodeError),
}

impl From<Violations> for ReminderError {
    fn from(v: Violations) -> Self {
        ReminderError::Invalid(v)
    }
}

impl From<ReadError> for ReminderError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Expired(after) => ReminderError::ChangesExpired(after),
            ReadError::Database(e) => ReminderError::Database(e),
        }
    }
}

impl From<ReminderError> for Status {
    fn from(error: ReminderError) -> Self {
        match error {
            ReminderError::Invalid(violations) => violations.into_status(),
            ReminderError::NotFound(ref name) => grpc::error_with(
                Code::NotFound,
                "RESOURCE_NOT_FOUND",
                error.to_string(),
                &[("resource", name)],
            ),
            ReminderError::FailedPrecondition(_) => grpc::error(
                Code::FailedPrecondition,
                "REMINDER_STATE",
                error.to_string(),
            ),
            ReminderError::ChangesExpired(_) => grpc::error(
                Code::FailedPrecondition,
                "CHANGES_EXPIRED",
                error.to_string(),
            ),
            ReminderError::Database(e) => grpc::database_status(&e),
            ReminderError::Decode(_) => {
                // Logged once here with its cause; the client sees an opaque message.
                tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "internal error");
                grpc::internal()
            }
        }
    }
}
