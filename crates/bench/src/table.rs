//! The one table every scenario adds its rows to: each figure beside the limit it is held
//! against, their ratio, and the CPU the figure cost.

use crate::load::{CpuUse, Outcome};

struct Row {
    scenario: String,
    figure: String,
    ours: f64,
    limit_name: String,
    limit: f64,
    cpu: CpuUse,
}

/// Rows, then printed in one go.
#[derive(Default)]
pub(crate) struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    /// A figure beside its limit (the ratio is ours / limit).
    pub(crate) fn ratio_row(
        &mut self,
        scenario: &str,
        figure: &str,
        ours: f64,
        limit_name: &str,
        limit: f64,
        cpu: CpuUse,
    ) {
        self.rows.push(Row {
            scenario: scenario.to_owned(),
            figure: figure.to_owned(),
            ours,
            limit_name: limit_name.to_owned(),
            limit,
            cpu,
        });
    }

    /// A note printed under the table.
    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Notes a run's failed calls, if any, under the table.
    pub(crate) fn note_errors(&mut self, what: &str, outcome: &Outcome) {
        if outcome.errors > 0 {
            self.notes.push(format!(
                "{what} @ {} rps: {} of {} calls failed",
                outcome.rate, outcome.errors, outcome.sent
            ));
        }
    }

    /// Prints the table and its notes to stdout.
    pub(crate) fn print(&self) {
        println!(
            "{:<12} {:<34} {:>10}  {:<34} {:>10} {:>7}  {:<16}",
            "scenario", "figure", "taskmesh", "limit", "limit val", "ratio", "CPU cores"
        );
        for row in &self.rows {
            let ratio = if row.limit > 0.0 {
                format!("{:.2}", row.ours / row.limit)
            } else {
                "-".to_owned()
            };
            println!(
                "{:<12} {:<34} {:>10.2}  {:<34} {:>10.2} {:>7}  {:<16}",
                row.scenario, row.figure, row.ours, row.limit_name, row.limit, ratio, row.cpu
            );
        }
        println!(
            "CPU cores = CPU seconds per wall second while the taskmesh figure was measured: \
             this process (load generator and the in-process mesh) + all PostgreSQL processes."
        );
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}
