//! CreateTask under open-loop load, side by side with the limits of what it stands on:
//!
//! - **CreateTask** through the gateway (native gRPC over HTTP/2, a few connections, 1,000
//!   users' tokens in rotation) into the whole mesh (TaskService, its outbox relay to the
//!   broker, and every consumer running meanwhile): latency p50/p99/p99.9 at fixed rates, and
//!   the highest rate of a ladder whose p99 stays within 10 ms with no error.
//! - **gRPC limit**: a bare tonic unary server (`grpc.health.v1.Health/Check`, tonic-health)
//!   driven by the same load generator, same rates and ladder.
//! - **PostgreSQL limit**: `pgbench` running a one-row INSERT transaction with as many clients
//!   as TaskService's pool has connections (closed loop, its maximum).

use std::{future::Future, net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use anyhow::Context as _;
use taskmesh_proto::task::v1::{CreateTaskRequest, Task, task_service_client::TaskServiceClient};
use taskmesh_testkit::{Mesh, MeshOptions, TestDb};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    Scale,
    load::{CpuUse, Outcome, open_loop},
    statements,
    table::Table,
};

/// HTTP/2 connections the load is spread over (one per core of the server side is plenty).
const CONNECTIONS: usize = 4;
/// Users whose tokens rotate.
const USERS: usize = 1_000;
/// The ladder's bar: p99 at or under this many milliseconds, with no error.
const P99_BAR_MS: f64 = 10.0;
/// TaskService's connection pool in the mesh (testkit), and pgbench's client count.
const POOL: usize = 8;

/// Runs the scenario and its two baselines; adds their rows to `table`.
pub(crate) async fn run(scale: &Scale, table: &mut Table) -> anyhow::Result<()> {
    let mesh = crate::mesh::start(MeshOptions::default()).await?;
    let mesh_channels = connect(mesh.gateway_addr).await?;
    let tokens = bearer_tokens("bench-", USERS)?;
    let create = |i: u64| {
        let task = Task {
            title: format!("bench task {i}"),
            description: "created by taskmesh-bench".into(),
            tags: vec!["bench".into()],
            ..Default::default()
        };
        create_task(
            mesh_channels[i as usize % CONNECTIONS].clone(),
            &tokens[i as usize % USERS],
            task,
        )
    };

    let (echo_addr, echo_stop) = echo_server().await?;
    let echo_channels = connect(echo_addr).await?;
    let check = |i: u64| check(echo_channels[i as usize % CONNECTIONS].clone());

    // Warm both up (connections, prepared statements, JIT-free but cache-warm).
    open_loop(scale.rates[0], scale.fixed / 2, &create).await;
    open_loop(scale.rates[0], scale.fixed / 2, &check).await;

    for &rate in &scale.rates {
        quiesce(&mesh).await?;
        let ours = open_loop(rate, scale.fixed, &create).await;
        let limit = open_loop(rate, scale.fixed, &check).await;
        for (label, quantile) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            table.ratio_row(
                "CreateTask",
                &format!("latency {label} @ {rate} rps, ms"),
                ours.ms(quantile),
                "tonic echo",
                limit.ms(quantile),
                ours.cpu,
            );
        }
        table.ratio_row(
            "CreateTask",
            &format!("CPU per call @ {rate} rps, ms"),
            ours.cpu.per_call_ms(rate),
            "tonic echo",
            limit.cpu.per_call_ms(rate),
            ours.cpu,
        );
        table.note_errors("CreateTask", &ours);
        table.note_errors("tonic echo", &limit);
    }

    quiesce(&mesh).await?;
    let ours = ladder(scale, &create).await;
    let limit = ladder(scale, &check).await;
    // After the ladder: the 2,000 calls it makes leave the consumers a backlog.
    statements_per_create(scale, &mesh, &mesh_channels[0], &tokens, table).await?;
    table.ratio_row(
        "CreateTask",
        &format!("max rps with p99 <= {P99_BAR_MS} ms"),
        ours.as_ref().map_or(0.0, |o| o.rate),
        "tonic echo",
        limit.as_ref().map_or(0.0, |o| o.rate),
        ours.as_ref().map_or(CpuUse::default(), |o| o.cpu),
    );
    // PostgreSQL's limit with the mesh stopped, so nothing else competes for it.
    echo_stop.cancel();
    drop(mesh);
    let pgbench = pgbench(scale.fixed).await?;
    table.ratio_row(
        "CreateTask",
        "max rps vs PostgreSQL",
        ours.as_ref().map_or(0.0, |o| o.rate),
        &format!("pgbench 1-row INSERT, {POOL} clients"),
        pgbench.tps,
        pgbench.cpu,
    );

    Ok(())
}

/// Counts the SQL statements (each one round trip) of CreateTask calls and of the events
/// they cause, per place (see [`statements`]): the RPC itself, each consumer per event it
/// handled, and everything else (relay, leases, probes) per call. Figures, beside the five
/// round trips a create cannot do without (BEGIN, the user's change-log lock, its row, its
/// change-log and outbox rows in one statement, COMMIT) and, per consumed event, beside the
/// one write an effect needs.
async fn statements_per_create(
    scale: &Scale,
    mesh: &Mesh,
    channel: &Channel,
    tokens: &[Bearer],
    table: &mut Table,
) -> anyhow::Result<()> {
    let calls = if scale.fixed.as_secs() >= 10 {
        2_000
    } else {
        100
    };
    quiesce(mesh).await?;
    let counting = statements::Counting::start();
    write_tasks(channel, tokens, calls, |i| Task {
        title: format!("counted task {i}"),
        description: "created by taskmesh-bench".into(),
        tags: vec!["bench".into()],
        ..Default::default()
    })
    .await?;
    quiesce(mesh).await?;
    // The consumers are done when their counts stop moving.
    let mut last = statements::Counting::peek();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = statements::Counting::peek();
        let consumers = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter()
                .filter(|(k, _)| k.starts_with("consumer "))
                .map(|(k, v)| (k.clone(), *v))
                .collect::<Vec<_>>()
        };
        if consumers(&now) == consumers(&last) {
            break;
        }
        last = now;
    }
    let counts = counting.stop();
    for (place, count) in &counts {
        let (figure, limit_name, limit) = if let Some(method) = place.strip_prefix("rpc ") {
            (
                format!("statements per call, {method}"),
                "BEGIN, lock, row, change+outbox, COMMIT",
                5.0,
            )
        } else if let Some(consumer) = place.strip_prefix("consumer ") {
            (
                format!("statements per event, {consumer}"),
                "one write",
                1.0,
            )
        } else {
            ("other statements per call".to_owned(), "none", 0.0)
        };
        table.ratio_row(
            "statements",
            &figure,
            *count as f64 / calls as f64,
            limit_name,
            limit,
            CpuUse::default(),
        );
    }
    table.note(format!(
        "statements: counted at the driver over {calls} CreateTask calls (64 in flight) and the \
         events they caused; BEGIN and COMMIT included; with sqlx one statement is one round trip"
    ));
    Ok(())
}

/// Waits until TaskService's outbox is empty (the relay published everything) and then a
/// second more for the consumers, so one phase's backlog does not weigh on the next.
async fn quiesce(mesh: &Mesh) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&mesh.pool)
            .await?;
        if waiting == 0 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the outbox still holds {waiting} events after 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// A `Bearer` authorization value.
pub(crate) type Bearer = MetadataValue<Ascii>;

/// `Bearer` values of test tokens for users `{prefix}0` to `{prefix}{count - 1}`.
pub(crate) fn bearer_tokens(prefix: &str, count: usize) -> anyhow::Result<Vec<Bearer>> {
    (0..count)
        .map(|i| {
            Ok(format!(
                "Bearer {}",
                taskmesh_testkit::token(&format!("{prefix}{i}"))
            )
            .parse()?)
        })
        .collect()
}

/// A request for `message` carrying `bearer`.
pub(crate) fn authorized<T>(message: T, bearer: &Bearer) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

/// One CreateTask (a fresh `request_id`) on `channel`; resolves to whether it succeeded.
pub(crate) fn create_task(
    channel: Channel,
    bearer: &Bearer,
    task: Task,
) -> impl Future<Output = bool> + Send + 'static {
    let mut client = TaskServiceClient::new(channel);
    let request = authorized(
        CreateTaskRequest {
            task: Some(task),
            request_id: uuid::Uuid::now_v7().to_string(),
        },
        bearer,
    );
    async move { client.create_task(request).await.is_ok() }
}

/// CreateTask calls in flight while [`write_tasks`] writes.
pub(crate) const WRITERS: usize = 64;

/// Creates `count` tasks (`task(i)`, the i-th for user `i % tokens.len()`) as fast as
/// [`WRITERS`] calls in flight allow; fails if any call failed.
pub(crate) async fn write_tasks(
    channel: &Channel,
    tokens: &[Bearer],
    count: usize,
    task: impl Fn(usize) -> Task,
) -> anyhow::Result<()> {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(WRITERS));
    let mut writers = tokio::task::JoinSet::new();
    let mut failed = 0_usize;
    for i in 0..count {
        let permit = permits.clone().acquire_owned().await?;
        let call = create_task(channel.clone(), &tokens[i % tokens.len()], task(i));
        writers.spawn(async move {
            let ok = call.await;
            drop(permit);
            ok
        });
        while let Some(done) = writers.try_join_next() {
            failed += usize::from(!matches!(done, Ok(true)));
        }
    }
    while let Some(done) = writers.join_next().await {
        failed += usize::from(!matches!(done, Ok(true)));
    }
    anyhow::ensure!(failed == 0, "{failed} of {count} CreateTask calls failed");
    Ok(())
}

/// One `grpc.health.v1.Health/Check` of the bare server; whether it succeeded.
pub(crate) async fn check(channel: Channel) -> bool {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok()
}

/// `CONNECTIONS` HTTP/2 channels to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// A bare tonic server with only `grpc.health.v1.Health`; cancel the token to stop it.
pub(crate) async fn echo_server() -> anyhow::Result<(SocketAddr, CancellationToken)> {
    let (_reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(async move {
        let _reporter = _reporter;
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
            .await
    });
    Ok((addr, stop))
}

/// How much each ladder step raises the rate.
const LADDER_STEP: f64 = 1.25;

/// Raises the rate by a quarter each step until a step fails the bar (p99 above
/// [`P99_BAR_MS`] or any failed call) twice in a row (one retry absorbs a noisy neighbour on
/// a small machine); the last step that held. Open-loop load keeps its schedule whatever the
/// server does, so a server that cannot keep up fails on latency.
async fn ladder<F, Fut>(scale: &Scale, call: &F) -> Option<Outcome>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let mut best = None;
    let mut rate = scale.ladder_start;
    let mut retried = false;
    while rate <= scale.ladder_max {
        let outcome = open_loop(rate, scale.step, call).await;
        if outcome.errors == 0 && outcome.ms(0.99) <= P99_BAR_MS {
            best = Some(outcome);
            rate = (rate * LADDER_STEP).round();
            retried = false;
        } else if retried {
            break;
        } else {
            retried = true;
        }
    }
    best
}

/// What pgbench measured.
struct Pgbench {
    tps: f64,
    cpu: crate::load::CpuUse,
}

/// `pgbench` with a one-row INSERT (the shape of a task row) on a fresh database, `POOL`
/// clients, for `duration`.
async fn pgbench(duration: Duration) -> anyhow::Result<Pgbench> {
    let db = TestDb::create().await?;
    let pool = taskmesh_platform::db::connect(&db.url(), "public", 1).await?;
    sqlx::query(
        "CREATE TABLE bench_tasks (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), \
         user_id text NOT NULL, title text NOT NULL, description text NOT NULL, \
         tags text[] NOT NULL, create_time timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    pool.close().await;
    let script = std::env::temp_dir().join(format!("taskmesh-pgbench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "\\set user random(1, 1000)\n\
         INSERT INTO bench_tasks (user_id, title, description, tags) \
         VALUES ('bench-' || :user, 'bench task', 'created by pgbench', '{bench}');\n",
    )?;
    let url = db.url();
    let seconds = duration.as_secs().max(1).to_string();
    let clients = POOL.to_string();
    let cpu = crate::load::CpuClock::start();
    let output = tokio::task::spawn_blocking({
        let script = script.clone();
        move || {
            Command::new(pgbench_path())
                .args([
                    "-n", "-M", "prepared", "-c", &clients, "-j", "2", "-T", &seconds, "-f",
                ])
                .arg(&script)
                .arg(&url)
                .output()
        }
    })
    .await?
    .context("run pgbench (Debian's postgresql-client package)")?;
    let cpu = cpu.stop();
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))?;
    Ok(Pgbench { tps, cpu })
}

/// `pgbench` on PATH, else the newest under `/usr/lib/postgresql/*/bin` (Debian).
fn pgbench_path() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin/pgbench"))
        .filter(|path| path.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from("pgbench"))
}
