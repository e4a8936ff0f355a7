//! `taskmesh check-config`, the real binary, against good and bad settings: each bad one is
//! named, with what to fix, and the exit status is non-zero.

use std::{net::SocketAddr, time::Duration};

use taskmesh_platform::{broker::EmbeddedBroker, kafka::KafkaConfig};
use taskmesh_testkit::{TestDb, pgcluster::PgCluster, tls::Pki};

use crate::helpers::{TlsBroker, run, taskmesh};

const SECRET: &str = "a-test-secret-of-at-least-thirty-two-bytes";

/// `taskmesh check-config` against `db` and `brokers`, plus `envs`.
fn check(db: &TestDb, brokers: &str, envs: &[(&str, &str)]) -> std::process::Command {
    let mut command = taskmesh();
    command
        .arg("check-config")
        .env("DATABASE_URL", db.url())
        .env("KAFKA_BROKERS", brokers)
        .env("TASKMESH_JWT_SECRET", SECRET)
        .envs(envs.iter().copied());
    command
}

const LIMIT: Duration = Duration::from_secs(60);

/// A fresh database and an in-memory broker with the topics made; its bootstrap servers.
async fn database_and_broker_with_topics() -> (TestDb, EmbeddedBroker, String) {
    let db = TestDb::create().await.expect("db");
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)), "memory://tansu/")
        .await
        .expect("broker");
    let brokers = broker.bootstrap_servers();
    KafkaConfig::local(brokers.clone())
        .create_topics()
        .await
        .expect("topics");
    (db, broker, brokers)
}

#[tokio::test(flavor = "multi_thread")]
async fn good_settings_pass_and_each_bad_one_is_named() {
    let (db, _broker, brokers) = database_and_broker_with_topics().await;

    let ok = run(check(&db, &brokers, &[]), LIMIT).await;
    assert!(ok.success, "good settings pass:\n{}", ok.text);
    for line in [
        "ok  configuration",
        "ok  token keys",
        "ok  PostgreSQL",
        "ok  Kafka",
        "ok  topic",
    ] {
        assert!(ok.text.contains(line), "{line:?} missing:\n{}", ok.text);
    }
    assert!(
        !ok.text.contains(SECRET),
        "the secret is never printed:\n{}",
        ok.text
    );

    // Each bad setting (environment), and what the output must say.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case<'_>; 5] = [
        (
            &[("TASKMESH_TOPIC_PREFIX", "nowhere.")],
            &["nowhere.", " does not exist", "taskmesh migrate"],
        ),
        (
            &[("TASKMESH_JWT_PUBLIC_KEYS", "/nonexistent/keys.pem")],
            &["token keys", "TASKMESH_JWT_PUBLIC_KEYS"],
        ),
        (
            &[("TASKMESH_JWT_SECRET", "short")],
            &["token keys", "at least 32"],
        ),
        (
            &[("TASKMESH_KAFKA_PROPERTIES", "sasl.password=hunter2")],
            &["may not hold the secret", "TASKMESH_KAFKA_SASL_PASSWORD"],
        ),
        (
            &[("TASKMESH_KAFKA_PROPERTIES", "no.such.property=1")],
            &["Kafka", "TASKMESH_KAFKA_PROPERTIES"],
        ),
    ];
    for (envs, expected) in cases {
        let bad = run(check(&db, &brokers, envs), LIMIT).await;
        assert!(!bad.success, "{envs:?} must fail:\n{}", bad.text);
        for text in expected {
            assert!(
                bad.text.contains(text),
                "{envs:?}: {text:?} missing:\n{}",
                bad.text
            );
        }
        assert!(
            !bad.text.contains("hunter2"),
            "a secret was printed:\n{}",
            bad.text
        );
    }

    // PostgreSQL whose certificate another CA signed (a server of the test's own: the
    // shared one's certificate is in the system trust store).
    let pki = Pki::new().expect("certificates");
    let other = Pki::new().expect("another CA");
    let cluster = PgCluster::create(Some(&pki)).expect("a cluster");
    let mut wrong_ca = check(&db, &brokers, &[]);
    wrong_ca.env(
        "DATABASE_URL",
        format!(
            "{}?sslmode=verify-ca&sslrootcert={}",
            cluster.url("postgres"),
            other.ca.display()
        ),
    );
    let bad = run(wrong_ca, LIMIT).await;
    assert!(!bad.success, "a wrong CA fails:\n{}", bad.text);
    assert!(
        bad.text.contains("PostgreSQL") && bad.text.contains("sslrootcert"),
        "{}",
        bad.text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_tls_and_sasl_problems_are_named() {
    let db = TestDb::create().await.expect("db");
    let pki = Pki::new().expect("certificates");
    let tls = TlsBroker::start(&pki, false, Some(("taskmesh", "right-password"))).await;
    let mut kafka = tls.config(&pki);
    kafka.extra.extend([
        ("security.protocol".into(), "SASL_SSL".into()),
        ("sasl.mechanisms".into(), "SCRAM-SHA-512".into()),
        ("sasl.username".into(), "taskmesh".into()),
    ]);
    kafka.secrets = vec![("sasl.password".into(), "right-password".into())];
    kafka.create_topics().await.expect("topics");
    let properties = |ca: &std::path::Path| {
        format!(
            "security.protocol=SASL_SSL,sasl.mechanisms=SCRAM-SHA-512,sasl.username=taskmesh,\
             ssl.ca.location={},broker.address.family=v4",
            ca.display()
        )
    };
    let password_file = std::env::temp_dir().join(format!("taskmesh-pw-{}", uuid::Uuid::new_v4()));
    let file = password_file.display().to_string();
    // check-config with SASL_SSL, trusting `ca`, the password read from the file.
    let sasl_check = |ca: &std::path::Path| {
        check(
            &db,
            &tls.brokers,
            &[
                ("TASKMESH_KAFKA_PROPERTIES", &properties(ca)),
                ("TASKMESH_KAFKA_SASL_PASSWORD_FILE", &file),
            ],
        )
    };

    // The password from a mounted file (a Kubernetes Secret), trailing newline and all.
    std::fs::write(&password_file, "right-password\n").expect("file");
    let ok = run(sasl_check(&pki.ca), LIMIT).await;
    assert!(
        ok.success,
        "SASL_SSL with the right password passes:\n{}",
        ok.text
    );
    assert!(ok.text.contains("SASL_SSL"), "{}", ok.text);
    assert!(ok.text.contains("sasl.password=***"), "{}", ok.text);

    std::fs::write(&password_file, "wrong-password\n").expect("file");
    let bad = run(sasl_check(&pki.ca), LIMIT).await;
    assert!(!bad.success, "a wrong password fails:\n{}", bad.text);
    assert!(
        bad.text.contains("TASKMESH_KAFKA_SASL_PASSWORD"),
        "{}",
        bad.text
    );
    assert!(!bad.text.contains("wrong-password"), "{}", bad.text);

    let other = Pki::new().expect("another CA");
    let bad = run(sasl_check(&other.ca), LIMIT).await;
    assert!(!bad.success, "an unknown CA fails:\n{}", bad.text);
    assert!(bad.text.contains("ssl.ca.location"), "{}", bad.text);
    let _ = std::fs::remove_file(&password_file);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identity_provider_is_fetched_and_a_wrong_or_absent_one_is_named() {
    let test = "an_identity_provider_is_fetched_and_a_wrong_or_absent_one_is_named";
    let Some(idp) = taskmesh_testkit::idp::IdentityProvider::start(test, &[])
        .await
        .expect("identity provider")
    else {
        return;
    };
    let (db, _broker, brokers) = database_and_broker_with_topics().await;
    // As the chart sets it: the issuer, and an empty TASKMESH_JWT_ISSUER.
    let with_issuer = |issuer: &str| {
        let mut command = check(
            &db,
            &brokers,
            &[
                ("TASKMESH_OIDC_ISSUER", issuer),
                ("TASKMESH_JWT_ISSUER", ""),
            ],
        );
        command.env_remove("TASKMESH_JWT_SECRET");
        command
    };

    let ok = run(with_issuer(&idp.issuer), LIMIT).await;
    assert!(ok.success, "a reachable provider passes:\n{}", ok.text);
    let line = format!("ok  token keys: {} (1 keys)", idp.issuer);
    assert!(ok.text.contains(&line), "{line:?} missing:\n{}", ok.text);

    // Not the issuer its metadata names (a trailing slash): Discovery §4.3.
    let wrong = run(with_issuer(&format!("{}/", idp.issuer)), LIMIT).await;
    assert!(!wrong.success, "a wrong issuer fails:\n{}", wrong.text);
    assert!(
        wrong.text.contains("token keys") && wrong.text.contains("not the configured"),
        "{}",
        wrong.text
    );

    // The provider down: named, with the status it answered.
    idp.set_down(true).await.expect("down");
    let down = run(with_issuer(&idp.issuer), LIMIT).await;
    assert!(
        !down.success,
        "an unreachable provider fails:\n{}",
        down.text
    );
    assert!(
        down.text.contains("token keys") && down.text.contains("503"),
        "{}",
        down.text
    );
    idp.stop().await;
}
