//! The `task-commands` consumer: how other services change tasks, TaskService being their only
//! writer. Each command carries the owner, the actor and a deterministic `request_id` in its
//! `ChangeContext`; applying it goes through the same code as the RPCs, inside the consumer's
//! transaction (so the `(consumer, ce_id)` record and the effect commit together).
//!
//! The commands are the variants of [`TaskCommands`] (generated from the events' options); a
//! type this version does not know is dead-lettered (see
//! [`taskmesh_platform::consumer::decode`]).

use sqlx::PgConnection;
use taskmesh_platform::{
    cloudevents::CloudEvent,
    consumer::{HandleError, Handler, decode, reject},
    grpc::{Violations, echo},
};
use taskmesh_proto::{
    catalogue::{Event as _, TaskCommands},
    events::v1::{ChangeContext, SeriesEnded},
    names::{SeriesName, TaskName, UuidName},
};
use uuid::Uuid;

use crate::{
    changes::Writer,
    error::TaskError,
    tasks::{self, Lineage},
    validate,
};

/// Applies task commands for the consumer `taskmesh-task`.
#[derive(Clone, Debug)]
pub struct CommandHandler {
    /// The installation's topic prefix, for the resulting events.
    pub(crate) topic_prefix: String,
}

fn from_task_error(error: TaskError) -> HandleError {
    match error {
        TaskError::Database(e) => taskmesh_platform::consumer::database(e),
        other => reject(other.to_string()),
    }
}

/// The context's owner, actor and request id; each command must name them.
fn context(context: Option<ChangeContext>) -> Result<ChangeContext, HandleError> {
    let context = context.ok_or_else(|| reject("command without context"))?;
    if context.user.is_empty() || context.actor.is_empty() || context.request_id.is_empty() {
        return Err(reject("command context needs user, actor and request_id"));
    }
    Ok(context)
}

/// The id in the resource name `N` a command carries; a malformed one rejects the command.
fn id_of<N: UuidName>(name: &str) -> Result<Uuid, HandleError> {
    N::parse_id(name).map_err(|e| reject(format!("{}: {e}", echo(name))))
}

impl Handler for CommandHandler {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandleError> {
        // `series.ended` travelled on this topic until it got its own (`series-events`); it
        // was never a command. Records still here are skipped for one release (remove in 0.3).
        if event.event_type == SeriesEnded::TYPE {
            return Ok(());
        }
        match decode::<TaskCommands>(event)? {
            TaskCommands::CreateTaskCommand(command) => {
                let ctx = context(command.context)?;
                let task = command.task.ok_or_else(|| reject("command without task"))?;
                let mut v = Violations::new();
                let fields = validate::task_fields(&task, "task.", &mut v)
                    .ok_or_else(|| reject(format!("invalid task: {:?}", v)))?;
                let recurrence = task.recurrence.as_ref();
                let lineage = Lineage {
                    series: recurrence
                        .filter(|r| !r.series.is_empty())
                        .map(|r| id_of::<SeriesName>(&r.series))
                        .transpose()?,
                    previous_task: recurrence
                        .filter(|r| !r.previous_task.is_empty())
                        .map(|r| id_of::<TaskName>(&r.previous_task))
                        .transpose()?,
                };
                tasks::create(&mut *tx, &self.writer(&ctx), fields, lineage, None)
                    .await
                    .map_err(from_task_error)?;
            }
            TaskCommands::AddExdateCommand(command) => {
                let ctx = context(command.context)?;
                let id = id_of::<TaskName>(&command.task)?;
                let exdate = command
                    .exdate
                    .ok_or_else(|| reject("command without exdate"))?;
                self.change_recurrence(tx, &ctx, id, move |recurrence| {
                    if !recurrence.exdates.contains(&exdate) {
                        recurrence.exdates.push(exdate);
                    }
                })
                .await?;
            }
            TaskCommands::EndSeriesCommand(command) => {
                let ctx = context(command.context)?;
                let id = id_of::<TaskName>(&command.task)?;
                let result = tasks::update(
                    &mut *tx,
                    &self.writer(&ctx),
                    id,
                    "",
                    &["recurrence"],
                    |current| {
                        let mut merged = current.clone();
                        merged.recurrence = None;
                        revalidate(merged)
                    },
                )
                .await;
                ignore_missing(result.map(|_| ()))?;
            }
            TaskCommands::DeleteTaskCommand(command) => {
                let ctx = context(command.context)?;
                let id = id_of::<TaskName>(&command.task)?;
                ignore_missing(tasks::delete(&mut *tx, &self.writer(&ctx), id, "").await)?;
            }
        }
        Ok(())
    }
}

/// A command for a task that no longer exists has nothing left to do.
fn ignore_missing(result: Result<(), TaskError>) -> Result<(), HandleError> {
    match result {
        Ok(()) | Err(TaskError::NotFound(_)) => Ok(()),
        Err(error) => Err(from_task_error(error)),
    }
}

fn revalidate(
    merged: taskmesh_proto::task::v1::Task,
) -> Result<crate::model::TaskFields, TaskError> {
    let mut v = Violations::new();
    validate::task_fields(&merged, "task.", &mut v).ok_or(TaskError::Invalid(v))
}

impl CommandHandler {
    fn writer<'a>(&'a self, ctx: &'a ChangeContext) -> Writer<'a> {
        Writer {
            user: &ctx.user,
            actor: &ctx.actor,
            request_id: &ctx.request_id,
            topic_prefix: &self.topic_prefix,
        }
    }

    async fn change_recurrence(
        &self,
        tx: &mut PgConnection,
        ctx: &ChangeContext,
        id: Uuid,
        change: impl FnOnce(&mut taskmesh_proto::task::v1::Recurrence) + Send,
    ) -> Result<(), HandleError> {
        let result = tasks::update(
            &mut *tx,
            &self.writer(ctx),
            id,
            "",
            &["recurrence"],
            |current| {
                let mut merged = current.clone();
                if let Some(recurrence) = merged.recurrence.as_mut() {
                    change(recurrence);
                }
                revalidate(merged)
            },
        )
        .await;
        ignore_missing(result.map(|_| ()))
    }
}
