//! The tonic `RecurrenceService` implementation. Task-scoped RPCs read the caller's task from
//! TaskService with the caller's own token (so isolation is TaskService's, and the task is
//! current), then change the series and send their commands in one transaction of the
//! `recurrence` schema.

use prost::Message;
use sqlx::{PgConnection, PgPool};
use taskmesh_domain::{recurrence::Next, timestamp};
use taskmesh_platform::{
    auth::Caller,
    consumer::HandleError,
    grpc::{Violations, invalid_argument},
    requests,
};
use taskmesh_proto::{
    names::{SeriesName, TaskName},
    recurrence::v1::{
        self as pb, delete_occurrences_request::Scope, recurrence_service_server::RecurrenceService,
    },
    task::v1::{self as task_pb, recurrence::Anchor, task_service_client::TaskServiceClient},
};
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    error::RecurrenceError,
    events::{is_open, move_on, next_after},
    rules,
    series::{self, Ending, Outbox, SeriesRow},
};

/// The RecurrenceService gRPC server state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RecurrenceServiceImpl {
    pool: PgPool,
    topic_prefix: String,
    tasks: TaskServiceClient<Channel>,
}

impl RecurrenceServiceImpl {
    /// A service on `pool` (search_path = the `recurrence` schema) sending commands through
    /// the outbox to its topics, named with `topic_prefix`, reading tasks through `tasks`.
    pub fn new(pool: PgPool, topic_prefix: String, tasks: TaskServiceClient<Channel>) -> Self {
        Self {
            pool,
            topic_prefix,
            tasks,
        }
    }

    /// The caller's task `name`, read from TaskService with the caller's token, and its id.
    async fn task<T>(
        &self,
        request: &Request<T>,
        name: &str,
    ) -> Result<(task_pb::Task, Uuid), RecurrenceError> {
        let id = TaskName::parse(name)
            .map_err(|e| RecurrenceError::Invalid(violation("task", &e.to_string())))?
            .id();
        let mut read = Request::new(task_pb::GetTaskRequest {
            name: name.to_owned(),
        });
        if let Some(auth) = request.metadata().get("authorization") {
            read.metadata_mut().insert("authorization", auth.clone());
        }
        // The read gets what is left of the caller's deadline, or 10 s.
        read.set_timeout(
            taskmesh_platform::grpc::remaining(request)
                .unwrap_or(std::time::Duration::from_secs(10)),
        );
        // TaskService's span of the read continues this call's trace.
        if let Some(traceparent) =
            taskmesh_platform::trace::current_traceparent().and_then(|t| t.parse().ok())
        {
            read.metadata_mut().insert("traceparent", traceparent);
        }
        let task = self
            .tasks
            .clone()
            .get_task(read)
            .await
            .map_err(RecurrenceError::Upstream)?
            .into_inner()
            .task
            .ok_or_else(|| RecurrenceError::NotFound(name.to_owned()))?;
        Ok((task, id))
    }

    /// The shape of the task-scoped RPCs: checks `task` and `request_id`, reads the caller's
    /// task from TaskService, then runs `work` on its series (tracked and locked) in one
    /// transaction, once per `request_id` (AIP-155).
    async fn series_call<T, R>(
        &self,
        request: &Request<T>,
        task: &str,
        request_id: &str,
        method: &str,
        work: impl AsyncFnOnce(&mut PgConnection, SeriesCall<'_>) -> Result<R, RecurrenceError>,
    ) -> Result<R, Status>
    where
        R: Message + Default,
    {
        let caller = Caller::of(request)?.clone();
        check_task_request(task, request_id)?;
        // A retry answers as the first call did, even once the task is gone (AIP-155).
        if let Some(done) = self.done_before(&caller.user, method, request_id).await? {
            return Ok(done);
        }
        let (task, id) = self.task(request, task).await?;
        let outbox = self.outbox(&caller);
        let response = once(&self.pool, &caller.user, method, request_id, async |tx| {
            let (series, occurrence) = series_of(tx, &caller, &task, id).await?;
            let series_id = series.id;
            let call = SeriesCall {
                task: &task,
                id,
                outbox,
                series,
                occurrence,
            };
            Ok((work(tx, call).await?, series_id))
        })
        .await?;
        Ok(response)
    }

    /// The stored response of a finished request `request_id` of `method`, if any.
    async fn done_before<R: Message + Default>(
        &self,
        user: &str,
        method: &str,
        request_id: &str,
    ) -> Result<Option<R>, RecurrenceError> {
        let mut conn = self.pool.acquire().await?;
        match requests::finished(&mut conn, user, method, request_id).await? {
            Some(bytes) => Ok(Some(R::decode(bytes.as_slice())?)),
            None => Ok(None),
        }
    }

    fn outbox<'a>(&'a self, caller: &'a Caller) -> Outbox<'a> {
        Outbox {
            topic_prefix: &self.topic_prefix,
            user: &caller.user,
            actor: &caller.actor,
            now: taskmesh_domain::now(),
        }
    }
}

fn violation(field: &str, description: &str) -> Violations {
    let mut v = Violations::new();
    v.add(field, description);
    v
}

/// Checks a `task` name and a `request_id`.
fn check_task_request(task: &str, request_id: &str) -> Result<(), Status> {
    let mut v = Violations::new();
    if let Err(e) = TaskName::parse(task) {
        v.add("task", e.to_string());
    }
    requests::validate(request_id, &mut v);
    v.check()
}

/// The series a task belongs to, tracked and locked: `FAILED_PRECONDITION` for a task that
/// does not recur.
async fn series_of(
    tx: &mut PgConnection,
    caller: &Caller,
    task: &task_pb::Task,
    id: Uuid,
) -> Result<(SeriesRow, series::OccurrenceRow), RecurrenceError> {
    let Some(recurrence) = task.recurrence.as_ref() else {
        // A task whose rule was removed (StopSeries) is still part of its series.
        return series::find(tx, &caller.user, id).await?.ok_or_else(|| {
            RecurrenceError::FailedPrecondition(format!("{} does not recur", task.name))
        });
    };
    let series_id = SeriesName::parse(&recurrence.series)
        .map_err(|_| RecurrenceError::NotFound(recurrence.series.clone()))?
        .id();
    let previous = TaskName::parse(&recurrence.previous_task)
        .ok()
        .map(TaskName::id);
    series::track(
        tx,
        &caller.user,
        series_id,
        id,
        previous,
        taskmesh_domain::now(),
    )
    .await?
    .ok_or_else(|| RecurrenceError::NotFound(recurrence.series.clone()))
}

/// A consumer-style failure of a series step, as a service error.
fn from_handle(error: HandleError) -> RecurrenceError {
    match error {
        HandleError::Reject(reason) => RecurrenceError::FailedPrecondition(reason),
        HandleError::Transient(reason) => RecurrenceError::Unavailable(reason),
        HandleError::Failed(reason) => RecurrenceError::Internal(reason),
    }
}

/// Runs `work` in a transaction claiming `request_id` for `method` (AIP-155): a retry
/// returns the first response without acting again.
async fn once<R, F>(
    pool: &PgPool,
    user: &str,
    method: &str,
    request_id: &str,
    work: F,
) -> Result<R, RecurrenceError>
where
    R: Message + Default,
    F: for<'t> AsyncFnOnce(&'t mut PgConnection) -> Result<(R, Uuid), RecurrenceError>,
{
    let mut tx = pool.begin().await?;
    if let Some(done) = requests::claim(&mut tx, user, method, request_id).await? {
        tx.rollback().await?;
        return Ok(R::decode(done.as_slice())?);
    }
    let (response, resource) = work(&mut tx).await?;
    requests::finish(&mut tx, user, method, request_id, resource, &response).await?;
    tx.commit().await?;
    Ok(response)
}

/// What a task-scoped RPC works on.
struct SeriesCall<'a> {
    /// The caller's task, as TaskService has it now.
    task: &'a task_pb::Task,
    /// Its id.
    id: Uuid,
    /// Commands and events, on behalf of the caller.
    outbox: Outbox<'a>,
    /// Its series, locked.
    series: SeriesRow,
    /// Its place in the series.
    occurrence: series::OccurrenceRow,
}

/// SkipOccurrence: the occurrence completing the task now would create becomes an `EXDATE`.
async fn skip(
    tx: &mut PgConnection,
    call: SeriesCall<'_>,
) -> Result<pb::SkipOccurrenceResponse, RecurrenceError> {
    let task = call.task;
    let precondition = |what: String| RecurrenceError::FailedPrecondition(what);
    let current =
        call.series.current_task == call.id && call.occurrence.successor_request.is_none();
    if !is_open(task) || call.series.ended() || !current {
        return Err(precondition(format!(
            "{} is not the open, current task of a going series",
            task.name
        )));
    }
    if task.recurrence.as_ref().map(|r| r.anchor) == Some(Anchor::Completion as i32) {
        return Err(precondition(
            "the next occurrence of a series anchored at completion depends on when the task \
             is done; there is nothing to skip yet"
                .into(),
        ));
    }
    let (_, next) = next_after(task, &call.occurrence, call.outbox.now)
        .await
        .map_err(precondition)?;
    let next = next.map_err(|error| precondition(error.to_string()))?;
    let Next::Occurrence { due: next, .. } = next else {
        return Err(precondition(
            "the series has no further occurrence to skip".into(),
        ));
    };
    // Remembered until the task shows it, so a completion that overtakes the command, or a
    // second skip, sees it.
    series::add_skipped(tx, call.id, next.start()).await?;
    call.outbox.add_exdate(tx, call.id, next.start()).await?;
    Ok(pb::SkipOccurrenceResponse {
        skipped: Some(timestamp(next.start())),
    })
}

/// StopSeries: the series ends and its current task loses its rule.
async fn stop(
    tx: &mut PgConnection,
    mut call: SeriesCall<'_>,
) -> Result<pb::StopSeriesResponse, RecurrenceError> {
    if !call.series.ended() {
        call.outbox
            .end(tx, &mut call.series, Ending::Stopped)
            .await?;
        call.outbox.end_series(tx, call.series.current_task).await?;
    }
    Ok(pb::StopSeriesResponse {
        series: Some(call.series.to_proto()),
    })
}

/// DeleteOccurrences with `scope`.
async fn delete(
    tx: &mut PgConnection,
    mut call: SeriesCall<'_>,
    scope: Scope,
) -> Result<pb::DeleteOccurrencesResponse, RecurrenceError> {
    let (id, outbox) = (call.id, call.outbox);
    if scope == Scope::ThisTask {
        let current = call.series.current_task == id;
        if current && !call.series.ended() && call.occurrence.successor_request.is_none() {
            // The series goes on as if this occurrence had been done now.
            move_on(
                tx,
                &outbox,
                &mut call.series,
                call.task,
                &call.occurrence,
                outbox.now,
            )
            .await
            .map_err(from_handle)?;
        }
        outbox.delete_task(tx, id).await?;
        series::mark_deleted(tx, id).await?;
    } else {
        for task in series::tasks_from(tx, call.series.id, call.occurrence.position).await? {
            outbox.delete_task(tx, task).await?;
            series::mark_deleted(tx, task).await?;
        }
        outbox.end(tx, &mut call.series, Ending::Deleted).await?;
    }
    Ok(pb::DeleteOccurrencesResponse {
        series: Some(call.series.to_proto()),
    })
}

#[tonic::async_trait]
impl RecurrenceService for RecurrenceServiceImpl {
    async fn validate_rule(
        &self,
        request: Request<pb::ValidateRuleRequest>,
    ) -> Result<Response<pb::ValidateRuleResponse>, Status> {
        let user = Caller::of(&request)?.user.clone();
        let req = request.into_inner();
        let response = taskmesh_platform::compute::run(&user, move || {
            rules::validate(&req, taskmesh_domain::now())
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn preview_occurrences(
        &self,
        request: Request<pb::PreviewOccurrencesRequest>,
    ) -> Result<Response<pb::PreviewOccurrencesResponse>, Status> {
        let user = Caller::of(&request)?.user.clone();
        let req = request.into_inner();
        // Expanding walks the calendar: on the bounded pool, off the async workers.
        let response = taskmesh_platform::compute::run(&user, move || rules::preview(&req))
            .await?
            .map_err(Violations::into_status)?;
        Ok(Response::new(response))
    }

    async fn build_rule(
        &self,
        request: Request<pb::BuildRuleRequest>,
    ) -> Result<Response<pb::BuildRuleResponse>, Status> {
        Caller::of(&request)?;
        let rrule =
            rules::build(request.get_ref().preset.as_ref()).map_err(Violations::into_status)?;
        Ok(Response::new(pb::BuildRuleResponse { rrule }))
    }

    async fn skip_occurrence(
        &self,
        request: Request<pb::SkipOccurrenceRequest>,
    ) -> Result<Response<pb::SkipOccurrenceResponse>, Status> {
        let req = request.get_ref().clone();
        let response = self
            .series_call(&request, &req.task, &req.request_id, "SkipOccurrence", skip)
            .await?;
        Ok(Response::new(response))
    }

    async fn stop_series(
        &self,
        request: Request<pb::StopSeriesRequest>,
    ) -> Result<Response<pb::StopSeriesResponse>, Status> {
        let req = request.get_ref().clone();
        let response = self
            .series_call(&request, &req.task, &req.request_id, "StopSeries", stop)
            .await?;
        Ok(Response::new(response))
    }

    async fn delete_occurrences(
        &self,
        request: Request<pb::DeleteOccurrencesRequest>,
    ) -> Result<Response<pb::DeleteOccurrencesResponse>, Status> {
        let req = request.get_ref().clone();
        let scope = Scope::try_from(req.scope).unwrap_or(Scope::Unspecified);
        if scope == Scope::Unspecified {
            let mut v = Violations::new();
            v.add(
                "scope",
                "must be SCOPE_THIS_TASK or SCOPE_THIS_AND_FOLLOWING",
            );
            if let Err(e) = TaskName::parse(&req.task) {
                v.add("task", e.to_string());
            }
            return Err(v.into_status());
        }
        let method = "DeleteOccurrences";
        let work =
            async |tx: &mut PgConnection, call: SeriesCall<'_>| delete(tx, call, scope).await;
        let response = self
            .series_call(&request, &req.task, &req.request_id, method, work)
            .await?;
        Ok(Response::new(response))
    }

    async fn get_series(
        &self,
        request: Request<pb::GetSeriesRequest>,
    ) -> Result<Response<pb::GetSeriesResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let name = &request.get_ref().name;
        let id = SeriesName::parse(name)
            .map_err(|e| invalid_argument("name", &e.to_string()))?
            .id();
        let mut conn = self.pool.acquire().await.map_err(RecurrenceError::from)?;
        let series = series::get(&mut conn, &caller.user, id)
            .await
            .map_err(RecurrenceError::from)?
            .ok_or_else(|| RecurrenceError::NotFound(name.clone()))?;
        Ok(Response::new(pb::GetSeriesResponse {
            series: Some(series.to_proto()),
        }))
    }
}
