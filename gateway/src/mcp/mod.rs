//! The Model Context Protocol server: taskmesh's tasks, reminders, repetition and activity
//! log as MCP tools for AI assistants (the MCP host, e.g. Claude or an IDE, runs the model).
//!
//! - Streamable HTTP at `/mcp` on the gateway's port, stateless, in the protocol revisions the
//!   official SDK (`rmcp`) speaks: `2026-07-28` and the earlier ones with `initialize`
//!   (`2025-11-25`, `2025-06-18`, `2025-03-26`, `2024-11-05`). POST only (GET is 405).
//! - An OAuth 2.1 resource server (MCP authorization spec, RFC 9728): the bearer JWT is
//!   verified like a gRPC call's; a missing, invalid or expired one is HTTP 401 with
//!   `WWW-Authenticate: Bearer resource_metadata="…"`, whose document (served at
//!   `/.well-known/oauth-protected-resource/mcp`, no token needed) names the issuer.
//! - `Host` and `Origin` are checked against allow-lists (DNS rebinding; a foreign origin
//!   is 403).
//! - [`serve_stdio`]: the same tools over stdin/stdout for local hosts
//!   (`taskmesh mcp --stdio`).
//!
//! # Layout
//! - `tools`: the tools ([`Tools`]).
//! - `inputs`, `views`: their input and output shapes and JSON Schemas.
//! - `status`: service errors as tool errors.

mod inputs;
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
use taskmesh_platform::{auth::Verifier, grpc::MAX_REQUEST_BYTES};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt as _};

pub use tools::{Tools, Upstreams};

/// The path of the MCP endpoint.
pub const PATH: &str = "/mcp";

/// Where the RFC 9728 protected-resource metadata of [`PATH`] is served (the well-known
/// prefix before the resource's path, RFC 9728 section 3.1).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

/// Which `Host` and `Origin` values the MCP endpoint accepts (`TASKMESH_MCP_ALLOWED_HOSTS`,
/// `TASKMESH_MCP_ALLOWED_ORIGINS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpAccess {
    /// Host names or `host:port` authorities requests may name in `Host` (a name without a
    /// port matches any port); `*` alone accepts any. Default: the loopback names, which fit
    /// `taskmesh dev`; a deployment lists the names clients use.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host:port`, `:*` for any port) allowed in `Origin`; a
    /// request with another `Origin` is 403, one without `Origin` (not a browser) passes.
    /// Default: the loopback origins on any port.
    pub allowed_origins: Vec<String>,
}

impl Default for McpAccess {
    fn default() -> Self {
        Self {
            allowed_hosts: ["localhost", "127.0.0.1", "::1"]
                .map(str::to_owned)
                .to_vec(),
            allowed_origins: ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// The MCP routes of the gateway: [`PATH`] and [`METADATA_PATH`].
pub(crate) fn router(
    upstreams: Upstreams,
    verifier: Verifier,
    access: &McpAccess,
    shutdown: CancellationToken,
) -> Router {
    let mut config = StreamableHttpServerConfig::default()
        // Stateless: any gateway replica answers any request; nothing is kept between them.
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(MAX_REQUEST_BYTES)
        .with_cancellation_token(shutdown)
        .with_allowed_origins(access.allowed_origins.clone())
        .enforce_origin_validation();
    config = if access.allowed_hosts.iter().any(|h| h == "*") {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(access.allowed_hosts.clone())
    };
    let service = StreamableHttpService::new(
        move || Ok(Tools::per_request(upstreams.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let metadata = Arc::new(ResourceMetadata::of(&verifier));
    Router::new()
        .route_service(
            PATH,
            Authenticated {
                inner: service,
                verifier,
            },
        )
        .route(
            METADATA_PATH,
            get(move |headers: http::HeaderMap| {
                let metadata = metadata.clone();
                async move {
                    let document = metadata.document(&headers).to_string();
                    ([(header::CONTENT_TYPE, "application/json")], document)
                }
            }),
        )
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
    /// The configured token issuer(s): the authorization servers a client gets tokens from.
    authorization_servers: Vec<String>,
}

impl ResourceMetadata {
    fn of(verifier: &Verifier) -> Self {
        Self {
            authorization_servers: verifier.issuer().into_iter().map(str::to_owned).collect(),
        }
    }

    /// The document, its `resource` the URL this request reached [`PATH`] under.
    fn document(&self, headers: &http::HeaderMap) -> serde_json::Value {
        serde_json::json!({
            "resource": format!("{}{PATH}", base_url(headers)),
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "taskmesh",
        })
    }
}

/// `scheme://host` of a request: `https` behind a proxy that says so
/// (`X-Forwarded-Proto`), else `http`; the `Host` header (HTTP/1.1) or `:authority`.
fn base_url(headers: &http::HeaderMap) -> String {
    let scheme = match headers.get("x-forwarded-proto").map(HeaderValue::as_bytes) {
        Some(b"https") => "https",
        _ => "http",
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.len() <= 255 && !h.contains(['"', '\\', ' ', '/']))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// The MCP endpoint behind bearer authentication: a request without a valid token gets
/// HTTP 401 with the RFC 9728 `WWW-Authenticate` challenge, never a tool error.
#[derive(Clone)]
struct Authenticated<S> {
    inner: S,
    verifier: Verifier,
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
        Box::pin(async move {
            let token = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            let verified = match token {
                None => Err(None),
                Some(token) => verifier.verify(token).map_err(|error| {
                    tracing::debug!(%error, "mcp: rejected token");
                    Some("invalid_token")
                }),
            };
            if let Err(error) = verified {
                return Ok(unauthorized(request.headers(), error));
            }
            match inner.oneshot(request).await {
                Ok(response) => Ok(response.map(Body::new)),
                Err(never) => match never {},
            }
        })
    }
}

/// HTTP 401 with the challenge pointing at the resource metadata (RFC 9728 section 5.1;
/// RFC 6750 section 3 `error="invalid_token"` when a token was sent).
fn unauthorized(headers: &http::HeaderMap, error: Option<&str>) -> http::Response<Body> {
    let metadata = format!("{}{METADATA_PATH}", base_url(headers));
    let mut challenge = format!("Bearer resource_metadata=\"{metadata}\"");
    if let Some(error) = error {
        challenge.push_str(&format!(", error=\"{error}\""));
    }
    let mut response = http::Response::new(Body::from("a valid bearer token is required\n"));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
