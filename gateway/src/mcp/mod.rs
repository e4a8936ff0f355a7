//! The Model Context Protocol server: taskmesh's tasks, reminders, repetition and activity
//! log as MCP tools for AI assistants (the MCP host, e.g. Claude or an IDE, runs the model).
//!
//! - Streamable HTTP at `/mcp` on the gateway's port, stateless, in the protocol revisions the
//!   official SDK (`rmcp`) speaks: `2026-07-28` and the earlier ones with `initialize`
//!   (`2025-11-25`, `2025-06-18`, `2025-03-26`, `2024-11-05`). POST only (GET is 405).
//! - An OAuth 2.1 resource server (MCP authorization spec, RFC 9728): the bearer JWT is
//!   verified like a gRPC call's; a missing, invalid or expired one is HTTP 401 with
//!   `WWW-Authenticate: Bearer resource_metadata="…"`, whose document (served at
//!   `/.well-known/oauth-protected-resource/mcp`, no token needed) names the issuer(s).
//! - `Host` and `Origin` are checked against allow-lists (DNS rebinding; a foreign origin
//!   is 403).
//! - [`serve_stdio`]: the same tools over stdin/stdout for local hosts
//!   (`taskmesh mcp --stdio`).
//!
//! # Layout
//! - `access`: the `Host` and `Origin` allow-lists ([`McpAccess`]).
//! - `tools`: the tools ([`Tools`]).
//! - `limits`: requests in progress at once, in all and per user.
//! - `inputs`, `views`: their input and output shapes and JSON Schemas.
//! - `status`: service errors as tool errors.

mod access;
mod inputs;
mod limits;
mod status;
mod tools;
mod views;

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{Router, body::Body, routing::get};
use futures::future::BoxFuture;
use http::{HeaderValue, StatusCode, header};
use rmcp::{
    ServiceExt,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
    },
};
use taskmesh_platform::{
    auth::{Verifier, bearer_token},
    grpc::MAX_REQUEST_BYTES,
};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt as _};

pub use access::{BadAccess, DEFAULT_HOSTS, DEFAULT_ORIGINS, McpAccess};
pub use tools::{Tools, Upstreams};

/// The path of the MCP endpoint.
pub const PATH: &str = "/mcp";

/// Where the RFC 9728 protected-resource metadata of [`PATH`] is served (the well-known
/// prefix before the resource's path, RFC 9728 section 3.1).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

/// The MCP routes of the gateway: [`PATH`] and [`METADATA_PATH`].
pub(crate) fn router(
    upstreams: Upstreams,
    verifier: Verifier,
    access: &McpAccess,
    shutdown: CancellationToken,
) -> Router {
    let config = StreamableHttpServerConfig::default()
        // Stateless: any gateway replica answers any request; nothing is kept between them.
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(MAX_REQUEST_BYTES)
        .with_cancellation_token(shutdown)
        // `Host` and `Origin` are checked by `Authenticated`, before the token (see `access`).
        .disable_allowed_hosts()
        .disable_allowed_origins();
    let tools = Tools::per_request(upstreams);
    let service = StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let metadata = Arc::new(ResourceMetadata::of(&verifier));
    let access = Arc::new(access.clone());
    Router::new()
        .route_service(
            PATH,
            Authenticated {
                inner: service,
                verifier,
                access: access.clone(),
                in_flight: limits::InFlight::default(),
            },
        )
        .route(
            METADATA_PATH,
            get(move |request: axum::extract::Request| {
                let (metadata, access) = (metadata.clone(), access.clone());
                async move {
                    if let Err(refused) = check_access(&access, &request) {
                        return refused;
                    }
                    // It names the host the request came by: no shared cache may keep it.
                    crate::sign_in::json(http::StatusCode::OK, &metadata.document(&request))
                }
            }),
        )
}

/// 403 unless the request's `Host` and `Origin` are allowed.
#[allow(clippy::result_large_err)]
fn check_access<B>(
    access: &McpAccess,
    request: &http::Request<B>,
) -> Result<(), http::Response<Body>> {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("?"));
    if !access.host_allowed(host(request)) {
        return Err(plain(
            StatusCode::FORBIDDEN,
            "forbidden: this host name is not allowed\n",
        ));
    }
    if !access.origin_allowed(origin) {
        return Err(plain(
            StatusCode::FORBIDDEN,
            "forbidden: this origin is not allowed\n",
        ));
    }
    Ok(())
}

/// The host a request names: `Host` (HTTP/1.1) or the URI's authority (HTTP/2 `:authority`).
fn host<B>(request: &http::Request<B>) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(http::uri::Authority::as_str))
}

/// A short plain-text answer.
fn plain(status: StatusCode, text: &'static str) -> http::Response<Body> {
    let mut response = http::Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves the tools over stdin/stdout until the client closes stdin or `shutdown`, calling
/// the gateway at `gateway` (`http://host:port`) with `token`.
///
/// # Errors
/// A bad gateway address, or the transport failing.
pub async fn serve_stdio(
    gateway: &str,
    token: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !gateway.starts_with("http://") {
        anyhow::bail!(
            "--gateway must be an http:// address (this build calls the gateway without TLS); \
             for a remote gateway use Streamable HTTP at https://<host>/mcp instead"
        );
    }
    let channel = tonic::transport::Endpoint::from_shared(gateway.to_owned())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_lazy();
    let upstreams = Upstreams {
        task: channel.clone(),
        reminder: channel.clone(),
        recurrence: channel.clone(),
        audit: channel,
    };
    let server = Tools::with_token(upstreams, token)
        .serve_with_ct(rmcp::transport::stdio(), shutdown)
        .await?;
    server.waiting().await?;
    Ok(())
}

/// The RFC 9728 protected-resource metadata of the MCP endpoint.
#[derive(Debug)]
struct ResourceMetadata {
    /// The configured token issuer(s): the authorization servers a client gets tokens from
    /// (`TASKMESH_JWT_ISSUER`, or every OpenID Connect issuer).
    authorization_servers: Vec<String>,
}

impl ResourceMetadata {
    fn of(verifier: &Verifier) -> Self {
        let mut authorization_servers: Vec<String> =
            verifier.issuer().into_iter().map(str::to_owned).collect();
        if let Some(oidc) = verifier.oidc() {
            authorization_servers.extend(oidc.issuers().map(|i| i.issuer.clone()));
        }
        Self {
            authorization_servers,
        }
    }

    /// The document, its `resource` the URL this request reached [`PATH`] under.
    fn document<B>(&self, request: &http::Request<B>) -> serde_json::Value {
        serde_json::json!({
            "resource": format!("{}{PATH}", base_url(request)),
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "taskmesh",
        })
    }
}

/// `scheme://host` of a request (its host already allowed by [`check_access`]): `https`
/// behind a proxy that says so (`X-Forwarded-Proto`), else `http`.
fn base_url<B>(request: &http::Request<B>) -> String {
    let scheme = match request
        .headers()
        .get("x-forwarded-proto")
        .map(HeaderValue::as_bytes)
    {
        Some(b"https") => "https",
        _ => "http",
    };
    let host = host(request)
        .filter(|h| h.len() <= 255 && !h.contains(['"', '\\', ' ', '/', ',']))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// The MCP endpoint behind its checks, in this order: a foreign `Host` or `Origin` gets
/// 403; a request without a valid token HTTP 401 with the RFC 9728 `WWW-Authenticate`
/// challenge, never a tool error; one over the in-flight limits 503 or 429 with
/// `Retry-After`.
#[derive(Clone)]
struct Authenticated<S> {
    inner: S,
    verifier: Verifier,
    access: Arc<McpAccess>,
    in_flight: limits::InFlight,
}

impl<S, B> Service<http::Request<Body>> for Authenticated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let verifier = self.verifier.clone();
        let in_flight = self.in_flight.clone();
        let access = self.access.clone();
        Box::pin(async move {
            if let Err(refused) = check_access(&access, &request) {
                return Ok(refused);
            }
            let token = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token);
            let verified = match token {
                None => Err(None),
                Some(token) => verifier.verify_async(token).await.map_err(|error| {
                    tracing::debug!(%error, "mcp: rejected token");
                    Some("invalid_token")
                }),
            };
            let caller = match verified {
                Ok(caller) => caller,
                Err(error) => return Ok(unauthorized(&request, error)),
            };
            let _admitted = match in_flight.admit(&caller.user) {
                Ok(admitted) => admitted,
                Err(refused) => return Ok(busy(&refused)),
            };
            match inner.oneshot(request).await {
                Ok(response) => Ok(response.map(Body::new)),
                Err(never) => match never {},
            }
        })
    }
}

/// HTTP 503 (the gateway is saturated) or 429 (the user has too many requests in progress),
/// to be retried after a second.
fn busy(refused: &limits::Refused) -> http::Response<Body> {
    let (status, text) = match refused {
        limits::Refused::Saturated => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the MCP endpoint is saturated; retry shortly\n",
        ),
        limits::Refused::UserBusy => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many MCP requests of this user in progress; retry shortly\n",
        ),
    };
    let mut response = plain(status, text);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// HTTP 401 with the challenge pointing at the resource metadata (RFC 9728 section 5.1;
/// RFC 6750 section 3 `error="invalid_token"` when a token was sent).
fn unauthorized<B>(request: &http::Request<B>, error: Option<&str>) -> http::Response<Body> {
    let metadata = format!("{}{METADATA_PATH}", base_url(request));
    let mut challenge = format!("Bearer resource_metadata=\"{metadata}\"");
    if let Some(error) = error {
        challenge.push_str(&format!(", error=\"{error}\""));
    }
    let mut response = plain(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required\n",
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
