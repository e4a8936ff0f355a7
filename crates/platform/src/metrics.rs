//! Prometheus metrics (the `metrics` facade with `metrics-exporter-prometheus`): one
//! process-wide recorder, rendered in the text exposition format at `/metrics`, and
//! [`RpcLayer`], which counts and times every gRPC call and runs it in a span continuing the
//! caller's trace ([`crate::trace`]).
//!
//! Labels are bounded whatever clients send: `service` and `method` are the call's only when
//! the descriptor sets the mesh serves (taskmesh's, health, reflection) know the method, else
//! both are `unknown` (the path is chosen by the client, before authentication); counter and
//! histogram series nobody updated for [`IDLE_TIMEOUT`] leave the exposition (gauges stay:
//! a state such as `taskmesh_background_task_degraded` is set when it changes).
//!
//! Names follow Prometheus conventions (`taskmesh_` prefix, base units, `_total` counters,
//! `_seconds` histograms):
//! - `taskmesh_rpc_requests_total{component, service, method, code}`,
//!   `taskmesh_rpc_duration_seconds{component, service, method}` (until the response headers:
//!   for a stream, until it opens; the gateway counts the calls it forwards too);
//! - `taskmesh_outbox_published_total{channel}`, `taskmesh_outbox_publish_delay_seconds{channel}`
//!   (commit to broker acknowledgement), `taskmesh_outbox_backlog{channel}` (rows left after a
//!   relay round; 0 once drained);
//! - `taskmesh_consumer_events_total{consumer, outcome}` (`applied`, `duplicate`, `retried`,
//!   `dead_lettered`), `taskmesh_consumer_processing_seconds{consumer}`,
//!   `taskmesh_consumer_event_age_seconds{consumer}` (event time to handled: the consumer's lag
//!   in time);
//! - `taskmesh_consumer_lag_records{consumer}` (records not yet committed by the consumer's
//!   group), `taskmesh_consumer_partitions_owned{consumer}` (partition leases held here);
//! - `taskmesh_background_task_degraded{component, task}` (1 while retrying a transient
//!   failure), `taskmesh_background_task_retries_total{component, task}`;
//! - `taskmesh_reminder_lateness_seconds{kind}` (ReminderService), `taskmesh_live_streams_open`
//!   (the gateway);
//! - `taskmesh_build_info{version}` (always 1), and the standard process metrics
//!   (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//!   `process_max_fds`, `process_start_time_seconds`, `process_threads`, ...; the
//!   `metrics-process` crate), collected at each scrape.
//!
//! The RPC metrics map onto the grpc-ecosystem names dashboards know
//! (`go-grpc-prometheus`): `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}` is
//! `taskmesh_rpc_requests_total{service, method, code}` (two codes spelled the Rust way: `Ok`,
//! `Cancelled`), and `grpc_server_handling_seconds` is `taskmesh_rpc_duration_seconds` (the
//! README's "Operate" says how to query them).

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Histogram buckets (seconds) of every `_seconds` metric: 100 µs to 60 s.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    15.0, 60.0,
];

/// How long a counter or histogram series may go without an update before it leaves the
/// exposition (a method nobody calls any more); Prometheus reads its return as a reset.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The `service` and `method` labels of a call whose method no served descriptor declares.
const UNKNOWN: &str = "unknown";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Every `package.Service/Method` the mesh's servers may answer: taskmesh's contracts,
/// `grpc.health.v1` and both reflection versions.
fn known_methods() -> &'static HashSet<String> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = HashSet::new();
        for set in [
            taskmesh_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        known
    })
}

/// The `service` and `method` labels of a call to `path` (`/package.Service/Method`): its
/// own when a served descriptor declares it, else [`UNKNOWN`] for both. `None` when the path
/// is not a gRPC call's at all (the web app's files, `/metrics`).
fn call_labels(path: &str) -> Option<(String, String)> {
    let name = path.strip_prefix('/')?;
    let (service, method) = name.split_once('/')?;
    if !service.contains('.') {
        return None;
    }
    Some(if known_methods().contains(name) {
        (service.to_owned(), method.to_owned())
    } else {
        (UNKNOWN.to_owned(), UNKNOWN.to_owned())
    })
}

/// Installs the process-wide recorder on first use, with every metric's help text; `None`
/// when another recorder was installed first (then nothing is exported).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?
                .idle_timeout(
                    MetricKindMask::COUNTER | MetricKindMask::HISTOGRAM,
                    Some(IDLE_TIMEOUT),
                )
                .install_recorder()
                .ok()?;
            describe();
            process_collector().describe();
            metrics::gauge!("taskmesh_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

/// The standard `process_*` metrics of this process.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The help text of every metric (the module docs list them).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "taskmesh_build_info",
        "Always 1; the label says which taskmesh version runs."
    );
    describe_counter!(
        "taskmesh_rpc_requests_total",
        "gRPC calls by component, service, method and status code."
    );
    describe_histogram!(
        "taskmesh_rpc_duration_seconds",
        metrics::Unit::Seconds,
        "gRPC call latency until the response headers."
    );
    describe_counter!(
        "taskmesh_outbox_published_total",
        "Outbox events the relay published and the broker acknowledged."
    );
    describe_histogram!(
        "taskmesh_outbox_publish_delay_seconds",
        metrics::Unit::Seconds,
        "Time from an event's commit to its acknowledgement by the broker."
    );
    describe_gauge!(
        "taskmesh_outbox_backlog",
        "Outbox rows left unpublished after the relay's last round."
    );
    describe_counter!(
        "taskmesh_consumer_events_total",
        "Events a consumer handled, by outcome (applied, duplicate, dead_lettered; retried: failed transiently, to be tried again)."
    );
    describe_histogram!(
        "taskmesh_consumer_processing_seconds",
        metrics::Unit::Seconds,
        "Time a consumer took to handle an event, retries included."
    );
    describe_histogram!(
        "taskmesh_consumer_event_age_seconds",
        metrics::Unit::Seconds,
        "Time from an event's commit to its handling by a consumer."
    );
    describe_histogram!(
        "taskmesh_reminder_lateness_seconds",
        metrics::Unit::Seconds,
        "How late reminders and overdue notices fired after their time."
    );
    describe_gauge!(
        "taskmesh_live_streams_open",
        "Live streams open on this gateway."
    );
    describe_gauge!(
        "taskmesh_consumer_lag_records",
        "Records of the consumer's topic its group has not committed yet (high watermark minus committed offset, summed over partitions)."
    );
    describe_gauge!(
        "taskmesh_consumer_partitions_owned",
        "Partitions this process holds the lease of, and reads, per consumer."
    );
    describe_gauge!(
        "taskmesh_background_task_degraded",
        "1 while a background task is retrying a transient failure (broker or database unreachable), else 0."
    );
    describe_counter!(
        "taskmesh_audit_replays_total",
        "Events AuditService did not record because their change was already recorded under another ce_id."
    );
    describe_counter!(
        "taskmesh_background_task_retries_total",
        "Retries of transient failures by background tasks."
    );
}

/// Everything recorded so far, in the Prometheus text exposition format.
pub fn render() -> String {
    match handle() {
        Some(handle) => {
            process_collector().collect();
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

/// The `/metrics` route.
pub fn router() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(),
            )
        }),
    )
}

/// Serves `/metrics` on `listener` until `shutdown`.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    handle();
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Counts and times the gRPC calls of the services it wraps (see the module docs), each in a
/// span named `service/method` that continues the call's `traceparent`.
#[derive(Clone, Copy, Debug)]
pub struct RpcLayer {
    component: &'static str,
}

impl RpcLayer {
    /// A layer labelling its calls with `component` (`task`, `gateway`, ...).
    pub fn new(component: &'static str) -> Self {
        Self { component }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        handle();
        Rpc {
            inner,
            component: self.component,
        }
    }
}

/// The service of [`RpcLayer`].
#[derive(Clone, Debug)]
pub struct Rpc<S> {
    inner: S,
    component: &'static str,
}

impl<S, B, R> tower::Service<http::Request<B>> for Rpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // `/package.Service/Method`; anything else (the web app's files) is not a call.
        let Some((service, method)) = call_labels(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let start = Instant::now();
        // Answer DEADLINE_EXCEEDED a little before the client's deadline: tonic's own timer
        // (outside this layer, at the full deadline) would answer CANCELLED, and so would a
        // tonic client whose timer runs out before the answer arrives.
        let deadline = grpc_timeout(request.headers())
            .and_then(|timeout| start.checked_add(timeout - margin(timeout)));
        if let Some(deadline) = deadline {
            // For the handler's own upstream calls ([`crate::grpc::remaining`]).
            request.extensions_mut().insert(Deadline(deadline));
        }
        let component = self.component;
        let span =
            tracing::info_span!("grpc", otel.name = %format!("{service}/{method}"), component);
        let parent = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        crate::trace::continue_trace(&span, parent);
        // The handler runs inside the span (the service's future is polled in it).
        let response = span.in_scope(|| self.inner.call(request));
        let measured = async move {
            let response = match deadline {
                None => response.await,
                Some(deadline) => match tokio::time::timeout_at(deadline.into(), response).await {
                    Ok(response) => response,
                    Err(_) => Ok(crate::grpc::error(
                        tonic::Code::DeadlineExceeded,
                        "DEADLINE_EXCEEDED",
                        "deadline exceeded",
                    )
                    .into_http()),
                },
            };
            let response = response.map(|mut r| {
                bound_error_headers(r.headers_mut());
                r
            });
            // An error status comes in the headers (trailers-only); a success in the
            // trailers, after the headers this measures.
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            metrics::histogram!("taskmesh_rpc_duration_seconds", "component" => component, "service" => service.clone(), "method" => method.clone())
                .record(start.elapsed().as_secs_f64());
            metrics::counter!("taskmesh_rpc_requests_total", "component" => component, "service" => service, "method" => method, "code" => format!("{code:?}"))
                .increment(1);
            response
        };
        Box::pin(tracing::Instrument::instrument(measured, span))
    }
}

/// Longest `grpc-message` header a response may carry (percent-encoded bytes).
const MAX_GRPC_MESSAGE_BYTES: usize = 4096;
/// Longest `grpc-status-details-bin` header a response may carry (base64 bytes): with the
/// message, under the 16 KiB header list a tonic client (the gateway's upstream channels)
/// accepts.
const MAX_STATUS_DETAILS_BYTES: usize = 10 * 1024;

/// The last guard of the HTTP/2 header limits of every hop (an error built from unbounded
/// input once tore down the gateway's shared upstream connection): an oversized
/// `grpc-message` is replaced by a short one, oversized details are dropped. The errors the
/// services build are bounded already ([`crate::grpc::Violations`]); this catches a defect.
fn bound_error_headers(headers: &mut http::HeaderMap) {
    if headers
        .get("grpc-message")
        .is_some_and(|v| v.len() > MAX_GRPC_MESSAGE_BYTES)
    {
        tracing::warn!("an error message exceeded {MAX_GRPC_MESSAGE_BYTES} bytes; replaced");
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("error message too long to send"),
        );
    }
    if headers
        .get("grpc-status-details-bin")
        .is_some_and(|v| v.len() > MAX_STATUS_DETAILS_BYTES)
    {
        tracing::warn!("error details exceeded {MAX_STATUS_DETAILS_BYTES} bytes; dropped");
        headers.remove("grpc-status-details-bin");
    }
}

/// When a call must have answered (the client's `grpc-timeout` less the margin), in the
/// request extensions of a call that has one.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

/// How much before the client's deadline a call is answered `DEADLINE_EXCEEDED`: a twentieth
/// of the timeout, between 1 ms (but never more than a tenth) and 50 ms.
fn margin(timeout: std::time::Duration) -> std::time::Duration {
    use std::time::Duration;
    (timeout / 20)
        .clamp(Duration::from_millis(1), Duration::from_millis(50))
        .min(timeout / 10)
}

/// The client's timeout from `grpc-timeout` (gRPC over HTTP/2: at most 8 digits, then a unit
/// `H`, `M`, `S`, `m`, `u` or `n`); `None` when absent or malformed.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::grpc_timeout;

    #[test]
    fn oversized_error_headers_are_cut() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-message", "x".repeat(100_000).parse().unwrap());
        headers.insert(
            "grpc-status-details-bin",
            "A".repeat(100_000).parse().unwrap(),
        );
        super::bound_error_headers(&mut headers);
        assert_eq!(headers["grpc-message"], "error message too long to send");
        assert!(headers.get("grpc-status-details-bin").is_none());
        let mut small = http::HeaderMap::new();
        small.insert("grpc-message", "bad input".parse().unwrap());
        super::bound_error_headers(&mut small);
        assert_eq!(small["grpc-message"], "bad input");
    }

    #[test]
    fn only_declared_methods_are_labelled_by_name() {
        use super::call_labels;
        let known = |s: &str, m: &str| Some((s.to_owned(), m.to_owned()));
        assert_eq!(
            call_labels("/taskmesh.task.v1.TaskService/CreateTask"),
            known("taskmesh.task.v1.TaskService", "CreateTask")
        );
        assert_eq!(
            call_labels("/grpc.health.v1.Health/Check"),
            known("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            call_labels("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            known(
                "grpc.reflection.v1alpha.ServerReflection",
                "ServerReflectionInfo"
            )
        );
        for made_up in [
            "/taskmesh.task.v1.TaskService/Nope123",
            "/x.y/z",
            "/taskmesh.task.v1.TaskService/CreateTask/extra",
        ] {
            assert_eq!(
                call_labels(made_up),
                known("unknown", "unknown"),
                "{made_up}"
            );
        }
        assert_eq!(call_labels("/index.html"), None);
        assert_eq!(call_labels("/metrics"), None);
    }

    #[test]
    fn grpc_timeouts_parse_by_the_spec() {
        let parse = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn calls_are_answered_a_bounded_margin_before_their_deadline() {
        use super::margin;
        assert_eq!(
            margin(Duration::from_millis(500)),
            Duration::from_millis(25)
        );
        assert_eq!(margin(Duration::from_secs(30)), Duration::from_millis(50));
        assert_eq!(margin(Duration::from_millis(5)), Duration::from_micros(500));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }
}
