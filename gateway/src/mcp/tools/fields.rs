//! Tools that change one field of a task: priority, tags, due date; and the user's tags.

use rmcp::{
    RoleServer,
    handler::server::wrapper::{Json, Parameters},
    service::RequestContext,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use taskmesh_proto::task::v1::{self as pb, ListTagsRequest};

use super::{PageInput, TaskOutput, Tools, cursor, page_size, task_error};
use crate::mcp::{
    inputs::DueInput,
    status,
    views::{PriorityName, TagView},
};

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
    /// Tag names (case does not matter), 1 to 20.
    #[schemars(length(min = 1, max = 20))]
    tags: Vec<String>,
}

impl TagsInput {
    /// The tag names trimmed and lower-cased (how the service compares them), or a problem
    /// when there are more than a task may have.
    fn keys(&self) -> Result<std::collections::HashSet<String>, String> {
        if self.tags.len() > MAX_TAGS {
            return Err(format!(
                "invalid input: `tags` may name at most {MAX_TAGS} tags"
            ));
        }
        Ok(self.tags.iter().map(|t| tag_key(t)).collect())
    }
}

/// Most tags a task has (`Task.tags`).
const MAX_TAGS: usize = 20;

/// A tag name as the service compares it.
fn tag_key(name: &str) -> String {
    name.trim().to_lowercase()
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

#[tool_router(router = fields_router, vis = "pub(super)")]
impl Tools {
    /// Set a task's priority.
    #[tool(annotations(
        title = "Set priority",
        read_only_hint = false,
        destructive_hint = true,
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
        input.keys()?;
        let task = call
            .read_modify_write(&input.id, &["tags"], |task| {
                let mut have: std::collections::HashSet<String> =
                    task.tags.iter().map(|t| tag_key(t)).collect();
                for tag in &input.tags {
                    if have.insert(tag_key(tag)) {
                        task.tags.push(tag.trim().to_owned());
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
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn remove_tags(
        &self,
        Parameters(input): Parameters<TagsInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TaskOutput>, String> {
        let call = self.call(&context)?;
        let gone = input.keys()?;
        let task = call
            .read_modify_write(&input.id, &["tags"], |task| {
                task.tags.retain(|t| !gone.contains(&tag_key(t)));
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
        let page = response
            .map_err(|s| status::message(&s, "tag"))?
            .into_inner();
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
        destructive_hint = true,
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
}
