//! Tools of repetition and completion: set a rule (with its next occurrences), skip an
//! occurrence, complete (naming the next occurrence) and re-open.

use std::time::Duration;

use rmcp::{
    RoleServer,
    handler::server::wrapper::{Json, Parameters},
    service::RequestContext,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use taskmesh_proto::{
    recurrence::v1::{
        GetSeriesRequest, PreviewOccurrencesRequest, SkipOccurrenceRequest, series::EndReason,
    },
    task::v1::{self as pb, CompleteTaskRequest, UncompleteTaskRequest},
};
use tokio_util::sync::CancellationToken;

use super::{Call, TaskId, TaskOutput, Tools, task_error};
use crate::mcp::{
    inputs::RecurrenceInput,
    status,
    views::{TaskView, rfc3339},
};

/// How long `complete_task` waits to name the next occurrence of a series.
const NEXT_OCCURRENCE_WAIT: Duration = Duration::from_secs(5);

/// Input of `set_recurring`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetRecurringInput {
    /// The task's id, `tasks/{uuid}`; it needs a due date (the first occurrence).
    id: String,
    /// How it repeats from now on; null or absent stops the repetition (the series ends,
    /// the task stays).
    recurrence: Option<RecurrenceInput>,
}

/// A task and when it occurs next.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RecurringOutput {
    /// The task after the change.
    task: TaskView,
    /// The next occurrences after this one (at most 5): RFC 3339 instants for a task due at
    /// a time, `YYYY-MM-DD` days for a date-only task.
    next_occurrences: Vec<String>,
}

/// What `skip_occurrence` skipped.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SkipOutput {
    /// The task (the series' current one).
    task_id: String,
    /// The occurrence that will be skipped (RFC 3339, UTC; for a date-only task, the start
    /// of that day in its zone). The task shows it in `recurrence.exdates` a moment later.
    skipped: String,
}

/// Input of `complete_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteInput {
    /// The task's id, `tasks/{uuid}`.
    id: String,
    /// Idempotency key (a UUID): a retry returns the first result.
    request_id: Option<String>,
}

/// A completed task and what comes next.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct CompleteOutput {
    /// The task, now completed.
    task: TaskView,
    /// For a repeating task, its next occurrence (a new open task); null otherwise, when the
    /// series ended, or when it was not created within a few seconds.
    next_task: Option<TaskView>,
    /// What happened, in words.
    message: String,
}

#[tool_router(router = series_router, vis = "pub(super)")]
impl Tools {
    /// Make a task repeat (a preset like weekly, or an RFC 5545 rule), change how it
    /// repeats, or stop it repeating (no `recurrence`). Returns the next occurrences.
    #[tool(annotations(
        title = "Set repetition",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn set_recurring(
        &self,
        Parameters(input): Parameters<SetRecurringInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<RecurringOutput>, String> {
        let call = self.call(&context)?;
        let recurrence = match &input.recurrence {
            Some(r) => Some(call.recurrence_of(r).await?),
            None => None,
        };
        let task = call
            .read_modify_write(&input.id, &["recurrence"], |task| {
                let mut new = recurrence.clone();
                // The same rule again keeps its skipped occurrences; a new rule starts clean.
                if let (Some(new), Some(old)) = (&mut new, &task.recurrence)
                    && new.rrule.eq_ignore_ascii_case(&old.rrule)
                {
                    new.exdates.clone_from(&old.exdates);
                }
                task.recurrence = new;
                Ok(())
            })
            .await?;
        // The change is made: a preview that fails only leaves the list empty.
        let next_occurrences = next_occurrences(&call, &task)
            .await
            .unwrap_or_else(|error| {
                tracing::debug!(%error, "mcp: no preview of the next occurrences");
                Vec::new()
            });
        Ok(Json(RecurringOutput {
            task: task.into(),
            next_occurrences,
        }))
    }

    /// Skip the next occurrence of a repeating task: completing the task then moves on to
    /// the occurrence after it. Returns the skipped occurrence.
    #[tool(annotations(
        title = "Skip an occurrence",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn skip_occurrence(
        &self,
        Parameters(input): Parameters<TaskId>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<SkipOutput>, String> {
        let call = self.call(&context)?;
        let request = call.request(SkipOccurrenceRequest {
            task: input.id.clone(),
            request_id: String::new(),
        });
        let response = call.recurrence().skip_occurrence(request).await;
        let skipped = response.map_err(task_error)?.into_inner().skipped;
        Ok(Json(SkipOutput {
            task_id: input.id,
            skipped: skipped.as_ref().map(rfc3339).unwrap_or_default(),
        }))
    }

    /// Mark a task done. For a repeating task, says which task is its next occurrence.
    #[tool(annotations(
        title = "Complete a task",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn complete_task(
        &self,
        Parameters(input): Parameters<CompleteInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<CompleteOutput>, String> {
        let call = self.call(&context)?;
        let request = call.request(CompleteTaskRequest {
            name: input.id.clone(),
            etag: String::new(),
            request_id: input.request_id.unwrap_or_default(),
        });
        let response = call.tasks().complete_task(request).await;
        let task = response.map_err(task_error)?.into_inner().task;
        let task = task.ok_or_else(|| "the service sent no task".to_owned())?;
        let series = task
            .recurrence
            .as_ref()
            .map(|r| r.series.clone())
            .filter(|s| !s.is_empty());
        let (next_task, message) = match series {
            None => (None, "Completed.".to_owned()),
            Some(series) => next_occurrence(&call, &series, &task.name, &context.ct).await,
        };
        Ok(Json(CompleteOutput {
            task: task.into(),
            next_task: next_task.map(TaskView::from),
            message,
        }))
    }

    /// Re-open a completed task.
    #[tool(annotations(
        title = "Re-open a task",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn uncomplete_task(
        &self,
        Parameters(input): Parameters<TaskId>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOutput>, String> {
        let call = self.call(&context)?;
        let request = call.request(UncompleteTaskRequest {
            name: input.id,
            etag: String::new(),
            request_id: String::new(),
        });
        let response = call.tasks().uncomplete_task(request).await;
        let task = response.map_err(task_error)?.into_inner().task;
        let task = task.ok_or_else(|| "the service sent no task".to_owned())?;
        Ok(Json(TaskOutput { task: task.into() }))
    }
}

/// The next occurrences of `task`'s rule after its due (at most 5), rendered as its due is:
/// instants for a due time, days in its zone for a date-only due. None without a rule.
async fn next_occurrences(call: &Call, task: &pb::Task) -> Result<Vec<String>, String> {
    use pb::due::Value;
    let (Some(recurrence), Some(due)) = (&task.recurrence, &task.due) else {
        return Ok(Vec::new());
    };
    let zone: chrono_tz::Tz = due
        .time_zone
        .parse()
        .map_err(|_| "the task's time zone is unknown".to_owned())?;
    let (dtstart, date_only) = match &due.value {
        Some(Value::Time(time)) => (*time, false),
        Some(Value::Date(date)) => {
            use chrono::TimeZone;
            let day = chrono::NaiveDate::from_ymd_opt(
                date.year,
                u32::try_from(date.month).unwrap_or(1),
                u32::try_from(date.day).unwrap_or(1),
            )
            .ok_or_else(|| "the task's due date is invalid".to_owned())?;
            // The day's first instant; where a DST change skips midnight, the hour after.
            let midnight = day.and_time(chrono::NaiveTime::MIN);
            let start = zone
                .from_local_datetime(&midnight)
                .earliest()
                .or_else(|| {
                    let later = midnight + chrono::TimeDelta::hours(1);
                    zone.from_local_datetime(&later).earliest()
                })
                .ok_or_else(|| "the task's due date does not exist in its zone".to_owned())?;
            let start = prost_types::Timestamp {
                seconds: start.timestamp(),
                nanos: 0,
            };
            (start, true)
        }
        None => return Ok(Vec::new()),
    };
    let request = call.request(PreviewOccurrencesRequest {
        rrule: recurrence.rrule.clone(),
        dtstart: Some(dtstart),
        time_zone: due.time_zone.clone(),
        exdates: recurrence.exdates.clone(),
        after: Some(dtstart),
        count: 5,
    });
    let response = call.recurrence().preview_occurrences(request).await;
    let occurrences = response
        .map_err(|s| status::message(&s, "rule"))?
        .into_inner()
        .occurrences;
    Ok(occurrences
        .iter()
        .map(|at| {
            if date_only {
                let instant = chrono::DateTime::<chrono::Utc>::from_timestamp(at.seconds, 0)
                    .unwrap_or_default()
                    .with_timezone(&zone);
                instant.date_naive().to_string()
            } else {
                rfc3339(at)
            }
        })
        .collect())
}

/// The task that followed `completed` in `series`, waited for up to
/// [`NEXT_OCCURRENCE_WAIT`] (RecurrenceService creates it from the completion event) or
/// until the client goes (`cancelled`), and what to tell the user.
async fn next_occurrence(
    call: &Call,
    series: &str,
    completed: &str,
    cancelled: &CancellationToken,
) -> (Option<pb::Task>, String) {
    let deadline = tokio::time::Instant::now() + NEXT_OCCURRENCE_WAIT;
    loop {
        let request = call.request(GetSeriesRequest {
            name: series.to_owned(),
        });
        let found = call.recurrence().get_series(request).await;
        if let Ok(Some(series)) = found.map(|r| r.into_inner().series) {
            if series.ended {
                let why = match EndReason::try_from(series.end_reason) {
                    Ok(EndReason::CountReached | EndReason::UntilPassed) => {
                        "That was the last occurrence: the series has ended."
                    }
                    _ => "Its series had been stopped: there is no next occurrence.",
                };
                return (None, format!("Completed. {why}"));
            }
            if !series.current_task.is_empty()
                && series.current_task != completed
                && let Ok(next) = call.get_task(&series.current_task).await
            {
                let due = TaskView::from(next.clone())
                    .due
                    .map(|d| d.date.or(d.time).unwrap_or_default())
                    .unwrap_or_default();
                let message = format!(
                    "Completed. The next occurrence is {} (due {due}).",
                    next.name
                );
                return (Some(next), message);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return (
                None,
                "Completed. Its next occurrence is still being created: search for it in a moment."
                    .to_owned(),
            );
        }
        tokio::select! {
            () = cancelled.cancelled() => return (None, "Completed.".to_owned()),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
