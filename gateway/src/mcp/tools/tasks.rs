//! Tools that create, find, change and delete tasks.

use rmcp::{
    RoleServer,
    handler::server::wrapper::{Json, Parameters},
    service::RequestContext,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use taskmesh_proto::{
    recurrence::v1::{DeleteOccurrencesRequest, delete_occurrences_request::Scope},
    task::v1::{self as pb, CreateTaskRequest, DeleteTaskRequest, ListTasksRequest},
};

use super::{TaskId, TaskOutput, Tools, cursor, page_size, quoted, task_error};
use crate::mcp::{
    inputs::{self, DueInput, RecurrenceInput, ReminderInput},
    views::{PriorityName, TaskView, rfc3339},
};

/// Input of `add_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddTaskInput {
    /// Short title, 1 to 500 characters.
    #[schemars(length(min = 1, max = 500))]
    title: String,
    /// Notes, at most 20,000 characters.
    #[schemars(length(max = 20_000))]
    description: Option<String>,
    /// How urgent; default `none`.
    priority: Option<PriorityName>,
    /// Tag names (at most 20, each 1 to 64 characters); new names create tags.
    #[schemars(length(max = 20))]
    tags: Option<Vec<String>>,
    /// When it is due.
    due: Option<DueInput>,
    /// Reminders (at most 20); a reminder relative to the due needs `due`.
    #[schemars(length(max = 20))]
    reminders: Option<Vec<ReminderInput>>,
    /// How it repeats; needs `due` (the first occurrence).
    recurrence: Option<RecurrenceInput>,
    /// Idempotency key, e.g. a UUID you generate (at most 128 characters): a retried call with
    /// the same key returns the task the first call created instead of adding another.
    request_id: Option<String>,
}

/// Which tasks `search_tasks` returns, in what order.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchInput {
    /// Words that must all appear in the title or notes (word prefixes match), at most 200
    /// characters.
    #[schemars(length(max = 200))]
    text: Option<String>,
    /// `open` (default), `completed` or `any`.
    state: Option<StateFilter>,
    /// Only tasks at least this urgent.
    priority_at_least: Option<PriorityName>,
    /// Only tasks that have every one of these tags (at most 20).
    #[schemars(length(max = 20))]
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
    /// New title, 1 to 500 characters.
    #[schemars(length(min = 1, max = 500))]
    title: Option<String>,
    /// New notes, at most 20,000 characters (an empty string clears them).
    #[schemars(length(max = 20_000))]
    description: Option<String>,
    /// New priority.
    priority: Option<PriorityName>,
    /// The complete new list of tags (replaces the old one; see `add_tags`/`remove_tags`),
    /// at most 20.
    #[schemars(length(max = 20))]
    tags: Option<Vec<String>>,
    /// New due date (use `set_due_date` to remove it).
    due: Option<DueInput>,
    /// The complete new list of reminders (replaces the old ones; see `create_reminder`),
    /// at most 20: give a kept reminder's `id`, or it comes back as a new one and fires
    /// again.
    #[schemars(length(max = 20))]
    reminders: Option<Vec<ReminderInput>>,
    /// The task's `etag` as read: the update fails if the task changed since. Optional.
    etag: Option<String>,
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

#[tool_router(router = tasks_router, vis = "pub(super)")]
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
        let tags = input.tags.unwrap_or_default();
        if tags.len() > 20 {
            return Err("invalid input: `tags` may name at most 20 tags".to_owned());
        }
        for tag in &tags {
            filter.push(format!("tags:{}", quoted(tag.trim())));
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
        destructive_hint = true,
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

    /// Delete a task for good. For a repeating task, `scope` says whether the series goes on
    /// (`this`, default) or ends (`this_and_following`); its deletion takes effect a moment
    /// after this returns (the series service sends it to the task service).
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
}
