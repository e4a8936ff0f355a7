//! Series bookkeeping (`series`, `occurrences`) and what a series change sends: commands to
//! TaskService and `series.ended` events, through the outbox, in the transaction of the
//! change. Every command's `request_id` is derived from what it is about (a UUIDv5 of e.g.
//! the series and the task it follows), so doing the same thing again sends the same id and
//! TaskService applies it once (AIP-155).
//!
//! This module holds the rows; the rest is in:
//! - `bookkeeping`: reading and writing `series` and `occurrences`.
//! - `outbox`: the derived request ids, and the commands and `series.ended` events sent
//!   through the outbox.

mod bookkeeping;
mod outbox;

use chrono::{DateTime, NaiveTime, Utc};
use taskmesh_domain::{recurrence::EndReason, timestamp};
use taskmesh_proto::{
    events::v1::series_ended::Reason,
    names::{SeriesName, TaskName},
    recurrence::v1::{self as pb, series::EndReason as PbEndReason},
};
use uuid::Uuid;

pub(crate) use bookkeeping::{
    Successor, add_skipped, due_moved, find, get, lock, mark_deleted, restart, settle, tasks_from,
    track,
};
pub(crate) use outbox::Outbox;

/// Why a series ended, as stored (`SeriesEnded.Reason` numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The rule ran out.
    Rule(EndReason),
    /// StopSeries, or the rule was removed from the current task.
    Stopped,
    /// The current task was deleted.
    Deleted,
}

impl Ending {
    fn reason(self) -> Reason {
        match self {
            Ending::Rule(EndReason::CountReached) => Reason::CountReached,
            Ending::Rule(EndReason::UntilPassed) => Reason::UntilPassed,
            Ending::Stopped => Reason::Stopped,
            Ending::Deleted => Reason::Deleted,
        }
    }
}

/// A `series` row.
#[derive(Clone, Debug)]
pub(crate) struct SeriesRow {
    pub(crate) id: Uuid,
    pub(crate) current_task: Uuid,
    pub(crate) occurrence_count: i64,
    pub(crate) end_time: Option<DateTime<Utc>>,
    pub(crate) end_reason: Option<i16>,
}

impl SeriesRow {
    /// Whether the series ended.
    pub(crate) fn ended(&self) -> bool {
        self.end_time.is_some()
    }

    /// The `Series` resource.
    pub(crate) fn to_proto(&self) -> pb::Series {
        let end_reason = match self.end_reason.map(i32::from) {
            Some(r) if r == Reason::CountReached as i32 => PbEndReason::CountReached,
            Some(r) if r == Reason::UntilPassed as i32 => PbEndReason::UntilPassed,
            Some(r) if r == Reason::Stopped as i32 => PbEndReason::Stopped,
            Some(r) if r == Reason::Deleted as i32 => PbEndReason::Deleted,
            _ => PbEndReason::Unspecified,
        };
        pb::Series {
            name: SeriesName(self.id).to_string(),
            current_task: if self.ended() {
                String::new()
            } else {
                TaskName(self.current_task).to_string()
            },
            occurrence_count: self.occurrence_count,
            ended: self.ended(),
            end_time: self.end_time.map(timestamp),
            end_reason: end_reason as i32,
            last_task: TaskName(self.current_task).to_string(),
        }
    }
}

/// An `occurrences` row: one task of a series.
#[derive(Clone, Debug)]
pub(crate) struct OccurrenceRow {
    pub(crate) position: i64,
    pub(crate) used: i64,
    /// The series' time of day when it differs from the task's due.
    pub(crate) wall_time: Option<NaiveTime>,
    /// Skips not yet known to be on the task.
    pub(crate) skipped: Vec<DateTime<Utc>>,
    pub(crate) successor_request: Option<String>,
}

/// `sqlx::query_as!(SeriesRow, …)` of a statement that yields a series row: `$head`, the
/// columns of [`SeriesRow`] and `$tail` are joined into one SQL text (sqlx's `+` of
/// literals), checked at compile time like any `query_as!`, with the column list written once.
macro_rules! query_series {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::series::SeriesRow,
            $head + "id, current_task, occurrence_count, end_time, end_reason" + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use query_series;

/// `sqlx::query_as!(OccurrenceRow, …)` of a statement that yields an occurrence row: `$head`,
/// the columns of [`OccurrenceRow`] and `$tail` are joined into one SQL text (sqlx's `+` of
/// literals), checked at compile time like any `query_as!`, with the column list written once.
macro_rules! query_occurrence {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::series::OccurrenceRow,
            $head + "position, used, wall_time, skipped, successor_request" + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use query_occurrence;
