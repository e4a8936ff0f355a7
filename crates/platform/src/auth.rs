//! JWT authentication. Every service verifies the bearer token itself; nothing trusts the
//! network.
//!
//! Tokens (RFC 7519) carry `sub` (the user id), `exp` (required), `aud` = `taskmesh`, `iss`
//! (required when the verifier is configured with an issuer), an optional `nbf` (checked) and
//! `roles` (an array; `admin` unlocks admin RPCs). `exp` and `nbf` are checked with a leeway
//! for clock skew ([`DEFAULT_LEEWAY`], configurable). A token whose header has a `crit`
//! parameter is refused: taskmesh understands no JWS extension (RFC 7515 §4.1.11). Keys are
//! either an HS256 secret (development), public keys (RS256 or EdDSA, from a PEM file with
//! one or more keys or a JWKS file whose `kid`s select the key, for rotation), or the keys of
//! OpenID Connect providers, discovered and refreshed ([`crate::oidc`]); the algorithm is the
//! key's, never the token's (`alg: none` and HS/RS confusion are refused).

use std::{fmt, path::Path, sync::Arc, time::Duration};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};

use crate::oidc::{Oidc, PublicKey, jwks_keys};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status, metadata::MetadataMap};

/// The audience every taskmesh token must name.
pub const AUDIENCE: &str = "taskmesh";

/// The fixed HS256 secret `taskmesh dev` uses when `TASKMESH_JWT_SECRET` is unset. Anyone can
/// read it here: never use it outside a developer's machine.
pub const DEV_SECRET: &str = "taskmesh-insecure-development-secret-do-not-deploy";

/// The default leeway for `exp` and `nbf` (clock skew between the issuer and taskmesh).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Errors of loading keys, verifying or minting tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer` metadata.
    #[error("missing bearer token")]
    MissingToken,
    /// The token is malformed, expired, for another audience or badly signed.
    #[error("invalid token: {0}")]
    InvalidToken(#[source] jsonwebtoken::errors::Error),
    /// The token names a `kid` no configured key has.
    #[error("unknown key id {0:?}")]
    UnknownKeyId(String),
    /// The token's `sub` is empty, longer than 256 bytes or holds a control character (NUL
    /// included).
    #[error("token subject must be 1 to 256 bytes without control characters")]
    BadSubject,
    /// The token's header lists critical extensions (`crit`), which taskmesh does not
    /// understand (RFC 7515 §4.1.11).
    #[error("token header has critical extensions taskmesh does not understand")]
    CriticalExtension,
    /// A key file could not be read.
    #[error("cannot read key file {path}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key file holds no usable RS256 or EdDSA key.
    #[error("no usable RS256 or EdDSA key in {0}")]
    NoKeys(String),
    /// Signing failed (bad private key).
    #[error("cannot sign token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The authenticated caller of an RPC: set by [`Authenticated`] in the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The user id: the token's `sub`, after its OpenID Connect issuer's `user_prefix` when
    /// it came from one ([`crate::oidc::IssuerConfig`]).
    pub user: String,
    /// The token's roles.
    pub roles: Vec<String>,
    /// When the token expires: its `exp`, seconds since the Unix epoch (UTC). Long-lived
    /// calls (live streams) end at this time plus the verifier's leeway.
    pub expires_at: u64,
    /// Who the change log and the audit trail name as making this caller's changes
    /// (`ChangeContext.actor`): the user id, or `mcp:<user id>` when the call came through
    /// the MCP server (metadata [`VIA_HEADER`] = `mcp`), i.e. the user's AI assistant made it.
    pub actor: String,
}

/// gRPC metadata naming the surface a call came through; `mcp` marks a call the MCP server
/// made for its user (the audit trail shows the assistant's changes as `mcp:<user>`). It
/// grants nothing: the token still decides who the caller is and what it may touch. It is
/// the client's own statement (`taskmesh mcp --stdio` sets it through the gateway's proxy
/// too), so the actor says which surface the user's own token acted through, not who may
/// act: a client can only mark its user's changes, never someone else's.
pub const VIA_HEADER: &str = "taskmesh-via";

/// The [`VIA_HEADER`] value of the MCP server's calls.
pub const VIA_MCP: &str = "mcp";

impl Caller {
    /// Whether the caller holds the `admin` role.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|role| role == "admin")
    }

    /// The caller of a request that went through [`Authenticated`].
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when the request carries no verified caller (a server wired without
    /// the interceptor).
    pub fn of<T>(request: &Request<T>) -> Result<&Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(token_missing)
    }
}

/// JWT claims taskmesh reads and writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch (UTC).
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch (UTC).
    #[serde(default)]
    pub iat: u64,
    /// Audience; must be (or include) `taskmesh`.
    pub aud: Audience,
    /// Issuer, required and checked when the verifier is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Not before, seconds since the Unix epoch (UTC); checked with the leeway when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Roles, e.g. `["admin"]`.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The `aud` claim: one string, or an array (RFC 7519 section 4.1.3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

#[derive(Clone)]
enum Keys {
    Secret(DecodingKey),
    Public(Vec<PublicKey>),
    Oidc(Arc<Oidc>),
}

/// Verifies bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<Keys>,
    issuer: Option<String>,
    leeway: Duration,
    rate_limit: Option<crate::quota::RateLimit>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.keys {
            Keys::Secret(_) => "hs256",
            Keys::Public(keys) => return write!(f, "Verifier(public keys: {})", keys.len()),
            Keys::Oidc(oidc) => return write!(f, "Verifier(OpenID Connect issuers: {oidc:?})"),
        };
        write!(f, "Verifier({kind})")
    }
}

impl Verifier {
    /// A verifier for HS256 tokens signed with `secret`.
    pub fn hs256(secret: &SecretString) -> Self {
        Self {
            keys: Arc::new(Keys::Secret(DecodingKey::from_secret(
                secret.expose_secret().as_bytes(),
            ))),
            issuer: None,
            leeway: DEFAULT_LEEWAY,
            rate_limit: None,
        }
    }

    /// A verifier for RS256/EdDSA tokens, with the keys of a PEM file (one or more
    /// `PUBLIC KEY` blocks, tried in turn) or a JWKS file (`{"keys": [...]}`, selected by
    /// `kid`).
    ///
    /// # Errors
    /// [`AuthError::KeyFile`] when unreadable, [`AuthError::NoKeys`] when it holds no usable
    /// key.
    pub fn from_public_keys_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        let keys = if text.trim_start().starts_with('{') {
            jwks_keys(&text)
        } else {
            pem_keys(&text)
        };
        if keys.is_empty() {
            return Err(AuthError::NoKeys(path.display().to_string()));
        }
        Ok(Self {
            keys: Arc::new(Keys::Public(keys)),
            issuer: None,
            leeway: DEFAULT_LEEWAY,
            rate_limit: None,
        })
    }

    /// A verifier for the access tokens of OpenID Connect providers (see [`crate::oidc`]):
    /// each token is checked against its own issuer's keys, audience and roles claim, and its
    /// user is the issuer's user prefix followed by `sub`. Call [`Oidc::fetch_all`] first so
    /// the first calls find the keys.
    pub fn from_oidc(oidc: Arc<Oidc>) -> Self {
        Self {
            keys: Arc::new(Keys::Oidc(oidc)),
            issuer: None,
            leeway: DEFAULT_LEEWAY,
            rate_limit: None,
        }
    }

    /// The OpenID Connect issuers and key cache of this verifier, if it verifies theirs.
    pub fn oidc(&self) -> Option<Arc<Oidc>> {
        match &*self.keys {
            Keys::Oidc(oidc) => Some(oidc.clone()),
            _ => None,
        }
    }

    /// Requires tokens to carry this `iss` (a token without one is refused). Not used with
    /// OpenID Connect issuers, which name their own.
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Sets the leeway for `exp` and `nbf` (whole seconds; default [`DEFAULT_LEEWAY`]).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The issuer tokens must name (`iss`), when one is configured.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The leeway for `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Limits each user's calls through [`Authenticated`] to `limit` (shared by every
    /// clone of this verifier; none by default).
    pub fn with_rate_limit(mut self, limit: Option<crate::quota::RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Verifies a token and returns its caller.
    ///
    /// # Errors
    /// [`AuthError::InvalidToken`] for a malformed token, a bad signature, an algorithm that is
    /// not the key's, expiry, `nbf` in the future, a wrong audience, a missing or wrong issuer;
    /// [`AuthError::CriticalExtension`], [`AuthError::UnknownKeyId`],
    /// [`AuthError::BadSubject`].
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = decode_header(token).map_err(AuthError::InvalidToken)?;
        if header.crit.is_some() {
            return Err(AuthError::CriticalExtension);
        }
        let claims = match &*self.keys {
            Keys::Secret(key) => self.decode(token, key, Algorithm::HS256)?,
            Keys::Oidc(oidc) => return self.verify_oidc(oidc, token, &header),
            Keys::Public(keys) => with_first_key(keys, &header, |key| {
                self.decode(token, &key.key, key.algorithm)
            })?,
        };
        check_subject(&claims.sub)?;
        Ok(Caller {
            actor: claims.sub.clone(),
            user: claims.sub,
            roles: claims.roles,
            expires_at: claims.exp,
        })
    }

    /// Verifies a token like [`Verifier::verify`]; when it names a key its OpenID Connect
    /// issuer has not published yet (the provider rotated its keys), fetches that issuer's
    /// keys again (at most once per [`crate::oidc::REFETCH_INTERVAL`]) and tries once more.
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub async fn verify_async(&self, token: &str) -> Result<Caller, AuthError> {
        match self.verify(token) {
            Err(AuthError::UnknownKeyId(kid)) => {
                let Keys::Oidc(oidc) = &*self.keys else {
                    return Err(AuthError::UnknownKeyId(kid));
                };
                let Some(index) = unverified_issuer(token)
                    .and_then(|iss| oidc.issuers.iter().position(|i| i.config.issuer == iss))
                else {
                    return Err(AuthError::UnknownKeyId(kid));
                };
                oidc.refresh_for_unknown_kid(index).await;
                self.verify(token)
            }
            other => other,
        }
    }

    /// An OpenID Connect provider's access token: routed by its `iss` to that issuer, whose
    /// keys, audience and roles claim apply; `iat` may not be in the future (past the leeway).
    fn verify_oidc(
        &self,
        oidc: &Arc<Oidc>,
        token: &str,
        header: &Header,
    ) -> Result<Caller, AuthError> {
        let invalid = |kind: jsonwebtoken::errors::ErrorKind| AuthError::InvalidToken(kind.into());
        let iss = unverified_issuer(token)
            .ok_or_else(|| invalid(jsonwebtoken::errors::ErrorKind::InvalidIssuer))?;
        let index = oidc
            .issuers
            .iter()
            .position(|i| i.config.issuer == iss)
            .ok_or_else(|| invalid(jsonwebtoken::errors::ErrorKind::InvalidIssuer))?;
        let config = &oidc.issuers[index].config;
        let keys = oidc.keys(index);
        if keys.is_empty() {
            // Nothing fetched yet (the provider was unreachable): fetch on this token.
            return Err(AuthError::UnknownKeyId(
                header.kid.clone().unwrap_or_default(),
            ));
        }
        let claims: serde_json::Value = with_first_key(&keys, header, |key| {
            let mut validation = Validation::new(key.algorithm);
            validation.set_audience(&[&config.audience]);
            validation.set_issuer(&[&config.issuer]);
            validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
            validation.leeway = self.leeway.as_secs();
            validation.validate_nbf = true;
            decode::<serde_json::Value>(token, &key.key, &validation)
                .map(|data| data.claims)
                .map_err(AuthError::InvalidToken)
        })?;
        let now = jsonwebtoken::get_current_timestamp();
        if claims
            .get("iat")
            .and_then(seconds)
            .is_some_and(|iat| iat > now.saturating_add(self.leeway.as_secs()))
        {
            return Err(invalid(jsonwebtoken::errors::ErrorKind::ImmatureSignature));
        }
        // An ID token is for the client, not a bearer token for taskmesh (OpenID Connect
        // Core §3.1.3.6, §3.3.2.11): refuse the claims only ID tokens carry.
        if claims.get("at_hash").is_some() || claims.get("c_hash").is_some() {
            return Err(invalid(jsonwebtoken::errors::ErrorKind::InvalidToken));
        }
        let sub = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        check_subject(sub)?;
        // The issuer without a prefix may not mint ids in another issuer's namespace.
        if config.user_prefix.is_empty()
            && oidc.issuers.iter().any(|other| {
                !other.config.user_prefix.is_empty() && sub.starts_with(&other.config.user_prefix)
            })
        {
            return Err(AuthError::BadSubject);
        }
        let user = format!("{}{sub}", config.user_prefix);
        check_subject(&user)?;
        Ok(Caller {
            actor: user.clone(),
            user,
            roles: crate::oidc::roles_at(&claims, &config.roles_claim),
            expires_at: claims.get("exp").and_then(seconds).unwrap_or_default(),
        })
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithm: Algorithm,
    ) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        if let Some(issuer) = &self.issuer {
            validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
            validation.set_issuer(&[issuer]);
        } else {
            validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        }
        decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(AuthError::InvalidToken)
    }

    /// Verifies the `authorization: Bearer <token>` header of a call (with
    /// [`Verifier::verify_async`]); a call with [`VIA_HEADER`] `mcp` gets the actor
    /// `mcp:<user>`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` with reason `TOKEN_MISSING`, `TOKEN_EXPIRED` or `TOKEN_INVALID`; the
    /// detail is logged at debug level only.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Status> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(token_missing)?;
        let mut caller = self.verify_async(token).await.map_err(|error| {
            tracing::debug!(%error, "rejected token");
            match error {
                // The one a client fixes by renewing its token (same reason as a live stream
                // that outlives it).
                AuthError::InvalidToken(e)
                    if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature =>
                {
                    crate::grpc::error(
                        tonic::Code::Unauthenticated,
                        "TOKEN_EXPIRED",
                        "the bearer token expired: renew it",
                    )
                }
                _ => crate::grpc::error(
                    tonic::Code::Unauthenticated,
                    "TOKEN_INVALID",
                    "invalid bearer token",
                ),
            }
        })?;
        if headers.get(VIA_HEADER).is_some_and(|via| via == VIA_MCP) {
            caller.actor = format!("{VIA_MCP}:{}", caller.user);
        }
        Ok(caller)
    }
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional) in whole seconds.
fn seconds(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            // Saturating float-to-int cast: whole seconds, as jsonwebtoken compares them.
            .map(|s| s as u64)
    })
}

/// Checks a user id: 1 to 256 bytes without control characters (NUL included).
///
/// # Errors
/// [`AuthError::BadSubject`] otherwise.
pub fn check_subject(sub: &str) -> Result<(), AuthError> {
    if sub.is_empty() || sub.len() > 256 || sub.chars().any(char::is_control) {
        return Err(AuthError::BadSubject);
    }
    Ok(())
}

/// The `iss` claim of a token, read without verifying anything (to choose its issuer).
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
        .ok()?
        .iss
}

/// Verifies with the first of `keys` that fits `header`: the keys with its `kid` (when the
/// keys have ids; none is [`AuthError::UnknownKeyId`]), else every key, of the token's
/// algorithm, tried in turn. A key whose signature matched gives the verdict (e.g. expired);
/// only a signature mismatch moves on to the next key.
fn with_first_key<T>(
    keys: &[PublicKey],
    header: &Header,
    mut verify: impl FnMut(&PublicKey) -> Result<T, AuthError>,
) -> Result<T, AuthError> {
    let candidates: Vec<&PublicKey> = match &header.kid {
        Some(kid) if keys.iter().any(|k| k.kid.is_some()) => {
            let found: Vec<_> = keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if found.is_empty() {
                return Err(AuthError::UnknownKeyId(kid.clone()));
            }
            found
        }
        _ => keys.iter().collect(),
    };
    let mut last = None;
    for candidate in candidates.into_iter().filter(|k| k.algorithm == header.alg) {
        match verify(candidate) {
            Ok(found) => return Ok(found),
            Err(AuthError::InvalidToken(e))
                if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature =>
            {
                last = Some(AuthError::InvalidToken(e));
            }
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        AuthError::InvalidToken(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into())
    }))
}

/// `UNAUTHENTICATED`, reason `TOKEN_MISSING`: the call carries no bearer token.
pub fn token_missing() -> Status {
    crate::grpc::error(
        tonic::Code::Unauthenticated,
        "TOKEN_MISSING",
        "missing bearer token",
    )
}

/// The token of an `authorization: Bearer <token>` metadata entry, if any.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    bearer_token(metadata.get("authorization")?.to_str().ok()?)
}

/// The token of an `Authorization` header value `Bearer <token>` (the scheme in any case,
/// RFC 7235 section 2.1), if it is one.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn pem_keys(text: &str) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    for block in text.split_inclusive("-----END PUBLIC KEY-----") {
        let Some(start) = block.find("-----BEGIN") else {
            continue;
        };
        let pem = &block.as_bytes()[start..];
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            keys.push(PublicKey {
                kid: None,
                algorithm: Algorithm::RS256,
                key,
            });
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            keys.push(PublicKey {
                kid: None,
                algorithm: Algorithm::EdDSA,
                key,
            });
        }
    }
    keys
}

/// Signs tokens for `taskmesh token` and tests.
pub struct Signer {
    key: EncodingKey,
    header: Header,
    issuer: Option<String>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({:?})", self.header.alg)
    }
}

impl Signer {
    /// Signs HS256 tokens with `secret`.
    pub fn hs256(secret: &SecretString) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.expose_secret().as_bytes()),
            header: Header::new(Algorithm::HS256),
            issuer: None,
        }
    }

    /// Signs with a PEM private key: RS256 for an RSA key, EdDSA for an Ed25519 key.
    ///
    /// # Errors
    /// [`AuthError::Sign`] when the PEM holds neither.
    pub fn from_private_key_pem(
        pem: &SecretString,
        kid: Option<String>,
    ) -> Result<Self, AuthError> {
        let bytes = pem.expose_secret().as_bytes();
        let (key, algorithm) = match EncodingKey::from_rsa_pem(bytes) {
            Ok(key) => (key, Algorithm::RS256),
            Err(_) => (
                EncodingKey::from_ed_pem(bytes).map_err(AuthError::Sign)?,
                Algorithm::EdDSA,
            ),
        };
        let mut header = Header::new(algorithm);
        header.kid = kid;
        Ok(Self {
            key,
            header,
            issuer: None,
        })
    }

    /// Sets the `iss` claim of minted tokens.
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// Mints a token for `sub` with `roles`, valid for `ttl` from now.
    ///
    /// # Errors
    /// [`AuthError::Sign`].
    pub fn mint(&self, sub: &str, roles: &[String], ttl: Duration) -> Result<String, AuthError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: sub.to_owned(),
            exp: now + ttl.as_secs(),
            iat: now,
            aud: Audience::One(AUDIENCE.to_owned()),
            iss: self.issuer.clone(),
            nbf: None,
            roles: roles.to_vec(),
        };
        encode(&self.header, &claims, &self.key).map_err(AuthError::Sign)
    }
}

/// A gRPC service (a generated `…Server`) behind authentication: each call's bearer token is
/// verified ([`Verifier::authenticate`], which may fetch an OpenID Connect issuer's new keys),
/// the call is taken from the caller's quota (when the verifier has a rate limit) and the
/// [`Caller`] is stored in the request's extensions, where [`Caller::of`] finds it. A call
/// without a valid token gets `UNAUTHENTICATED`, over quota `RESOURCE_EXHAUSTED`
/// ([`crate::quota`]); neither reaches the service.
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    verifier: Verifier,
}

impl<S> Authenticated<S> {
    /// `inner` behind `verifier`.
    pub fn new(inner: S, verifier: Verifier) -> Self {
        Self { inner, verifier }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was made ready serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let admitted = match verifier.authenticate(request.headers()).await {
                Ok(caller) => match &verifier.rate_limit {
                    Some(limit) => limit.check(&caller.user).map(|()| caller),
                    None => Ok(caller),
                },
                Err(status) => Err(status),
            };
            match admitted {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("test-secret")
    }

    #[test]
    fn minted_token_verifies_and_carries_roles() {
        let token = Signer::hs256(&secret())
            .mint("alice", &["admin".to_owned()], Duration::from_secs(60))
            .unwrap();
        let caller = Verifier::hs256(&secret()).verify(&token).unwrap();
        assert_eq!(caller.user, "alice");
        assert!(caller.is_admin());
    }

    #[test]
    fn token_signed_with_another_secret_is_rejected() {
        let token = Signer::hs256(&SecretString::from("other"))
            .mint("alice", &[], Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            Verifier::hs256(&secret()).verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn expired_token_is_rejected() {
        let signer = Signer::hs256(&secret());
        let claims = Claims {
            sub: "alice".into(),
            exp: 1_000,
            iat: 0,
            aud: Audience::One(AUDIENCE.into()),
            iss: None,
            nbf: None,
            roles: vec![],
        };
        let token = encode(&signer.header, &claims, &signer.key).unwrap();
        assert!(Verifier::hs256(&secret()).verify(&token).is_err());
    }

    #[test]
    fn audience_array_including_taskmesh_is_accepted() {
        let signer = Signer::hs256(&secret());
        let claims = Claims {
            sub: "erin".into(),
            exp: u64::MAX / 2,
            iat: 0,
            aud: Audience::Many(vec!["other".into(), AUDIENCE.into()]),
            iss: None,
            nbf: None,
            roles: vec![],
        };
        let token = encode(&signer.header, &claims, &signer.key).unwrap();
        assert_eq!(
            Verifier::hs256(&secret()).verify(&token).unwrap().user,
            "erin"
        );
    }

    #[test]
    fn wrong_audience_is_rejected() {
        let signer = Signer::hs256(&secret());
        let claims = Claims {
            sub: "alice".into(),
            exp: u64::MAX / 2,
            iat: 0,
            aud: Audience::One("someone-else".into()),
            iss: None,
            nbf: None,
            roles: vec![],
        };
        let token = encode(&signer.header, &claims, &signer.key).unwrap();
        assert!(Verifier::hs256(&secret()).verify(&token).is_err());
    }

    fn testdata(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    fn private_key(name: &str) -> SecretString {
        SecretString::from(std::fs::read_to_string(testdata(name)).unwrap())
    }

    #[test]
    fn rs256_and_eddsa_tokens_verify_against_a_pem_with_both_keys() {
        let verifier = Verifier::from_public_keys_file(&testdata("both.pub")).unwrap();
        for key in ["rsa.key", "ed25519.key"] {
            let token = Signer::from_private_key_pem(&private_key(key), None)
                .unwrap()
                .mint("carol", &[], Duration::from_secs(60))
                .unwrap();
            assert_eq!(verifier.verify(&token).unwrap().user, "carol", "{key}");
        }
        // A key the verifier does not hold is rejected.
        let only_rsa = Verifier::from_public_keys_file(&testdata("rsa.pub")).unwrap();
        let token = Signer::from_private_key_pem(&private_key("ed25519.key"), None)
            .unwrap()
            .mint("carol", &[], Duration::from_secs(60))
            .unwrap();
        assert!(only_rsa.verify(&token).is_err());
        // And an HS256 token is not accepted by a public-key verifier.
        let hs = Signer::hs256(&secret())
            .mint("carol", &[], Duration::from_secs(60))
            .unwrap();
        assert!(verifier.verify(&hs).is_err());
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let token = Signer::hs256(&secret())
            .with_issuer(Some("https://issuer.example".into()))
            .mint("dave", &[], Duration::from_secs(60))
            .unwrap();
        let strict = Verifier::hs256(&secret()).with_issuer(Some("https://other.example".into()));
        assert!(strict.verify(&token).is_err());
        let right = Verifier::hs256(&secret()).with_issuer(Some("https://issuer.example".into()));
        assert_eq!(right.verify(&token).unwrap().user, "dave");
    }

    #[test]
    fn garbage_is_rejected_without_panic() {
        for token in ["", "a.b.c", "....", "eyJhbGciOiJub25lIn0.e30."] {
            assert!(Verifier::hs256(&secret()).verify(token).is_err());
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A token of `claims` (any JSON) with `header`, signed with the test secret.
    fn hs_token(header: &Header, claims: &serde_json::Value) -> String {
        encode(header, claims, &EncodingKey::from_secret(b"test-secret")).unwrap()
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut claims = serde_json::json!({
            "sub": "alice", "aud": AUDIENCE, "exp": now() + 600, "iat": now(),
        });
        for (key, value) in extra.as_object().unwrap() {
            claims[key] = value.clone();
        }
        claims
    }

    #[test]
    fn a_token_without_iss_is_refused_when_an_issuer_is_configured() {
        let verifier =
            Verifier::hs256(&secret()).with_issuer(Some("https://issuer.example".into()));
        let token = hs_token(&Header::default(), &claims(serde_json::json!({})));
        assert!(matches!(
            verifier.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
        let token = hs_token(
            &Header::default(),
            &claims(serde_json::json!({"iss": "https://issuer.example"})),
        );
        assert_eq!(verifier.verify(&token).unwrap().user, "alice");
    }

    #[test]
    fn nbf_is_checked_with_the_leeway() {
        let verifier = Verifier::hs256(&secret()).with_leeway(Duration::from_secs(30));
        let future = hs_token(
            &Header::default(),
            &claims(serde_json::json!({"nbf": now() + 120})),
        );
        assert!(verifier.verify(&future).is_err());
        let within = hs_token(
            &Header::default(),
            &claims(serde_json::json!({"nbf": now() + 10})),
        );
        assert!(verifier.verify(&within).is_ok());
        let malformed = hs_token(
            &Header::default(),
            &claims(serde_json::json!({"nbf": "tomorrow"})),
        );
        assert!(verifier.verify(&malformed).is_err());
    }

    #[test]
    fn expiry_is_checked_with_a_configurable_leeway() {
        let token = hs_token(
            &Header::default(),
            &claims(serde_json::json!({"exp": now() - 20})),
        );
        let default = Verifier::hs256(&secret());
        assert_eq!(default.leeway(), DEFAULT_LEEWAY);
        assert!(default.verify(&token).is_ok(), "20 s past is within 30 s");
        let strict = Verifier::hs256(&secret()).with_leeway(Duration::from_secs(5));
        assert!(strict.verify(&token).is_err());
        let caller = default.verify(&token).unwrap();
        assert_eq!(caller.expires_at, now() - 20);
    }

    #[test]
    fn a_crit_header_is_refused() {
        let header = Header {
            crit: Some(vec!["exp".into()]),
            ..Header::default()
        };
        let token = hs_token(&header, &claims(serde_json::json!({})));
        assert!(matches!(
            Verifier::hs256(&secret()).verify(&token),
            Err(AuthError::CriticalExtension)
        ));
    }

    #[test]
    fn a_subject_with_control_characters_is_refused() {
        for sub in ["al\u{0}ice", "bob\n", "\u{7f}"] {
            let token = hs_token(
                &Header::default(),
                &claims(serde_json::json!({ "sub": sub })),
            );
            assert!(
                matches!(
                    Verifier::hs256(&secret()).verify(&token),
                    Err(AuthError::BadSubject)
                ),
                "{sub:?}"
            );
        }
    }

    #[tokio::test]
    async fn with_keys_tried_in_turn_an_expired_token_is_expired_whatever_the_key_order() {
        // `rotation.pub`: the key that signed first, then another RSA key (no `kid`s), so the
        // last key tried fails on the signature.
        let verifier = Verifier::from_public_keys_file(&testdata("rotation.pub")).unwrap();
        let key = EncodingKey::from_rsa_pem(std::fs::read(testdata("rsa.key")).unwrap().as_slice())
            .unwrap();
        let sign = |extra| encode(&Header::new(Algorithm::RS256), &claims(extra), &key).unwrap();
        assert!(verifier.verify(&sign(serde_json::json!({}))).is_ok());
        let expired = sign(serde_json::json!({"exp": now() - 600}));
        let status = verifier
            .authenticate(&headers_with(&format!("Bearer {expired}")))
            .await
            .unwrap_err();
        assert_eq!(
            crate::grpc::reason(&status).as_deref(),
            Some("TOKEN_EXPIRED"),
            "{status:?}"
        );
    }

    fn headers_with(authorization: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", authorization.parse().unwrap());
        headers
    }

    #[test]
    fn alg_none_and_hs_rs_confusion_are_refused() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let body = URL_SAFE_NO_PAD.encode(claims(serde_json::json!({})).to_string());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert!(Verifier::hs256(&secret()).verify(&none).is_err());
        let public = Verifier::from_public_keys_file(&testdata("rsa.pub")).unwrap();
        assert!(public.verify(&none).is_err());
        // HS256 signed with the RSA public key's PEM as the secret: the classic confusion.
        let pem = std::fs::read(testdata("rsa.pub")).unwrap();
        let confused = encode(
            &Header::default(),
            &claims(serde_json::json!({})),
            &EncodingKey::from_secret(&pem),
        )
        .unwrap();
        assert!(public.verify(&confused).is_err());
    }
}
