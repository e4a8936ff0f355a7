//! What a series change sends through the outbox, in the transaction of the change: commands
//! to TaskService and `series.ended` events, each with a `request_id` derived from what it is
//! about.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use taskmesh_domain::{DueValue, timestamp};
use taskmesh_platform::changelog::{self, Published, Writer};
use taskmesh_proto::{
    catalogue::Event,
    events::v1 as ev,
    names::{SeriesName, TaskName},
    task::v1 as task_pb,
};
use uuid::Uuid;

use super::{Ending, SeriesRow};
use crate::{LOG, occurrence};

/// The namespace of the UUIDv5 request ids RecurrenceService derives.
const REQUEST_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b8e_4a0d_4c55_9a57_3d1e_8b42_c7a1);

/// A deterministic `request_id` for `what` (e.g. `series/{id}/occurrences/{time}`).
pub(crate) fn request_id(what: &str) -> String {
    Uuid::new_v5(&REQUEST_NAMESPACE, what.as_bytes()).to_string()
}

/// Sends commands and series events for one user through the outbox.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outbox<'a> {
    /// The installation's topic prefix.
    pub(crate) topic_prefix: &'a str,
    /// Whose tasks.
    pub(crate) user: &'a str,
    /// Who asks: the user for an RPC, [`crate::ACTOR`] for what a completion caused.
    pub(crate) actor: &'a str,
    /// The CloudEvent time.
    pub(crate) now: DateTime<Utc>,
}

impl Outbox<'_> {
    async fn send(
        &self,
        tx: &mut PgConnection,
        request_id: &str,
        subject: String,
        payload: impl Event,
    ) -> Result<(), sqlx::Error> {
        let writer = Writer {
            user: self.user,
            actor: self.actor,
            request_id,
            topic_prefix: self.topic_prefix,
        };
        changelog::publish_only(
            tx,
            &LOG,
            &writer,
            self.now,
            Published::new(subject, payload),
        )
        .await
    }

    /// Asks TaskService to create the occurrence after `current` at `next`; the request id
    /// is the series and the task it follows, so each task leads to one next task (an id
    /// of the occurrence's time alone could repeat: an "every!" task done twice on one day
    /// has the same next due). Returns the request id.
    pub(crate) async fn create_next(
        &self,
        tx: &mut PgConnection,
        series: Uuid,
        current: &task_pb::Task,
        current_due: &DueValue,
        next: &DueValue,
    ) -> Result<String, sqlx::Error> {
        let request_id = request_id(&format!(
            "{}/successor-of/{}",
            SeriesName(series),
            current.name
        ));
        let task = occurrence::next_task(current, current_due, next);
        self.send(
            tx,
            &request_id,
            "tasks".to_owned(),
            ev::CreateTaskCommand {
                context: None,
                task: Some(task),
            },
        )
        .await?;
        Ok(request_id)
    }

    /// Asks TaskService to add `exdate` to `task`'s rule.
    pub(crate) async fn add_exdate(
        &self,
        tx: &mut PgConnection,
        task: Uuid,
        exdate: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let name = TaskName(task).to_string();
        let at = timestamp(exdate);
        let id = request_id(&format!("{name}/exdates/{}.{:09}", at.seconds, at.nanos));
        let subject = name.clone();
        self.send(
            tx,
            &id,
            subject,
            ev::AddExdateCommand {
                context: None,
                task: name,
                exdate: Some(at),
            },
        )
        .await
    }

    /// Asks TaskService to remove the rule from `task`.
    pub(crate) async fn end_series(
        &self,
        tx: &mut PgConnection,
        task: Uuid,
    ) -> Result<(), sqlx::Error> {
        let name = TaskName(task).to_string();
        let id = request_id(&format!("{name}/end-series"));
        let subject = name.clone();
        self.send(
            tx,
            &id,
            subject,
            ev::EndSeriesCommand {
                context: None,
                task: name,
            },
        )
        .await
    }

    /// Asks TaskService to delete `task`.
    pub(crate) async fn delete_task(
        &self,
        tx: &mut PgConnection,
        task: Uuid,
    ) -> Result<(), sqlx::Error> {
        let name = TaskName(task).to_string();
        let id = request_id(&format!("{name}/delete"));
        let subject = name.clone();
        self.send(
            tx,
            &id,
            subject,
            ev::DeleteTaskCommand {
                context: None,
                task: name,
            },
        )
        .await
    }

    /// Ends `series` (`ending`, now) and emits `series.ended`; an ended series is left as it
    /// is.
    pub(crate) async fn end(
        &self,
        tx: &mut PgConnection,
        series: &mut SeriesRow,
        ending: Ending,
    ) -> Result<(), sqlx::Error> {
        if series.ended() {
            return Ok(());
        }
        let reason = ending.reason();
        let end_reason = reason as i16;
        sqlx::query!(
            "UPDATE series SET end_time = $2, end_reason = $3, update_time = $2 WHERE id = $1",
            series.id,
            self.now,
            end_reason,
        )
        .execute(&mut *tx)
        .await?;
        series.end_time = Some(self.now);
        series.end_reason = Some(end_reason);
        let name = SeriesName(series.id).to_string();
        let last_task = TaskName(series.current_task).to_string();
        let id = request_id(&format!("{name}/ended"));
        let subject = name.clone();
        self.send(
            tx,
            &id,
            subject,
            ev::SeriesEnded {
                context: None,
                series: name,
                last_task,
                reason: reason as i32,
            },
        )
        .await
    }
}
