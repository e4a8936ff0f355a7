//! `taskmesh-bench`: measures taskmesh on this machine against a real PostgreSQL (a fresh,
//! uniquely named database, dropped afterwards) and prints one table per scenario. Figures,
//! not assertions: targets live in the issues and the notes, never in timed tests.
//!
//! ```text
//! cargo run --release -p taskmesh-bench -- reminders [--total 100000] [--burst 1000]
//! ```

mod reminders;

use clap::{Parser, Subcommand};

/// Benchmarks of the taskmesh mesh.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Reminder firing lateness: many reminders scheduled, a burst due within one second.
    Reminders(reminders::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Reminders(args) => reminders::run(args).await,
    }
}
