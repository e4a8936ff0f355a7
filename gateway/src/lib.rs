//! The taskmesh gateway: one listener serving native gRPC (HTTP/2), grpc-web (HTTP/1.1 and
//! HTTP/2, via tonic-web) and the web app's files, with CORS for browsers.
//!
//! It forwards the services' RPCs (`taskmesh.task.v1.TaskService`,
//! `taskmesh.reminder.v1.ReminderService`, `taskmesh.recurrence.v1.RecurrenceService`,
//! `taskmesh.audit.v1.AuditService`) to their servers,
//! serves `taskmesh.gateway.v1.LiveService` itself (fed by Kafka), and answers health checks
//! and server reflection (v1 and v1alpha) for the whole mesh, so `grpcurl` pointed at the
//! gateway sees every service.
//!
//! # Layout
//! - [`Gateway`]: configuration, binding and serving.
//! - [`CorsOrigins`]: which other sites' pages may call it.
//! - `hub`: the Kafka consumer and per-user fan-out.
//! - `live`: the live stream (replay + live, no gap, no duplicate).
//! - `proxy`: forwarding of service calls.
//! - `slots`: live streams per user.
//! - `grpc_web`: grpc-web translation for grpc-web requests only.
//! - [`mcp`]: the Model Context Protocol server at `/mcp` (and `taskmesh mcp --stdio`).

mod cors;
mod grpc_web;
mod hub;
mod live;
pub mod mcp;
mod proxy;
pub mod sign_in;
mod slots;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use axum::{Router, response::Html, routing::get};
use taskmesh_platform::{
    auth::{Authenticated, Verifier},
    grpc::MAX_REQUEST_BYTES,
    kafka::KafkaConfig,
    net::ConnectionLimits,
    runtime::Supervisor,
};
use taskmesh_proto::gateway::v1::live_service_server::LiveServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    service::Routes,
    transport::{Channel, Endpoint},
};
use tower::ServiceExt;
use tower_http::services::ServeDir;

pub use cors::{BadOrigin, CorsOrigins};
pub use live::LiveServiceImpl;
pub use mcp::McpAccess;
pub use slots::DEFAULT_MAX_STREAMS_PER_USER;

/// The full name of the gateway's own LiveService, a health service name.
pub const LIVE_SERVICE: &str =
    <LiveServiceServer<LiveServiceImpl> as tonic::server::NamedService>::NAME;

/// Calls one HTTP/2 connection to the gateway may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 1_000;

/// How long a connection to the gateway lives before it is asked to go (GOAWAY).
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);

/// How long its calls in flight may still run after that.
const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(300);

/// What the gateway needs.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where TaskService listens, e.g. `http://127.0.0.1:50051`.
    pub task_service: String,
    /// Where ReminderService listens, e.g. `http://127.0.0.1:50052`.
    pub reminder_service: String,
    /// Where RecurrenceService listens, e.g. `http://127.0.0.1:50053`.
    pub recurrence_service: String,
    /// Where AuditService listens, e.g. `http://127.0.0.1:50054`.
    pub audit_service: String,
    /// Kafka, for the live stream.
    pub kafka: KafkaConfig,
    /// Token verification.
    pub verifier: Verifier,
    /// Whether to serve Prometheus `/metrics` on this port too (`taskmesh dev`; a `serve`
    /// process has an internal listener for it, see `introspection`).
    pub metrics: bool,
    /// Where `/metrics`, health and reflection are served besides (or instead of) this port.
    pub introspection: taskmesh_platform::runtime::Introspection,
    /// The built web app (`web/dist`); `None` serves a short page naming the APIs.
    pub web_dir: Option<PathBuf>,
    /// The origins whose pages may call the gateway cross-origin.
    pub cors: CorsOrigins,
    /// How many connections it holds at once, and how long one may be idle.
    pub connection_limits: ConnectionLimits,
    /// Live streams one user may hold at once; one more ends the oldest.
    pub max_streams_per_user: usize,
    /// The `Host` and `Origin` values the MCP endpoint (`/mcp`) accepts.
    pub mcp: McpAccess,
    /// How the web app signs people in (`/.well-known/taskmesh-web.json`).
    pub web_sign_in: sign_in::WebSignIn,
}

/// A bound, not yet serving gateway.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    config: GatewayConfig,
}

impl Gateway {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: SocketAddr, config: GatewayConfig) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            config,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; live streams end, in-flight calls finish.
    ///
    /// # Errors
    /// A bad upstream address, Kafka set-up failure, or a transport error.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, config } = self;
        let mut supervisor = Supervisor::new("gateway", shutdown.clone());
        let task_channel = upstream(&config.task_service)?;
        let reminder_channel = upstream(&config.reminder_service)?;
        let recurrence_channel = upstream(&config.recurrence_service)?;
        let audit_channel = upstream(&config.audit_service)?;

        let hub = hub::Hub::default();
        // Live events flow before the first stream can open.
        let forward = hub.clone().start(&config.kafka).await?;
        supervisor.spawn("live event consumer", forward);

        let live = LiveServiceServer::new(LiveServiceImpl::new(
            hub,
            task_channel.clone(),
            reminder_channel.clone(),
            shutdown.clone(),
            config.verifier.leeway(),
            config.max_streams_per_user,
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let live = Authenticated::new(live, config.verifier.clone());
        supervisor.health().add_service(LIVE_SERVICE);
        let (health, health_service) = tonic_health::server::health_reporter();
        config
            .introspection
            .serve_internal(&mut supervisor, health_service.clone())
            .await?;
        let routes = config
            .introspection
            .public_routes(Routes::new(live), health_service)?;
        let mut router: Router = routes.into_axum_router();
        if config.metrics {
            router = router.merge(taskmesh_platform::metrics::router());
        }
        // MCP tools call the services directly, like the proxy, as each request's user.
        let upstreams = mcp::Upstreams {
            task: task_channel.clone(),
            reminder: reminder_channel.clone(),
            recurrence: recurrence_channel.clone(),
            audit: audit_channel.clone(),
        };
        router = router.merge(sign_in::router(config.web_sign_in.clone()));
        router = router.merge(mcp::router(
            upstreams,
            config.verifier.clone(),
            &config.mcp,
            shutdown.clone(),
        ));
        for (service, channel) in [
            ("taskmesh.task.v1.TaskService", task_channel),
            ("taskmesh.reminder.v1.ReminderService", reminder_channel),
            (
                "taskmesh.recurrence.v1.RecurrenceService",
                recurrence_channel,
            ),
            ("taskmesh.audit.v1.AuditService", audit_channel),
        ] {
            // A forwarded service's status is its own server's, checked every few seconds.
            let (reporter, mirrored) = (health.clone(), channel.clone());
            supervisor.spawn(&format!("health of {service}"), move |ctx| {
                mirror_health(reporter, mirrored, service, ctx.shutdown)
            });
            let proxy = proxy::GrpcProxy::new(channel, config.verifier.clone());
            router = router.route_service(&format!("/{service}/{{*method}}"), proxy);
        }
        router = match &config.web_dir {
            Some(dir) => {
                let files = ServeDir::new(dir);
                router.fallback(move |request: axum::extract::Request| {
                    let files = files.clone();
                    async move {
                        // gRPC calls to services this gateway does not serve get a gRPC
                        // answer, not a file server's 405.
                        if is_grpc(&request) {
                            let status = taskmesh_platform::grpc::error(
                                tonic::Code::Unimplemented,
                                "UNKNOWN_SERVICE",
                                "no such service here",
                            );
                            return status.into_http::<axum::body::Body>();
                        }
                        match files.oneshot(request).await {
                            Ok(mut response) => {
                                // The app's URL carries the provider's `code` and `state`
                                // until it has read them: no Referer takes them along.
                                response.headers_mut().insert(
                                    http::header::REFERRER_POLICY,
                                    http::HeaderValue::from_static("no-referrer"),
                                );
                                response.map(axum::body::Body::new)
                            }
                            Err(never) => match never {},
                        }
                    }
                })
            }
            None => router.route("/", get(|| async { Html(INDEX) })),
        };

        let cors = config.cors.layer();
        tracing::info!(
            addr = %listener.local_addr()?,
            cors = %config.cors,
            "gateway listening (gRPC, grpc-web, web app)"
        );
        let incoming =
            taskmesh_platform::net::incoming(listener, config.connection_limits, "gateway");
        // CORS outermost so preflight requests are answered before anything else; grpc-web
        // translation inside it, so every gRPC service (local or forwarded) speaks grpc-web.
        let (ping_every, ping_timeout) = taskmesh_platform::grpc::HTTP2_KEEPALIVE;
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(ping_every))
            .http2_keepalive_timeout(Some(ping_timeout))
            // A client's calls at once on one connection (its live streams included): what a
            // connection can hold is bounded, whatever the client does.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            // Connections are renewed now and then (GOAWAY, then the calls in flight get the
            // grace period; live streams resume from their cursor on a new connection), so
            // none is held for ever by a call that never ends.
            .max_connection_age(MAX_CONNECTION_AGE)
            .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE)
            .layer(cors)
            .layer(grpc_web::GrpcWebOnlyLayer)
            // Inside grpc-web translation: grpc-web calls are counted as the gRPC calls they are.
            .layer(taskmesh_platform::metrics::RpcLayer::new("gateway"))
            // Inside the metrics (shed calls are counted, as UNAVAILABLE): past the in-flight
            // limit a call is refused at once (the web app's files are not counted).
            .layer(taskmesh_platform::shed::ShedLayer::default())
            // Keeps a connection with a request in progress (a live stream) from being
            // closed as idle.
            .layer(taskmesh_platform::net::CallTrackerLayer)
            // tonic's own errors (an unknown LiveService method) get an ErrorInfo.
            .layer(tower::util::MapResponseLayer::new(
                taskmesh_platform::grpc::with_framework_error_info::<tonic::body::Body>,
            ))
            .add_routes(Routes::from(router))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned());
        supervisor.run(health, server).await?;
        Ok(())
    }
}

/// A lazily connecting HTTP/2 channel to an upstream service at `url`.
fn upstream(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Reports `service` as SERVING while its upstream server says so (`grpc.health.v1`, checked
/// every 5 s), NOT_SERVING otherwise, until `shutdown`.
///
/// # Errors
/// None: an upstream that does not answer is NOT_SERVING. (The signature is the
/// supervisor's.)
async fn mirror_health(
    reporter: tonic_health::server::HealthReporter,
    upstream: Channel,
    service: &'static str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus as Wire};
    let mut client = tonic_health::pb::health_client::HealthClient::new(upstream);
    loop {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let serving = tokio::time::timeout(Duration::from_secs(2), client.check(request))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|r| r.into_inner().status == Wire::Serving as i32);
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        reporter.set_service_status(service, status).await;
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Whether a request is gRPC or grpc-web (by `content-type`).
fn is_grpc(request: &axum::extract::Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

const INDEX: &str = "<!doctype html><meta charset=utf-8><title>taskmesh</title>\
<h1>taskmesh gateway</h1><p>gRPC and grpc-web on this address: \
<code>taskmesh.task.v1.TaskService</code>, <code>taskmesh.reminder.v1.ReminderService</code>, \
<code>taskmesh.recurrence.v1.RecurrenceService</code>, <code>taskmesh.audit.v1.AuditService</code>, \
<code>taskmesh.gateway.v1.LiveService</code>; MCP (Streamable HTTP) at <code>/mcp</code>. \
The web app is not built; see the README.</p>";
