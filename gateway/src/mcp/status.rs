//! A service's error as a tool error a model can act on: field violations in words, another
//! user's object as "no such …", a stale etag as "read it again". The text is bounded, and
//! an internal error says nothing of its cause.

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Longest tool error text, in characters.
const MAX_MESSAGE_CHARS: usize = 2_000;

/// The tool error text of a failed call about `what` (e.g. "task").
pub(crate) fn message(status: &Status, what: &str) -> String {
    let text = match status.code() {
        Code::InvalidArgument => match status.get_details_bad_request() {
            Some(bad) if !bad.field_violations.is_empty() => {
                let violations: Vec<String> = bad
                    .field_violations
                    .iter()
                    .map(|v| format!("`{}` {}", field(&v.field), v.description))
                    .collect();
                format!("invalid input: {}", violations.join("; "))
            }
            _ => format!("invalid input: {}", status.message()),
        },
        Code::NotFound => format!("no such {what} (it does not exist or is not yours)"),
        Code::Aborted => format!(
            "the {what} changed since it was read (the etag is stale): read it again and retry"
        ),
        Code::AlreadyExists => format!("already exists: {}", status.message()),
        Code::FailedPrecondition => format!("not possible now: {}", status.message()),
        Code::ResourceExhausted => format!("over a limit: {}", status.message()),
        Code::PermissionDenied => format!("not allowed: {}", status.message()),
        Code::Unauthenticated => {
            "not signed in: the token is missing, invalid or expired".to_owned()
        }
        Code::Unavailable | Code::DeadlineExceeded => {
            "the service is unavailable for a moment: retry shortly".to_owned()
        }
        _ => {
            tracing::warn!(code = ?status.code(), message = status.message(), "mcp tool call failed");
            "the service failed: retry later".to_owned()
        }
    };
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

/// A request field path as the tools name it: `task.title` is the tool's `title`, a
/// resource `name` (or the `task` of a recurrence call) its `id`, `query` its `text`,
/// `page_token` its `cursor`, a reminder's `relative_to_due` its `minutes_before_due`.
fn field(path: &str) -> String {
    let path = path.strip_prefix("task.").unwrap_or(path);
    match path {
        "name" | "task" => return "id".to_owned(),
        "query" => return "text".to_owned(),
        "page_token" => return "cursor".to_owned(),
        "filter" => return "arguments".to_owned(),
        _ => {}
    }
    path.replace(".relative_to_due", ".minutes_before_due")
        .replace(".absolute_time", ".at")
}
