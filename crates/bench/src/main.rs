//! `taskmesh-bench`: measures taskmesh on this machine against its physical limits, side by
//! side in the same run (a bare tonic server, pgbench), and prints one table. It starts what
//! it measures itself (a fresh, uniquely named PostgreSQL database, dropped afterwards, and
//! the in-memory Kafka-compatible broker). Figures, not assertions: targets live in the
//! issues and the notes, never in timed tests.
//!
//! ```text
//! cargo run --release -p taskmesh-bench                 # every scenario, full scale
//! cargo run -p taskmesh-bench -- --quick                # every scenario, small (CI)
//! cargo run --release -p taskmesh-bench -- create-task  # one scenario
//! cargo run --release -p taskmesh-bench -- reminders [--total 100000] [--burst 1000]
//! cargo run --release -p taskmesh-bench -- streams      # 10,000 then 50,000 idle streams
//! cargo run --release -p taskmesh-bench -- idle         # the CPU of a mesh nobody calls
//! cargo run --release -p taskmesh-bench -- --broker-process pipeline  # broker apart
//! ```

mod idle;
mod live;
mod load;
mod mesh;
mod pipeline;
mod reminders;
mod rpc;
mod search;
mod statements;
mod streams;
mod table;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// Benchmarks of the taskmesh mesh.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Every scenario at small scale, seconds in all (CI runs this so the suite cannot rot).
    #[arg(long, global = true)]
    quick: bool,

    /// The broker in a process of its own, so the table tells the mesh's CPU from the
    /// development broker's (`+ broker`).
    #[arg(long, global = true)]
    broker_process: bool,

    /// One scenario; none runs all of them.
    #[command(subcommand)]
    scenario: Option<Scenario>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// CreateTask latency at fixed rates and its highest rate with p99 <= 10 ms, beside a
    /// bare tonic server and pgbench.
    CreateTask,
    /// Commit-to-stream latency of changes on owners' grpc-web streams, beside the broker's
    /// own produce-to-consume latency.
    LiveUpdate,
    /// A backlog of outbox events drained through the relay, the broker and the consumers,
    /// beside the broker's own produce-and-consume rate.
    Pipeline(pipeline::Args),
    /// ListTasks with a full-text query and a filter over 1,000,000 tasks of 1,000 users.
    Search,
    /// Reminder firing lateness: many reminders scheduled, a burst due within one second,
    /// beside bare Tokio timers.
    Reminders(reminders::Args),
    /// The CPU of a mesh nobody calls, beside a bare tonic server.
    Idle,
    /// Idle live streams on one gateway (its own process): memory per stream and fan-out,
    /// beside a bare tonic server holding as many Health/Watch streams.
    Streams,
    /// The gateway alone in a process (started by `streams`; not for people).
    #[command(hide = true)]
    GatewayProcess(streams::GatewayProcess),
    /// A bare tonic Health server alone in a process (started by `streams`; not for people).
    #[command(hide = true)]
    HealthProcess,
    /// The embedded broker alone in a process (`--broker-process`; not for people).
    #[command(hide = true)]
    BrokerProcess,
}

/// How big and long the runs are.
#[derive(Debug)]
pub(crate) struct Scale {
    /// Fixed arrival rates (requests per second) latency is reported at.
    pub(crate) rates: Vec<f64>,
    /// Length of each fixed-rate run.
    pub(crate) fixed: Duration,
    /// First and largest rate of the max-throughput ladder.
    pub(crate) ladder_start: f64,
    pub(crate) ladder_max: f64,
    /// Length of each ladder step.
    pub(crate) step: Duration,
    /// Users with an open live stream, and the rate of changes spread over them (per second).
    pub(crate) live_users: usize,
    pub(crate) live_rate: f64,
    /// Size of a broker baseline record: about a TaskCreated event's.
    pub(crate) message_bytes: usize,
    /// Tasks and users of the search scenario, and its request rate (per second).
    pub(crate) search_tasks: usize,
    pub(crate) search_users: usize,
    pub(crate) search_rate: f64,
    /// Outbox events of the pipeline scenario's backlog.
    pub(crate) pipeline_events: usize,
    /// Idle streams held at each level of the streams scenario (cumulative).
    pub(crate) stream_levels: Vec<usize>,
    /// How long the streams sit idle while the gateway's CPU is read.
    pub(crate) idle: Duration,
}

impl Scale {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rates: vec![20.0, 50.0],
                fixed: Duration::from_secs(1),
                ladder_start: 50.0,
                ladder_max: 120.0,
                step: Duration::from_millis(500),
                live_users: 5,
                live_rate: 50.0,
                message_bytes: 300,
                search_tasks: 10_000,
                search_users: 100,
                search_rate: 20.0,
                pipeline_events: 500,
                stream_levels: vec![100, 500],
                idle: Duration::from_secs(1),
            }
        } else {
            Self {
                rates: vec![200.0, 1_000.0],
                fixed: Duration::from_secs(10),
                ladder_start: 100.0,
                ladder_max: 200_000.0,
                step: Duration::from_secs(5),
                live_users: 100,
                live_rate: 1_000.0,
                message_bytes: 300,
                search_tasks: 1_000_000,
                search_users: 1_000,
                search_rate: 200.0,
                pipeline_events: 200_000,
                stream_levels: vec![10_000, 50_000],
                // One heartbeat period (15 s) and a little.
                idle: Duration::from_secs(16),
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    statements::install();
    if cli.broker_process {
        mesh::use_broker_process();
    }
    let scale = Scale::new(cli.quick);
    let reminder_args = |args: reminders::Args| {
        if cli.quick {
            reminders::Args {
                total: 2_000,
                burst: 100,
                users: 100,
            }
        } else {
            args
        }
    };
    let mut table = table::Table::default();
    match cli.scenario {
        Some(Scenario::GatewayProcess(args)) => return streams::gateway_process(args).await,
        Some(Scenario::HealthProcess) => return streams::health_process().await,
        Some(Scenario::BrokerProcess) => return mesh::broker_process().await,
        Some(Scenario::Reminders(args)) => reminders::run(reminder_args(args), &mut table).await?,
        Some(Scenario::CreateTask) => rpc::run(&scale, &mut table).await?,
        Some(Scenario::LiveUpdate) => live::run(&scale, &mut table).await?,
        Some(Scenario::Pipeline(args)) => {
            let events = if cli.quick {
                scale.pipeline_events
            } else {
                args.events
            };
            pipeline::run(&scale, events, &mut table).await?;
        }
        Some(Scenario::Search) => search::run(&scale, &mut table).await?,
        Some(Scenario::Streams) => streams::run(&scale, &mut table).await?,
        Some(Scenario::Idle) => idle::run(&scale, &mut table).await?,
        None => {
            idle::run(&scale, &mut table).await?;
            rpc::run(&scale, &mut table).await?;
            live::run(&scale, &mut table).await?;
            pipeline::run(&scale, scale.pipeline_events, &mut table).await?;
            streams::run(&scale, &mut table).await?;
            search::run(&scale, &mut table).await?;
            let defaults = reminders::Args {
                total: 100_000,
                burst: 1_000,
                users: 1_000,
            };
            reminders::run(reminder_args(defaults), &mut table).await?;
        }
    }
    table.print();
    Ok(())
}
