//! Generated protobuf contracts of taskmesh: the services' messages, tonic clients and servers,
//! and the CloudEvent payloads of `taskmesh.events.v1`.
//!
//! The sources are the `.proto` files under `proto/` at the workspace root; this crate is the
//! only place they are compiled. Modules mirror the protobuf packages.
//!
//! # Layout
//! - [`taskmesh::task::v1`] — `TaskService`, `Task`, `Tag`.
//! - [`taskmesh::reminder::v1`] — `ReminderService`, reminders and notifications.
//! - [`taskmesh::recurrence::v1`] — `RecurrenceService`.
//! - [`taskmesh::audit::v1`] — `AuditService`.
//! - [`taskmesh::events::v1`] — event and command payloads, one message per CloudEvent `type`.
//! - [`taskmesh::gateway::v1`] — the gateway's `LiveService` stream.
//! - [`google`] — vendored googleapis types (`google.type.Date`, field behaviours).
//! - [`FILE_DESCRIPTOR_SET`] — every file, for server reflection.
//! - [`ERROR_DETAILS_DESCRIPTOR_SET`] — the error detail types, for server reflection.
//! - [`catalogue`] — every CloudEvent type with its payload message and topic.
//! - [`names`] — resource names (AIP-122) as types: `TaskName`, `TagName`, `ReminderName`,
//!   `NotificationName`, `SeriesName`.
//! - [`codec`] — the protobuf codec of every client and server (malformed input is
//!   `INVALID_ARGUMENT`).

pub mod catalogue;
pub mod codec;
pub mod names;

/// Encoded `google.protobuf.FileDescriptorSet` of every taskmesh `.proto` file and its
/// imports, with source info, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/taskmesh_descriptor.bin"));

/// The encoded descriptor set of `google/rpc/error_details.proto` (with its imports): the
/// error detail types the services send (`ErrorInfo`, `BadRequest`, `RetryInfo`, `QuotaFailure`), for
/// server reflection, so a client like `grpcurl` can decode `grpc-status-details-bin`.
pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/error_details_descriptor.bin"));

/// Vendored googleapis packages.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod google {
    /// `google.api`: field behaviour annotations (AIP-203).
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
    /// `google.type`: common types.
    pub mod r#type {
        include!(concat!(env!("OUT_DIR"), "/google.r#type.rs"));
    }
}

/// taskmesh packages.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod taskmesh {
    /// `taskmesh.task.*`.
    pub mod task {
        /// `taskmesh.task.v1`: TaskService, tasks and tags.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/taskmesh.task.v1.rs"));
        }
    }
    /// `taskmesh.reminder.*`.
    pub mod reminder {
        /// `taskmesh.reminder.v1`: ReminderService, reminders and notifications.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/taskmesh.reminder.v1.rs"));
        }
    }
    /// `taskmesh.recurrence.*`.
    pub mod recurrence {
        /// `taskmesh.recurrence.v1`: RecurrenceService.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/taskmesh.recurrence.v1.rs"));
        }
    }
    /// `taskmesh.audit.*`.
    pub mod audit {
        /// `taskmesh.audit.v1`: AuditService.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/taskmesh.audit.v1.rs"));
        }
    }
    /// `taskmesh.events.*`.
    pub mod events {
        /// `taskmesh.events.v1`: CloudEvent payloads and commands.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/taskmesh.events.v1.rs"));
        }
    }
    /// `taskmesh.gateway.*`.
    pub mod gateway {
        /// `taskmesh.gateway.v1`: the live-update stream.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/taskmesh.gateway.v1.rs"));
        }
    }
}

pub use taskmesh::{audit, events, gateway, recurrence, reminder, task};
