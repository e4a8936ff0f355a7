//! gRPC server plumbing shared by every component: serving with graceful shutdown, health
//! (`grpc.health.v1`), server reflection (v1 and v1alpha, so `grpcurl` of any age works), and
//! the `INVALID_ARGUMENT` with field violations that bad input gets (AIP-193).
//!
//! Errors are bounded whatever the input: a violation's field path and description are cut
//! to [`MAX_FIELD_CHARS`] and [`MAX_DESCRIPTION_CHARS`] characters, a response carries at
//! most [`MAX_VIOLATIONS`] of them and [`MAX_DETAILS_BYTES`] of their text (and says how
//! many more there were), and the message that repeats them for detail-blind clients stops
//! at [`MAX_MESSAGE_BYTES`]. An error must
//! fit the HTTP/2 header limits of every hop: an oversized one used to tear down the
//! gateway's connection that other users' calls shared. Echo user input with [`echo`].

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, service::Routes};

use crate::net::ConnectionLimits;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Server reflection services (v1 and v1alpha) over every taskmesh file, `grpc.health.v1`
/// and the error detail types the services send (`google.rpc.ErrorInfo`, `BadRequest`,
/// `RetryInfo`, `QuotaFailure`), so `grpcurl` prints an error's details.
///
/// # Errors
/// When the embedded descriptor set does not decode (a build defect).
pub fn reflection(routes: Routes) -> Result<Routes, tonic_reflection::server::Error> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(taskmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(taskmesh_proto::ERROR_DETAILS_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(taskmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(taskmesh_proto::ERROR_DETAILS_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(routes.add_service(v1).add_service(v1alpha))
}

/// How often a server pings an HTTP/2 peer that sent nothing, and how long it waits for the
/// answer before closing the connection (a peer that vanished without closing).
pub const HTTP2_KEEPALIVE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(20));

/// Serves `routes` (HTTP/2 gRPC) of `component` (its label on the RPC metrics) on `listener`
/// until `shutdown` is cancelled, then finishes in-flight calls. Connections are accepted
/// within the default [`ConnectionLimits`].
///
/// # Errors
/// A transport error of the server.
pub async fn serve(
    component: &'static str,
    listener: TcpListener,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = crate::net::incoming(listener, ConnectionLimits::default(), component);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE.0))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE.1))
        // Counts and times every call, shed ones included (as UNAVAILABLE).
        .layer(crate::metrics::RpcLayer::new(component))
        // Sheds calls past the in-flight limit before they reach a handler or the pool.
        .layer(crate::shed::ShedLayer::default())
        // Keeps a connection with a call in progress from being closed as idle.
        .layer(crate::net::CallTrackerLayer)
        // tonic's own errors (an unknown method, a message over the size limit) get an
        // ErrorInfo like every other error.
        .layer(tower::util::MapResponseLayer::new(
            with_framework_error_info::<tonic::body::Body>,
        ))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

/// Adds a `google.rpc.ErrorInfo` to a trailers-only error answer that has no details: the
/// errors tonic raises itself before or around a handler (an unknown method: `UNIMPLEMENTED`;
/// a request over [`MAX_REQUEST_BYTES`]: `OUT_OF_RANGE`; an unsupported compression). Their
/// reason is `GRPC_<CODE>` (e.g. `GRPC_UNIMPLEMENTED`), in [`ERROR_DOMAIN`]; the code and the
/// message are kept. Answers that carry details already, and successes, pass unchanged.
pub fn with_framework_error_info<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    let reason = match status.code() {
        Code::Ok => return response,
        Code::Unimplemented => "GRPC_UNIMPLEMENTED",
        Code::OutOfRange => "GRPC_OUT_OF_RANGE",
        Code::ResourceExhausted => "GRPC_RESOURCE_EXHAUSTED",
        Code::InvalidArgument => "GRPC_INVALID_ARGUMENT",
        Code::Unavailable => "GRPC_UNAVAILABLE",
        Code::DeadlineExceeded => "GRPC_DEADLINE_EXCEEDED",
        Code::Cancelled => "GRPC_CANCELLED",
        Code::Internal => "GRPC_INTERNAL",
        _ => "GRPC_ERROR",
    };
    let with_info = Status::with_error_details(
        status.code(),
        status.message(),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, []),
    );
    // Only fails on a message that cannot be a header value, which came from one.
    let _ = with_info.add_header(headers);
    response
}

/// Largest request message a server decodes, in bytes (tonic's default is 4 MiB); a larger
/// one is refused before it is parsed, with tonic's `OUT_OF_RANGE`. The largest valid task
/// (20,000 characters of description, 1,000 exdates, 20 tags and reminders) is well under.
pub const MAX_REQUEST_BYTES: usize = 512 * 1024;

/// Most field violations one error carries; the rest are counted in a last one.
pub const MAX_VIOLATIONS: usize = 20;
/// Longest field path of a violation, in characters.
pub const MAX_FIELD_CHARS: usize = 128;
/// Longest description of a violation, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// Longest `grpc-message` of an `INVALID_ARGUMENT`, in UTF-8 bytes (at most three times
/// that once percent-encoded).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Most bytes of field paths and descriptions one error carries in its details.
pub const MAX_DETAILS_BYTES: usize = 6 * 1024;
/// Longest piece of user input an error message repeats, in characters.
pub const MAX_ECHO_CHARS: usize = 64;

/// `text` cut to at most `max` bytes on a character boundary, with `…` when it was longer.
pub fn truncate_bytes(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let ellipsis = '…'.len_utf8();
    let room = if max >= ellipsis { max - ellipsis } else { max };
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if max >= ellipsis {
        format!("{}…", &text[..end]).into()
    } else {
        text[..end].into()
    }
}

/// `text` cut to `max` characters, with `…` when it was longer.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

/// User input to repeat in an error message: at most [`MAX_ECHO_CHARS`] characters, debug
/// quoted (so control characters and quotes show as escapes).
pub fn echo(text: &str) -> String {
    format!("{:?}", truncate(text, MAX_ECHO_CHARS))
}

/// Field violations collected while validating a request (`google.rpc.BadRequest`); bounded
/// (see the module docs).
#[derive(Debug, Default)]
pub struct Violations {
    kept: Vec<FieldViolation>,
    kept_bytes: usize,
    omitted: usize,
}

impl Violations {
    /// No violation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` (a path such as `task.due.time_zone`) is wrong, and why; past
    /// [`MAX_VIOLATIONS`] or [`MAX_DETAILS_BYTES`] it is only counted.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        let (field, description) = (field.into(), description.into());
        let field = truncate(&field, MAX_FIELD_CHARS);
        let description = truncate(&description, MAX_DESCRIPTION_CHARS);
        let bytes = field.len() + description.len();
        if self.kept.len() == MAX_VIOLATIONS || self.kept_bytes + bytes > MAX_DETAILS_BYTES {
            self.omitted += 1;
            return;
        }
        self.kept_bytes += bytes;
        self.kept.push(FieldViolation::new(field, description));
    }

    /// Records every violation of `other` after this one's.
    pub fn extend(&mut self, other: Violations) {
        for violation in other.kept {
            self.add(violation.field, violation.description);
        }
        self.omitted += other.omitted;
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// `Ok(())` when empty, else the `INVALID_ARGUMENT` status carrying every violation.
    ///
    /// # Errors
    /// The status, as described.
    pub fn check(self) -> Result<(), Status> {
        if self.kept.is_empty() {
            Ok(())
        } else {
            Err(self.into_status())
        }
    }

    /// The `INVALID_ARGUMENT` status carrying the violations (the first [`MAX_VIOLATIONS`],
    /// then one on field `*` counting the rest); its message lists them too, up to
    /// [`MAX_MESSAGE_BYTES`], so clients that ignore details (grpcurl, browsers' consoles)
    /// still show what is wrong.
    pub fn into_status(mut self) -> Status {
        if self.omitted > 0 {
            let more = format!("and {} more violations not listed", self.omitted);
            self.kept.push(FieldViolation::new("*", more));
        }
        let message = self
            .kept
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        let mut details = ErrorDetails::with_bad_request(self.kept);
        details.set_error_info(INVALID_FIELDS, ERROR_DOMAIN, []);
        Status::with_error_details(
            Code::InvalidArgument,
            truncate_bytes(&message, MAX_MESSAGE_BYTES),
            details,
        )
    }
}

pub use taskmesh_proto::codec::ERROR_DOMAIN;

/// A status of `code` and `message` carrying a `google.rpc.ErrorInfo` with `reason`
/// (AIP-193: a stable `UPPER_SNAKE_CASE` name of the error's cause, what a client branches
/// on, unlike the message) in [`ERROR_DOMAIN`].
pub fn error(code: Code, reason: &'static str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        bounded(message.into()),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, []),
    )
}

/// `message` cut to [`MAX_MESSAGE_BYTES`] (it travels in the status and again in its details).
fn bounded(message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        message
    } else {
        truncate_bytes(&message, MAX_MESSAGE_BYTES).into_owned()
    }
}

/// [`error`] with `metadata` in the `ErrorInfo` (values cut to 256 bytes).
pub fn error_with(
    code: Code,
    reason: &'static str,
    message: impl Into<String>,
    metadata: &[(&str, &str)],
) -> Status {
    let metadata = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), truncate_bytes(v, 256).into_owned()))
        .collect::<std::collections::HashMap<_, _>>();
    Status::with_error_details(
        code,
        bounded(message.into()),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// The `ErrorInfo.reason` of a status, if it carries one (for clients and tests).
pub fn reason(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

/// The status of a call that failed on the database (SQLSTATE classes, see
/// [`crate::db::classify`]): `UNAVAILABLE` while it is unreachable, restarting or overloaded
/// (the client retries with backoff), `DEADLINE_EXCEEDED` when a statement or lock timeout
/// hit, else `INTERNAL` with an opaque message, the cause logged once here.
pub fn database_status(error: &sqlx::Error) -> Status {
    match crate::db::classify(error) {
        crate::db::Failure::Unavailable => {
            tracing::warn!(error = %crate::error_chain(error), "database unavailable");
            self::error(
                Code::Unavailable,
                "DATABASE_UNAVAILABLE",
                "the database is unavailable; retry with backoff",
            )
        }
        crate::db::Failure::Timeout => self::error(
            Code::DeadlineExceeded,
            "DATABASE_TIMEOUT",
            "the database did not answer in time",
        ),
        crate::db::Failure::Other => {
            tracing::error!(error = %crate::error_chain(error), "internal error");
            internal()
        }
    }
}

/// What is left of a call's deadline (its client's `grpc-timeout`, see
/// [`crate::metrics::Deadline`]), for the timeout of an upstream call it makes on the
/// client's behalf; `None` when the client set none.
pub fn remaining<T>(request: &tonic::Request<T>) -> Option<Duration> {
    let deadline = request.extensions().get::<crate::metrics::Deadline>()?;
    Some(
        deadline
            .0
            .saturating_duration_since(std::time::Instant::now()),
    )
}

/// The `ErrorInfo.reason` of `INVALID_ARGUMENT` with field violations (`google.rpc.BadRequest`).
pub const INVALID_FIELDS: &str = "INVALID_FIELDS";

/// `INTERNAL` with an opaque message (the cause is logged where it happened), reason
/// `INTERNAL_ERROR`.
pub fn internal() -> Status {
    error(Code::Internal, "INTERNAL_ERROR", "internal error")
}

/// A single-violation `INVALID_ARGUMENT`.
pub fn invalid_argument(field: &str, description: &str) -> Status {
    let mut violations = Violations::new();
    violations.add(field, description);
    violations.into_status()
}

/// The field violations carried by a status, as `(field, description)` pairs (for clients
/// and tests).
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_bounded_in_number_and_size() {
        let mut violations = Violations::new();
        let long = "x".repeat(100_000);
        for i in 0..10_000 {
            violations.add(format!("update_mask.paths[{i}]{long}"), long.clone());
        }
        let status = violations.into_status();
        let found = field_violations(&status);
        assert!(found.len() <= MAX_VIOLATIONS + 1);
        assert!(found.iter().all(|(field, description)| {
            field.chars().count() <= MAX_FIELD_CHARS + 1
                && description.chars().count() <= MAX_DESCRIPTION_CHARS + 1
        }));
        let (field, description) = found.last().unwrap();
        assert_eq!(field, "*");
        let listed = found.len() - 1;
        assert!(description.contains(&format!("{} more", 10_000 - listed)));
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(
            status.details().len() < 10_000,
            "{}",
            status.details().len()
        );
    }

    #[test]
    fn wide_characters_stay_within_the_byte_budgets() {
        let mut violations = Violations::new();
        for _ in 0..10_000 {
            violations.add("😀".repeat(300), "😀".repeat(300));
        }
        let status = violations.into_status();
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(
            status.details().len() < 12_000,
            "{}",
            status.details().len()
        );
        let found = field_violations(&status);
        assert_eq!(found.last().unwrap().0, "*");
        assert_eq!(truncate_bytes("ab😀", 5), "ab…");
        assert_eq!(truncate_bytes("abcdef", 2), "ab");
    }

    #[test]
    fn echo_cuts_long_input_on_a_character_boundary() {
        assert_eq!(echo("Europe/Berlin"), "\"Europe/Berlin\"");
        let long = "é".repeat(1000);
        let echoed = echo(&long);
        assert_eq!(echoed.chars().count(), MAX_ECHO_CHARS + 3);
        assert!(echoed.ends_with("…\""));
        assert_eq!(echo("a\u{0}b"), "\"a\\0b\"");
    }
}
