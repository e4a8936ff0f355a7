//! The service's error type and its one mapping onto `tonic::Status`.

use taskmesh_platform::grpc::{self, Violations};
use tonic::{Code, Status};

/// Everything a TaskService operation can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TaskError {
    /// Bad input; nothing changed.
    #[error("invalid argument")]
    Invalid(Violations),
    /// No such object for this caller (also: another user's object).
    #[error("{0} not found")]
    NotFound(String),
    /// The `etag` sent does not match the object's current one.
    #[error("etag mismatch: the object changed since it was read")]
    EtagMismatch,
    /// A tag with that display name exists already.
    #[error("a tag named {0:?} already exists")]
    TagExists(String),
    /// The change log no longer holds the changes after the requested position.
    #[error("changes after sequence {0} are no longer retained")]
    ChangesExpired(i64),
    /// The user has the most tasks the tasks-per-user quota allows (`max`), and the call
    /// would add one: CreateTask, or (`completing`) CompleteTask of a recurring task, whose
    /// series then creates the next occurrence.
    #[error("at most {max} tasks per user; delete tasks to make room")]
    TooManyTasks {
        /// The quota.
        max: u64,
        /// Whether the call completes a recurring task.
        completing: bool,
    },
    /// A database failure.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A stored protobuf did not decode.
    #[error("stored response does not decode")]
    Decode(#[from] prost::DecodeError),
}

impl From<Violations> for TaskError {
    fn from(v: Violations) -> Self {
        TaskError::Invalid(v)
    }
}

impl From<TaskError> for Status {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::Invalid(violations) => violations.into_status(),
            TaskError::NotFound(ref name) => grpc::error_with(
                Code::NotFound,
                "RESOURCE_NOT_FOUND",
                error.to_string(),
                &[("resource", name)],
            ),
            TaskError::EtagMismatch => {
                grpc::error(Code::Aborted, "ETAG_MISMATCH", error.to_string())
            }
            TaskError::TagExists(_) => {
                grpc::error(Code::AlreadyExists, "TAG_NAME_TAKEN", error.to_string())
            }
            TaskError::ChangesExpired(_) => grpc::error(
                Code::FailedPrecondition,
                "CHANGES_EXPIRED",
                error.to_string(),
            ),
            TaskError::TooManyTasks { max, completing } => taskmesh_platform::quota::exhausted(
                "TASK_QUOTA_EXCEEDED",
                "tasks per user",
                &if completing {
                    format!(
                        "at most {max} tasks per user, and completing a recurring task adds \
                         its next occurrence; delete tasks to make room"
                    )
                } else {
                    format!("at most {max} tasks per user; delete tasks to make room")
                },
                None,
            ),
            TaskError::Database(e) => grpc::database_status(&e),
            TaskError::Decode(_) => {
                // Logged once here with its cause; the client sees an opaque message.
                tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "internal error");
                grpc::internal()
            }
        }
    }
}
