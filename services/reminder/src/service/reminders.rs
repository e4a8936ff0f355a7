//! The reminder RPCs: ListReminders, SnoozeReminder and DismissReminder, with the reminder
//! row lock and state change they share.

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::PgConnection;
use taskmesh_platform::{
    auth::Caller,
    changelog::{self, Published},
    grpc::{Violations, invalid_argument},
    pages::page_size,
    requests,
};
use taskmesh_proto::{events::v1 as ev, names::ReminderName, reminder::v1 as pb};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::ReminderServiceImpl;
use crate::{
    LOG,
    error::ReminderError,
    list,
    model::{ReminderRow, query_reminder, state},
    scheduler::WAKE_CHANNEL,
};

/// Shortest snooze (1 minute).
const MIN_SNOOZE_SECONDS: i64 = 60;
/// Longest snooze (30 days).
const MAX_SNOOZE_SECONDS: i64 = 30 * 24 * 3600;

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
    query_reminder!(
        "SELECT ",
        " FROM reminders r JOIN tasks t ON t.id = r.task_id \
         WHERE r.task_id = $1 AND r.reminder_id = $2 AND r.user_id = $3 FOR UPDATE OF r",
        task,
        id,
        user
    )
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
    sqlx::query!(
        "UPDATE reminders SET state = $3, fire_at = $4 WHERE task_id = $1 AND reminder_id = $2",
        row.task_id,
        row.reminder_id,
        new_state,
        fire_at
    )
    .execute(&mut *tx)
    .await?;
    row.state = new_state;
    row.fire_at = fire_at;
    Ok(row)
}

impl ReminderServiceImpl {
    /// ListReminders.
    pub(super) async fn list_reminder_page(
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

    /// SnoozeReminder.
    pub(super) async fn snooze(
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

    /// DismissReminder.
    pub(super) async fn dismiss(
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
}
