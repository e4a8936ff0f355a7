//! The tonic `ReminderService` implementation: authentication, validation and the write
//! paths of snoozing, dismissing and reading notifications.

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use taskmesh_platform::{
    auth::Caller,
    changelog::{self, Change, Published, Writer},
    cursor::Cursor,
    grpc::{Violations, invalid_argument},
    pages::{PageTokens, page_size},
    requests,
};
use taskmesh_proto::{
    events::v1 as ev,
    names::{NotificationName, ReminderName},
    reminder::v1::{self as pb, reminder_service_server::ReminderService},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    LOG,
    error::ReminderError,
    list,
    model::{NOTIFICATION_COLUMNS, NotificationRow, REMINDER_COLUMNS, ReminderRow, state},
    scheduler::WAKE_CHANNEL,
};

/// Shortest snooze (1 minute).
const MIN_SNOOZE_SECONDS: i64 = 60;
/// Longest snooze (30 days).
const MAX_SNOOZE_SECONDS: i64 = 30 * 24 * 3600;

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

fn reminder_key(name: &str) -> Result<(Uuid, String), Status> {
    ReminderName::parse(name)
        .map(|name| (name.task.id(), name.reminder))
        .map_err(|e| invalid_argument("name", &e.to_string()))
}

/// The caller's reminder, locked for the transaction; another user's is `NOT_FOUND`.
async fn lock_reminder(
    tx: &mut PgConnection,
    user: &str,
    task: Uuid,
    id: &str,
) -> Result<ReminderRow, ReminderError> {
    sqlx::query_as(&format!(
        "SELECT {REMINDER_COLUMNS} FROM reminders r JOIN tasks t ON t.id = r.task_id \
         WHERE r.task_id = $1 AND r.reminder_id = $2 AND r.user_id = $3 FOR UPDATE OF r"
    ))
    .bind(task)
    .bind(id)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ReminderError::NotFound(ReminderName::new(task, id).to_string()))
}

/// Sets a reminder's state (and fire time) and returns it.
async fn set_state(
    tx: &mut PgConnection,
    mut row: ReminderRow,
    new_state: i16,
    fire_at: DateTime<Utc>,
) -> Result<ReminderRow, sqlx::Error> {
    sqlx::query(
        "UPDATE reminders SET state = $3, fire_at = $4 WHERE task_id = $1 AND reminder_id = $2",
    )
    .bind(row.task_id)
    .bind(&row.reminder_id)
    .bind(new_state)
    .bind(fire_at)
    .execute(&mut *tx)
    .await?;
    row.state = new_state;
    row.fire_at = fire_at;
    Ok(row)
}

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

#[tonic::async_trait]
impl ReminderService for ReminderServiceImpl {
    async fn list_reminders(
        &self,
        request: Request<pb::ListRemindersRequest>,
    ) -> Result<Response<pb::ListRemindersResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = page_size(req.page_size, 50, &mut v);
        v.check()?;
        let (reminders, next_page_token) = list::reminders(
            &self.pool,
            &self.tokens,
            &caller.user,
            &req.filter,
            size,
            &req.page_token,
        )
        .await?;
        Ok(Response::new(pb::ListRemindersResponse {
            reminders,
            next_page_token,
        }))
    }

    async fn snooze_reminder(
        &self,
        request: Request<pb::SnoozeReminderRequest>,
    ) -> Result<Response<pb::SnoozeReminderResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let seconds = match &req.duration {
            Some(d)
                if d.nanos == 0
                    && (MIN_SNOOZE_SECONDS..=MAX_SNOOZE_SECONDS).contains(&d.seconds) =>
            {
                d.seconds
            }
            _ => {
                v.add("duration", "must be whole seconds from 1 minute to 30 days");
                0
            }
        };
        requests::validate(&req.request_id, &mut v);
        let key = ReminderName::parse(&req.name)
            .inspect_err(|e| v.add("name", e.to_string()))
            .ok();
        let (Some(ReminderName { task, reminder: id }), true) = (key, v.is_empty()) else {
            return Err(v.into_status());
        };
        let (task, id) = (task.id(), id.as_str());
        let method = "SnoozeReminder";
        let mut tx = self.pool.begin().await.map_err(ReminderError::from)?;
        if let Some(done) = requests::claim(&mut tx, &caller.user, method, &req.request_id)
            .await
            .map_err(ReminderError::from)?
        {
            tx.rollback().await.map_err(ReminderError::from)?;
            let reminder =
                pb::ScheduledReminder::decode(done.as_slice()).map_err(ReminderError::from)?;
            return Ok(Response::new(pb::SnoozeReminderResponse {
                reminder: Some(reminder),
            }));
        }
        let row = lock_reminder(&mut tx, &caller.user, task, id).await?;
        if !matches!(row.state, state::FIRED | state::SNOOZED) {
            return Err(ReminderError::FailedPrecondition(format!(
                "{} has not fired; only a fired reminder can be snoozed",
                req.name
            ))
            .into());
        }
        let now = taskmesh_domain::now();
        let fire_at = now + chrono::Duration::seconds(seconds);
        let row = set_state(&mut tx, row, state::SNOOZED, fire_at)
            .await
            .map_err(ReminderError::from)?;
        let reminder = row.to_proto();
        let event = ev::ReminderSnoozed {
            context: None,
            reminder: Some(reminder.clone()),
            duration: req.duration,
        };
        let change = Published::new(reminder.name.clone(), event);
        let writer = self.writer(&caller, &req.request_id);
        changelog::publish_only(&mut tx, &LOG, &writer, now, change)
            .await
            .map_err(ReminderError::from)?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WAKE_CHANNEL)
            .bind(fire_at.to_rfc3339())
            .execute(&mut *tx)
            .await
            .map_err(ReminderError::from)?;
        requests::finish(
            &mut tx,
            &caller.user,
            method,
            &req.request_id,
            task,
            &reminder,
        )
        .await
        .map_err(ReminderError::from)?;
        tx.commit().await.map_err(ReminderError::from)?;
        Ok(Response::new(pb::SnoozeReminderResponse {
            reminder: Some(reminder),
        }))
    }

    async fn dismiss_reminder(
        &self,
        request: Request<pb::DismissReminderRequest>,
    ) -> Result<Response<pb::DismissReminderResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let (task, id) = reminder_key(&request.get_ref().name)?;
        let mut tx = self.pool.begin().await.map_err(ReminderError::from)?;
        let row = lock_reminder(&mut tx, &caller.user, task, &id).await?;
        if row.state == state::DISMISSED {
            return Ok(Response::new(pb::DismissReminderResponse {
                reminder: Some(row.to_proto()),
            }));
        }
        let now = taskmesh_domain::now();
        let fire_at = row.fire_at;
        let row = set_state(&mut tx, row, state::DISMISSED, fire_at)
            .await
            .map_err(ReminderError::from)?;
        let reminder = row.to_proto();
        let event = ev::ReminderDismissed {
            context: None,
            reminder: Some(reminder.clone()),
            dismiss_time: Some(taskmesh_domain::timestamp(now)),
        };
        let change = Published::new(reminder.name.clone(), event);
        changelog::publish_only(&mut tx, &LOG, &self.writer(&caller, ""), now, change)
            .await
            .map_err(ReminderError::from)?;
        tx.commit().await.map_err(ReminderError::from)?;
        Ok(Response::new(pb::DismissReminderResponse {
            reminder: Some(reminder),
        }))
    }

    async fn list_notifications(
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

    async fn mark_notification_read(
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
        let row: NotificationRow = sqlx::query_as(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1 AND user_id = $2"
        ))
        .bind(id)
        .bind(&caller.user)
        .fetch_optional(&mut *tx)
        .await
        .map_err(ReminderError::from)?
        .ok_or_else(|| ReminderError::NotFound(name.clone()))?;
        if row.read_time.is_some() {
            return Ok(Response::new(pb::MarkNotificationReadResponse {
                notification: Some(row.to_proto()),
            }));
        }
        sqlx::query("UPDATE notifications SET read_time = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
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

    async fn mark_all_notifications_read(
        &self,
        request: Request<pb::MarkAllNotificationsReadRequest>,
    ) -> Result<Response<pb::MarkAllNotificationsReadResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let mut tx = self.pool.begin().await.map_err(ReminderError::from)?;
        changelog::lock_user(&mut tx, &caller.user)
            .await
            .map_err(ReminderError::from)?;
        let now = taskmesh_domain::now();
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE notifications SET read_time = $2 WHERE user_id = $1 AND read_time IS NULL \
             RETURNING id",
        )
        .bind(&caller.user)
        .bind(now)
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

    async fn get_unread_count(
        &self,
        request: Request<pb::GetUnreadCountRequest>,
    ) -> Result<Response<pb::GetUnreadCountResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let unread_count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_time IS NULL",
        )
        .bind(&caller.user)
        .fetch_one(&self.pool)
        .await
        .map_err(ReminderError::from)?;
        Ok(Response::new(pb::GetUnreadCountResponse { unread_count }))
    }

    async fn list_notification_changes(
        &self,
        request: Request<pb::ListNotificationChangesRequest>,
    ) -> Result<Response<pb::ListNotificationChangesResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = page_size(req.page_size, 500, &mut v);
        if req.after_sequence < 0 {
            v.add("after_sequence", "must not be negative");
        }
        v.check()?;
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
