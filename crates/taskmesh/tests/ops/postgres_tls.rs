//! PostgreSQL over TLS: the local server speaks TLS with Debian's self-signed certificate
//! (`CN=localhost`), so `sslmode=verify-ca` (and `verify-full` for host `localhost`) with it as
//! `sslrootcert` is a real verified connection; any other CA is refused at start.

use std::time::Duration;

use taskmesh_platform::db;
use taskmesh_testkit::{Mesh, MeshOptions, pgcluster::PgCluster, tls::Pki};

use crate::helpers::{create, created_entries};

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

#[tokio::test(flavor = "multi_thread")]
async fn the_mesh_works_over_postgres_tls_verified_against_the_server_ca() {
    let (kafka, broker) = plain_broker().await;
    let mesh = Mesh::start_with(MeshOptions::default(), kafka, Some(broker), |config| {
        config.database_url = config.database_url.replace(
            "sslmode=disable",
            &format!("sslmode=verify-ca&sslrootcert={SNAKEOIL}"),
        );
    })
    .await
    .expect("the mesh starts over verified TLS");
    let task = create(&mesh, "pg-tls", "over TLS to PostgreSQL").await;
    let created = created_entries(&mesh, "pg-tls", 1, Duration::from_secs(30)).await;
    assert_eq!(created, vec![task.name]);

    // Every pool's connections are encrypted.
    for pool in [&mesh.pool, &mesh.reminder_pool, &mesh.audit_pool] {
        let (ssl, version): (bool, Option<String>) =
            sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(pool)
                .await
                .expect("reads pg_stat_ssl");
        assert!(ssl, "a pool connection is not TLS");
        assert!(version.is_some_and(|v| v.starts_with("TLS")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_checks_the_host_name() {
    let db = taskmesh_testkit::TestDb::create().await.expect("db");
    let url = |host: &str| -> String {
        db.url_with(&format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"))
            .replace("127.0.0.1", host)
    };
    taskmesh_platform::db::connect(&url("localhost"), "task", 1)
        .await
        .expect("localhost is the certificate's name");
    let error = taskmesh_platform::db::connect(&url("127.0.0.1"), "task", 1)
        .await
        .expect_err("127.0.0.1 is not the certificate's name");
    let text = taskmesh_platform::error_chain(&error);
    assert!(text.contains("certificate"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_server_signed_by_the_given_ca_is_accepted() {
    // A server of the test's own, whose certificate a CA made here signed (no system trust
    // store knows it).
    let pki = Pki::new().expect("certificates");
    let cluster = PgCluster::create(Some(&pki)).expect("a cluster");
    let url = |query: &str| {
        format!(
            "{}?{query}",
            cluster.url("taskmesh").replace("127.0.0.1", "localhost")
        )
    };
    let trusted = url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        pki.ca.display()
    ));
    db::ensure_database(&trusted)
        .await
        .expect("verify-full with the right CA connects");

    let (kafka, broker) = plain_broker().await;
    let mesh = Mesh::start_with(MeshOptions::default(), kafka, Some(broker), |config| {
        config.database_url = trusted.clone();
    })
    .await
    .expect("the mesh starts against the server");
    let task = create(&mesh, "own-ca", "verified").await;
    assert_eq!(
        created_entries(&mesh, "own-ca", 1, Duration::from_secs(30)).await,
        vec![task.name]
    );
    drop(mesh);

    let other = Pki::new().expect("another CA");
    for (case, query) in [
        (
            "another CA",
            format!("sslmode=verify-ca&sslrootcert={}", other.ca.display()),
        ),
        ("no CA at all", "sslmode=verify-ca".to_owned()),
    ] {
        let (kafka, broker) = plain_broker().await;
        let started = Mesh::start_with(MeshOptions::default(), kafka, Some(broker), |config| {
            config.database_url = url(&query);
        })
        .await;
        let error = started.expect_err(case);
        let text = format!("{error:#}");
        assert!(
            text.contains("cannot connect to PostgreSQL") && text.contains("certificate"),
            "{case}: the error says what failed: {text}"
        );
    }
}

/// A plain broker and its settings, for tests about PostgreSQL.
async fn plain_broker() -> (
    taskmesh_platform::kafka::KafkaConfig,
    taskmesh_platform::broker::EmbeddedBroker,
) {
    let broker = taskmesh_platform::broker::EmbeddedBroker::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        "memory://tansu/",
    )
    .await
    .expect("broker");
    (
        taskmesh_platform::kafka::KafkaConfig::local(broker.bootstrap_servers()),
        broker,
    )
}
