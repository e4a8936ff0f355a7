//! A background task that stops stops its component: health turns NOT_SERVING, the cause is
//! logged, and the process exits non-zero (the real binary, `serve` and `dev`).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use taskmesh_platform::{
    broker::EmbeddedBroker,
    kafka::KafkaConfig,
    runtime::{self, Supervisor},
    shutdown::CancellationToken,
};
use taskmesh_testkit::{Mesh, MeshOptions, TestDb};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{SERVING, health, run, taskmesh};

/// A librdkafka property every consumer refuses at creation (producers ignore it): a
/// consumer whose client cannot be created.
const BROKEN_CONSUMERS: &str = "partition.assignment.strategy=no-such-strategy";

const SECRET: &str = "a-test-secret-of-at-least-thirty-two-bytes";

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_task_turns_the_component_not_serving_and_stops_it() {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let mut supervisor = Supervisor::new("test", shutdown.clone());
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<()>();
    supervisor.spawn("steady", |ctx| async move {
        ctx.shutdown.cancelled().await;
        anyhow::Ok(())
    });
    supervisor.spawn("fragile", |_| async move {
        let _ = fail_rx.await;
        anyhow::bail!("the disk is full")
    });
    let component = tokio::spawn(runtime::serve_grpc(
        supervisor,
        listener,
        tonic::service::Routes::default(),
        &[],
        runtime::Introspection::default(),
    ));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: "liveness".into(),
        })
        .await
        .expect("watches")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("ok");
    assert_eq!(first.status, SERVING, "alive while every task runs");

    let failed_at = Instant::now();
    fail_tx.send(()).expect("fails the task");
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a status change within 5 s")
        .expect("a status")
        .expect("ok");
    assert_eq!(next.status, 2, "NOT_SERVING after the task failed");
    drop(watch);

    let result = tokio::time::timeout(Duration::from_secs(10), component)
        .await
        .expect("the component stops")
        .expect("joins");
    let error = result.expect_err("the component failed");
    let failure = error
        .downcast_ref::<runtime::Failure>()
        .expect("a supervised failure");
    assert_eq!(failure.task, "fragile");
    assert!(format!("{error:#}").contains("the disk is full"));
    assert!(shutdown.is_cancelled(), "everything else was told to stop");
    eprintln!(
        "task failure to stopped component: {:?}",
        failed_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exits_non_zero_when_a_consumer_cannot_start() {
    let db = TestDb::create().await.expect("db");
    // Migrated, as `taskmesh migrate` (the chart's Job) leaves it before `serve` starts.
    taskmesh::mesh::migrate(&db.url(), 2)
        .await
        .expect("migrates");
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/")
        .await
        .expect("broker");
    KafkaConfig::local(broker.bootstrap_servers())
        .create_topics()
        .await
        .expect("topics");
    let mut command = taskmesh();
    command
        .args(["serve", "audit"])
        .env("DATABASE_URL", db.url())
        .env("KAFKA_BROKERS", broker.bootstrap_servers())
        .env("TASKMESH_JWT_SECRET", SECRET)
        .env("TASKMESH_KAFKA_PROPERTIES", BROKEN_CONSUMERS)
        .env("TASKMESH_LISTEN", "127.0.0.1:0")
        .env("TASKMESH_METRICS_LISTEN", "127.0.0.1:0");
    let started = Instant::now();
    let ran = run(command, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(!ran.success, "serve must fail:\n{}", ran.text);
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.text.contains("component failed") && ran.text.contains("consumer"),
        "the log names the failed task:\n{}",
        ran.text
    );
    assert!(
        ran.text.contains("partition.assignment.strategy"),
        "and its cause:\n{}",
        ran.text
    );
    eprintln!("serve audit: start to exit with a broken consumer: {took:?}");
}

/// What `addr` answers `request` by server reflection (v1), or the status it answered with.
async fn reflect(
    addr: SocketAddr,
    request: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> Result<tonic_reflection::pb::v1::server_reflection_response::MessageResponse, tonic::Status> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let response = responses.message().await?.expect("a response");
    Ok(response.message_response.expect("an answer"))
}

/// The services `addr` lists by server reflection, or the status it answered with.
async fn reflected_services(addr: SocketAddr) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    match reflect(addr, MessageRequest::ListServices(String::new())).await? {
        MessageResponse::ListServicesResponse(list) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("not a service list: {other:?}"),
    }
}

/// The names of the files `addr` gives for `symbol` by server reflection (the file that
/// declares it first), or empty when it does not know it.
async fn reflected_files(addr: SocketAddr, symbol: &str) -> Vec<String> {
    use prost::Message as _;
    use tonic_reflection::pb::v1::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    match reflect(
        addr,
        MessageRequest::FileContainingSymbol(symbol.to_owned()),
    )
    .await
    {
        Ok(MessageResponse::FileDescriptorResponse(files)) => files
            .file_descriptor_proto
            .iter()
            .filter_map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok())
            .filter_map(|file| file.name)
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_probes_scrapes_and_reflection_on_its_internal_listener() {
    let db = TestDb::create().await.expect("db");
    taskmesh::mesh::migrate(&db.url(), 2)
        .await
        .expect("migrates");
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/")
        .await
        .expect("broker");
    KafkaConfig::local(broker.bootstrap_servers())
        .create_topics()
        .await
        .expect("topics");
    let free = || {
        std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
    };
    let (public, internal) = (free(), free());
    let _served = taskmesh()
        .args(["serve", "task"])
        .env("DATABASE_URL", db.url())
        .env("KAFKA_BROKERS", broker.bootstrap_servers())
        .env("TASKMESH_JWT_SECRET", SECRET)
        .env("TASKMESH_LISTEN", public.to_string())
        .env("TASKMESH_METRICS_LISTEN", internal.to_string())
        .env("TASKMESH_PUBLIC_REFLECTION", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(taskmesh_testkit::KillOnDrop)
        .expect("serve starts");
    // The probes' health on the internal listener, the same status on the public port.
    let ready = taskmesh_testkit::eventually(Duration::from_secs(60), || async {
        (health(internal, "readiness").await == Some(SERVING)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "readiness on the internal listener");
    assert_eq!(health(internal, "liveness").await, Some(SERVING));
    assert_eq!(health(public, "readiness").await, Some(SERVING));
    // Reflection only on the internal listener.
    let listed = reflected_services(internal).await.expect("reflection");
    assert!(
        listed.iter().any(|s| s == "taskmesh.task.v1.TaskService"),
        "{listed:?}"
    );
    // With the error detail types the services send, so grpcurl can print an error's details.
    for detail in [
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
        "google.rpc.QuotaFailure",
        "google.rpc.ErrorInfo",
    ] {
        let files = reflected_files(internal, detail).await;
        assert_eq!(
            files.first().map(String::as_str),
            Some("google/rpc/error_details.proto"),
            "{detail}: {files:?}"
        );
    }
    let refused = reflected_services(public).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    // And the metrics, over HTTP/1.1, on the same listener.
    let metrics = taskmesh_testkit::metrics_text(internal)
        .await
        .expect("/metrics");
    assert!(metrics.contains("taskmesh_"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mesh_dev_runs_stops_whole_with_the_reason() {
    // What `taskmesh dev` runs: the topics exist, then every consumer's client is refused.
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/")
        .await
        .expect("broker");
    let kafka = KafkaConfig::local(broker.bootstrap_servers());
    let mut broken = kafka.clone();
    broken.extra.push((
        "partition.assignment.strategy".into(),
        "no-such-strategy".into(),
    ));
    let started = Instant::now();
    let mut mesh = Mesh::start_with(MeshOptions::default(), kafka, Some(broker), |config| {
        config.kafka = broken;
    })
    .await
    .expect("binds");
    let stopped = tokio::time::timeout(Duration::from_secs(30), mesh.stopped())
        .await
        .expect("the mesh stops by itself");
    let error = stopped.expect_err("with an error");
    assert!(
        format!("{error:#}").contains("partition.assignment.strategy"),
        "the reason: {error:#}"
    );
    for addr in [
        mesh.task_addr,
        mesh.reminder_addr,
        mesh.audit_addr,
        mesh.gateway_addr,
    ] {
        assert_eq!(health(addr, "").await, None, "{addr} stopped too");
    }
    eprintln!(
        "mesh: start to stopped with broken consumers: {:?}",
        started.elapsed()
    );
}

/// `taskmesh dev` on `db`, its embedded broker (in memory) on `kafka_listen`.
fn dev(db: &TestDb, kafka_listen: &str) -> std::process::Command {
    let mut command = taskmesh();
    command
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--kafka-listen",
            kafka_listen,
        ])
        .args(["--broker-storage", "memory://tansu/", "--skip-web-build"])
        .env("DATABASE_URL", db.url());
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_refuses_to_start_with_the_reason() {
    let db = TestDb::create().await.expect("db");
    let mut command = dev(&db, "127.0.0.1:0");
    command.env("TASKMESH_KAFKA_PROPERTIES", BROKEN_CONSUMERS);
    let ran = run(command, Duration::from_secs(60)).await;
    assert!(!ran.success, "dev must stop:\n{}", ran.text);
    assert!(
        ran.text.contains("partition.assignment.strategy"),
        "with the reason:\n{}",
        ran.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_refuses_a_broker_address_in_use() {
    let db = TestDb::create().await.expect("db");
    // Whatever holds the port (here a bare listener; in life another broker or another
    // `taskmesh dev`), `dev` must not join it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let ran = run(dev(&db, &addr), Duration::from_secs(60)).await;
    assert!(!ran.success, "dev must stop:\n{}", ran.text);
    assert!(
        ran.text.contains(&format!("{addr} is in use")),
        "saying the address is in use:\n{}",
        ran.text
    );
    drop(taken);
}
