//! The MCP tools: each one a few calls to the services' gRPC APIs as the token's user, so
//! isolation, validation, idempotency (AIP-155) and the audit trail apply as to any client.
//! Calls carry [`VIA_HEADER`] `mcp`, so the audit trail names the actor `mcp:<user>`.

use std::{sync::Arc, time::Duration};

use rmcp::{
    RoleServer, ServerHandler,
    handler::server::{
        router::tool::ToolRouter,
        wrapper::{Json, Parameters},
    },
    model::{Implementation, ServerCapabilities, ServerConfig},
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use taskmesh_platform::auth::{VIA_HEADER, VIA_MCP};
use taskmesh_proto::{
    audit::v1::{
        ListActivityRequest, ListTaskHistoryRequest, audit_service_client::AuditServiceClient,
    },
    recurrence::v1::{
        BuildRuleRequest, DeleteOccurrencesRequest, GetSeriesRequest, PreviewOccurrencesRequest,
        SkipOccurrenceRequest, delete_occurrences_request::Scope,
        recurrence_service_client::RecurrenceServiceClient,
    },
    reminder::v1::{
        DismissReminderRequest, ListNotificationsRequest, ListRemindersRequest,
        SnoozeReminderRequest, reminder_service_client::ReminderServiceClient,
    },
    task::v1::{
        self as pb, CompleteTaskRequest, CreateTaskRequest, DeleteTaskRequest, GetTaskRequest,
        ListTagsRequest, ListTasksRequest, UncompleteTaskRequest, UpdateTaskRequest,
        task_service_client::TaskServiceClient,
    },
};
use tonic::{Code, Status, transport::Channel};

use super::{
    inputs::{self, DueInput, Problem, RecurrenceInput, ReminderInput, Rule},
    status,
    views::{
        ActivityView, NotificationView, PriorityName, ReminderView, ScheduledReminderView,
        TagView, TaskView, rfc3339,
    },
};

/// How long one service call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `complete_task` waits to name the next occurrence of a series.
const NEXT_OCCURRENCE_WAIT: Duration = Duration::from_secs(5);

/// Most items one list tool returns at once.
const MAX_PAGE_SIZE: i32 = 100;

/// Where the tools send their calls: the services' gRPC channels (the gateway's upstreams),
/// or the gateway itself (`taskmesh mcp --stdio`: every field the same channel).
#[derive(Clone, Debug)]
pub struct Upstreams {
    /// TaskService.
    pub task: Channel,
    /// ReminderService.
    pub reminder: Channel,
    /// RecurrenceService.
    pub recurrence: Channel,
    /// AuditService.
    pub audit: Channel,
}

/// The server's cross-tool rules, sent to the client at initialisation.
const INSTRUCTIONS: &str = "\
taskmesh manages the user's tasks (to-dos), their reminders and repetition, and keeps an \
activity log. Rules for every tool:
- Ids are resource names: a task is `tasks/<uuid>`, a reminder `tasks/<uuid>/reminders/<id>`. \
Find a task by title with `search_tasks` first; never invent an id.
- Dates and times are ISO 8601 with a zone: an instant as RFC 3339 with an offset \
(2026-12-08T09:00:00+01:00), a whole day as YYYY-MM-DD, and always the user's IANA \
`time_zone` (e.g. Europe/Berlin). The server does not interpret words like \"tomorrow\": \
work out the date from the user's current date and zone, and ask when unsure.
- `add_task` takes a `request_id` (any UUID you make up); send the same one when you retry \
the call, so it creates one task.
- Changing the due date of a repeating task keeps its repetition; `set_recurring` with no \
`recurrence` stops it. Completing a repeating task creates its next occurrence, which \
`complete_task` names.
- A result with isError explains what to fix in words; \"no such task\" means the id is wrong \
or the task is not the user's.
- Lists return `next_cursor`; pass it back as `cursor` (with the same other arguments) for \
more.";

/// The MCP server: taskmesh's tools.
#[derive(Clone, Debug)]
pub struct Tools {
    upstreams: Upstreams,
    /// The token of every call (`taskmesh mcp --stdio`); `None` takes each request's own
    /// `authorization` header (Streamable HTTP, already verified by the endpoint).
    token: Option<Arc<str>>,
    tool_router: ToolRouter<Self>,
}

/// One tool call's access to the services, as the caller.
struct Call {
    upstreams: Upstreams,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl Call {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(CALL_TIMEOUT);
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        metadata.insert(VIA_HEADER, tonic::metadata::MetadataValue::from_static(VIA_MCP));
        request
    }

    fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.upstreams.task.clone())
    }

    fn reminders(&self) -> ReminderServiceClient<Channel> {
        ReminderServiceClient::new(self.upstreams.reminder.clone())
    }

    fn recurrence(&self) -> RecurrenceServiceClient<Channel> {
        RecurrenceServiceClient::new(self.upstreams.recurrence.clone())
    }

    fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.upstreams.audit.clone())
    }

    async fn get_task(&self, id: &str) -> Result<pb::Task, String> {
        let request = self.request(GetTaskRequest {
            name: id.to_owned(),
        });
        let response = self.tasks().get_task(request).await.map_err(task_error)?;
        response
            .into_inner()
            .task
            .ok_or_else(|| "the service sent no task".to_owned())
    }

    async fn update_task(&self, task: pb::Task, paths: &[&str]) -> Result<pb::Task, Status> {
        let request = self.request(UpdateTaskRequest {
            task: Some(task),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|&p| p.to_owned()).collect(),
            }),
        });
        let response = self.tasks().update_task(request).await?;
        response
            .into_inner()
            .task
            .ok_or_else(|| Status::internal("the service sent no task"))
    }

    /// Reads the task, changes it with `change`, and writes `paths` back with its etag; a
    /// concurrent change (`ABORTED`) is retried once on a fresh read.
    async fn read_modify_write(
        &self,
        id: &str,
        paths: &[&str],
        change: impl Fn(&mut pb::Task) -> Result<(), Problem>,
    ) -> Result<pb::Task, String> {
        for attempt in 0..2 {
            let mut task = self.get_task(id).await?;
            change(&mut task).map_err(|p| p.0)?;
            match self.update_task(task, paths).await {
                Err(status) if status.code() == Code::Aborted && attempt == 0 => continue,
                other => return other.map_err(|s| task_error(s)),
            }
        }
        Err("the task kept changing while it was updated: retry".to_owned())
    }

    /// The `RRULE` of `input`: given, or built from its preset by RecurrenceService.
    async fn rrule(&self, input: &RecurrenceInput) -> Result<String, String> {
        match input.rule().map_err(|p| p.0)? {
            Rule::Text(rrule) => Ok(rrule),
            Rule::Preset(preset) => {
                let request = self.request(BuildRuleRequest {
                    preset: Some(preset),
                });
                let response = self.recurrence().build_rule(request).await;
                Ok(response
                    .map_err(|s| status::message(&s, "rule"))?
                    .into_inner()
                    .rrule)
            }
        }
    }

    /// The protobuf recurrence of `input`.
    async fn recurrence_of(&self, input: &RecurrenceInput) -> Result<pb::Recurrence, String> {
        Ok(pb::Recurrence {
            rrule: self.rrule(input).await?,
            anchor: input.anchor() as i32,
            ..Default::default()
        })
    }
}

fn task_error(status: Status) -> String {
    status::message(&status, "task")
}

/// A page size within 1..=[`MAX_PAGE_SIZE`] (default 20).
fn page_size(size: Option<i32>) -> i32 {
    size.unwrap_or(20).clamp(1, MAX_PAGE_SIZE)
}

/// An empty page token is no next page.
fn cursor(token: String) -> Option<String> {
    (!token.is_empty()).then_some(token)
}

/// A quoted AIP-160 string literal (the filter grammar's escapes: `\"` and `\\`).
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

// ---- Tool inputs and outputs -------------------------------------------------------------

/// Input of `add_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddTaskInput {
    /// Short title, 1 to 500 characters.
    title: String,
    /// Notes, at most 20,000 characters.
    description: Option<String>,
    /// How urgent; default `none`.
    priority: Option<PriorityName>,
    /// Tag names (at most 20, each 1 to 64 characters); new names create tags.
    tags: Option<Vec<String>>,
    /// When it is due.
    due: Option<DueInput>,
    /// Reminders (at most 20); a reminder relative to the due needs `due`.
    reminders: Option<Vec<ReminderInput>>,
    /// How it repeats; needs `due` (the first occurrence).
    recurrence: Option<RecurrenceInput>,
    /// Idempotency key, e.g. a UUID you generate (at most 128 characters): a retried call with
    /// the same key returns the task the first call created instead of adding another.
    request_id: Option<String>,
}

/// A task.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct TaskOutput {
    /// The task.
    task: TaskView,
}

/// Input of the tools that act on one task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskId {
    /// The task's id, `tasks/{uuid}`.
    id: String,
}

/// Which tasks `search_tasks` returns, in what order.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchInput {
    /// Words that must all appear in the title or notes (word prefixes match), at most 200
    /// characters.
    text: Option<String>,
    /// `open` (default), `completed` or `any`.
    state: Option<StateFilter>,
    /// Only tasks at least this urgent.
    priority_at_least: Option<PriorityName>,
    /// Only tasks that have every one of these tags.
    tags: Option<Vec<String>>,
    /// Only tasks due before this instant (RFC 3339 with an offset).
    #[schemars(extend("format" = "date-time"))]
    due_before: Option<String>,
    /// Only tasks due at or after this instant (RFC 3339 with an offset).
    #[schemars(extend("format" = "date-time"))]
    due_after: Option<String>,
    /// `true`: only repeating tasks; `false`: only one-off tasks.
    recurring: Option<bool>,
    /// `due` (default: soonest due first, then by priority), `priority` (most urgent first),
    /// `created` or `updated` (newest first), `title`.
    order: Option<Order>,
    /// How many tasks at most, 1 to 100; default 20.
    #[schemars(range(min = 1, max = 100))]
    page_size: Option<i32>,
    /// `next_cursor` of the previous call with the same other arguments.
    cursor: Option<String>,
}

/// A task state to search for.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StateFilter {
    /// Not done.
    Open,
    /// Done.
    Completed,
    /// Either.
    Any,
}

/// A `search_tasks` order.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Order {
    /// Soonest due first (tasks without a due date last), then most urgent.
    Due,
    /// Most urgent first, then soonest due.
    Priority,
    /// Newest first.
    Created,
    /// Most recently changed first.
    Updated,
    /// Alphabetical by title.
    Title,
}

/// Tasks found.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct TasksOutput {
    /// The tasks of this page.
    tasks: Vec<TaskView>,
    /// Pass as `cursor` for more; null when there are no more.
    next_cursor: Option<String>,
}

/// Input of `update_task`: the fields given change, the others stay.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateTaskInput {
    /// The task's id, `tasks/{uuid}`.
    id: String,
    /// New title.
    title: Option<String>,
    /// New notes (empty string clears them).
    description: Option<String>,
    /// New priority.
    priority: Option<PriorityName>,
    /// The complete new list of tags (replaces the old one; see `add_tags`/`remove_tags`).
    tags: Option<Vec<String>>,
    /// New due date (use `set_due_date` to remove it).
    due: Option<DueInput>,
    /// The complete new list of reminders (replaces the old ones; see `create_reminder`).
    reminders: Option<Vec<ReminderInput>>,
    /// The task's `etag` as read: the update fails if the task changed since. Optional.
    etag: Option<String>,
}

/// Input of `set_priority`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPriorityInput {
    /// The task's id, `tasks/{uuid}`.
    id: String,
    /// The new priority.
    priority: PriorityName,
}

/// Input of `add_tags` and `remove_tags`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagsInput {
    /// The task's id, `tasks/{uuid}`.
    id: String,
    /// Tag names (case does not matter).
    tags: Vec<String>,
}

/// Input of the list tools without a filter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageInput {
    /// How many at most, 1 to 100; default 20.
    #[schemars(range(min = 1, max = 100))]
    page_size: Option<i32>,
    /// `next_cursor` of the previous call.
    cursor: Option<String>,
}

/// The user's tags.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct TagsOutput {
    /// Tags, alphabetical.
    tags: Vec<TagView>,
    /// Pass as `cursor` for more; null when there are no more.
    next_cursor: Option<String>,
}

/// Input of `set_due_date`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetDueInput {
    /// The task's id, `tasks/{uuid}`.
    id: String,
    /// The new due date; null or absent removes it (not possible while the task repeats).
    due: Option<DueInput>,
}

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

/// Input of `delete_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteInput {
    /// The task's id, `tasks/{uuid}`.
    id: String,
    /// For a repeating task: `this` (default) deletes this occurrence and the series goes on
    /// with the next one; `this_and_following` ends the series. Ignored for one-off tasks.
    scope: Option<DeleteScope>,
}

/// What `delete_task` deletes of a repeating task.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeleteScope {
    /// This occurrence only.
    This,
    /// This and every later occurrence.
    ThisAndFollowing,
}

/// What `delete_task` did.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct DeleteOutput {
    /// The deleted task's id.
    deleted: String,
    /// Whether the task's series ended (false for one-off tasks).
    series_ended: bool,
}

/// Input of `create_reminder`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateReminderInput {
    /// The task's id, `tasks/{uuid}`.
    task_id: String,
    /// Fire at this instant, RFC 3339 with an offset. Give either `at` or
    /// `minutes_before_due`.
    #[schemars(extend("format" = "date-time"))]
    at: Option<String>,
    /// Fire this many minutes before the task's due time (negative: after). Give either `at`
    /// or `minutes_before_due`.
    minutes_before_due: Option<i64>,
}

/// A task and its new reminder.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct CreateReminderOutput {
    /// The task after the change.
    task: TaskView,
    /// The new reminder; its own id is `{task id}/reminders/{id}`.
    reminder: ReminderView,
}

/// Input of `list_reminders`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListRemindersInput {
    /// Only this task's reminders, `tasks/{uuid}`; absent: all upcoming reminders.
    task_id: Option<String>,
    /// How many at most, 1 to 100; default 20.
    #[schemars(range(min = 1, max = 100))]
    page_size: Option<i32>,
    /// `next_cursor` of the previous call with the same `task_id`.
    cursor: Option<String>,
}

/// Reminders, soonest first.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RemindersOutput {
    /// Scheduled and snoozed reminders (with `task_id`: that task's, whatever their state).
    reminders: Vec<ScheduledReminderView>,
    /// Pass as `cursor` for more; null when there are no more.
    next_cursor: Option<String>,
}

/// Input of `snooze_reminder`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnoozeInput {
    /// The reminder's id, `tasks/{uuid}/reminders/{id}`; it must have fired.
    id: String,
    /// Fire again in this many minutes, 1 to 43,200 (30 days).
    #[schemars(range(min = 1, max = 43_200))]
    minutes: i64,
}

/// Input of `dismiss_reminder`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReminderId {
    /// The reminder's id, `tasks/{uuid}/reminders/{id}`.
    id: String,
}

/// A reminder after a change.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReminderOutput {
    /// The reminder.
    reminder: ScheduledReminderView,
}

/// Input of `list_notifications`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListNotificationsInput {
    /// Only unread ones.
    unread_only: Option<bool>,
    /// How many at most, 1 to 100; default 20.
    #[schemars(range(min = 1, max = 100))]
    page_size: Option<i32>,
    /// `next_cursor` of the previous call with the same `unread_only`.
    cursor: Option<String>,
}

/// Notifications, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct NotificationsOutput {
    /// The notifications of this page.
    notifications: Vec<NotificationView>,
    /// Pass as `cursor` for more; null when there are no more.
    next_cursor: Option<String>,
}

/// Input of `get_activity`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivityInput {
    /// One task's history (oldest first, also after it was deleted), `tasks/{uuid}`; absent:
    /// the user's activity across tasks (newest first).
    task_id: Option<String>,
    /// How many at most, 1 to 100; default 20.
    #[schemars(range(min = 1, max = 100))]
    page_size: Option<i32>,
    /// `next_cursor` of the previous call with the same `task_id`.
    cursor: Option<String>,
}

/// Audit trail entries.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ActivityOutput {
    /// The entries of this page.
    entries: Vec<ActivityView>,
    /// Pass as `cursor` for more; null when there are no more.
    next_cursor: Option<String>,
}

// ---- The tools --------------------------------------------------------------------------

impl Tools {
    /// Tools calling `upstreams` with each request's own bearer token (Streamable HTTP).
    pub fn per_request(upstreams: Upstreams) -> Self {
        Self {
            upstreams,
            token: None,
            tool_router: Self::tool_router(),
        }
    }

    /// Tools calling `upstreams` with `token` (stdio).
    pub fn with_token(upstreams: Upstreams, token: &str) -> Self {
        Self {
            upstreams,
            token: Some(token.into()),
            tool_router: Self::tool_router(),
        }
    }

    /// The calls of one tool invocation, as the caller.
    fn call(&self, context: &RequestContext<RoleServer>) -> Result<Call, String> {
        let header = match &self.token {
            Some(token) => format!("Bearer {token}"),
            None => context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.headers.get(http::header::AUTHORIZATION))
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| "not signed in: no bearer token".to_owned())?,
        };
        let authorization = header
            .parse()
            .map_err(|_| "not signed in: the token is malformed".to_owned())?;
        Ok(Call {
            upstreams: self.upstreams.clone(),
            authorization,
        })
    }
}

// Each tool returns `Result<Json<Output>, String>`: structured output (the macro derives the
// `outputSchema` from `Json<Output>`, so the type is spelled out, not aliased), or an error
// text for the model (`isError: true`).
#[tool_router]
impl Tools {
    /// Add a task (a to-do) for the user, optionally with notes, priority, tags, a due date,
    /// reminders and repetition. Returns the created task with its id.
    #[tool(annotations(
        title = "Add a task",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn add_task(
        &self,
        Parameters(input): Parameters<AddTaskInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOutput>, String> {
        let call = self.call(&context)?;
        let due = input.due.as_ref().map(|d| d.proto("due")).transpose();
        let reminders = input
            .reminders
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| r.proto(&format!("reminders[{i}]")))
            .collect::<Result<Vec<_>, _>>();
        let recurrence = match &input.recurrence {
            Some(r) => Some(call.recurrence_of(r).await?),
            None => None,
        };
        let task = pb::Task {
            title: input.title,
            description: input.description.unwrap_or_default(),
            priority: inputs::priority(input.priority),
            tags: input.tags.unwrap_or_default(),
            due: due.map_err(|p| p.0)?,
            reminders: reminders.map_err(|p| p.0)?,
            recurrence,
            ..Default::default()
        };
        let request = call.request(CreateTaskRequest {
            task: Some(task),
            request_id: input.request_id.unwrap_or_default(),
        });
        let created = call.tasks().create_task(request).await;
        let task = created.map_err(task_error)?.into_inner().task;
        let task = task.ok_or_else(|| "the service sent no task".to_owned())?;
        Ok(Json(TaskOutput { task: task.into() }))
    }

    /// Search the user's tasks by words, state, priority, tags, due range and repetition.
    /// Without arguments: open tasks, soonest due first.
    #[tool(annotations(
        title = "Search tasks",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn search_tasks(
        &self,
        Parameters(input): Parameters<SearchInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TasksOutput>, String> {
        let call = self.call(&context)?;
        let mut filter = Vec::new();
        match input.state.unwrap_or(StateFilter::Open) {
            StateFilter::Open => filter.push("state = OPEN".to_owned()),
            StateFilter::Completed => filter.push("state = COMPLETED".to_owned()),
            StateFilter::Any => {}
        }
        if let Some(priority) = input.priority_at_least {
            filter.push(format!("priority >= {}", priority.filter_literal()));
        }
        for tag in input.tags.iter().flatten() {
            filter.push(format!("tags:{}", quoted(tag)));
        }
        if let Some(before) = &input.due_before {
            let at = inputs::timestamp(before, "due_before").map_err(|p| p.0)?;
            filter.push(format!("due_time < {}", quoted(&rfc3339(&at))));
        }
        if let Some(after) = &input.due_after {
            let at = inputs::timestamp(after, "due_after").map_err(|p| p.0)?;
            filter.push(format!("due_time >= {}", quoted(&rfc3339(&at))));
        }
        if let Some(recurring) = input.recurring {
            filter.push(format!("recurring = {recurring}"));
        }
        let order_by = match input.order.unwrap_or(Order::Due) {
            Order::Due => "due_time, priority desc",
            Order::Priority => "priority desc, due_time",
            Order::Created => "create_time desc",
            Order::Updated => "update_time desc",
            Order::Title => "title",
        };
        let request = call.request(ListTasksRequest {
            page_size: page_size(input.page_size),
            page_token: input.cursor.unwrap_or_default(),
            filter: filter.join(" AND "),
            order_by: order_by.to_owned(),
            query: input.text.unwrap_or_default(),
        });
        let response = call.tasks().list_tasks(request).await;
        let page = response.map_err(task_error)?.into_inner();
        Ok(Json(TasksOutput {
            tasks: page.tasks.into_iter().map(TaskView::from).collect(),
            next_cursor: cursor(page.next_page_token),
        }))
    }

    /// Get one task by its id.
    #[tool(annotations(
        title = "Get a task",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn get_task(
        &self,
        Parameters(input): Parameters<TaskId>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOutput>, String> {
        let task = self.call(&context)?.get_task(&input.id).await?;
        Ok(Json(TaskOutput { task: task.into() }))
    }

    /// Change a task's title, notes, priority, tags, due date or reminders: only the fields
    /// given change. Lists given (tags, reminders) replace the old ones.
    #[tool(annotations(
        title = "Update a task",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn update_task(
        &self,
        Parameters(input): Parameters<UpdateTaskInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOutput>, String> {
        let call = self.call(&context)?;
        let mut paths = Vec::new();
        let mut task = pb::Task {
            name: input.id,
            etag: input.etag.unwrap_or_default(),
            ..Default::default()
        };
        if let Some(title) = input.title {
            task.title = title;
            paths.push("title");
        }
        if let Some(description) = input.description {
            task.description = description;
            paths.push("description");
        }
        if let Some(priority) = input.priority {
            task.priority = priority.proto() as i32;
            paths.push("priority");
        }
        if let Some(tags) = input.tags {
            task.tags = tags;
            paths.push("tags");
        }
        if let Some(due) = &input.due {
            task.due = Some(due.proto("due").map_err(|p| p.0)?);
            paths.push("due");
        }
        if let Some(reminders) = &input.reminders {
            task.reminders = reminders
                .iter()
                .enumerate()
                .map(|(i, r)| r.proto(&format!("reminders[{i}]")))
                .collect::<Result<_, _>>()
                .map_err(|p| p.0)?;
            paths.push("reminders");
        }
        if paths.is_empty() {
            return Err("invalid input: give at least one field to change".to_owned());
        }
        let task = call.update_task(task, &paths).await.map_err(task_error)?;
        Ok(Json(TaskOutput { task: task.into() }))
    }

    /// Set a task's priority.
    #[tool(annotations(
        title = "Set priority",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn set_priority(
        &self,
        Parameters(input): Parameters<SetPriorityInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOutput>, String> {
        let task = pb::Task {
            name: input.id,
            priority: input.priority.proto() as i32,
            ..Default::default()
        };
        let call = self.call(&context)?;
        let task = call
            .update_task(task, &["priority"])
            .await
            .map_err(task_error)?;
        Ok(Json(TaskOutput { task: task.into() }))
    }

    /// Add tags to a task (keeping its other tags); a new tag name creates the tag.
    #[tool(annotations(
        title = "Add tags",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn add_tags(
        &self,
        Parameters(input): Parameters<TagsInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOutput>, String> {
        let call = self.call(&context)?;
        let task = call
            .read_modify_write(&input.id, &["tags"], |task| {
                for tag in &input.tags {
                    if !task.tags.iter().any(|t| t.to_lowercase() == tag.to_lowercase()) {
                        task.tags.push(tag.clone());
                    }
                }
                Ok(())
            })
            .await?;
        Ok(Json(TaskOutput { task: task.into() }))
    }

    /// Remove tags from a task (the tags themselves stay; names not on the task are ignored).
    #[tool(annotations(
        title = "Remove tags",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn remove_tags(
        &self,
        Parameters(input): Parameters<TagsInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOutput>, String> {
        let call = self.call(&context)?;
        let task = call
            .read_modify_write(&input.id, &["tags"], |task| {
                task.tags.retain(|t| {
                    !input
                        .tags
                        .iter()
                        .any(|gone| gone.to_lowercase() == t.to_lowercase())
                });
                Ok(())
            })
            .await?;
        Ok(Json(TaskOutput { task: task.into() }))
    }

    /// List the user's tags, alphabetically.
    #[tool(annotations(
        title = "List tags",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn list_tags(
        &self,
        Parameters(input): Parameters<PageInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TagsOutput>, String> {
        let call = self.call(&context)?;
        let request = call.request(ListTagsRequest {
            page_size: page_size(input.page_size),
            page_token: input.cursor.unwrap_or_default(),
        });
        let response = call.tasks().list_tags(request).await;
        let page = response.map_err(|s| status::message(&s, "tag"))?.into_inner();
        Ok(Json(TagsOutput {
            tags: page.tags.into_iter().map(TagView::from).collect(),
            next_cursor: cursor(page.next_page_token),
        }))
    }

    /// Set or remove a task's due date. A repeating task keeps its repetition (its series
    /// continues from the new date).
    #[tool(annotations(
        title = "Set due date",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn set_due_date(
        &self,
        Parameters(input): Parameters<SetDueInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOutput>, String> {
        let call = self.call(&context)?;
        let due = input.due.as_ref().map(|d| d.proto("due")).transpose();
        let task = pb::Task {
            name: input.id,
            due: due.map_err(|p| p.0)?,
            ..Default::default()
        };
        // Only `due` is in the mask: the recurrence, reminders and the rest stay as they are.
        let task = call.update_task(task, &["due"]).await.map_err(task_error)?;
        Ok(Json(TaskOutput { task: task.into() }))
    }

    /// Make a task repeat (a preset like weekly, or an RFC 5545 rule), change how it
    /// repeats, or stop it repeating (no `recurrence`). Returns the next occurrences.
    #[tool(annotations(
        title = "Set repetition",
        read_only_hint = false,
        destructive_hint = false,
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
        let task = pb::Task {
            name: input.id,
            recurrence,
            ..Default::default()
        };
        let task = call
            .update_task(task, &["recurrence"])
            .await
            .map_err(task_error)?;
        let next_occurrences = next_occurrences(&call, &task).await?;
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
        destructive_hint = false,
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
        destructive_hint = false,
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
            Some(series) => next_occurrence(&call, &series, &input.id).await,
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
        destructive_hint = false,
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

    /// Delete a task for good. For a repeating task, `scope` says whether the series goes on
    /// (`this`, default) or ends (`this_and_following`).
    #[tool(annotations(
        title = "Delete a task",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn delete_task(
        &self,
        Parameters(input): Parameters<DeleteInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DeleteOutput>, String> {
        let call = self.call(&context)?;
        let task = call.get_task(&input.id).await?;
        if task.recurrence.is_some() {
            let scope = match input.scope.unwrap_or(DeleteScope::This) {
                DeleteScope::This => Scope::ThisTask,
                DeleteScope::ThisAndFollowing => Scope::ThisAndFollowing,
            };
            let request = call.request(DeleteOccurrencesRequest {
                task: input.id.clone(),
                scope: scope as i32,
                request_id: String::new(),
            });
            let response = call.recurrence().delete_occurrences(request).await;
            let series = response.map_err(task_error)?.into_inner().series;
            return Ok(Json(DeleteOutput {
                deleted: input.id,
                series_ended: series.is_some_and(|s| s.ended),
            }));
        }
        let request = call.request(DeleteTaskRequest {
            name: input.id.clone(),
            etag: task.etag,
        });
        call.tasks()
            .delete_task(request)
            .await
            .map_err(task_error)?;
        Ok(Json(DeleteOutput {
            deleted: input.id,
            series_ended: false,
        }))
    }

    /// Add a reminder to a task: at an instant, or some minutes before its due time.
    #[tool(annotations(
        title = "Add a reminder",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn create_reminder(
        &self,
        Parameters(input): Parameters<CreateReminderInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<CreateReminderOutput>, String> {
        let call = self.call(&context)?;
        let new = ReminderInput {
            at: input.at,
            minutes_before_due: input.minutes_before_due,
        }
        .proto("reminder")
        .map_err(|p| p.0)?;
        let before = call.get_task(&input.task_id).await?;
        let known: Vec<String> = before.reminders.iter().map(|r| r.id.clone()).collect();
        let task = call
            .read_modify_write(&input.task_id, &["reminders"], |task| {
                task.reminders.push(new.clone());
                Ok(())
            })
            .await?;
        let view = TaskView::from(task);
        let reminder = view
            .reminders
            .iter()
            .rev()
            .find(|r| !known.contains(&r.id))
            .map(|r| ReminderView {
                id: r.id.clone(),
                at: r.at.clone(),
                minutes_before_due: r.minutes_before_due,
            })
            .ok_or_else(|| "the service did not keep the reminder".to_owned())?;
        Ok(Json(CreateReminderOutput {
            task: view,
            reminder,
        }))
    }

    /// List upcoming reminders (scheduled or snoozed), soonest first, or one task's.
    #[tool(annotations(
        title = "List reminders",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn list_reminders(
        &self,
        Parameters(input): Parameters<ListRemindersInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<RemindersOutput>, String> {
        let call = self.call(&context)?;
        let filter = input
            .task_id
            .as_deref()
            .map(|task| format!("task = {}", quoted(task)))
            .unwrap_or_default();
        let request = call.request(ListRemindersRequest {
            page_size: page_size(input.page_size),
            page_token: input.cursor.unwrap_or_default(),
            filter,
        });
        let response = call.reminders().list_reminders(request).await;
        let page = response
            .map_err(|s| status::message(&s, "reminder"))?
            .into_inner();
        Ok(Json(RemindersOutput {
            reminders: page
                .reminders
                .into_iter()
                .map(ScheduledReminderView::from)
                .collect(),
            next_cursor: cursor(page.next_page_token),
        }))
    }

    /// Snooze a reminder that fired: it fires again after the given minutes.
    #[tool(annotations(
        title = "Snooze a reminder",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn snooze_reminder(
        &self,
        Parameters(input): Parameters<SnoozeInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ReminderOutput>, String> {
        let call = self.call(&context)?;
        let request = call.request(SnoozeReminderRequest {
            name: input.id,
            duration: Some(prost_types::Duration {
                seconds: input.minutes.saturating_mul(60),
                nanos: 0,
            }),
            request_id: String::new(),
        });
        let response = call.reminders().snooze_reminder(request).await;
        let reminder = response
            .map_err(|s| status::message(&s, "reminder"))?
            .into_inner()
            .reminder;
        let reminder = reminder.ok_or_else(|| "the service sent no reminder".to_owned())?;
        Ok(Json(ReminderOutput {
            reminder: reminder.into(),
        }))
    }

    /// Dismiss a reminder: it will not fire (again).
    #[tool(annotations(
        title = "Dismiss a reminder",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn dismiss_reminder(
        &self,
        Parameters(input): Parameters<ReminderId>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ReminderOutput>, String> {
        let call = self.call(&context)?;
        let request = call.request(DismissReminderRequest { name: input.id });
        let response = call.reminders().dismiss_reminder(request).await;
        let reminder = response
            .map_err(|s| status::message(&s, "reminder"))?
            .into_inner()
            .reminder;
        let reminder = reminder.ok_or_else(|| "the service sent no reminder".to_owned())?;
        Ok(Json(ReminderOutput {
            reminder: reminder.into(),
        }))
    }

    /// List the user's notifications (fired reminders, overdue tasks), newest first.
    #[tool(annotations(
        title = "List notifications",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn list_notifications(
        &self,
        Parameters(input): Parameters<ListNotificationsInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<NotificationsOutput>, String> {
        let call = self.call(&context)?;
        let filter = if input.unread_only.unwrap_or(false) {
            "unread = true"
        } else {
            ""
        };
        let request = call.request(ListNotificationsRequest {
            page_size: page_size(input.page_size),
            page_token: input.cursor.unwrap_or_default(),
            filter: filter.to_owned(),
        });
        let response = call.reminders().list_notifications(request).await;
        let page = response
            .map_err(|s| status::message(&s, "notification"))?
            .into_inner();
        Ok(Json(NotificationsOutput {
            notifications: page
                .notifications
                .into_iter()
                .map(NotificationView::from)
                .collect(),
            next_cursor: cursor(page.next_page_token),
        }))
    }

    /// Read the activity log: what changed, when and by whom (`mcp:<user>` marks changes
    /// made through this server), across the user's tasks or for one task with the values
    /// before and after each change.
    #[tool(annotations(
        title = "Read the activity log",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn get_activity(
        &self,
        Parameters(input): Parameters<ActivityInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ActivityOutput>, String> {
        let call = self.call(&context)?;
        let (page_size, page_token) = (page_size(input.page_size), input.cursor.unwrap_or_default());
        let (entries, next) = match input.task_id {
            Some(task) => {
                let request = call.request(ListTaskHistoryRequest {
                    task,
                    page_size,
                    page_token,
                });
                let page = call.audit().list_task_history(request).await;
                let page = page.map_err(task_error)?.into_inner();
                (page.entries, page.next_page_token)
            }
            None => {
                let request = call.request(ListActivityRequest {
                    page_size,
                    page_token,
                });
                let page = call.audit().list_activity(request).await;
                let page = page.map_err(|s| status::message(&s, "activity"))?.into_inner();
                (page.entries, page.next_page_token)
            }
        };
        Ok(Json(ActivityOutput {
            entries: entries.into_iter().map(ActivityView::from).collect(),
            next_cursor: cursor(next),
        }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("taskmesh", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// The next occurrences of `task`'s rule after its due (at most 5), rendered as its due is:
/// instants for a due time, days in its zone for a date-only due. None without a rule.
async fn next_occurrences(call: &Call, task: &pb::Task) -> Result<Vec<String>, String> {
    use pb::due::Value;
    let (Some(recurrence), Some(due)) = (&task.recurrence, &task.due) else {
        return Ok(Vec::new());
    };
    let zone: chrono_tz::Tz = due.time_zone.parse().map_err(|_| "the task's time zone is unknown".to_owned())?;
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
            let start = zone
                .from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
                .earliest()
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
/// [`NEXT_OCCURRENCE_WAIT`] (RecurrenceService creates it from the completion event), and
/// what to tell the user.
async fn next_occurrence(call: &Call, series: &str, completed: &str) -> (Option<pb::Task>, String) {
    let deadline = tokio::time::Instant::now() + NEXT_OCCURRENCE_WAIT;
    loop {
        let request = call.request(GetSeriesRequest {
            name: series.to_owned(),
        });
        let found = call.recurrence().get_series(request).await;
        if let Ok(Some(series)) = found.map(|r| r.into_inner().series) {
            if series.ended {
                return (None, "Completed. That was the last occurrence: the series has ended.".to_owned());
            }
            if !series.current_task.is_empty() && series.current_task != completed {
                if let Ok(next) = call.get_task(&series.current_task).await {
                    let due = TaskView::from(next.clone())
                        .due
                        .map(|d| d.date.or(d.time).unwrap_or_default())
                        .unwrap_or_default();
                    let message = format!("Completed. The next occurrence is {} (due {due}).", next.name);
                    return (Some(next), message);
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return (
                None,
                "Completed. Its next occurrence is still being created: search for it in a moment."
                    .to_owned(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
