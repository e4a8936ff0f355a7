//! The durable scheduler (ARCHITECTURE.md invariant 6): reminders and overdue notices wait in
//! the `reminder` schema; an in-process timer sleeps until the soonest one and fires it.
//!
//! - **Never early**: a row is claimed only when its time is at or before the clock reading
//!   the claim is made with, and that reading is its `fired_time`.
//! - **Once**: replicas claim rows with `FOR UPDATE SKIP LOCKED`; firing changes the row's
//!   state, writes the notification, and records the event in the notification change log
//!   and the outbox, all in the claiming transaction.
//! - **Durable**: after downtime, whatever is due fires on the first round, with its
//!   lateness recorded (`fired_time - fire_time`).
//! - **Prompt**: writers `NOTIFY` [`WAKE_CHANNEL`] when they schedule something, so a
//!   sleeping scheduler re-reads the soonest time at once; it also re-reads every second.
//!
//! Lock order: a firing transaction claims rows (never waiting, thanks to `SKIP LOCKED`),
//! then takes the owners' change-log locks in user order, so it cannot deadlock with another
//! scheduler or with an RPC (which takes one user's lock first).

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::{FromRow, PgConnection, PgPool, postgres::PgListener};
use taskmesh_domain::timestamp;
use taskmesh_platform::changelog::{self, Change, Writer};
use taskmesh_proto::events::v1 as ev;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    LOG,
    model::{
        KIND_OVERDUE, KIND_REMINDER, NotificationRow, REMINDER_COLUMNS, ReminderRow, TASKS, micros,
        reminder_name, state,
    },
};

/// NOTIFY channel that wakes schedulers; the payload is the new soonest time (informative).
pub const WAKE_CHANNEL: &str = "taskmesh_reminder_wake";

/// The actor of changes the scheduler makes.
const ACTOR: &str = "service:reminder";

/// The longest a scheduler sleeps without re-reading the soonest time.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// What one [`Scheduler::fire_due`] call fired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fired {
    /// Reminders fired (`reminder.fired`).
    pub reminders: usize,
    /// Overdue notices produced (`task.overdue`).
    pub overdue: usize,
}

/// Fires due reminders and overdue notices. Cheap to clone; any number may run on one
/// database.
#[derive(Clone, Debug)]
pub struct Scheduler {
    pool: PgPool,
    topic: String,
    batch: i64,
}

#[derive(FromRow)]
struct OverdueRow {
    id: Uuid,
    user_id: String,
    title: String,
    due_at: DateTime<Utc>,
    due_label: String,
}

impl Scheduler {
    /// A scheduler on `pool` (the `reminder` schema) publishing to `topic` (`reminders`).
    pub fn new(pool: PgPool, topic: String) -> Self {
        Self {
            pool,
            topic,
            batch: 200,
        }
    }

    /// Fires everything due at `now` (reminders whose fire time and tasks whose overdue time
    /// is at or before it) that no other scheduler holds, in transactions of up to 200.
    /// `now` is the clock reading: the `fired_time` of what fires, so it never fires early.
    ///
    /// # Errors
    /// The database error; what was committed before it stays fired.
    pub async fn fire_due(&self, now: DateTime<Utc>) -> Result<Fired, sqlx::Error> {
        let mut total = Fired::default();
        loop {
            let fired = self.fire_batch(now).await?;
            total.reminders += fired.reminders;
            total.overdue += fired.overdue;
            if fired.reminders + fired.overdue < usize::try_from(self.batch).unwrap_or(0) {
                return Ok(total);
            }
        }
    }

    /// The soonest time anything waits to fire, if anything does.
    ///
    /// # Errors
    /// The database error.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT LEAST((SELECT min(fire_at) FROM reminders WHERE state IN (1, 3)), \
             (SELECT min(overdue_at) FROM tasks WHERE overdue_at IS NOT NULL))",
        )
        .fetch_one(&self.pool)
        .await
    }

    async fn fire_batch(&self, now: DateTime<Utc>) -> Result<Fired, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let reminders: Vec<ReminderRow> = sqlx::query_as(&format!(
            "SELECT {REMINDER_COLUMNS} FROM reminders r JOIN tasks t ON t.id = r.task_id \
             WHERE r.state IN ($1, $2) AND r.fire_at <= $3 ORDER BY r.fire_at LIMIT $4 \
             FOR UPDATE OF r SKIP LOCKED"
        ))
        .bind(state::SCHEDULED)
        .bind(state::SNOOZED)
        .bind(now)
        .bind(self.batch)
        .fetch_all(&mut *tx)
        .await?;
        let room = self.batch - i64::try_from(reminders.len()).unwrap_or(0);
        let overdue: Vec<OverdueRow> = if room > 0 {
            sqlx::query_as(
                "SELECT id, user_id, title, due_at, due_label FROM tasks \
                 WHERE overdue_at <= $1 ORDER BY overdue_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(now)
            .bind(room)
            .fetch_all(&mut *tx)
            .await?
        } else {
            Vec::new()
        };
        if reminders.is_empty() && overdue.is_empty() {
            tx.rollback().await?;
            return Ok(Fired::default());
        }
        let mut users: Vec<&str> = reminders
            .iter()
            .map(|r| r.user_id.as_str())
            .chain(overdue.iter().map(|o| o.user_id.as_str()))
            .collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            changelog::lock_user(&mut tx, user).await?;
        }
        for reminder in &reminders {
            self.fire_reminder(&mut tx, reminder, now).await?;
        }
        for task in &overdue {
            self.notice_overdue(&mut tx, task, now).await?;
        }
        tx.commit().await?;
        Ok(Fired {
            reminders: reminders.len(),
            overdue: overdue.len(),
        })
    }

    async fn fire_reminder(
        &self,
        tx: &mut PgConnection,
        row: &ReminderRow,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let lateness_us = (now - row.fire_at)
            .num_microseconds()
            .unwrap_or(i64::MAX)
            .max(0);
        sqlx::query(
            "UPDATE reminders SET state = $3, fired_time = $4, lateness_us = $5 \
             WHERE task_id = $1 AND reminder_id = $2",
        )
        .bind(row.task_id)
        .bind(&row.reminder_id)
        .bind(state::FIRED)
        .bind(now)
        .bind(lateness_us)
        .execute(&mut *tx)
        .await?;
        let mut reminder = row.clone();
        reminder.state = state::FIRED;
        reminder.fired_time = Some(now);
        reminder.lateness_us = Some(lateness_us);
        let body = if row.due_label.is_empty() {
            String::new()
        } else {
            format!("due {}", row.due_label)
        };
        let notification = insert_notification(
            tx,
            &row.user_id,
            KIND_REMINDER,
            row.task_id,
            &row.reminder_id,
            &row.title,
            body,
            now,
            lateness_us,
        )
        .await?;
        let payload = ev::ReminderFired {
            context: None,
            reminder: Some(reminder.to_proto()),
            notification: Some(notification.to_proto()),
        };
        let change = Change {
            event_type: types::REMINDER_FIRED,
            message: "taskmesh.events.v1.ReminderFired",
            subject: reminder_name(row.task_id, &row.reminder_id),
            payload: Box::new(move |context| {
                ev::ReminderFired {
                    context: Some(context),
                    ..payload
                }
                .encode_to_vec()
            }),
        };
        changelog::record(tx, &LOG, &self.writer(&row.user_id), now, change).await?;
        tracing::debug!(reminder = %reminder_name(row.task_id, &row.reminder_id), lateness_us, "reminder fired");
        Ok(())
    }

    async fn notice_overdue(
        &self,
        tx: &mut PgConnection,
        task: &OverdueRow,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let lateness_us = (now - task.due_at)
            .num_microseconds()
            .unwrap_or(i64::MAX)
            .max(0);
        sqlx::query(
            "UPDATE tasks SET overdue_at = NULL, overdue_notice_for = due_at WHERE id = $1",
        )
        .bind(task.id)
        .execute(&mut *tx)
        .await?;
        let notification = insert_notification(
            tx,
            &task.user_id,
            KIND_OVERDUE,
            task.id,
            "",
            &task.title,
            format!("overdue: was due {}", task.due_label),
            now,
            lateness_us,
        )
        .await?;
        let payload = ev::TaskOverdue {
            context: None,
            task: format!("{TASKS}{}", task.id),
            due_time: Some(timestamp(task.due_at)),
            lateness: Some(micros(lateness_us)),
            notification: Some(notification.to_proto()),
        };
        let change = Change {
            event_type: types::TASK_OVERDUE,
            message: "taskmesh.events.v1.TaskOverdue",
            subject: format!("{TASKS}{}", task.id),
            payload: Box::new(move |context| {
                ev::TaskOverdue {
                    context: Some(context),
                    ..payload
                }
                .encode_to_vec()
            }),
        };
        changelog::record(tx, &LOG, &self.writer(&task.user_id), now, change).await?;
        Ok(())
    }

    fn writer<'a>(&'a self, user: &'a str) -> Writer<'a> {
        Writer {
            user,
            actor: ACTOR,
            request_id: "",
            topic: &self.topic,
        }
    }

    /// Runs until `shutdown`: fires what is due, then sleeps until the soonest time, a wake-up
    /// notification, or [`MAX_IDLE`], whichever comes first. Errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = match PgListener::connect_with(&self.pool).await {
                    Ok(mut l) => match l.listen(WAKE_CHANNEL).await {
                        Ok(()) => Some(l),
                        Err(error) => {
                            tracing::warn!(%error, "scheduler cannot listen; polling");
                            None
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%error, "scheduler cannot listen; polling");
                        None
                    }
                };
            }
            let wait = match self.round().await {
                Ok(wait) => wait,
                Err(error) => {
                    tracing::error!(%error, "scheduler round failed; retrying");
                    MAX_IDLE
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                notified = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.map(drop),
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(error) = notified {
                        tracing::warn!(%error, "scheduler listener lost; reconnecting");
                        listener = None;
                    }
                }
            }
        }
    }

    /// Fires what is due now; returns how long to sleep before the next round.
    async fn round(&self) -> Result<Duration, sqlx::Error> {
        // Like `fire_due`, but each batch takes its own clock reading, so a batch that waited
        // for the one before it records when it was really claimed.
        let mut fired = Fired::default();
        loop {
            let batch = self.fire_batch(taskmesh_domain::now()).await?;
            fired.reminders += batch.reminders;
            fired.overdue += batch.overdue;
            if batch.reminders + batch.overdue < usize::try_from(self.batch).unwrap_or(0) {
                break;
            }
        }
        if fired.reminders + fired.overdue > 0 {
            tracing::debug!(
                reminders = fired.reminders,
                overdue = fired.overdue,
                "fired"
            );
        }
        let Some(next) = self.next_due().await? else {
            return Ok(MAX_IDLE);
        };
        let wait = (next - taskmesh_domain::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        // Due but not fired by this round: another replica holds it; look again shortly.
        if wait.is_zero() && fired == Fired::default() {
            return Ok(Duration::from_millis(2));
        }
        Ok(wait.min(MAX_IDLE))
    }
}

/// Inserts a notification and returns it.
#[allow(clippy::too_many_arguments)]
async fn insert_notification(
    tx: &mut PgConnection,
    user: &str,
    kind: i16,
    task: Uuid,
    reminder: &str,
    title: &str,
    body: String,
    now: DateTime<Utc>,
    lateness_us: i64,
) -> Result<NotificationRow, sqlx::Error> {
    let row = NotificationRow {
        id: Uuid::now_v7(),
        kind,
        task_id: task,
        reminder_id: reminder.to_owned(),
        title: title.to_owned(),
        body,
        create_time: now,
        read_time: None,
        lateness_us,
    };
    sqlx::query(
        "INSERT INTO notifications (id, user_id, kind, task_id, reminder_id, title, body, \
         create_time, lateness_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(row.id)
    .bind(user)
    .bind(row.kind)
    .bind(row.task_id)
    .bind(&row.reminder_id)
    .bind(&row.title)
    .bind(&row.body)
    .bind(row.create_time)
    .bind(row.lateness_us)
    .execute(&mut *tx)
    .await?;
    Ok(row)
}

/// CloudEvent types ReminderService produces on `reminders`.
pub(crate) mod types {
    /// A reminder fired.
    pub(crate) const REMINDER_FIRED: &str = "dev.taskmesh.reminder.fired.v1";
    /// An open task's due time passed.
    pub(crate) const TASK_OVERDUE: &str = "dev.taskmesh.task.overdue.v1";
    /// Notifications were marked read.
    pub(crate) const NOTIFICATION_READ: &str = "dev.taskmesh.notification.read.v1";
    /// A reminder was snoozed.
    pub(crate) const REMINDER_SNOOZED: &str = "dev.taskmesh.reminder.snoozed.v1";
    /// A reminder was dismissed.
    pub(crate) const REMINDER_DISMISSED: &str = "dev.taskmesh.reminder.dismissed.v1";
}
