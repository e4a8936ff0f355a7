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
//! - `run`: starting components.

mod cli;
mod run;
mod web;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let _telemetry =
        taskmesh_platform::telemetry::init(cli.log_format.into(), cli.otlp_endpoint.as_deref());
    match run::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
