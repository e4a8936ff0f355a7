//! One trace from a gRPC call through the gateway, TaskService, the outbox relay and Kafka to
//! the consumers and the live stream's fan-out, and into the audit log's `trace_id` (spans
//! collected by an in-memory exporter).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use taskmesh_proto::audit::v1::{ListTaskHistoryRequest, audit_service_client::AuditServiceClient};
use taskmesh_testkit::{Mesh, MeshOptions, authed, eventually};
use tracing_subscriber::{Layer, filter::LevelFilter, prelude::*};

use crate::live::new_task;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_call_the_relay_and_the_consumers() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("test"))
        .with_filter(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .expect("the only subscriber of this test binary");
    taskmesh_platform::trace::install_propagator();

    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let task = new_task(&mesh, "alice", "Trace me").await;
    let audit = AuditServiceClient::new(mesh.gateway_channel().await.unwrap());
    let recorded = eventually(Duration::from_secs(15), || {
        let mut audit = audit.clone();
        let name = task.name.clone();
        async move {
            let history = audit
                .list_task_history(authed(
                    "alice",
                    ListTaskHistoryRequest {
                        task: name,
                        ..Default::default()
                    },
                ))
                .await
                .ok()?
                .into_inner();
            history.entries.into_iter().next()
        }
    })
    .await
    .expect("the creation is audited");
    // Other tests of this binary run meanwhile: look at the trace the audit entry names.
    let call = recorded.trace_id;
    assert_eq!(call.len(), 32, "the audit entry names a trace");
    let expected = [
        "publish dev.taskmesh.task.created.v1",
        "taskmesh-audit-task-events dev.taskmesh.task.created.v1",
        "taskmesh-reminder dev.taskmesh.task.created.v1",
        "live dev.taskmesh.task.created.v1",
    ];
    // The consumers work independently of each other: wait until every span has ended.
    let names = eventually(Duration::from_secs(15), || {
        provider.force_flush().unwrap();
        let names: Vec<String> = exporter
            .get_finished_spans()
            .unwrap()
            .iter()
            .filter(|s| s.span_context.trace_id().to_string() == call)
            .map(|s| s.name.to_string())
            .collect();
        let complete = expected.iter().all(|e| names.iter().any(|n| n == e));
        async move { complete.then_some(names) }
    })
    .await;
    let names = names.unwrap_or_else(|| {
        provider.force_flush().unwrap();
        exporter
            .get_finished_spans()
            .unwrap()
            .iter()
            .filter(|s| s.span_context.trace_id().to_string() == call)
            .map(|s| s.name.to_string())
            .collect()
    });
    // The gateway's and TaskService's spans of the call: the gateway forwarded its context.
    let calls = names
        .iter()
        .filter(|n| *n == "taskmesh.task.v1.TaskService/CreateTask")
        .count();
    assert_eq!(calls, 2, "{names:?}");
    for expected in expected {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
}
