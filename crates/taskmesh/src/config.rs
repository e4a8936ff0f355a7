//! The configuration a component runs with, loaded once from the command line and the
//! environment ([`crate::cli::Common`]) and validated here: Kafka client properties (secrets
//! only from their own environment variables or files, never from the properties list, which
//! a ConfigMap may hold), the JWT verifier, and a one-line summary with every secret redacted
//! that each command logs at start.

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use taskmesh_platform::{
    auth::{DEV_SECRET, Signer, Verifier},
    kafka::KafkaConfig,
    oidc,
    quota::RateLimit,
};

use taskmesh_gateway::sign_in::WebSignIn;

use crate::cli::Common;

/// Shortest HS256 secret `serve` accepts, in bytes (RFC 7518 §3.2: a key of at least the
/// hash's size, 256 bits).
const MIN_SECRET_BYTES: usize = 32;

/// Whether a librdkafka property holds a secret: such a property may not be given in
/// `TASKMESH_KAFKA_PROPERTIES`.
fn is_secret_property(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key == "ssl.key.pem"
}

/// A secret from its environment variable or, failing that, from the file another
/// variable names (a mounted Kubernetes Secret); trailing newlines of the file are dropped.
fn secret(
    value: Option<&SecretString>,
    file: Option<&Path>,
    name: &str,
) -> anyhow::Result<Option<SecretString>> {
    if let Some(value) = value {
        return Ok(Some(value.clone()));
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {name}_FILE {}", file.display()))?;
    Ok(Some(SecretString::from(
        text.trim_end_matches(['\r', '\n']).to_owned(),
    )))
}

/// The Kafka configuration of `common` for `brokers`.
///
/// # Errors
/// A malformed `TASKMESH_KAFKA_PROPERTIES` entry, a secret in it, or a secret file that
/// cannot be read.
pub(crate) fn kafka(common: &Common, brokers: String) -> anyhow::Result<KafkaConfig> {
    let mut config = KafkaConfig::local(brokers);
    config.topic_prefix.clone_from(&common.topic_prefix);
    config.group_prefix = common
        .group_prefix
        .clone()
        .unwrap_or_else(|| common.topic_prefix.clone());
    config.partitions = common.topic_partitions;
    config.replication_factor = common.topic_replication;
    for pair in common
        .kafka_properties
        .split(',')
        .filter(|p| !p.trim().is_empty())
    {
        let (key, value) = pair.split_once('=').with_context(|| {
            format!("TASKMESH_KAFKA_PROPERTIES entry {pair:?} is not key=value")
        })?;
        let key = key.trim();
        if is_secret_property(key) {
            anyhow::bail!(
                "TASKMESH_KAFKA_PROPERTIES may not hold the secret {key:?} (it may come from a \
                 ConfigMap and is logged): set TASKMESH_KAFKA_SASL_PASSWORD or \
                 TASKMESH_KAFKA_SSL_KEY_PASSWORD (or their _FILE variants) instead"
            );
        }
        config.extra.push((key.to_owned(), value.trim().to_owned()));
    }
    let secrets = [
        (
            "sasl.password",
            secret(
                common.kafka_sasl_password.as_ref(),
                common.kafka_sasl_password_file.as_deref(),
                "TASKMESH_KAFKA_SASL_PASSWORD",
            )?,
        ),
        (
            "ssl.key.password",
            secret(
                common.kafka_ssl_key_password.as_ref(),
                common.kafka_ssl_key_password_file.as_deref(),
                "TASKMESH_KAFKA_SSL_KEY_PASSWORD",
            )?,
        ),
    ];
    for (key, value) in secrets {
        if let Some(value) = value {
            config.secrets.push((key.to_owned(), value));
        }
    }
    Ok(config)
}

/// Where the verifier's keys come from.
#[derive(Clone, Debug)]
pub(crate) enum KeySource {
    /// An HS256 secret from `TASKMESH_JWT_SECRET`.
    Secret,
    /// The fixed development secret (`dev` only).
    Development,
    /// RS256/EdDSA public keys from a PEM or JWKS file.
    PublicKeyFile(PathBuf),
    /// The keys of OpenID Connect issuers, discovered.
    Oidc(Vec<String>),
}

/// The per-user rate limit, if on.
fn rate_limit(common: &Common) -> Option<RateLimit> {
    let rate = NonZeroU32::new(common.rate_limit)?;
    Some(RateLimit::new(
        rate,
        NonZeroU32::new(common.rate_limit_burst).unwrap_or(rate),
    ))
}

/// The verifier: public keys when configured, else the secret, else (`dev` only) the
/// development secret; and where its keys came from.
///
/// # Errors
/// A key file that cannot be read or holds no usable key; outside `dev`, no key at all, or
/// a secret that is short or the public development one.
pub(crate) fn verifier(common: &Common, dev: bool) -> anyhow::Result<(Verifier, KeySource)> {
    let oidc = common
        .oidc_issuer
        .as_deref()
        .filter(|spec| !spec.trim().is_empty());
    let (verifier, keys) = if let Some(spec) = oidc {
        if common.jwt_public_keys.is_some() || common.jwt_secret.is_some() {
            anyhow::bail!(
                "TASKMESH_OIDC_ISSUER is set: unset TASKMESH_JWT_PUBLIC_KEYS and \
                 TASKMESH_JWT_SECRET (the issuers' keys are discovered)"
            );
        }
        if common
            .jwt_issuer
            .as_deref()
            .is_some_and(|issuer| !issuer.is_empty())
        {
            anyhow::bail!("TASKMESH_OIDC_ISSUER names the issuers: unset TASKMESH_JWT_ISSUER");
        }
        let issuers = oidc::parse_issuers(spec, &common.oidc_audience, &common.oidc_roles_claim)
            .map_err(|error| anyhow::anyhow!("TASKMESH_OIDC_ISSUER: {error}"))?;
        let names = issuers.iter().map(|i| i.issuer.clone()).collect();
        let cache = oidc::Oidc::new(issuers)
            .context("TASKMESH_OIDC_ISSUER")?
            .with_max_fresh(common.oidc_keys_max_age);
        (Verifier::from_oidc(Arc::new(cache)), KeySource::Oidc(names))
    } else if let Some(path) = &common.jwt_public_keys {
        let verifier = Verifier::from_public_keys_file(path)
            .with_context(|| format!("TASKMESH_JWT_PUBLIC_KEYS {}", path.display()))?;
        (verifier, KeySource::PublicKeyFile(path.clone()))
    } else if let Some(secret) = &common.jwt_secret {
        let bytes = secret.expose_secret().len();
        if !dev && secret.expose_secret() == DEV_SECRET {
            anyhow::bail!(
                "TASKMESH_JWT_SECRET is the public development secret: anyone could mint \
                 tokens. Set a random secret of at least {MIN_SECRET_BYTES} bytes (e.g. \
                 `openssl rand -base64 48`) or TASKMESH_JWT_PUBLIC_KEYS"
            );
        }
        if !dev && bytes < MIN_SECRET_BYTES {
            anyhow::bail!(
                "TASKMESH_JWT_SECRET has {bytes} bytes; it needs at least {MIN_SECRET_BYTES} \
                 (e.g. `openssl rand -base64 48`), or use TASKMESH_JWT_PUBLIC_KEYS"
            );
        }
        (Verifier::hs256(secret), KeySource::Secret)
    } else if dev {
        tracing::warn!(
            "TASKMESH_JWT_SECRET is unset: using the fixed, public DEVELOPMENT secret. \
             Anyone can mint tokens for this server. Never expose it beyond this machine."
        );
        (
            Verifier::hs256(&SecretString::from(DEV_SECRET)),
            KeySource::Development,
        )
    } else {
        anyhow::bail!(
            "no token keys: set TASKMESH_JWT_PUBLIC_KEYS (your identity provider's keys) or \
             TASKMESH_JWT_SECRET (at least {MIN_SECRET_BYTES} random bytes)"
        );
    };
    Ok((
        verifier
            .with_issuer(common.jwt_issuer.clone())
            .with_leeway(common.jwt_leeway)
            .with_rate_limit(rate_limit(common)),
        keys,
    ))
}

/// How the gateway's web app signs people in: with the identity provider when
/// `TASKMESH_WEB_OIDC_CLIENT_ID` is set; the development sign-in under the development
/// secret; else a pasted token.
///
/// # Errors
/// A client id without any identity provider to use it with, or for an issuer whose tokens
/// are not accepted.
pub(crate) fn web_sign_in(common: &Common, keys: &KeySource) -> anyhow::Result<WebSignIn> {
    let client_id = common
        .web_oidc_client_id
        .as_deref()
        .filter(|id| !id.is_empty());
    if let Some(client_id) = client_id {
        let KeySource::Oidc(issuers) = keys else {
            anyhow::bail!(
                "TASKMESH_WEB_OIDC_CLIENT_ID is set but TASKMESH_OIDC_ISSUER is not: the web \
                 app's tokens would be refused"
            );
        };
        let issuer = match common.web_oidc_issuer.as_deref().filter(|i| !i.is_empty()) {
            Some(issuer) if issuers.iter().any(|i| i == issuer) => issuer.to_owned(),
            Some(issuer) => anyhow::bail!(
                "TASKMESH_WEB_OIDC_ISSUER {issuer:?} is not one of TASKMESH_OIDC_ISSUER"
            ),
            None => issuers.first().cloned().unwrap_or_default(),
        };
        if !common
            .web_oidc_scopes
            .split_whitespace()
            .any(|s| s == "openid")
        {
            anyhow::bail!(
                "TASKMESH_WEB_OIDC_SCOPES {:?} lacks `openid`: the web app signs in with \
                 OpenID Connect and needs the ID token",
                common.web_oidc_scopes
            );
        }
        return Ok(WebSignIn::Oidc {
            issuer,
            client_id: client_id.to_owned(),
            scopes: common.web_oidc_scopes.clone(),
        });
    }
    Ok(match keys {
        KeySource::Development => {
            WebSignIn::Development(Arc::new(Signer::hs256(&SecretString::from(DEV_SECRET))))
        }
        _ => WebSignIn::Token,
    })
}

/// `url` with its password (in the user information or a `password` parameter) replaced by
/// `***`; a URL that does not parse is not shown.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Setting a password fails only for URLs that cannot have one.
                let _ = parsed.set_password(Some("***"));
            }
            if parsed
                .query_pairs()
                .any(|(key, _)| is_secret_parameter(&key))
            {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if is_secret_parameter(&key) {
                            "***".to_owned()
                        } else {
                            value.into_owned()
                        };
                        (key.into_owned(), value)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// Whether a URL parameter or property looks like it holds a secret (shown as `***`).
fn is_secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token", "credential", "pem"]
        .iter()
        .any(|word| key.contains(word))
}

/// The effective configuration in one line, every secret redacted (logged at start).
pub(crate) fn summary(
    common: &Common,
    kafka: Option<&KafkaConfig>,
    keys: Option<&KeySource>,
) -> String {
    let mut parts = vec![format!("database {}", redact_url(&common.database_url))];
    match kafka {
        Some(kafka) => {
            // Values of keys that look secret (a misspelt `sasl.pasword`, say) are not shown.
            let mut properties: Vec<String> = kafka
                .extra
                .iter()
                .map(|(key, value)| {
                    if is_secret_parameter(key) {
                        format!("{key}=***")
                    } else {
                        format!("{key}={value}")
                    }
                })
                .collect();
            properties.extend(kafka.secrets.iter().map(|(key, _)| format!("{key}=***")));
            parts.push(format!(
                "kafka {} (topic prefix {:?}, group prefix {:?}, properties [{}])",
                kafka.brokers,
                kafka.topic_prefix,
                kafka.group_prefix,
                properties.join(", ")
            ));
        }
        None => parts.push("kafka embedded".to_owned()),
    }
    let keys = match keys {
        None => return parts.join("; "),
        Some(KeySource::Secret) => "HS256 secret".to_owned(),
        Some(KeySource::Development) => "the DEVELOPMENT secret".to_owned(),
        Some(KeySource::PublicKeyFile(path)) => format!("public keys from {}", path.display()),
        Some(KeySource::Oidc(issuers)) => format!("OpenID Connect issuers {}", issuers.join(", ")),
    };
    let issuer = common
        .jwt_issuer
        .as_deref()
        .map(|i| format!(", issuer {i}"))
        .unwrap_or_default();
    parts.push(format!(
        "tokens: {keys}{issuer}, leeway {}; rate limit {}; tasks per user {}",
        humantime::format_duration(common.jwt_leeway),
        match common.rate_limit {
            0 => "off".to_owned(),
            rate => format!("{rate}/s per user, burst {}", common.rate_limit_burst),
        },
        match common.max_tasks_per_user {
            0 => "unlimited".to_owned(),
            max => max.to_string(),
        }
    ));
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::{is_secret_property, redact_url};

    #[test]
    fn urls_lose_their_password_and_secrets_are_told_apart() {
        assert_eq!(
            redact_url("postgres://taskmesh:hunter2@db:5432/taskmesh?sslmode=verify-full"),
            "postgres://taskmesh:***@db:5432/taskmesh?sslmode=verify-full"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/taskmesh"),
            "postgres://postgres@127.0.0.1:5432/taskmesh"
        );
        assert_eq!(redact_url("not a url hunter2"), "(not a URL)");
        assert_eq!(
            redact_url("postgres://u@db/taskmesh?password=hunter2&sslmode=require"),
            "postgres://u@db/taskmesh?password=***&sslmode=require"
        );
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
        ] {
            assert!(is_secret_property(key), "{key}");
        }
        for key in ["sasl.username", "security.protocol", "ssl.ca.location"] {
            assert!(!is_secret_property(key), "{key}");
        }
    }
}
