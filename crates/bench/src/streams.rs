//! Idle live streams on one gateway: memory per stream and fan-out, beside a bare tonic
//! server holding as many idle server streams (`grpc.health.v1.Health/Watch`, tonic-health).
//!
//! Both servers run in processes of their own (this binary re-executed with a hidden
//! subcommand), so each one's resident memory (`VmRSS`) grows by its streams alone. Streams
//! are opened in levels (10,000 then 50,000 at full scale), each level in two parts:
//!
//! - **native gRPC**: four in five streams, multiplexed over [`NATIVE_CONNECTIONS`] HTTP/2
//!   connections (thousands of streams each);
//! - **grpc-web**: one in five, over HTTP/1.1 as browsers do: one TCP connection per stream,
//!   from [`SOURCE_ADDRESSES`] loopback addresses (127.0.0.2, ...) so no address runs out of
//!   ephemeral ports. The file-descriptor limit is raised first.
//!
//! Memory per stream is the server's RSS growth over a part divided by the streams it
//! opened; every stream has caught up (the gateway's `caught_up`, or Watch's first status)
//! before RSS is read. Users have [`STREAMS_PER_USER`] streams each (devices and tabs).
//!
//! **Fan-out**, once a level is open: the gateway's streams each receive one change. One task
//! per user is created with TaskService's relay held (the events wait in the outbox); the
//! clock starts when the relay starts (its producer already connected), so the figure covers
//! the relay publishing them, the broker, the gateway's hub and every stream. The bare server's streams each receive one status change (one
//! `set_service_status`, triggered through the child's stdin). Reported: deliveries per
//! second (streams / time to the last arrival) and the trigger-to-arrival latency.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use secrecy::SecretString;
use taskmesh_gateway::{Gateway, GatewayConfig};
use taskmesh_platform::{
    auth::Verifier,
    kafka::{KafkaConfig, Topic},
    runtime::TaskContext,
};
use taskmesh_proto::{
    gateway::v1::{
        StreamChangesRequest, StreamChangesResponse, live_service_client::LiveServiceClient,
        stream_changes_response::Event,
    },
    task::v1::Task,
};
use taskmesh_testkit::{Mesh, MeshOptions, TEST_SECRET};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    process::{Child, ChildStdin},
    sync::Semaphore,
};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Streaming, codegen::http::Uri, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_client::HealthClient};
use tonic_web::{GrpcWebClientLayer, GrpcWebClientService, GrpcWebLayer};

use crate::{
    Scale,
    live::{histogram, ms, now_micros, record, wait_for},
    load::{CpuClock, CpuUse, status_kib},
    rpc::{self, Bearer},
    table::Table,
};

/// HTTP/2 connections the native streams are multiplexed over.
const NATIVE_CONNECTIONS: usize = 64;
/// Loopback source addresses of the grpc-web connections (127.0.0.2 onwards).
const SOURCE_ADDRESSES: u8 = 4;
/// Every fifth stream is grpc-web.
const WEB_EVERY: usize = 5;
/// Streams per user.
const STREAMS_PER_USER: usize = 10;
/// Streams being opened at once (each holds its permit until it has caught up).
const OPENING: usize = 256;
/// The file-descriptor limit asked for: the grpc-web share needs one per connection, at
/// both ends.
const WANTED_FDS: u64 = 200_000;

/// Arguments of the hidden `gateway-process` subcommand: where the mesh's services and broker
/// are. Tokens are the test tokens (HS256, [`TEST_SECRET`]).
#[derive(Debug, ClapArgs)]
pub(crate) struct GatewayProcess {
    #[arg(long)]
    task_service: String,
    #[arg(long)]
    reminder_service: String,
    #[arg(long)]
    recurrence_service: String,
    #[arg(long)]
    audit_service: String,
    #[arg(long)]
    kafka_brokers: String,
}

/// The gateway alone in this process: prints `listening <addr>`, serves until stdin closes.
pub(crate) async fn gateway_process(args: GatewayProcess) -> anyhow::Result<()> {
    let config = GatewayConfig {
        task_service: args.task_service,
        reminder_service: args.reminder_service,
        recurrence_service: args.recurrence_service,
        audit_service: args.audit_service,
        kafka: KafkaConfig::local(args.kafka_brokers),
        verifier: Verifier::hs256(&SecretString::from(TEST_SECRET)),
        metrics: false,
        web_dir: None,
        cors: taskmesh_gateway::CorsOrigins::Any,
        // Every grpc-web stream is a connection of its own: 10,000 of the 50,000.
        connection_limits: taskmesh_platform::net::ConnectionLimits {
            max_connections: 1_000_000,
            ..Default::default()
        },
        max_streams_per_user: taskmesh_gateway::DEFAULT_MAX_STREAMS_PER_USER,
        mcp: taskmesh_gateway::McpAccess::default(),
        web_sign_in: taskmesh_gateway::sign_in::WebSignIn::default(),
        introspection: taskmesh_platform::runtime::Introspection::default(),
    };
    let gateway = Gateway::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await?;
    announce(gateway.local_addr()?).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(read_stdin(shutdown.clone(), |_| async {}));
    gateway.serve(shutdown).await
}

/// A bare tonic server (tonic-health, grpc-web enabled for HTTP/1.1) alone in this process:
/// prints `listening <addr>`; each line on stdin flips the overall (`""`) status, which every
/// `Watch` stream receives; serves until stdin closes.
pub(crate) async fn health_process() -> anyhow::Result<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    announce(listener.local_addr()?).await?;
    let shutdown = CancellationToken::new();
    let serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
    tokio::spawn(read_stdin(shutdown.clone(), move |_| {
        let (reporter, serving) = (reporter.clone(), serving.clone());
        async move {
            let now = !serving.fetch_xor(true, Ordering::Relaxed);
            let status = if now {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
        }
    }));
    tonic::transport::Server::builder()
        .accept_http1(true)
        .tcp_nodelay(true)
        .layer(GrpcWebLayer::new())
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
        .await?;
    Ok(())
}

pub(crate) async fn announce(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("listening {addr}\n").as_bytes())
        .await?;
    stdout.flush().await?;
    Ok(())
}

/// Calls `on_line` for each line on stdin; cancels `shutdown` when stdin closes (the parent
/// is done or gone).
pub(crate) async fn read_stdin<F, Fut>(shutdown: CancellationToken, on_line: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        on_line(line).await;
    }
    shutdown.cancel();
}

/// A server in a child process (this binary, a hidden subcommand); killed when dropped.
pub(crate) struct ChildServer {
    process: Child,
    stdin: ChildStdin,
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
}

impl ChildServer {
    pub(crate) async fn spawn(args: &[&str]) -> anyhow::Result<Self> {
        let mut process = tokio::process::Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start a server process")?;
        let pid = process.id().context("the server process has no pid")?;
        let stdin = process.stdin.take().context("no stdin")?;
        let stdout = process.stdout.take().context("no stdout")?;
        let line = tokio::time::timeout(
            Duration::from_secs(60),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .context("the server process did not announce its address in 60 s")??
        .context("the server process exited before listening")?;
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected first line {line:?}"))?;
        Ok(Self {
            process,
            stdin,
            addr,
            pid,
        })
    }

    /// Resident memory now, in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        status_kib(&format!("/proc/{}/status", self.pid), "VmRSS")
            .context("read the server process's VmRSS")
    }

    async fn poke(&mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"flip\n").await?;
        Ok(self.stdin.flush().await?)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.process.start_kill();
    }
}

/// Raises this process's (and so its children's) open-file limit towards [`WANTED_FDS`];
/// the soft limit reached.
fn raise_fd_limit() -> u64 {
    use rlimit::Resource;
    if Resource::NOFILE.set(WANTED_FDS, WANTED_FDS).is_err() {
        // Not privileged: the hard limit is as far as it goes.
        let _ = rlimit::increase_nofile_limit(WANTED_FDS);
    }
    Resource::NOFILE.get().map_or(0, |(soft, _)| soft)
}

/// A grpc-web (HTTP/1.1) transport whose connections start from `source`.
type GrpcWeb =
    GrpcWebClientService<Client<HttpConnector, tonic_web::GrpcWebCall<tonic::body::Body>>>;

fn grpc_web_from(source: IpAddr) -> GrpcWeb {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(source));
    connector.set_nodelay(true);
    tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(Client::builder(TokioExecutor::new()).build(connector))
}

/// How a client reaches one server.
#[derive(Clone)]
struct Transports {
    origin: Uri,
    native: Vec<Channel>,
    web: Vec<GrpcWeb>,
}

impl Transports {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let origin: Uri = format!("http://{addr}").parse()?;
        let mut native = Vec::with_capacity(NATIVE_CONNECTIONS);
        for _ in 0..NATIVE_CONNECTIONS {
            native.push(
                tonic::transport::Endpoint::from(origin.clone())
                    .tcp_nodelay(true)
                    .connect()
                    .await?,
            );
        }
        let web = (0..SOURCE_ADDRESSES)
            .map(|i| grpc_web_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i))))
            .collect();
        Ok(Self {
            origin,
            native,
            web,
        })
    }
}

/// Which server a stream is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    /// taskmesh's gateway (`LiveService/StreamChanges`).
    Gateway,
    /// The bare tonic server (`Health/Watch`).
    Bare,
}

/// What happened on one side's streams.
struct Tally {
    ready: AtomicU64,
    failed: AtomicU64,
    received: AtomicU64,
    /// When the current fan-out was triggered, in microseconds since the Unix epoch.
    trigger: AtomicI64,
    /// The latest arrival of the current fan-out, in microseconds since the Unix epoch.
    last: AtomicI64,
    latency: Arc<Mutex<Histogram<u64>>>,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            trigger: AtomicI64::new(0),
            last: AtomicI64::new(0),
            latency: histogram(),
        })
    }

    fn arrived(&self) {
        let now = now_micros();
        record(&self.latency, now - self.trigger.load(Ordering::Relaxed));
        self.last.fetch_max(now, Ordering::Relaxed);
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts a fan-out: clears the figures and starts the clock.
    fn trigger(&self) {
        self.latency.lock().expect("histogram").reset();
        self.received.store(0, Ordering::Relaxed);
        self.trigger.store(now_micros(), Ordering::Relaxed);
    }
}

/// A stream's messages as the scenario counts them.
enum Seen {
    /// Caught up: the stream is idle and open.
    Ready,
    /// A fan-out delivery.
    Change,
    Other,
}

fn seen_live(message: &StreamChangesResponse, _index: usize) -> Seen {
    match message.event {
        Some(Event::CaughtUp(_)) => Seen::Ready,
        Some(Event::TaskCreated(_)) => Seen::Change,
        _ => Seen::Other,
    }
}

fn seen_watch(_message: &HealthCheckResponse, index: usize) -> Seen {
    // Watch sends the current status at once, then every change.
    if index == 0 {
        Seen::Ready
    } else {
        Seen::Change
    }
}

/// Reads `stream` until it ends, holding `permit` until it is ready.
async fn follow<M>(
    mut stream: Streaming<M>,
    tally: Arc<Tally>,
    permit: tokio::sync::OwnedSemaphorePermit,
    seen: fn(&M, usize) -> Seen,
) {
    let mut permit = Some(permit);
    let mut index = 0;
    while let Ok(Some(message)) = stream.message().await {
        match seen(&message, index) {
            Seen::Ready => {
                tally.ready.fetch_add(1, Ordering::Relaxed);
                permit.take();
            }
            Seen::Change => tally.arrived(),
            Seen::Other => {}
        }
        index += 1;
    }
    if permit.is_some() {
        tally.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One side of the comparison: a server process and the streams held on it.
struct Side {
    server: Server,
    process: ChildServer,
    transports: Transports,
    tally: Arc<Tally>,
    opened: u64,
}

impl Side {
    async fn new(server: Server, process: ChildServer) -> anyhow::Result<Self> {
        let transports = Transports::connect(process.addr).await?;
        Ok(Self {
            server,
            process,
            transports,
            tally: Tally::new(),
            opened: 0,
        })
    }

    /// Opens streams `range` of one kind (`web` or native), user `i / STREAMS_PER_USER`;
    /// returns once every one has caught up.
    async fn open(
        &mut self,
        range: std::ops::Range<usize>,
        web: bool,
        tokens: &[Bearer],
    ) -> anyhow::Result<()> {
        let permits = Arc::new(Semaphore::new(OPENING));
        let mut count = 0;
        for i in range.filter(|i| (i % WEB_EVERY == WEB_EVERY - 1) == web) {
            let permit = permits.clone().acquire_owned().await?;
            let tally = self.tally.clone();
            let transports = self.transports.clone();
            let bearer = tokens[i / STREAMS_PER_USER].clone();
            let server = self.server;
            count += 1;
            tokio::spawn(async move {
                let opened = open_one(server, &transports, i, web, bearer).await;
                match opened {
                    Ok(Opened::Live(stream)) => follow(stream, tally, permit, seen_live).await,
                    Ok(Opened::Watch(stream)) => follow(stream, tally, permit, seen_watch).await,
                    Err(_) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        self.opened += count;
        let ready = wait_for(&self.tally.ready, self.opened, Duration::from_secs(600)).await;
        let failed = self.tally.failed.load(Ordering::Relaxed);
        anyhow::ensure!(
            ready == self.opened && failed == 0,
            "{} of {} streams caught up, {failed} failed",
            ready,
            self.opened
        );
        Ok(())
    }
}

enum Opened {
    Live(Streaming<StreamChangesResponse>),
    Watch(Streaming<HealthCheckResponse>),
}

/// Opens stream `i` on `server`, native or grpc-web.
async fn open_one(
    server: Server,
    transports: &Transports,
    i: usize,
    web: bool,
    bearer: Bearer,
) -> Result<Opened, tonic::Status> {
    let origin = transports.origin.clone();
    let native = transports.native[i % NATIVE_CONNECTIONS].clone();
    let grpc_web = transports.web[i % transports.web.len()].clone();
    Ok(match server {
        Server::Gateway => {
            let request = rpc::authorized(StreamChangesRequest::default(), &bearer);
            Opened::Live(if web {
                LiveServiceClient::with_origin(grpc_web, origin)
                    .stream_changes(request)
                    .await?
                    .into_inner()
            } else {
                LiveServiceClient::new(native)
                    .stream_changes(request)
                    .await?
                    .into_inner()
            })
        }
        Server::Bare => {
            let request = HealthCheckRequest::default();
            Opened::Watch(if web {
                HealthClient::with_origin(grpc_web, origin)
                    .watch(request)
                    .await?
                    .into_inner()
            } else {
                HealthClient::new(native).watch(request).await?.into_inner()
            })
        }
    })
}

/// RSS growth per stream, in KiB, of the streams opened between two readings.
fn per_stream(before: u64, after: u64, streams: usize) -> f64 {
    (after.saturating_sub(before)) as f64 / streams.max(1) as f64
}

/// What one side measured at one level.
struct Level {
    native_kib: f64,
    web_kib: f64,
    all_kib: f64,
    idle_cpu: CpuUse,
}

/// Opens `side`'s streams up to `level` and reads its memory at each step.
async fn open_level(
    side: &mut Side,
    from: usize,
    level: usize,
    tokens: &[Bearer],
    baseline: u64,
    idle: Duration,
) -> anyhow::Result<Level> {
    let web_count = (from..level)
        .filter(|i| i % WEB_EVERY == WEB_EVERY - 1)
        .count();
    let before = side.process.rss_kib()?;
    side.open(from..level, false, tokens).await?;
    settle().await;
    let after_native = side.process.rss_kib()?;
    side.open(from..level, true, tokens).await?;
    settle().await;
    let after_web = side.process.rss_kib()?;
    // The streams sit idle for one heartbeat period: what holding them costs.
    let cpu = CpuClock::start_with(vec![side.process.pid]);
    tokio::time::sleep(idle).await;
    let idle_cpu = cpu.stop();
    Ok(Level {
        native_kib: per_stream(before, after_native, level - from - web_count),
        web_kib: per_stream(after_native, after_web, web_count),
        all_kib: per_stream(baseline, after_web, level),
        idle_cpu,
    })
}

/// Lets the allocator and the servers settle before a memory reading.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Fan-out figures of one side.
struct FanOut {
    rate: f64,
    p50: f64,
    p99: f64,
    cpu: CpuUse,
}

impl FanOut {
    fn of(tally: &Tally, streams: u64, cpu: CpuUse) -> anyhow::Result<Self> {
        let received = tally.received.load(Ordering::Relaxed);
        anyhow::ensure!(
            received >= streams,
            "only {received} of {streams} streams received their change"
        );
        let span = tally.last.load(Ordering::Relaxed) - tally.trigger.load(Ordering::Relaxed);
        Ok(Self {
            rate: streams as f64 / (span.max(1) as f64 / 1e6),
            p50: ms(&tally.latency, 0.5),
            p99: ms(&tally.latency, 0.99),
            cpu,
        })
    }
}

/// One change to every user with streams (relay held while they are written, then started).
async fn fan_out_gateway(
    mesh: &Mesh,
    side: &Side,
    users: usize,
    tokens: &[Bearer],
) -> anyhow::Result<FanOut> {
    let channel = mesh.gateway_channel().await?;
    rpc::write_tasks(&channel, &tokens[..users], users, |i| Task {
        title: format!("fan-out {i}"),
        ..Default::default()
    })
    .await?;
    // The clock should not count the relay's start-up: its producer is connected (and has
    // its idempotent producer id) first. (A stopped relay has released its advisory lock.)
    let relay = taskmesh_task::relay(mesh.pool.clone(), &mesh.kafka)?;
    let client = relay.producer().clone();
    let topic = mesh.kafka.topic(Topic::TaskEvents);
    tokio::task::spawn_blocking(move || {
        rdkafka::producer::Producer::client(&client)
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
    })
    .await??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = CpuClock::start_with(vec![side.process.pid]);
    side.tally.trigger();
    let stop = CancellationToken::new();
    let relay = tokio::spawn(relay.run(TaskContext::detached("outbox relay", stop.clone())));
    wait_for(&side.tally.received, side.opened, Duration::from_secs(300)).await;
    let cpu = cpu.stop();
    stop.cancel();
    let _ = relay.await;
    FanOut::of(&side.tally, side.opened, cpu)
}

/// One status change to every Watch stream.
async fn fan_out_bare(side: &mut Side) -> anyhow::Result<FanOut> {
    let cpu = CpuClock::start_with(vec![side.process.pid]);
    side.tally.trigger();
    side.process.poke().await?;
    wait_for(&side.tally.received, side.opened, Duration::from_secs(300)).await;
    let cpu = cpu.stop();
    FanOut::of(&side.tally, side.opened, cpu)
}

/// Runs the scenario; adds its rows to `table`.
pub(crate) async fn run(scale: &Scale, table: &mut Table) -> anyhow::Result<()> {
    let fds = raise_fd_limit();
    let most = scale.stream_levels.iter().copied().max().unwrap_or(0);
    let tokens = rpc::bearer_tokens("streams-", most.div_ceil(STREAMS_PER_USER))?;
    let mesh = crate::mesh::start(MeshOptions {
        relay: false,
        ..MeshOptions::default()
    })
    .await?;
    let services = [
        ("--task-service", mesh.task_addr),
        ("--reminder-service", mesh.reminder_addr),
        ("--recurrence-service", mesh.recurrence_addr),
        ("--audit-service", mesh.audit_addr),
    ]
    .map(|(flag, addr)| (flag, format!("http://{addr}")));
    let mut args = vec![
        "gateway-process",
        "--kafka-brokers",
        mesh.kafka.brokers.as_str(),
    ];
    for (flag, url) in &services {
        args.extend([*flag, url.as_str()]);
    }
    // One side at a time: the grpc-web share needs a descriptor per connection at both ends,
    // and the limit may not stretch to both sides' at once.
    let mut ours = Side::new(Server::Gateway, ChildServer::spawn(&args).await?).await?;
    let (ours_baseline, ours_levels) = measure(&mut ours, scale, &tokens, async |side, users| {
        fan_out_gateway(&mesh, side, users, &tokens).await
    })
    .await?;
    drop(ours);
    let mut theirs =
        Side::new(Server::Bare, ChildServer::spawn(&["health-process"]).await?).await?;
    let (theirs_baseline, theirs_levels) = measure(&mut theirs, scale, &tokens, async |side, _| {
        fan_out_bare(side).await
    })
    .await?;
    drop(theirs);
    table.note(format!(
        "streams: open-file limit {fds}; gateway process RSS {} MiB and bare server {} MiB \
         before any stream; {STREAMS_PER_USER} streams per user, every {WEB_EVERY}th grpc-web \
         (HTTP/1.1, own connection), the rest over {NATIVE_CONNECTIONS} HTTP/2 connections; \
         the gateway measured first, then the bare server",
        ours_baseline / 1024,
        theirs_baseline / 1024
    ));

    for (((level, ours_level, ours_fan), (_, theirs_level, theirs_fan)), users) in
        ours_levels.into_iter().zip(theirs_levels).zip(
            scale
                .stream_levels
                .iter()
                .map(|l| l.div_ceil(STREAMS_PER_USER)),
        )
    {
        for (figure, a, b, cpu) in [
            (
                "native gRPC, KiB/stream",
                ours_level.native_kib,
                theirs_level.native_kib,
                CpuUse::default(),
            ),
            (
                "grpc-web HTTP/1.1, KiB/stream",
                ours_level.web_kib,
                theirs_level.web_kib,
                CpuUse::default(),
            ),
            (
                "all, KiB/stream (CPU: idle)",
                ours_level.all_kib,
                theirs_level.all_kib,
                ours_level.idle_cpu,
            ),
        ] {
            table.ratio_row(
                "streams",
                &format!("{level} idle: {figure}"),
                a,
                "bare tonic Health/Watch",
                b,
                cpu,
            );
        }
        for (figure, a, b) in [
            ("fan-out, deliveries/s", ours_fan.rate, theirs_fan.rate),
            ("fan-out p50, ms", ours_fan.p50, theirs_fan.p50),
            ("fan-out p99, ms", ours_fan.p99, theirs_fan.p99),
        ] {
            table.ratio_row(
                "streams",
                &format!("{level}: {figure}"),
                a,
                "bare tonic Health/Watch",
                b,
                ours_fan.cpu,
            );
        }
        table.note(format!(
            "streams {level}: idle for {:.0} s, the gateway process used {:.3} cores, the bare \
             server {:.3}, this process (the mesh, idle, and the clients) {:.2}; fan-out: \
             {users} changes (one per user) from relay start; the bare server's one status \
             change cost it {:.2} cores",
            scale.idle.as_secs_f64(),
            ours_level.idle_cpu.children,
            theirs_level.idle_cpu.children,
            ours_level.idle_cpu.bench,
            theirs_fan.cpu.children
        ));
    }
    Ok(())
}

/// Opens `side`'s streams level by level, reading memory and idle CPU, and runs `fan_out`
/// (given the users with streams) at each level: the RSS before any stream, and per level
/// its figures.
async fn measure(
    side: &mut Side,
    scale: &Scale,
    tokens: &[Bearer],
    fan_out: impl AsyncFn(&mut Side, usize) -> anyhow::Result<FanOut>,
) -> anyhow::Result<(u64, Vec<(usize, Level, FanOut)>)> {
    settle().await;
    let baseline = side.process.rss_kib()?;
    let mut levels = Vec::new();
    let mut from = 0;
    for &level in &scale.stream_levels {
        let opened = open_level(side, from, level, tokens, baseline, scale.idle).await?;
        let fanned = fan_out(side, level.div_ceil(STREAMS_PER_USER)).await?;
        levels.push((level, opened, fanned));
        from = level;
    }
    Ok((baseline, levels))
}
