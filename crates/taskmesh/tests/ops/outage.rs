//! A broker that is away for 20 seconds and comes back: writes go on (into the outbox), the
//! consumers report themselves degraded, and once it is back every event is delivered, every
//! consumer applies each once, and health is SERVING again, without a restart.

use std::{net::SocketAddr, time::Duration};

use taskmesh_platform::{
    broker::{BrokerOptions, EmbeddedBroker},
    kafka::KafkaConfig,
};
use taskmesh_testkit::{Mesh, MeshOptions, eventually, proxy::Proxy};

use crate::helpers::{SERVING, create, created_entries, health};

#[tokio::test(flavor = "multi_thread")]
async fn consumers_and_relays_recover_from_a_broker_outage() {
    taskmesh_testkit::init_tracing();
    let (listener, proxy_addr) = Proxy::bind().await.expect("binds");
    let broker = EmbeddedBroker::start_with(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        "memory://tansu/",
        &BrokerOptions {
            advertised: Some(proxy_addr.to_string()),
            ..BrokerOptions::default()
        },
    )
    .await
    .expect("broker");
    let proxy = Proxy::start(listener, broker.bootstrap_servers().parse().expect("addr"));
    let kafka = KafkaConfig::local(proxy_addr.to_string());
    let mesh = Mesh::start_with(MeshOptions::default(), kafka, Some(broker), |_| {})
        .await
        .expect("mesh");
    let user = "outage";
    let mut names = Vec::new();
    for i in 0..3 {
        names.push(create(&mesh, user, &format!("before {i}")).await.name);
    }
    assert_eq!(
        created_entries(&mesh, user, 3, Duration::from_secs(30))
            .await
            .len(),
        3
    );
    let components = [
        ("task", mesh.task_addr),
        ("reminder", mesh.reminder_addr),
        ("audit", mesh.audit_addr),
    ];
    for (name, addr) in components {
        assert_eq!(
            health(addr, "").await,
            Some(SERVING),
            "{name} healthy first"
        );
    }

    proxy.down();
    for i in 0..3 {
        names.push(create(&mesh, user, &format!("during {i}")).await.name);
    }
    let degraded = eventually(Duration::from_secs(20), || async {
        (health(mesh.audit_addr, "").await != Some(SERVING)).then_some(())
    })
    .await;
    assert!(degraded.is_some(), "the audit consumers report the outage");
    assert_eq!(
        health(mesh.audit_addr, "readiness").await,
        Some(SERVING),
        "still ready: its RPCs work without Kafka"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    proxy.up();

    let mut created = created_entries(&mesh, user, 6, Duration::from_secs(90)).await;
    created.sort();
    names.sort();
    assert_eq!(
        created, names,
        "every creation audited once, none lost, none twice"
    );
    for (name, addr) in components {
        let healthy = eventually(Duration::from_secs(60), || async {
            (health(addr, "").await == Some(SERVING)).then_some(())
        })
        .await;
        assert!(healthy.is_some(), "{name} is SERVING again");
    }
    for (pool, consumer) in [
        (&mesh.reminder_pool, "taskmesh-reminder"),
        (&mesh.recurrence_pool, "taskmesh-recurrence"),
        (&mesh.audit_pool, "taskmesh-audit-task-events"),
    ] {
        let count = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM processed_events WHERE consumer = $1",
            )
            .bind(consumer)
            .fetch_one(pool)
            .await
            .expect("counts")
        };
        let applied = eventually(Duration::from_secs(30), || async {
            (count().await >= 6).then_some(())
        })
        .await;
        assert!(applied.is_some(), "{consumer} applied every event");
        assert_eq!(count().await, 6, "{consumer} applied each event once");
    }
}
