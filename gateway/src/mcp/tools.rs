//! The MCP tools: each one a few calls to the services' gRPC APIs as the token's user, so
//! isolation, validation, idempotency (AIP-155) and the audit trail apply as to any client.
//! Calls carry [`VIA_HEADER`] `mcp`, so the audit trail names the actor `mcp:<user>`.

//!
//! # Layout
//! - `tasks`: add, search, get, update, delete.
//! - `fields`: priority, tags, due date; the user's tags.
//! - `series`: repetition, skipping, completing and re-opening.
//! - `reminders`: reminders, notifications, the activity log.
//!
//! Each tool returns `Result<Json<Output>, String>`: structured output (the macro derives the
//! `outputSchema` from `Json<Output>`, so the type is spelled out, never aliased), or an error
//! text for the model (`isError: true`).

mod fields;
mod reminders;
mod series;
mod tasks;

use std::{sync::Arc, time::Duration};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext},
    model::{
        CallToolRequestParams, CallToolResponse, ContentBlock, Implementation, ServerCapabilities,
        ServerConfig,
    },
    service::RequestContext,
    tool_handler,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use taskmesh_platform::auth::{VIA_HEADER, VIA_MCP};
use taskmesh_proto::{
    audit::v1::audit_service_client::AuditServiceClient,
    recurrence::v1::{BuildRuleRequest, recurrence_service_client::RecurrenceServiceClient},
    reminder::v1::reminder_service_client::ReminderServiceClient,
    task::v1::{
        self as pb, GetTaskRequest, UpdateTaskRequest, task_service_client::TaskServiceClient,
    },
};
use tonic::{Code, Status, transport::Channel};

use super::{
    inputs::{Problem, RecurrenceInput, Rule},
    status,
    views::TaskView,
};

/// How long one service call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest service response a tool reads (a page of 100 tasks with long notes, or a task's
/// history with its before and after values, is several MiB).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Longest argument error text (serde's, which quotes the bad value), in characters.
const MAX_ARGUMENT_ERROR_CHARS: usize = 300;

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
#[derive(Clone)]
pub struct Tools {
    upstreams: Upstreams,
    /// The token of every call (`taskmesh mcp --stdio`); `None` takes each request's own
    /// `authorization` header (Streamable HTTP, already verified by the endpoint).
    token: Option<Arc<str>>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The stdio token is a credential: never in a log line.
        f.debug_struct("Tools")
            .field("upstreams", &self.upstreams)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
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
        metadata.insert(
            VIA_HEADER,
            tonic::metadata::MetadataValue::from_static(VIA_MCP),
        );
        request
    }

    fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.upstreams.task.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn reminders(&self) -> ReminderServiceClient<Channel> {
        ReminderServiceClient::new(self.upstreams.reminder.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn recurrence(&self) -> RecurrenceServiceClient<Channel> {
        RecurrenceServiceClient::new(self.upstreams.recurrence.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.upstreams.audit.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
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

    /// UpdateTask of `paths`. Without an etag, a concurrent change (`ABORTED`: the service
    /// lost a race with another writer) is retried once: the caller did not ask to check.
    async fn update_task(&self, task: pb::Task, paths: &[&str]) -> Result<pb::Task, Status> {
        let checked = !task.etag.is_empty();
        let request = UpdateTaskRequest {
            task: Some(task),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|&p| p.to_owned()).collect(),
            }),
        };
        let mut response = self
            .tasks()
            .update_task(self.request(request.clone()))
            .await;
        if !checked && matches!(&response, Err(s) if s.code() == Code::Aborted) {
            response = self.tasks().update_task(self.request(request)).await;
        }
        response?
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
                other => return other.map_err(task_error),
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

impl Tools {
    /// Tools calling `upstreams` with each request's own bearer token (Streamable HTTP).
    pub fn per_request(upstreams: Upstreams) -> Self {
        Self {
            upstreams,
            token: None,
            tool_router: Self::router(),
        }
    }

    /// Tools calling `upstreams` with `token` (stdio).
    pub fn with_token(upstreams: Upstreams, token: &str) -> Self {
        Self {
            upstreams,
            token: Some(token.into()),
            tool_router: Self::router(),
        }
    }

    /// Every tool (built once per server: [`Tools`] clones share it).
    fn router() -> ToolRouter<Self> {
        Self::tasks_router()
            + Self::fields_router()
            + Self::series_router()
            + Self::reminders_router()
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

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    /// Runs a tool. Arguments that do not fit its input schema are a tool error (`isError`)
    /// with serde's reason, cut to [`MAX_ARGUMENT_ERROR_CHARS`] (it quotes the offending
    /// value); an unknown tool stays a JSON-RPC error, as the MCP spec says.
    ///
    /// # Errors
    /// rmcp's, e.g. an unknown tool (`INVALID_PARAMS`).
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = ToolCallContext::new(self, request, context);
        let mut response = self.tool_router.call(call).await?;
        // rmcp answers arguments that do not deserialize with an `isError` result quoting
        // serde, which quotes the bad value whole: cut it.
        if let CallToolResponse::Complete(result) = &mut response
            && result.is_error == Some(true)
            && let [ContentBlock::Text(text)] = result.content.as_mut_slice()
            && text.text.starts_with("failed to deserialize parameters")
        {
            let mut bounded: String = text.text.chars().take(MAX_ARGUMENT_ERROR_CHARS).collect();
            if bounded.len() < text.text.len() {
                bounded.push('…');
            }
            text.text = format!("invalid input: {bounded}; see the tool's input schema");
        }
        Ok(response)
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("taskmesh", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The tools as a client lists them (names, descriptions, schemas, annotations) and the
    /// server's instructions must match `tests/snapshots/mcp_tools.json`: a change to what a
    /// model sees is a reviewed change. `TASKMESH_UPDATE_SNAPSHOTS=1` writes the new one.
    #[test]
    fn tool_schemas_match_the_snapshot() {
        let mut tools = Tools::router().list_all();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        let snapshot = serde_json::json!({ "instructions": INSTRUCTIONS, "tools": tools });
        let text = serde_json::to_string_pretty(&snapshot).expect("tools serialise") + "\n";
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/mcp_tools.json");
        if std::env::var("TASKMESH_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &text).expect("write the snapshot");
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != text {
            let line = expected
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| expected.lines().count().min(text.lines().count()));
            panic!(
                "the MCP tools differ from {} from line {}: now {:?}, was {:?}; review the \
                 change and rerun with TASKMESH_UPDATE_SNAPSHOTS=1 to accept it",
                path.display(),
                line + 1,
                text.lines().nth(line),
                expected.lines().nth(line),
            );
        }
    }

    #[test]
    fn every_tool_has_an_output_schema_and_all_hints() {
        for tool in Tools::router().list_all() {
            assert!(
                tool.output_schema.is_some(),
                "{} has no outputSchema",
                tool.name
            );
            let hints = tool.annotations.as_ref().expect("annotations");
            assert!(
                hints.read_only_hint.is_some()
                    && hints.destructive_hint.is_some()
                    && hints.idempotent_hint.is_some()
                    && hints.open_world_hint == Some(false),
                "{} lacks a hint",
                tool.name
            );
        }
    }
}
