//! `taskmesh`: the one binary of the mesh.
//!
//! - `taskmesh dev`: every component in one process (PostgreSQL from `DATABASE_URL`, Kafka from
//!   `KAFKA_BROKERS` or an embedded broker).
//! - `taskmesh serve <component>`: one component, as deployed.
//! - `taskmesh migrate`: database migrations and Kafka topics.
//! - `taskmesh token`: mints a JWT for scripting.
//!
//! # Layout
//! - `cli`: arguments and environment (clap).
//! - `config`: validated configuration (Kafka secrets, token keys) and its redacted summary.
//! - `check`: `taskmesh check-config`.
//! - `run`: starting components.

mod check;
mod cli;
mod config;
mod run;
mod web;

use clap::Parser;
use taskmesh_platform::runtime::Failure;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let telemetry = runtime.block_on(async {
        taskmesh_platform::telemetry::init(
            cli.log_format.into(),
            cli.otlp_endpoint.as_deref(),
            &cli.service_name(),
        )
    });
    let result = runtime.block_on(run::run(cli));
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A component's failure was logged, with its cause, when it happened.
        Err(error) if error.downcast_ref::<Failure>().is_some() => std::process::ExitCode::FAILURE,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // Spans are flushed inside the runtime (the exporter is async).
    runtime.block_on(async move { drop(telemetry) });
    // Whatever is still running (a Kafka client closing against a broker that is gone, say)
    // must not keep a failed process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}
