//! How the web app signs people in, so one build of the app works against any deployment:
//! `GET /.well-known/taskmesh-web.json` names the way, and under `taskmesh dev` without an
//! identity provider, `POST /dev/sign-in` gives development tokens.
//!
//! The document (JSON, `Cache-Control: no-store`) is one of:
//! - `{"sign_in": "oidc", "issuer": "…", "client_id": "…", "scopes": "openid offline_access"}`:
//!   the app is a public OpenID Connect client of that provider (authorization code flow
//!   with PKCE, RFC 7636) and sends its access tokens;
//! - `{"sign_in": "development"}`: `taskmesh dev` with its public development secret; the
//!   app asks for a user name and posts it to `/dev/sign-in`;
//! - `{"sign_in": "token"}`: the app takes a pasted token (static keys, no provider).

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderValue, Response, StatusCode, header},
    routing::{get, post},
};
use serde::Serialize;
use taskmesh_platform::auth::{Signer, check_subject};

/// What the web app's sign-in offers (see the module docs).
#[derive(Clone, Debug, Default)]
pub enum WebSignIn {
    /// OpenID Connect: the app is the public client `client_id` of `issuer`.
    Oidc {
        /// The provider's issuer identifier (its discovery document is under it).
        issuer: String,
        /// The web app's client id at the provider (a public client: no secret).
        client_id: String,
        /// The scopes the app asks for, space-separated.
        scopes: String,
    },
    /// `taskmesh dev` with the development secret: tokens for any user name, from this
    /// signer, for [`DEV_TOKEN_TTL`].
    Development(Arc<Signer>),
    /// Tokens come from elsewhere and are pasted.
    #[default]
    Token,
}

/// The scopes the web app asks an identity provider for by default: an ID token, and a
/// refresh token for silent renewal.
pub const DEFAULT_SCOPES: &str = "openid offline_access";

/// How long a development sign-in lasts.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Largest `/dev/sign-in` body read, in bytes.
const MAX_BODY_BYTES: usize = 4096;

#[derive(Serialize)]
#[serde(tag = "sign_in", rename_all = "lowercase")]
enum Document<'a> {
    Oidc {
        issuer: &'a str,
        client_id: &'a str,
        scopes: &'a str,
    },
    Development,
    Token,
}

/// A JSON response of `value` that no cache keeps (`Cache-Control: no-store`).
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let mut response = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// The routes of `sign_in`: the document always, `/dev/sign-in` only for
/// [`WebSignIn::Development`].
pub fn router(sign_in: WebSignIn) -> Router {
    let document = sign_in.clone();
    let mut router = Router::new().route(
        "/.well-known/taskmesh-web.json",
        get(move || {
            let body = match &document {
                WebSignIn::Oidc {
                    issuer,
                    client_id,
                    scopes,
                } => Document::Oidc {
                    issuer,
                    client_id,
                    scopes,
                },
                WebSignIn::Development(_) => Document::Development,
                WebSignIn::Token => Document::Token,
            };
            let response = json(StatusCode::OK, &body);
            async move { response }
        }),
    );
    if let WebSignIn::Development(signer) = sign_in {
        router = router.route(
            "/dev/sign-in",
            post(move |body: Body| dev_sign_in(signer.clone(), body)),
        );
    }
    router
}

/// `POST /dev/sign-in` with `{"user": "<name>"}`: a development token for that user id, no
/// roles; 400 for a missing, empty, over-256-byte or control-character name, 413 for a body
/// over 4 KiB.
async fn dev_sign_in(signer: Arc<Signer>, body: Body) -> Response<Body> {
    #[derive(serde::Deserialize)]
    struct Request {
        user: String,
    }
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 4 KiB"),
    };
    let Ok(request) = serde_json::from_slice::<Request>(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            r#"expected a JSON body {"user": "<name>"}"#,
        );
    };
    if check_subject(&request.user).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "a user name is 1 to 256 bytes without control characters",
        );
    }
    match signer.mint(&request.user, &[], DEV_TOKEN_TTL) {
        Ok(token) => json(
            StatusCode::OK,
            &serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": DEV_TOKEN_TTL.as_secs(),
            }),
        ),
        Err(mint) => {
            tracing::error!(error = %mint, "cannot mint a development token");
            error(StatusCode::INTERNAL_SERVER_ERROR, "cannot sign a token")
        }
    }
}
