//! The tonic `TaskService` implementation: authentication, request validation and mapping onto
//! the store functions.

use std::num::NonZeroU64;

use sqlx::PgPool;
use taskmesh_platform::{
    auth::Caller,
    changelog,
    grpc::{Violations, invalid_argument},
    pages::{Binding, PageTokens, page_size},
};
use taskmesh_proto::{
    names::{TagName, TaskName, UuidName},
    task::v1::{self as pb, task_service_server::TaskService},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    changes::Writer,
    error::TaskError,
    list::{self, ListQuery},
    tags, tasks,
    validate::{self, CheckedRule},
};

/// The TaskService gRPC server state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TaskServiceImpl {
    pool: PgPool,
    topic_prefix: String,
    tokens: PageTokens,
    max_tasks: Option<NonZeroU64>,
}

impl TaskServiceImpl {
    /// A service writing to `pool` (search_path = the `task` schema) and publishing through
    /// the outbox to its topics, named with `topic_prefix`, signing page tokens with
    /// `tokens`; CreateTask refuses a user who has `max_tasks` tasks already (`None`: no
    /// limit).
    pub fn new(
        pool: PgPool,
        topic_prefix: String,
        tokens: PageTokens,
        max_tasks: Option<NonZeroU64>,
    ) -> Self {
        Self {
            pool,
            topic_prefix,
            tokens,
            max_tasks,
        }
    }

    /// UpdateTask's check of a new rule or due, outside its transaction: the task as it is
    /// now (another user's is `NOT_FOUND`, a stale `etag` `ABORTED`) with the `mask`ed fields
    /// of `input`, validated on the bounded pool. `Ok(None)` when the result has no rule.
    ///
    /// # Errors
    /// The task's read; `INVALID_ARGUMENT` with the violations when the merge is invalid.
    async fn precheck_rule(
        &self,
        caller: &Caller,
        id: Uuid,
        etag: &str,
        mask: &[&'static str],
        input: &pb::Task,
    ) -> Result<Option<CheckedRule>, Status> {
        let mut conn = self.pool.acquire().await.map_err(TaskError::from)?;
        let current = tasks::fetch(&mut conn, &caller.user, id, false)
            .await?
            .to_proto();
        drop(conn);
        if !etag.is_empty() && etag != current.etag {
            return Err(TaskError::EtagMismatch.into());
        }
        let stored = CheckedRule::stored(&current);
        let mut merged = current;
        for path in mask {
            tasks::copy_field(path, input, &mut merged);
        }
        if merged.recurrence.is_none() || stored.is_some_and(|s| s.covers(&merged)) {
            // No rule, or the stored one with its due: nothing costly to check.
            return Ok(None);
        }
        let (fields, violations, merged) =
            taskmesh_platform::compute::run(&caller.user, move || {
                let mut v = Violations::new();
                (validate::task_fields(&merged, "task.", &mut v), v, merged)
            })
            .await?;
        match fields {
            Some(fields) => Ok(CheckedRule::of(&merged, &fields)),
            None => Err(violations.into_status()),
        }
    }

    /// CompleteTask (`complete`) and UncompleteTask.
    async fn set_completed(
        &self,
        caller: &Caller,
        name: &str,
        etag: &str,
        request_id: &str,
        complete: bool,
    ) -> Result<pb::Task, Status> {
        let mut v = Violations::new();
        validate::request_id(request_id, &mut v);
        v.check()?;
        let id = parse_name::<TaskName>(name, "name")?;
        Ok(tasks::set_completed(
            &self.pool,
            &self.writer(caller, request_id),
            id,
            etag,
            complete,
            self.max_tasks,
        )
        .await?)
    }

    fn writer<'a>(&'a self, caller: &'a Caller, request_id: &'a str) -> Writer<'a> {
        Writer {
            user: &caller.user,
            actor: &caller.actor,
            request_id,
            topic_prefix: &self.topic_prefix,
        }
    }
}

/// Parses the resource name `N` from `field` into its id: malformed is `INVALID_ARGUMENT`
/// (AIP-122); well-formed but unknown is left to the store (`NOT_FOUND`).
fn parse_name<N: UuidName>(name: &str, field: &str) -> Result<Uuid, Status> {
    N::parse_id(name).map_err(|e| invalid_argument(field, &e.to_string()))
}

/// Validates an update mask against `allowed`; `*` means all of them.
fn mask_paths(
    mask: Option<&prost_types::FieldMask>,
    allowed: &[&'static str],
    v: &mut Violations,
) -> Vec<&'static str> {
    let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else {
        v.add("update_mask", "must name at least one field (or *)");
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in &mask.paths {
        if path == "*" {
            return allowed.to_vec();
        }
        match allowed.iter().find(|a| **a == path.as_str()) {
            Some(found) if !out.contains(found) => out.push(*found),
            Some(_) => {}
            None => v.add(
                "update_mask",
                format!(
                    "unknown or read-only field {}; allowed: {}",
                    taskmesh_platform::grpc::echo(path),
                    allowed.join(", ")
                ),
            ),
        }
    }
    out
}

#[tonic::async_trait]
impl TaskService for TaskServiceImpl {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let mut req = request.into_inner();
        let mut v = Violations::new();
        validate::request_id(&req.request_id, &mut v);
        let fields = match req.task.take() {
            // Checking a rule expands it: on the bounded pool, before the transaction.
            Some(task) if task.recurrence.is_some() => {
                let (fields, found) = taskmesh_platform::compute::run(&caller.user, move || {
                    let mut v = Violations::new();
                    (validate::task_fields(&task, "task.", &mut v), v)
                })
                .await?;
                v.extend(found);
                fields
            }
            Some(task) => validate::task_fields(&task, "task.", &mut v),
            None => {
                v.add("task", "is required");
                None
            }
        };
        let (Some(fields), true) = (fields, v.is_empty()) else {
            return Err(v.into_status());
        };
        let writer = self.writer(&caller, &req.request_id);
        let task = tasks::create(
            &self.pool,
            &writer,
            fields,
            tasks::Lineage::default(),
            self.max_tasks,
        )
        .await?;
        Ok(Response::new(pb::CreateTaskResponse { task: Some(task) }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let id = parse_name::<TaskName>(&request.get_ref().name, "name")?;
        let mut conn = self.pool.acquire().await.map_err(TaskError::from)?;
        let task = tasks::fetch(&mut conn, &caller.user, id, false)
            .await?
            .to_proto();
        Ok(Response::new(pb::GetTaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let page_size = page_size(req.page_size, 50, &mut v);
        if req.query.chars().count() > 200 {
            v.add("query", "must be at most 200 characters");
        }
        v.check()?;
        let query = ListQuery {
            page_size,
            filter: req.filter,
            order_by: req.order_by,
            query: req.query,
            page_token: req.page_token,
        };
        let (tasks, next_page_token, sequence) =
            list::tasks(&self.pool, &self.tokens, &caller.user, &query).await?;
        let cursor = taskmesh_platform::cursor::Cursor {
            task: Some(sequence),
            notification: None,
        };
        Ok(Response::new(pb::ListTasksResponse {
            tasks,
            next_page_token,
            cursor: cursor.encode(),
        }))
    }

    async fn update_task(
        &self,
        request: Request<pb::UpdateTaskRequest>,
    ) -> Result<Response<pb::UpdateTaskResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let paths = mask_paths(req.update_mask.as_ref(), &tasks::UPDATABLE, &mut v);
        let Some(input) = req.task else {
            v.add("task", "is required");
            return Err(v.into_status());
        };
        v.check()?;
        let id = parse_name::<TaskName>(&input.name, "task.name")?;
        let etag = input.etag.clone();
        // A new rule or due is expanded on the bounded pool before the transaction, against
        // the task as it is now; the transaction reuses that check if the task is unchanged.
        let rule_touched = paths.iter().any(|p| matches!(*p, "recurrence" | "due"));
        let prechecked = if rule_touched {
            self.precheck_rule(&caller, id, &etag, &paths, &input)
                .await?
        } else {
            None
        };
        let mask = paths.clone();
        let task = tasks::update(
            &self.pool,
            &self.writer(&caller, ""),
            id,
            &etag,
            &paths,
            move |current| {
                let mut merged = current.clone();
                for path in &mask {
                    tasks::copy_field(path, &input, &mut merged);
                }
                // The stored rule was checked when it was written.
                let checked = CheckedRule::stored(current)
                    .filter(|c| c.covers(&merged))
                    .or(prechecked.filter(|c| c.covers(&merged)));
                if checked.is_none() && merged.recurrence.is_some() && rule_touched {
                    // The task changed since the check (a concurrent update): expanding the
                    // rule here would hold the user's lock; the client retries.
                    return Err(TaskError::EtagMismatch);
                }
                let mut v = Violations::new();
                validate::task_fields_checked(&merged, "task.", &mut v, checked.as_ref())
                    .ok_or(TaskError::Invalid(v))
            },
        )
        .await?;
        Ok(Response::new(pb::UpdateTaskResponse { task: Some(task) }))
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let id = parse_name::<TaskName>(&req.name, "name")?;
        tasks::delete(&self.pool, &self.writer(&caller, ""), id, &req.etag).await?;
        Ok(Response::new(pb::DeleteTaskResponse {}))
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let task = self
            .set_completed(&caller, &req.name, &req.etag, &req.request_id, true)
            .await?;
        Ok(Response::new(pb::CompleteTaskResponse { task: Some(task) }))
    }

    async fn uncomplete_task(
        &self,
        request: Request<pb::UncompleteTaskRequest>,
    ) -> Result<Response<pb::UncompleteTaskResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let task = self
            .set_completed(&caller, &req.name, &req.etag, &req.request_id, false)
            .await?;
        Ok(Response::new(pb::UncompleteTaskResponse {
            task: Some(task),
        }))
    }

    async fn create_tag(
        &self,
        request: Request<pb::CreateTagRequest>,
    ) -> Result<Response<pb::CreateTagResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        validate::request_id(&req.request_id, &mut v);
        let tag = req.tag.unwrap_or_default();
        if let Err(problem) = validate::tag_name(&tag.display_name) {
            v.add("tag.display_name", problem);
        }
        let color = validate::color(&tag.color)
            .map_err(|problem| v.add("tag.color", problem))
            .unwrap_or_default();
        v.check()?;
        let tag = tags::create(
            &self.pool,
            &self.writer(&caller, &req.request_id),
            tag.display_name.trim(),
            &color,
        )
        .await?;
        Ok(Response::new(pb::CreateTagResponse { tag: Some(tag) }))
    }

    async fn get_tag(
        &self,
        request: Request<pb::GetTagRequest>,
    ) -> Result<Response<pb::GetTagResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let id = parse_name::<TagName>(&request.get_ref().name, "name")?;
        let tag = tags::get(&self.pool, &caller.user, id).await?;
        Ok(Response::new(pb::GetTagResponse { tag: Some(tag) }))
    }

    async fn list_tags(
        &self,
        request: Request<pb::ListTagsRequest>,
    ) -> Result<Response<pb::ListTagsResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = page_size(req.page_size, 100, &mut v);
        let binding = Binding {
            list: "ListTags",
            user: &caller.user,
            params: &[],
        };
        // The last tag shown: its name and id.
        let after = self
            .tokens
            .resume::<(String, Uuid)>(&binding, &req.page_token)
            .map_err(|e| v.add("page_token", e.to_string()))
            .ok()
            .flatten();
        v.check()?;
        let (tags, next) = tags::list(&self.pool, &caller.user, size, after).await?;
        let next_page_token = next
            .map(|last| self.tokens.issue(&binding, last))
            .unwrap_or_default();
        Ok(Response::new(pb::ListTagsResponse {
            tags,
            next_page_token,
        }))
    }

    async fn update_tag(
        &self,
        request: Request<pb::UpdateTagRequest>,
    ) -> Result<Response<pb::UpdateTagResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let paths = mask_paths(req.update_mask.as_ref(), &["display_name", "color"], &mut v);
        let tag = req.tag.unwrap_or_default();
        let name = paths
            .contains(&"display_name")
            .then(|| tag.display_name.trim());
        if let Some(Err(problem)) = name.map(validate::tag_name) {
            v.add("tag.display_name", problem);
        }
        let color = if paths.contains(&"color") {
            validate::color(&tag.color)
                .map_err(|problem| v.add("tag.color", problem))
                .ok()
        } else {
            None
        };
        v.check()?;
        let id = parse_name::<TagName>(&tag.name, "tag.name")?;
        let tag = tags::update(
            &self.pool,
            &self.writer(&caller, ""),
            id,
            &tag.etag,
            name,
            color.as_deref(),
        )
        .await?;
        Ok(Response::new(pb::UpdateTagResponse { tag: Some(tag) }))
    }

    async fn delete_tag(
        &self,
        request: Request<pb::DeleteTagRequest>,
    ) -> Result<Response<pb::DeleteTagResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let id = parse_name::<TagName>(&req.name, "name")?;
        tags::delete(&self.pool, &self.writer(&caller, ""), id, &req.etag).await?;
        Ok(Response::new(pb::DeleteTagResponse {}))
    }

    async fn list_changes(
        &self,
        request: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let size = changelog::read_size(req.after_sequence, req.page_size)?;
        let (changes, latest_sequence) =
            list::changes(&self.pool, &caller.user, req.after_sequence, size).await?;
        Ok(Response::new(pb::ListChangesResponse {
            changes,
            latest_sequence,
        }))
    }
}
