//! Kafka over TLS, mutual TLS and SASL/SCRAM: a TLS terminator with a certificate made in
//! the test sits in front of the embedded broker, which advertises the terminator's address,
//! so every client of the mesh talks TLS to a real endpoint.

use std::time::Duration;

use secrecy::SecretString;
use taskmesh_platform::{
    cloudevents::CloudEvent,
    kafka::{KafkaConfig, Topic},
};
use taskmesh_testkit::{EventReader, Mesh, MeshOptions, publish, tls::Pki};

use crate::helpers::{TlsBroker, create, created_entries};

#[tokio::test(flavor = "multi_thread")]
async fn the_mesh_works_over_kafka_tls() {
    let pki = Pki::new().expect("certificates");
    let tls = TlsBroker::start(&pki, false, None).await;
    let kafka = tls.config(&pki);
    let mesh = Mesh::start_with(MeshOptions::default(), kafka.clone(), None, |_| {})
        .await
        .expect("the mesh starts over TLS");

    // CreateTask → outbox relay → task-events (TLS) → AuditService's consumer (TLS).
    let task = create(&mesh, "tls-user", "over TLS").await;
    let created = created_entries(&mesh, "tls-user", 1, Duration::from_secs(30)).await;
    assert_eq!(
        created,
        vec![task.name.clone()],
        "the consumer got the event over TLS"
    );

    // And the event itself, read back over TLS.
    let reader = EventReader::new(&kafka, Topic::TaskEvents)
        .await
        .expect("reader");
    let events = reader
        .collect(10, Duration::from_secs(3))
        .await
        .expect("events");
    assert!(
        events.iter().any(|e| e.subject == task.name),
        "task-events holds the creation: {events:?}"
    );

    // A client that does not trust the CA gets nowhere.
    let mut untrusting = kafka.clone();
    untrusting.extra.retain(|(key, _)| key != "ssl.ca.location");
    let error = untrusting
        .check(vec![])
        .await
        .expect_err("an unknown CA is refused");
    assert!(
        error.fix.contains("ssl.ca.location"),
        "the check names the CA setting: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new().expect("certificates");
    let tls = TlsBroker::start(&pki, true, None).await;
    let mut kafka = tls.config(&pki);
    let without = kafka.clone();
    kafka.extra.extend([
        (
            "ssl.certificate.location".into(),
            pki.client_cert.display().to_string(),
        ),
        (
            "ssl.key.location".into(),
            pki.client_key.display().to_string(),
        ),
    ]);
    kafka.create_topics().await.expect("topics over mTLS");
    round_trip(&kafka).await;

    let error = without
        .check(vec![])
        .await
        .expect_err("no client certificate, no connection");
    assert!(
        error.problem.contains("Kafka"),
        "the check says it could not talk to Kafka: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_scram_over_tls_with_the_password_from_a_secret() {
    let pki = Pki::new().expect("certificates");
    let tls = TlsBroker::start(&pki, false, Some(("taskmesh", "s3cret-passw0rd"))).await;
    let mut kafka = tls.config(&pki);
    kafka.extra.extend([
        ("security.protocol".into(), "SASL_SSL".into()),
        ("sasl.mechanisms".into(), "SCRAM-SHA-512".into()),
        ("sasl.username".into(), "taskmesh".into()),
    ]);
    let mut wrong = kafka.clone();
    kafka.secrets = vec![(
        "sasl.password".into(),
        SecretString::from("s3cret-passw0rd"),
    )];
    wrong.secrets = vec![("sasl.password".into(), SecretString::from("guess"))];

    kafka.create_topics().await.expect("topics over SASL_SSL");
    round_trip(&kafka).await;

    let error = wrong
        .check(vec![])
        .await
        .expect_err("a wrong password is refused");
    assert!(
        error.fix.contains("TASKMESH_KAFKA_SASL_PASSWORD"),
        "the check names the password setting: {error}"
    );
}

/// Publishes an event with `kafka`'s settings and reads it back with them.
async fn round_trip(kafka: &KafkaConfig) {
    let event = CloudEvent {
        id: uuid::Uuid::now_v7(),
        source: "/taskmesh/test".into(),
        event_type: "dev.taskmesh.test.v1".into(),
        time: chrono::Utc::now(),
        subject: "tasks/x".into(),
        data_schema: "taskmesh.events.v1.Test".into(),
        key: "someone".into(),
        data: vec![1, 2, 3],
        traceparent: None,
    };
    publish(kafka, Topic::TaskEvents, &event)
        .await
        .expect("published");
    let reader = EventReader::new(kafka, Topic::TaskEvents)
        .await
        .expect("reader");
    let events = reader
        .collect(10, Duration::from_secs(3))
        .await
        .expect("events");
    assert!(
        events.iter().any(|e| e.id == event.id),
        "the event came back: {events:?}"
    );
}
