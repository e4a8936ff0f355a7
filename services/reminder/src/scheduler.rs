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
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use taskmesh_domain::timestamp;
use taskmesh_platform::changelog::{self, Change, Writer};
use taskmesh_platform::runtime::{Backoff, TaskContext};
use taskmesh_proto::events::v1 as ev;
use taskmesh_proto::names::{ReminderName, TaskName};
use uuid::Uuid;

use crate::{
    LOG,
    model::{
        KIND_OVERDUE, KIND_REMINDER, NotificationRow, ReminderRow, micros, query_reminder, state,
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
    topic_prefix: String,
    batch: i64,
}

struct OverdueRow {
    id: Uuid,
    user_id: String,
    title: String,
    due_at: DateTime<Utc>,
    due_label: String,
}

impl Scheduler {
    /// A scheduler on `pool` (the `reminder` schema) publishing to its topics, named with `topic_prefix`.
    pub fn new(pool: PgPool, topic_prefix: String) -> Self {
        Self {
            pool,
            topic_prefix,
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
        sqlx::query_scalar!(
            "SELECT LEAST((SELECT min(fire_at) FROM reminders WHERE state IN (1, 3)), \
             (SELECT min(overdue_at) FROM tasks WHERE overdue_at IS NOT NULL))",
        )
        .fetch_one(&self.pool)
        .await
    }

    async fn fire_batch(&self, now: DateTime<Utc>) -> Result<Fired, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let reminders: Vec<ReminderRow> = query_reminder!(
            "SELECT ",
            " FROM reminders r JOIN tasks t ON t.id = r.task_id \
             WHERE r.state IN ($1, $2) AND r.fire_at <= $3 ORDER BY r.fire_at LIMIT $4 \
             FOR UPDATE OF r SKIP LOCKED",
            state::SCHEDULED,
            state::SNOOZED,
            now,
            self.batch
        )
        .fetch_all(&mut *tx)
        .await?;
        let room = self.batch - i64::try_from(reminders.len()).unwrap_or(0);
        let overdue: Vec<OverdueRow> = if room > 0 {
            // `due_at` is never NULL here: the consumer sets `overdue_at` only from a due.
            sqlx::query_as!(
                OverdueRow,
                r#"SELECT id, user_id, title, due_at AS "due_at!", due_label FROM tasks
                 WHERE overdue_at <= $1 ORDER BY overdue_at LIMIT $2 FOR UPDATE SKIP LOCKED"#,
                now,
                room
            )
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
        let mut changes = Vec::with_capacity(reminders.len() + overdue.len());
        let mut notifications = Vec::with_capacity(reminders.len() + overdue.len());
        self.fire_reminders(&mut tx, &reminders, now, &mut changes, &mut notifications)
            .await?;
        self.notice_overdue(&mut tx, &overdue, now, &mut changes, &mut notifications)
            .await?;
        insert_notifications(&mut tx, &notifications).await?;
        changelog::record_all(&mut tx, &LOG, now, changes).await?;
        tx.commit().await?;
        Ok(Fired {
            reminders: reminders.len(),
            overdue: overdue.len(),
        })
    }

    /// Marks `rows` fired at `now` and prepares their notifications and `reminder.fired`
    /// changes.
    async fn fire_reminders<'a>(
        &'a self,
        tx: &mut PgConnection,
        rows: &'a [ReminderRow],
        now: DateTime<Utc>,
        changes: &mut Vec<(Writer<'a>, Change)>,
        notifications: &mut Vec<(&'a str, NotificationRow)>,
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let lateness: Vec<i64> = rows.iter().map(|r| lateness_us(now, r.fire_at)).collect();
        let late = metrics::histogram!("taskmesh_reminder_lateness_seconds", "kind" => "reminder");
        for us in &lateness {
            late.record(*us as f64 / 1e6);
        }
        let tasks: Vec<Uuid> = rows.iter().map(|r| r.task_id).collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.reminder_id.as_str()).collect();
        sqlx::query!(
            "UPDATE reminders r SET state = $4, fired_time = $5, lateness_us = u.lateness \
             FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS u(task_id, reminder_id, lateness) \
             WHERE r.task_id = u.task_id AND r.reminder_id = u.reminder_id",
            &tasks,
            &ids as &[&str],
            &lateness,
            state::FIRED,
            now
        )
        .execute(&mut *tx)
        .await?;
        for (row, lateness_us) in rows.iter().zip(lateness) {
            let mut reminder = row.clone();
            reminder.state = state::FIRED;
            reminder.fired_time = Some(now);
            reminder.lateness_us = Some(lateness_us);
            let body = if row.due_label.is_empty() {
                String::new()
            } else {
                format!("due {}", row.due_label)
            };
            let notification = notification(
                KIND_REMINDER,
                row.task_id,
                &row.reminder_id,
                &row.title,
                body,
                now,
                lateness_us,
            );
            let payload = ev::ReminderFired {
                context: None,
                reminder: Some(reminder.to_proto()),
                notification: Some(notification.to_proto()),
            };
            notifications.push((&row.user_id, notification));
            changes.push((
                self.writer(&row.user_id),
                Change::new(
                    ReminderName::new(row.task_id, &row.reminder_id).to_string(),
                    payload,
                ),
            ));
        }
        Ok(())
    }

    /// Marks the overdue notice of `tasks` produced and prepares their notifications and
    /// `task.overdue` changes.
    async fn notice_overdue<'a>(
        &'a self,
        tx: &mut PgConnection,
        tasks: &'a [OverdueRow],
        now: DateTime<Utc>,
        changes: &mut Vec<(Writer<'a>, Change)>,
        notifications: &mut Vec<(&'a str, NotificationRow)>,
    ) -> Result<(), sqlx::Error> {
        if tasks.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
        sqlx::query!(
            "UPDATE tasks SET overdue_at = NULL, overdue_notice_for = due_at WHERE id = ANY($1)",
            &ids
        )
        .execute(&mut *tx)
        .await?;
        let late = metrics::histogram!("taskmesh_reminder_lateness_seconds", "kind" => "overdue");
        for task in tasks {
            let lateness_us = lateness_us(now, task.due_at);
            late.record(lateness_us as f64 / 1e6);
            let notification = notification(
                KIND_OVERDUE,
                task.id,
                "",
                &task.title,
                format!("overdue: was due {}", task.due_label),
                now,
                lateness_us,
            );
            let payload = ev::TaskOverdue {
                context: None,
                task: TaskName(task.id).to_string(),
                due_time: Some(timestamp(task.due_at)),
                lateness: Some(micros(lateness_us)),
                notification: Some(notification.to_proto()),
            };
            notifications.push((&task.user_id, notification));
            changes.push((
                self.writer(&task.user_id),
                Change::new(TaskName(task.id).to_string(), payload),
            ));
        }
        Ok(())
    }

    fn writer<'a>(&'a self, user: &'a str) -> Writer<'a> {
        Writer {
            user,
            actor: ACTOR,
            request_id: "",
            topic_prefix: &self.topic_prefix,
        }
    }

    /// Runs until shutdown: fires what is due, then sleeps until the soonest time, a wake-up
    /// notification, or [`MAX_IDLE`], whichever comes first. A failed round (database away)
    /// reports the task degraded and is tried again after a backoff.
    ///
    /// # Errors
    /// None today: a failed round is transient. (The signature is the supervisor's.)
    pub async fn run(self, ctx: TaskContext) -> anyhow::Result<()> {
        let mut listener: Option<PgListener> = None;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
                Ok(wait) => {
                    ctx.health.recovered();
                    backoff.reset();
                    wait
                }
                Err(error) => {
                    ctx.health
                        .degraded(&format_args!("scheduler round failed: {error}"));
                    backoff.next_delay()
                }
            };
            tokio::select! {
                () = ctx.shutdown.cancelled() => return Ok(()),
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

/// How late `now` is for `time`, in microseconds; never negative.
fn lateness_us(now: DateTime<Utc>, time: DateTime<Utc>) -> i64 {
    (now - time).num_microseconds().unwrap_or(i64::MAX).max(0)
}

/// A new notification created at `now`.
fn notification(
    kind: i16,
    task: Uuid,
    reminder: &str,
    title: &str,
    body: String,
    now: DateTime<Utc>,
    lateness_us: i64,
) -> NotificationRow {
    NotificationRow {
        id: Uuid::now_v7(),
        kind,
        task_id: task,
        reminder_id: reminder.to_owned(),
        title: title.to_owned(),
        body,
        create_time: now,
        read_time: None,
        lateness_us,
    }
}

/// Inserts `(owner, notification)` rows in one statement.
async fn insert_notifications(
    tx: &mut PgConnection,
    rows: &[(&str, NotificationRow)],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|(_, n)| n.id).collect();
    let users: Vec<&str> = rows.iter().map(|(user, _)| *user).collect();
    let kinds: Vec<i16> = rows.iter().map(|(_, n)| n.kind).collect();
    let tasks: Vec<Uuid> = rows.iter().map(|(_, n)| n.task_id).collect();
    let reminders: Vec<&str> = rows.iter().map(|(_, n)| n.reminder_id.as_str()).collect();
    let titles: Vec<&str> = rows.iter().map(|(_, n)| n.title.as_str()).collect();
    let bodies: Vec<&str> = rows.iter().map(|(_, n)| n.body.as_str()).collect();
    let create_times: Vec<DateTime<Utc>> = rows.iter().map(|(_, n)| n.create_time).collect();
    let lateness: Vec<i64> = rows.iter().map(|(_, n)| n.lateness_us).collect();
    sqlx::query!(
        "INSERT INTO notifications (id, user_id, kind, task_id, reminder_id, title, body, \
         create_time, lateness_us) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::uuid[], $5::text[], \
         $6::text[], $7::text[], $8::timestamptz[], $9::bigint[])",
        &ids,
        &users as &[&str],
        &kinds,
        &tasks,
        &reminders as &[&str],
        &titles as &[&str],
        &bodies as &[&str],
        &create_times,
        &lateness
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
