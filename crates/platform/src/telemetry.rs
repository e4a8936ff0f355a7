//! `tracing` set-up: human-readable or JSON logs to stderr, filtered by `RUST_LOG`
//! (default `info`, with chatty dependencies such as the embedded broker at `warn`), and, when
//! an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), every span exported to it
//! over OTLP/gRPC as OpenTelemetry spans under the caller's service name (`taskmesh serve
//! gateway` reports as `taskmesh-gateway`, `taskmesh dev` as `taskmesh`; `OTEL_SERVICE_NAME`
//! overrides it).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event (for log collectors).
    Json,
}

/// Flushes and shuts down span export when dropped (keep it alive in `main`).
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("span export did not shut down cleanly: {error}");
        }
    }
}

/// Installs the global subscriber and the W3C trace-context propagator. With `otlp_endpoint`
/// (e.g. `http://otel-collector:4317`), spans are batched and exported over OTLP/gRPC as
/// `service_name` (the OpenTelemetry `service.name`, e.g. `taskmesh-gateway`). Calling it
/// twice keeps the first subscriber (tests may call it from several places). Call inside the
/// Tokio runtime.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>, service_name: &str) -> TelemetryGuard {
    crate::trace::install_propagator();
    let filter = EnvFilter::try_from_default_env()
        // rmcp logs every stateless MCP request at info and a client's bad JSON-RPC ids (of
        // any length) at warn: only its errors are ours to see.
        .unwrap_or_else(|_| {
            EnvFilter::new("info,tansu=warn,sqlx=warn,libsql=warn,h2=warn,rmcp=error")
        });
    let logs = match format {
        // Colours only for a person at a terminal, never in a file or a collector's pipe.
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let provider = otlp_endpoint.and_then(|endpoint| match otlp_provider(endpoint, service_name) {
        Ok(provider) => Some(provider),
        Err(error) => {
            eprintln!("cannot export spans to {endpoint}: {error}");
            None
        }
    });
    let spans = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("taskmesh")));
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init();
    // Already initialised: keep the first subscriber.
    drop(result);
    TelemetryGuard { provider }
}

/// A tracer provider batching spans to the OTLP/gRPC `endpoint`.
fn otlp_provider(
    endpoint: &str,
    service_name: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
