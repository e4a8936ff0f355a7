//! Pipeline throughput: a backlog of outbox events (CreateTask with TaskService's relay held,
//! so each call leaves one `task.created` in the outbox) drained through the relay, the
//! broker and the consumers of `task-events` (ReminderService, RecurrenceService,
//! AuditService), in events per second end to end, beside the broker's own produce-and-
//! consume rate for records of the same size.
//!
//! "End to end" is from starting the relay to the moment every consumer has recorded every
//! event (`processed_events` in its schema, committed with its effect).

use std::time::{Duration, Instant};

use sqlx::PgPool;
use taskmesh_platform::runtime::TaskContext;
use taskmesh_proto::task::v1::Task;
use taskmesh_testkit::MeshOptions;
use tokio_util::sync::CancellationToken;

use crate::{
    Scale, live,
    load::{CpuClock, CpuUse},
    rpc,
    table::Table,
};

async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<u64> {
    let count: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
    Ok(u64::try_from(count)?)
}

/// Options of the pipeline scenario.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Outbox events in the backlog (`--quick`: 500).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) events: usize,
}

/// Runs the scenario with a backlog of `events` and its broker baseline; adds their rows to
/// `table`.
pub(crate) async fn run(scale: &Scale, events: usize, table: &mut Table) -> anyhow::Result<()> {
    let events = events as u64;
    let mesh = crate::mesh::start(MeshOptions {
        relay: false,
        ..MeshOptions::default()
    })
    .await?;

    // The backlog: every event waits in the outbox.
    let written = Instant::now();
    let channel = mesh.gateway_channel().await?;
    let tokens = rpc::bearer_tokens("pipeline-", 1_000)?;
    rpc::write_tasks(&channel, &tokens, usize::try_from(events)?, |i| Task {
        title: format!("pipeline {i}"),
        ..Default::default()
    })
    .await?;
    let backlog = count(&mesh.pool, "SELECT count(*) FROM outbox").await?;
    table.note(format!(
        "pipeline: backlog of {backlog} outbox events written in {:.1} s ({} CreateTask calls in flight)",
        written.elapsed().as_secs_f64(),
        rpc::WRITERS
    ));

    // Drain it.
    let cpu = CpuClock::start();
    let started = Instant::now();
    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        taskmesh_task::relay(mesh.pool.clone(), &mesh.kafka)?
            .run(TaskContext::detached("outbox relay", stop.clone())),
    );
    let consumers = [
        ("reminder", &mesh.reminder_pool),
        ("recurrence", &mesh.recurrence_pool),
        ("audit", &mesh.audit_pool),
    ];
    let mut finished: Vec<(&str, Duration)> = Vec::new();
    // When the relay had published (and deleted) every outbox row: the consumers cannot be
    // done sooner.
    let mut relayed: Option<Duration> = None;
    let deadline = started + Duration::from_secs(600);
    while finished.len() < consumers.len() {
        if relayed.is_none()
            && !sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM outbox)")
                .fetch_one(&mesh.pool)
                .await?
        {
            relayed = Some(started.elapsed());
        }
        for (name, pool) in consumers {
            if finished.iter().any(|(done, _)| *done == name) {
                continue;
            }
            let done = count(pool, "SELECT count(*) FROM processed_events").await?;
            if done >= backlog {
                finished.push((name, started.elapsed()));
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the consumers did not process {backlog} events in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu.stop();
    let all = started.elapsed();
    stop.cancel();
    let _ = relay.await;

    let limit = live::broker_throughput(&mesh.kafka, backlog, scale.message_bytes).await?;
    table.ratio_row(
        "pipeline",
        &format!("{backlog} events, all 3 consumers, events/s"),
        backlog as f64 / all.as_secs_f64(),
        "broker produce+consume, records/s",
        limit,
        cpu,
    );
    for (name, at) in &finished {
        table.ratio_row(
            "pipeline",
            &format!("{name} consumer alone, events/s"),
            backlog as f64 / at.as_secs_f64(),
            "broker produce+consume, records/s",
            limit,
            CpuUse::default(),
        );
    }
    if let Some(at) = relayed {
        table.ratio_row(
            "pipeline",
            "relay alone (published), events/s",
            backlog as f64 / at.as_secs_f64(),
            "broker produce+consume, records/s",
            limit,
            CpuUse::default(),
        );
    }
    table.note(format!(
        "pipeline: relay done after {}; each consumer done after {}",
        relayed.map_or("-".to_owned(), |at| format!("{:.1} s", at.as_secs_f64())),
        finished
            .iter()
            .map(|(name, at)| format!("{name} {:.1} s", at.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}
