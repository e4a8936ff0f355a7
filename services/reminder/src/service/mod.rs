//! The tonic `ReminderService` implementation: authentication, validation and the write
//! paths of snoozing, dismissing and reading notifications.
//!
//! This module holds the server state and the trait impl, which hands each RPC to its group:
//! - `reminders`: ListReminders, SnoozeReminder, DismissReminder.
//! - `notifications`: ListNotifications, MarkNotificationRead, MarkAllNotificationsRead,
//!   GetUnreadCount, ListNotificationChanges.

mod notifications;
mod reminders;

use sqlx::PgPool;
use taskmesh_platform::{auth::Caller, changelog::Writer, pages::PageTokens};
use taskmesh_proto::reminder::v1::{self as pb, reminder_service_server::ReminderService};
use tonic::{Request, Response, Status};

/// The ReminderService gRPC server state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReminderServiceImpl {
    pool: PgPool,
    topic_prefix: String,
    tokens: PageTokens,
}

impl ReminderServiceImpl {
    /// A service on `pool` (search_path = the `reminder` schema) publishing through the
    /// outbox to its topics, named with `topic_prefix`, signing page tokens with `tokens`.
    pub fn new(pool: PgPool, topic_prefix: String, tokens: PageTokens) -> Self {
        Self {
            pool,
            topic_prefix,
            tokens,
        }
    }

    fn writer<'a>(&'a self, caller: &'a Caller, request_id: &'a str) -> Writer<'a> {
        Writer {
            user: &caller.user,
            actor: &caller.actor,
            request_id,
            topic_prefix: &self.topic_prefix,
        }
    }
}

#[tonic::async_trait]
impl ReminderService for ReminderServiceImpl {
    async fn list_reminders(
        &self,
        request: Request<pb::ListRemindersRequest>,
    ) -> Result<Response<pb::ListRemindersResponse>, Status> {
        self.list_reminder_page(request).await
    }

    async fn snooze_reminder(
        &self,
        request: Request<pb::SnoozeReminderRequest>,
    ) -> Result<Response<pb::SnoozeReminderResponse>, Status> {
        self.snooze(request).await
    }

    async fn dismiss_reminder(
        &self,
        request: Request<pb::DismissReminderRequest>,
    ) -> Result<Response<pb::DismissReminderResponse>, Status> {
        self.dismiss(request).await
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        self.list_notification_page(request).await
    }

    async fn mark_notification_read(
        &self,
        request: Request<pb::MarkNotificationReadRequest>,
    ) -> Result<Response<pb::MarkNotificationReadResponse>, Status> {
        self.mark_read(request).await
    }

    async fn mark_all_notifications_read(
        &self,
        request: Request<pb::MarkAllNotificationsReadRequest>,
    ) -> Result<Response<pb::MarkAllNotificationsReadResponse>, Status> {
        self.mark_all_read(request).await
    }

    async fn get_unread_count(
        &self,
        request: Request<pb::GetUnreadCountRequest>,
    ) -> Result<Response<pb::GetUnreadCountResponse>, Status> {
        self.unread_count(request).await
    }

    async fn list_notification_changes(
        &self,
        request: Request<pb::ListNotificationChangesRequest>,
    ) -> Result<Response<pb::ListNotificationChangesResponse>, Status> {
        self.notification_changes(request).await
    }
}
