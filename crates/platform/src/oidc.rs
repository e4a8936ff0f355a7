//! OpenID Connect issuers as token key sources: taskmesh is a resource server that accepts
//! the JWT access tokens (RFC 9068) of one or more identity providers, found by discovery.
//!
//! For each configured issuer, the provider's metadata is read from
//! `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4; its `issuer`
//! must equal the configured one exactly, §4.3), then its keys from the metadata's `jwks_uri`
//! (RFC 7517). The keys are kept for as long as the JWKS response's HTTP cache headers allow
//! (RFC 9111, computed by `http-cache-semantics`), clamped to [[`MIN_FRESH`],
//! [`MAX_FRESH`]] (or a shorter configured maximum, [`Oidc::with_max_fresh`]); after that
//! the next token verification refreshes them in the background while the current keys go
//! on serving. A token whose `kid` is unknown makes its issuer's keys be fetched again at
//! once (the provider rotated its key) and waits for them, at most once per
//! [`REFETCH_INTERVAL`] per issuer (at most [`MAX_WAITERS`] calls wait; fetches run
//! detached, so a caller that goes away cancels nothing), so a flood of made-up `kid`s
//! costs the provider one request per interval. While the provider cannot be reached, the
//! last good keys keep serving, up to the configured maximum age since they were fetched:
//! existing sessions go on working through an outage. Keys are fetched over `https` only
//! (`http` on loopback), redirects included; a failed fetch discovers the `jwks_uri` again.
//!
//! A token is routed to its issuer by its (unverified) `iss`, then verified against that
//! issuer's keys only: signature with the key's own algorithm, `iss`, `aud` (the issuer's
//! audience), `exp`, `nbf` and `iat` with the verifier's leeway. The user id is
//! issuer-scoped: the issuer's `user_prefix` followed by `sub` (see [`IssuerConfig`]).

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse},
};

/// Shortest time fetched keys are kept before they are refreshed, whatever the cache headers
/// say (a provider that sends `no-store` is not asked on every call).
pub const MIN_FRESH: Duration = Duration::from_secs(60);

/// Longest time fetched keys are kept before they are refreshed.
pub const MAX_FRESH: Duration = Duration::from_secs(24 * 3600);

/// Least time between two fetches of one issuer's keys (after an unknown `kid`, or a failed
/// fetch).
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Longest time one discovery or JWKS request may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest discovery document or JWKS read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// One trusted issuer: `TASKMESH_OIDC_ISSUER` holds one entry per issuer, separated by
/// commas, each its issuer URL followed by optional space-separated `key=value` options:
/// `audience=<aud>` (default `TASKMESH_OIDC_AUDIENCE`, itself `taskmesh` by default),
/// `user_prefix=<prefix>` and `roles_claim=<path>` (default `TASKMESH_OIDC_ROLES_CLAIM`). E.g.
/// `https://idp.example.com/realms/main, https://dex.example.com/dex audience=taskmesh-api user_prefix=dex:`.
/// The audience must name taskmesh (the API), never a client's id: an ID token's `aud` is the
/// client id, and ID tokens are not bearer tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The issuer identifier, exactly as the provider writes it in `iss` (an `https` URL;
    /// `http` only on loopback).
    pub issuer: String,
    /// The `aud` its tokens must name for taskmesh.
    pub audience: String,
    /// What the user id of this issuer's tokens starts with, before `sub`: two issuers with
    /// the same `sub` are two users. At most one issuer may have none; the others need
    /// prefixes of which none starts another, and a token of the issuer without a prefix whose
    /// `sub` starts with another issuer's prefix is refused, so ids never collide.
    pub user_prefix: String,
    /// Where the token's roles are: a claim name or a dotted path into nested objects (e.g.
    /// `roles`, `groups`, `realm_access.roles`), holding an array of strings or one
    /// space-separated string. The role `admin` unlocks admin RPCs.
    pub roles_claim: String,
}

/// The default `aud` of taskmesh tokens from an identity provider.
pub const DEFAULT_AUDIENCE: &str = "taskmesh";

/// The default claim the roles are read from.
pub const DEFAULT_ROLES_CLAIM: &str = "roles";

/// Parses `TASKMESH_OIDC_ISSUER` (see [`IssuerConfig`]) with the given defaults.
///
/// # Errors
/// A message naming the entry: not an absolute `https` URL (`http` is allowed for
/// `127.0.0.1`, `[::1]` and `localhost`), with a query or fragment (OpenID Connect Core §2),
/// an unknown or empty option, an issuer listed twice, or user prefixes that could make two
/// issuers' users collide.
pub fn parse_issuers(
    spec: &str,
    default_audience: &str,
    default_roles_claim: &str,
) -> Result<Vec<IssuerConfig>, String> {
    let mut issuers: Vec<IssuerConfig> = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut words = entry.split_whitespace();
        let issuer = words.next().unwrap_or_default().to_owned();
        let url =
            url::Url::parse(&issuer).map_err(|e| format!("issuer {issuer:?} is not a URL: {e}"))?;
        if !secure(&url) {
            return Err(format!(
                "issuer {issuer:?} must be an https URL (http only on loopback)"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("issuer {issuer:?} must have no query or fragment"));
        }
        let mut config = IssuerConfig {
            issuer,
            audience: default_audience.to_owned(),
            user_prefix: String::new(),
            roles_claim: default_roles_claim.to_owned(),
        };
        for option in words {
            let (key, value) = option
                .split_once('=')
                .filter(|(_, value)| !value.is_empty())
                .ok_or_else(|| {
                    format!(
                        "issuer {:?}: option {option:?} is not key=value",
                        config.issuer
                    )
                })?;
            match key {
                "audience" => config.audience = value.to_owned(),
                "user_prefix" => config.user_prefix = value.to_owned(),
                "roles_claim" => config.roles_claim = value.to_owned(),
                _ => {
                    return Err(format!(
                        "issuer {:?}: unknown option {key:?} (audience, user_prefix, roles_claim)",
                        config.issuer
                    ));
                }
            }
        }
        if issuers.iter().any(|other| other.issuer == config.issuer) {
            return Err(format!("issuer {:?} is listed twice", config.issuer));
        }
        issuers.push(config);
    }
    let unprefixed = issuers.iter().filter(|i| i.user_prefix.is_empty()).count();
    if unprefixed > 1 {
        return Err(
            "with several issuers, all but one need a user_prefix (two issuers' users with \
             the same sub would be one user)"
                .to_owned(),
        );
    }
    for a in &issuers {
        for b in &issuers {
            if !std::ptr::eq(a, b)
                && !a.user_prefix.is_empty()
                && !b.user_prefix.is_empty()
                && b.user_prefix.starts_with(&a.user_prefix)
            {
                return Err(format!(
                    "user_prefix {:?} of {:?} starts with {:?} of {:?}: their users could collide",
                    b.user_prefix, b.issuer, a.user_prefix, a.issuer
                ));
            }
        }
    }
    Ok(issuers)
}

/// A verification key with the algorithm it verifies and its `kid`.
#[derive(Clone)]
pub(crate) struct PublicKey {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

/// The signature keys of a JWKS document (RFC 7517 §5): RSA, EC (P-256, P-384) and OKP
/// (Ed25519) keys meant for signatures. A key's algorithm is its `alg`, else the one its type
/// implies (RS256, ES256/ES384, EdDSA); symmetric keys, encryption keys and keys that do not
/// parse are left out, so one odd key does not hide the others.
pub(crate) fn jwks_keys(text: &str) -> Vec<PublicKey> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let Ok(set) = serde_json::from_str::<Set>(text) else {
        return Vec::new();
    };
    set.keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| {
            if matches!(
                jwk.common.public_key_use,
                Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
            ) {
                return None;
            }
            let implied = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => Algorithm::ES256,
                    EllipticCurve::P384 => Algorithm::ES384,
                    _ => return None,
                },
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                _ => return None,
            };
            let algorithm = match jwk.common.key_algorithm {
                Some(alg) => Algorithm::try_from(alg).ok()?,
                None => implied,
            };
            // The stated algorithm must belong to the key's family (no HS256 on an RSA key).
            let family = |a: Algorithm| match a {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => 1,
                Algorithm::ES256 | Algorithm::ES384 => 2,
                Algorithm::EdDSA => 3,
                _ => 0,
            };
            if family(algorithm) != family(implied) {
                return None;
            }
            Some(PublicKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key: DecodingKey::from_jwk(&jwk).ok()?,
            })
        })
        .collect()
}

/// What is known of one issuer's keys.
struct KeyState {
    /// The last good keys (empty before the first successful fetch, and again once they are
    /// older than the configured maximum: see [`Oidc::with_max_fresh`]).
    keys: Arc<Vec<PublicKey>>,
    /// When they were fetched.
    fetched_at: Instant,
    /// Until when they are fresh.
    fresh_until: Instant,
    /// The provider's `jwks_uri`, once discovered (discovered again after a failed fetch).
    jwks_uri: Option<String>,
}

/// The fetch of one issuer's keys, shared by everyone waiting for it.
type InFlight = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// When one issuer's keys were last asked for, and the fetch running now.
#[derive(Default)]
struct Fetching {
    last: Option<Instant>,
    in_flight: Option<InFlight>,
}

/// One issuer's configuration and key cache.
pub(crate) struct Issuer {
    pub(crate) config: IssuerConfig,
    state: RwLock<KeyState>,
    fetching: std::sync::Mutex<Fetching>,
    /// Bounds the calls waiting for a fetch at once; the others are answered at once.
    waiters: tokio::sync::Semaphore,
}

/// Most calls that wait for one issuer's running key fetch (a token naming a new key);
/// more are refused without waiting, so a flood of made-up `kid`s holds no more.
pub const MAX_WAITERS: usize = 64;

/// The issuers a verifier trusts, with their keys. Shared by every clone of the verifier.
pub struct Oidc {
    pub(crate) issuers: Vec<Issuer>,
    client: reqwest::Client,
    max_fresh: Duration,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.issuers.iter().map(|i| &i.config.issuer))
            .finish()
    }
}

/// Why fetching an issuer's keys failed (logged; the last good keys stay).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed or timed out.
    #[error("request to {url} failed: {source}")]
    Http {
        /// What was fetched.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The provider answered with an error status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// What was fetched.
        url: String,
        /// The status.
        status: u16,
    },
    /// The answer is too large or not the expected JSON.
    #[error("{url}: {what}")]
    Document {
        /// What was fetched.
        url: String,
        /// What is wrong with it.
        what: String,
    },
}

/// Whether keys may be fetched from `url`: `https`, or `http` on loopback (tests,
/// development), like the issuer itself.
fn secure(url: &url::Url) -> bool {
    url.scheme() == "https"
        || (url.scheme() == "http"
            && matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")))
}

impl Oidc {
    /// The key cache of `issuers`, with nothing fetched yet (see [`Oidc::fetch_all`]).
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS roots on this system).
    pub fn new(issuers: Vec<IssuerConfig>) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // At most 3 redirects, never to plain http off loopback.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= 3 {
                    attempt.error("more than 3 redirects")
                } else if !secure(attempt.url()) {
                    attempt.error("a redirect to plain http")
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("taskmesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| FetchError::Http {
                url: String::new(),
                source,
            })?;
        let now = Instant::now();
        Ok(Self {
            issuers: issuers
                .into_iter()
                .map(|config| Issuer {
                    config,
                    state: RwLock::new(KeyState {
                        keys: Arc::new(Vec::new()),
                        fetched_at: now,
                        fresh_until: now,
                        jwks_uri: None,
                    }),
                    fetching: std::sync::Mutex::new(Fetching::default()),
                    waiters: tokio::sync::Semaphore::new(MAX_WAITERS),
                })
                .collect(),
            client,
            max_fresh: MAX_FRESH,
        })
    }

    /// Keeps fetched keys at most `max_fresh` (default [`MAX_FRESH`]) before fetching them
    /// again, whatever the cache headers allow; under [`MIN_FRESH`] it also lowers that
    /// floor. It also bounds an outage: keys not refreshed for `max_fresh` (the provider
    /// unreachable all that time) are dropped, and the issuer's tokens are refused until it
    /// answers. Fetches still happen at most once per [`REFETCH_INTERVAL`].
    pub fn with_max_fresh(mut self, max_fresh: Duration) -> Self {
        self.max_fresh = max_fresh;
        self
    }

    /// Fetches every issuer's keys once (at start), at the same time. An issuer that cannot
    /// be reached is logged and tried again when a token of it arrives.
    ///
    /// # Errors
    /// The first failure, after every issuer was tried (for `check-config`).
    pub async fn fetch_all(self: &Arc<Self>) -> Result<(), FetchError> {
        let results = futures::future::join_all((0..self.issuers.len()).map(|index| {
            let this = self.clone();
            async move {
                this.fetching(index).last = Some(Instant::now());
                this.fetch_logged(index).await
            }
        }))
        .await;
        results.into_iter().collect()
    }

    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerConfig> {
        self.issuers.iter().map(|i| &i.config)
    }

    /// How many keys `issuer` (its index in the configuration) has now.
    pub fn key_count(&self, issuer: usize) -> usize {
        self.issuers.get(issuer).map_or(0, |i| {
            i.state.read().unwrap_or_else(|e| e.into_inner()).keys.len()
        })
    }

    fn fetching(&self, issuer: usize) -> std::sync::MutexGuard<'_, Fetching> {
        self.issuers[issuer]
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// `issuer`'s current keys (none once they are older than the configured maximum); when
    /// they are no longer fresh, a refresh starts in the background (on the current Tokio
    /// runtime) and these keep serving meanwhile.
    pub(crate) fn keys(self: &Arc<Self>, issuer: usize) -> Arc<Vec<PublicKey>> {
        let Some(entry) = self.issuers.get(issuer) else {
            return Arc::new(Vec::new());
        };
        let (keys, stale) = {
            let state = entry.state.read().unwrap_or_else(|e| e.into_inner());
            if state.fetched_at.elapsed() > self.max_fresh {
                return Arc::new(Vec::new());
            }
            (state.keys.clone(), Instant::now() >= state.fresh_until)
        };
        if stale && tokio::runtime::Handle::try_current().is_ok() {
            // Starts the fetch (detached) unless one runs or the last was too recent.
            drop(self.start_fetch(issuer));
        }
        keys
    }

    /// Fetches `issuer`'s keys again after a token named a key it does not have (the
    /// provider may have just rotated), and waits for the fetch: unless the last fetch was
    /// under [`REFETCH_INTERVAL`] ago (then at once), or [`MAX_WAITERS`] calls already wait.
    /// The fetch runs detached: a caller that goes away does not cancel it.
    pub(crate) async fn refresh_for_unknown_kid(self: &Arc<Self>, issuer: usize) {
        let Some(entry) = self.issuers.get(issuer) else {
            return;
        };
        let Ok(_permit) = entry.waiters.try_acquire() else {
            return;
        };
        if let Some(fetch) = self.start_fetch(issuer) {
            fetch.await;
        }
    }

    /// The running fetch of `issuer`'s keys, started now unless the last one began under
    /// [`REFETCH_INTERVAL`] ago (`None`).
    fn start_fetch(self: &Arc<Self>, issuer: usize) -> Option<InFlight> {
        let mut fetching = self.fetching(issuer);
        if let Some(running) = &fetching.in_flight {
            return Some(running.clone());
        }
        if fetching
            .last
            .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL)
        {
            return None;
        }
        fetching.last = Some(Instant::now());
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _ = this.fetch_logged(issuer).await;
            this.fetching(issuer).in_flight = None;
        });
        let shared = futures::FutureExt::shared(futures::FutureExt::boxed(async move {
            let _ = task.await;
        }));
        fetching.in_flight = Some(shared.clone());
        Some(shared)
    }

    /// [`Oidc::fetch`], its failure logged; after one the keys are kept, tried again after
    /// [`REFETCH_INTERVAL`], and the `jwks_uri` discovered again.
    async fn fetch_logged(&self, issuer: usize) -> Result<(), FetchError> {
        let entry = &self.issuers[issuer];
        let result = self.fetch(entry).await;
        if let Err(error) = &result {
            let mut state = entry.state.write().unwrap_or_else(|e| e.into_inner());
            state.fresh_until = Instant::now() + REFETCH_INTERVAL;
            state.jwks_uri = None;
            tracing::warn!(
                issuer = %entry.config.issuer,
                error = %crate::error_chain(error),
                keys = state.keys.len(),
                "cannot fetch the identity provider's keys; the last good keys (if any) keep \
                 serving"
            );
        }
        result
    }

    /// One discovery (when the `jwks_uri` is not known) and one JWKS request.
    async fn fetch(&self, entry: &Issuer) -> Result<(), FetchError> {
        let known = entry
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .jwks_uri
            .clone();
        let jwks_uri = match known {
            Some(uri) => uri,
            None => self.discover(&entry.config.issuer).await?,
        };
        let (body, fresh_for) = self.get(&jwks_uri).await?;
        let text = String::from_utf8_lossy(&body);
        let keys = jwks_keys(&text);
        if keys.is_empty() {
            return Err(FetchError::Document {
                url: jwks_uri,
                what: "no usable signature key in the JWKS".to_owned(),
            });
        }
        tracing::info!(
            issuer = %entry.config.issuer,
            keys = keys.len(),
            fresh_for = %humantime_secs(fresh_for),
            "fetched the identity provider's keys"
        );
        let mut state = entry.state.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.keys = Arc::new(keys);
        state.fetched_at = now;
        state.fresh_until = now + fresh_for;
        state.jwks_uri = Some(jwks_uri);
        Ok(())
    }

    /// The `jwks_uri` of `issuer`'s discovery document, whose `issuer` must be `issuer` and
    /// whose `jwks_uri` must be `https` (`http` only on loopback).
    async fn discover(&self, issuer: &str) -> Result<String, FetchError> {
        #[derive(serde::Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (body, _) = self.get(&url).await?;
        let metadata: Metadata =
            serde_json::from_slice(&body).map_err(|e| FetchError::Document {
                url: url.clone(),
                what: format!("not OpenID provider metadata: {e}"),
            })?;
        if metadata.issuer != issuer {
            return Err(FetchError::Document {
                url,
                what: format!(
                    "its issuer is {:?}, not the configured {issuer:?} (OpenID Connect \
                     Discovery §4.3)",
                    metadata.issuer
                ),
            });
        }
        if !url::Url::parse(&metadata.jwks_uri).is_ok_and(|jwks| secure(&jwks)) {
            return Err(FetchError::Document {
                url,
                what: format!("its jwks_uri {:?} is not an https URL", metadata.jwks_uri),
            });
        }
        Ok(metadata.jwks_uri)
    }

    /// GETs `url`: its body (at most [`MAX_DOCUMENT_BYTES`]) and how long it stays fresh by
    /// its cache headers, clamped to [[`MIN_FRESH`], the configured maximum].
    async fn get(&self, url: &str) -> Result<(Vec<u8>, Duration), FetchError> {
        let http_error = |source| FetchError::Http {
            url: url.to_owned(),
            source,
        };
        let mut response = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(http_error)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let mut cached = http::Response::builder().status(response.status().as_u16());
        for (name, value) in response.headers() {
            cached = cached.header(name, value);
        }
        let request = http::Request::get(url).body(()).unwrap_or_default();
        let fresh_for = match cached.body(()) {
            Ok(head) => http_cache_semantics::CachePolicy::new(&request, &head)
                .time_to_live(SystemTime::now()),
            Err(_) => Duration::ZERO,
        }
        .clamp(MIN_FRESH.min(self.max_fresh), self.max_fresh);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_error)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::Document {
                    url: url.to_owned(),
                    what: format!("larger than {MAX_DOCUMENT_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, fresh_for))
    }
}

fn humantime_secs(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// The roles at `path` in `claims` (the claim of that name, else a dot-separated path): an array of strings, or one string of
/// space-separated roles; anything else is no roles. At most 64 roles of at most 256 bytes
/// are kept.
pub(crate) fn roles_at(claims: &serde_json::Value, path: &str) -> Vec<String> {
    // A claim named by the whole path first (Auth0's namespaced claims are URLs with dots).
    let value = claims.get(path).or_else(|| {
        path.split('.')
            .try_fold(claims, |value, part| value.get(part))
    });
    let Some(value) = value else {
        return Vec::new();
    };
    let roles: Vec<String> = match value {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        serde_json::Value::String(text) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    roles
        .into_iter()
        .filter(|role| role.len() <= 256)
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_parse_with_options_and_defaults() {
        let issuers = parse_issuers(
            "https://idp.example.com/realms/main, https://accounts.google.com audience=123 user_prefix=google: roles_claim=groups",
            "taskmesh",
            "roles",
        )
        .unwrap();
        assert_eq!(issuers.len(), 2);
        assert_eq!(issuers[0].audience, "taskmesh");
        assert_eq!(issuers[0].user_prefix, "");
        assert_eq!(issuers[1].audience, "123");
        assert_eq!(issuers[1].user_prefix, "google:");
        assert_eq!(issuers[1].roles_claim, "groups");
    }

    #[test]
    fn issuers_that_could_collide_or_are_malformed_are_refused() {
        for bad in [
            "https://a.example, https://b.example",
            "https://a.example user_prefix=a:, https://b.example user_prefix=a:b",
            "http://idp.example.com",
            "https://a.example?x=1",
            "https://a.example colour=blue",
            "https://a.example audience=",
            "https://a.example, https://a.example user_prefix=x",
            "not a url",
        ] {
            assert!(parse_issuers(bad, "taskmesh", "roles").is_err(), "{bad}");
        }
        assert!(parse_issuers("http://127.0.0.1:8080", "taskmesh", "roles").is_ok());
    }

    #[test]
    fn roles_come_from_arrays_strings_or_nested_paths() {
        let claims = serde_json::json!({
            "roles": ["admin", "x"],
            "scope": "admin other",
            "realm_access": {"roles": ["admin"]},
            "odd": 5
        });
        assert_eq!(roles_at(&claims, "roles"), ["admin", "x"]);
        assert_eq!(roles_at(&claims, "scope"), ["admin", "other"]);
        assert_eq!(roles_at(&claims, "realm_access.roles"), ["admin"]);
        assert!(roles_at(&claims, "odd").is_empty());
        assert!(roles_at(&claims, "missing.path").is_empty());
        let namespaced = serde_json::json!({"https://taskmesh.dev/roles": ["admin"]});
        assert_eq!(
            roles_at(&namespaced, "https://taskmesh.dev/roles"),
            ["admin"]
        );
    }

    #[test]
    fn jwks_keeps_signature_keys_and_skips_odd_ones() {
        let text = r#"{"keys": [
            {"kty": "RSA", "kid": "a", "use": "sig", "alg": "RS256",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "confused", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird", "kid": "w"},
            "not even an object"
        ]}"#;
        let keys = jwks_keys(text);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("a"));
        assert_eq!(keys[0].algorithm, Algorithm::RS256);
    }
}
