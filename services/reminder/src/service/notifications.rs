//! The notification RPCs: ListNotifications, MarkNotificationRead, MarkAllNotificationsRead,
//! GetUnreadCount and ListNotificationChanges (the notifications' change log).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use taskmesh_platform::{
    auth::Caller,
    changelog::{self, Change, Writer},
    cursor::Cursor,
    grpc::{Violations, invalid_argument},
    pages::page_size,
};
use taskmesh_proto::{events::v1 as ev, names::NotificationName, reminder::v1 as pb};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::ReminderServiceImpl;
use crate::{LOG, error::ReminderError, list, model::NotificationRow};

/// Records a NotificationRead change for `names` (the caller holds the user's lock).
async fn record_read(
    tx: &mut PgConnection,
    writer: &Writer<'_>,
    names: Vec<String>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let subject = match names.as_slice() {
        [one] => one.clone(),
        _ => NotificationName::PREFIX.trim_end_matches('/').to_owned(),
    };
    let change = Change::new(
        subject,
        ev::NotificationRead {
            context: None,
            notifications: names,
        },
    );
    changelog::record(tx, &LOG, writer, now, change).await?;
    Ok(())
}

impl ReminderServiceImpl {
    /// ListNotifications.
    pub(super) async fn list_notification_page(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = page_size(req.page_size, 50, &mut v);
        v.check()?;
        let (notifications, next_page_token, latest) = list::notifications(
            &self.pool,
            &self.tokens,
            &caller.user,
            &req.filter,
            size,
            &req.page_token,
        )
        .await?;
        let cursor = Cursor {
            task: None,
            notification: Some(latest),
        };
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications,
            next_page_token,
            cursor: cursor.encode(),
        }))
    }

    /// MarkNotificationRead.
    pub(super) async fn mark_read(
        &self,
        request: Request<pb::MarkNotificationReadRequest>,
    ) -> Result<Response<pb::MarkNotificationReadResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let name = request.into_inner().name;
        let id = NotificationName::parse(&name)
            .map_err(|e| invalid_argument("name", &e.to_string()))?
            .id();
        let mut tx = self.pool.begin().await.map_err(ReminderError::from)?;
        changelog::lock_user(&mut tx, &caller.user)
            .await
            .map_err(ReminderError::from)?;
        let now = taskmesh_domain::now();
        let row = sqlx::query_as!(
            NotificationRow,
            "SELECT id, kind, task_id, reminder_id, title, body, create_time, read_time, \
             lateness_us FROM notifications WHERE id = $1 AND user_id = $2",
            id,
            caller.user
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(ReminderError::from)?
        .ok_or_else(|| ReminderError::NotFound(name.clone()))?;
        if row.read_time.is_some() {
            return Ok(Response::new(pb::MarkNotificationReadResponse {
                notification: Some(row.to_proto()),
            }));
        }
        sqlx::query!(
            "UPDATE notifications SET read_time = $2 WHERE id = $1",
            id,
            now
        )
        .execute(&mut *tx)
        .await
        .map_err(ReminderError::from)?;
        record_read(&mut tx, &self.writer(&caller, ""), vec![name], now)
            .await
            .map_err(ReminderError::from)?;
        tx.commit().await.map_err(ReminderError::from)?;
        let row = NotificationRow {
            read_time: Some(now),
            ..row
        };
        Ok(Response::new(pb::MarkNotificationReadResponse {
            notification: Some(row.to_proto()),
        }))
    }

    /// MarkAllNotificationsRead.
    pub(super) async fn mark_all_read(
        &self,
        request: Request<pb::MarkAllNotificationsReadRequest>,
    ) -> Result<Response<pb::MarkAllNotificationsReadResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let mut tx = self.pool.begin().await.map_err(ReminderError::from)?;
        changelog::lock_user(&mut tx, &caller.user)
            .await
            .map_err(ReminderError::from)?;
        let now = taskmesh_domain::now();
        let ids: Vec<Uuid> = sqlx::query_scalar!(
            "UPDATE notifications SET read_time = $2 WHERE user_id = $1 AND read_time IS NULL \
             RETURNING id",
            caller.user,
            now
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(ReminderError::from)?;
        if !ids.is_empty() {
            let names = ids
                .iter()
                .map(|id| NotificationName(*id).to_string())
                .collect();
            record_read(&mut tx, &self.writer(&caller, ""), names, now)
                .await
                .map_err(ReminderError::from)?;
        }
        tx.commit().await.map_err(ReminderError::from)?;
        Ok(Response::new(pb::MarkAllNotificationsReadResponse {
            marked_count: i64::try_from(ids.len()).unwrap_or(i64::MAX),
        }))
    }

    /// GetUnreadCount.
    pub(super) async fn unread_count(
        &self,
        request: Request<pb::GetUnreadCountRequest>,
    ) -> Result<Response<pb::GetUnreadCountResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let unread_count: i64 = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM notifications
             WHERE user_id = $1 AND read_time IS NULL"#,
            caller.user
        )
        .fetch_one(&self.pool)
        .await
        .map_err(ReminderError::from)?;
        Ok(Response::new(pb::GetUnreadCountResponse { unread_count }))
    }

    /// ListNotificationChanges.
    pub(super) async fn notification_changes(
        &self,
        request: Request<pb::ListNotificationChangesRequest>,
    ) -> Result<Response<pb::ListNotificationChangesResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let size = changelog::read_size(req.after_sequence, req.page_size)?;
        let (entries, latest_sequence) =
            changelog::read(&self.pool, &caller.user, req.after_sequence, size)
                .await
                .map_err(ReminderError::from)?;
        let changes = entries
            .into_iter()
            .map(|entry| pb::NotificationChange {
                sequence: entry.sequence,
                event_id: entry.event_id.to_string(),
                r#type: entry.event_type,
                subject: entry.subject,
                data: entry.data,
            })
            .collect();
        Ok(Response::new(pb::ListNotificationChangesResponse {
            changes,
            latest_sequence,
        }))
    }
}
