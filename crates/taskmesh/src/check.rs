//! `taskmesh check-config`: loads the configuration a component would run with and tries it
//! against the real endpoints, printing one line per check and stopping at the first failure
//! with a sentence that says what to fix. The Helm chart's migration Job runs it first, so a
//! bad value shows in one place before any pod crash-loops.

use anyhow::Context as _;
use sqlx::{ConnectOptions as _, Connection as _};
use taskmesh_platform::kafka::Topic;

use crate::{
    cli::CheckArgs,
    config::{self, KeySource},
};

/// A failed check: what failed, why, and what to fix (the process exits non-zero with it).
#[derive(Debug, thiserror::Error)]
#[error("{check}: {problem}. Fix: {fix}")]
struct CheckFailed {
    check: &'static str,
    problem: String,
    fix: String,
}

fn failed(check: &'static str, problem: impl ToString, fix: impl Into<String>) -> anyhow::Error {
    CheckFailed {
        check,
        problem: problem.to_string(),
        fix: fix.into(),
    }
    .into()
}

fn ok(check: &str, detail: &str) {
    println!("ok  {check}: {detail}");
}

/// Runs every check (see the module docs).
///
/// # Errors
/// The first check that failed, as "what: why. Fix: what to do".
pub(crate) async fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let brokers = common.kafka_brokers.clone().ok_or_else(|| {
        failed(
            "configuration",
            "KAFKA_BROKERS is unset",
            "set KAFKA_BROKERS to the bootstrap servers (host:port,...)",
        )
    })?;
    let kafka = config::kafka(common, brokers).map_err(|error| {
        failed(
            "configuration",
            format!("{error:#}"),
            "correct the named setting",
        )
    })?;
    ok(
        "configuration",
        &config::summary(common, Some(&kafka), None),
    );

    let (verifier, keys) = config::verifier(common, false).map_err(|error| {
        failed(
            "token keys",
            format!("{error:#}"),
            "set TASKMESH_OIDC_ISSUER to your identity provider, point TASKMESH_JWT_PUBLIC_KEYS at a readable PEM or JWKS file of RS256/EdDSA keys, or set a long TASKMESH_JWT_SECRET",
        )
    })?;
    let keys = match keys {
        KeySource::PublicKeyFile(path) => format!("public keys from {}", path.display()),
        KeySource::Secret | KeySource::Development => "an HS256 secret".to_owned(),
        KeySource::Oidc(_) => {
            let Some(oidc) = verifier.oidc() else {
                unreachable!("an OpenID Connect key source has an OpenID Connect verifier")
            };
            oidc.fetch_all().await.map_err(|error| {
                failed(
                    "token keys",
                    format!("{:#}", anyhow::Error::from(error)),
                    "check that TASKMESH_OIDC_ISSUER is the issuer exactly as the provider writes it and that this pod can reach it over HTTPS (a private CA goes in the system trust store or SSL_CERT_FILE)",
                )
            })?;
            oidc.issuers()
                .enumerate()
                .map(|(i, issuer)| format!("{} ({} keys)", issuer.issuer, oidc.key_count(i)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    ok("token keys", &keys);

    ok("PostgreSQL", &postgres(&common.database_url).await?);

    let mut topics = Vec::new();
    if !args.skip_topics {
        for topic in Topic::ALL {
            topics.push(kafka.topic(topic));
            topics.push(kafka.dead_letter_topic(topic));
        }
    }
    let report = kafka
        .check(topics)
        .await
        .map_err(|error| failed("Kafka", error.problem, error.fix))?;
    let security = kafka
        .extra
        .iter()
        .find(|(key, _)| key == "security.protocol")
        .map_or("PLAINTEXT", |(_, value)| value.as_str());
    ok(
        "Kafka",
        &format!(
            "{} answered ({} brokers, {security})",
            kafka.brokers, report.brokers
        ),
    );
    for (topic, partitions) in report.topics {
        match partitions {
            None => {
                return Err(failed(
                    "topics",
                    format!("{topic} does not exist"),
                    "run `taskmesh migrate` (it creates every topic), or create it with your Kafka tooling",
                ));
            }
            Some(found) if i32::try_from(found).ok() != Some(kafka.partitions) => {
                return Err(failed(
                    "topics",
                    format!(
                        "{topic} has {found} partitions, TASKMESH_TOPIC_PARTITIONS says {}",
                        kafka.partitions
                    ),
                    format!(
                        "set TASKMESH_TOPIC_PARTITIONS={found} (consumers read every partition there is; the setting is what `migrate` creates)"
                    ),
                ));
            }
            Some(found) => ok("topic", &format!("{topic} ({found} partitions)")),
        }
    }
    println!("configuration checked: everything answered");
    Ok(())
}

/// Connects to PostgreSQL as the services would; describes the server and the TLS in use.
async fn postgres(url: &str) -> anyhow::Result<String> {
    let options = taskmesh_platform::db::connect_options(url).map_err(|error| {
        failed(
            "PostgreSQL",
            format!("DATABASE_URL does not parse: {error}"),
            "write it as postgres://user:password@host:port/database?sslmode=verify-full&sslrootcert=/path/ca.crt",
        )
    })?;
    let redacted = config::redact_url(url);
    let mut conn = options.connect().await.map_err(|error| {
        let fix = match &error {
            sqlx::Error::Tls(_) => {
                "check sslrootcert (the CA that signed the server's certificate) and sslmode (verify-full also checks the host name)"
            }
            sqlx::Error::Database(e) if e.code().is_some_and(|c| c.starts_with("28")) => {
                "check the user and password in DATABASE_URL (and the server's pg_hba.conf)"
            }
            sqlx::Error::Database(e) if e.code().as_deref() == Some("3D000") => {
                "create the database, or run `taskmesh migrate`, which creates it"
            }
            sqlx::Error::Configuration(_) => {
                "correct DATABASE_URL's parameters (a file named by sslrootcert, sslcert or sslkey must be readable)"
            }
            _ => "check the host and port in DATABASE_URL and that the server is reachable from here",
        };
        failed(
            "PostgreSQL",
            format!("cannot connect to {redacted}: {}", taskmesh_platform::error_chain(&error)),
            fix,
        )
    })?;
    let (version, tls): (String, Option<String>) = sqlx::query_as(
        "SELECT current_setting('server_version'), \
         (SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl)",
    )
    .fetch_one(&mut conn)
    .await
    .context("PostgreSQL: the first query failed")?;
    conn.close().await.ok();
    let tls = tls.map_or_else(|| "without TLS".to_owned(), |v| format!("over {v}"));
    Ok(format!("{redacted}: PostgreSQL {version}, {tls}"))
}
