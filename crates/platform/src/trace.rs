//! W3C trace context across the mesh (ARCHITECTURE.md: `traceparent` on every event): one
//! trace runs from a gRPC call through the outbox, Kafka and every consumer of its event.
//!
//! - [`crate::metrics::RpcLayer`]: a span per gRPC call, continuing the caller's
//!   `traceparent` header.
//! - [`current_traceparent`]: the current span's `traceparent`, which the change log writes
//!   on each outbox event (and so on the Kafka record's headers).
//! - [`continue_trace`]: makes a span (a relay publish, a consumer's handling) a child of an
//!   event's `traceparent`.
//! - [`inject`]: the current context into outgoing headers (the gateway's forwarded calls).
//!
//! Spans become OpenTelemetry spans only when [`crate::telemetry`] installs the OpenTelemetry
//! layer (`OTEL_EXPORTER_OTLP_ENDPOINT`); otherwise there is no trace and nothing is written.

use std::collections::HashMap;

use opentelemetry::{global, propagation::TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the current span; `None` outside a trace.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of `traceparent` (an event's), when there is one.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// Writes the current span's `traceparent` into `headers`.
pub fn inject(headers: &mut http::HeaderMap) {
    if let Some(value) = current_traceparent().and_then(|t| t.parse().ok()) {
        headers.insert("traceparent", value);
    }
}

/// Installs the W3C trace-context propagator process-wide.
pub fn install_propagator() {
    global::set_text_map_propagator(TraceContextPropagator::new());
}
