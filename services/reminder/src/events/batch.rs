//! One batch of task events against the database: reads the tasks and reminders it touches
//! (locked, in id order), applies each change by the `rules`, and writes back what changed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{ReminderRow, TaskChange, TaskRow, rules::apply};
use crate::scheduler::WAKE_CHANNEL;

/// Applies `changes` in order: reads the state they touch, applies each to it here (the
/// rules of the module docs), and writes the rows that changed.
pub(super) async fn apply_all(
    tx: &mut PgConnection,
    changes: &[TaskChange],
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<Uuid> = changes.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Row locks in id order: concurrent writers of the same tasks cannot deadlock.
    let mut tasks: HashMap<Uuid, TaskRow> = sqlx::query!(
        "SELECT id, user_id, title, version, is_open, deleted, due_at, due_label, overdue_at, \
         overdue_notice_for, update_time FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &ids
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| {
        (
            r.id,
            TaskRow {
                user: r.user_id,
                title: r.title,
                version: r.version,
                open: r.is_open,
                deleted: r.deleted,
                due_at: r.due_at,
                due_label: r.due_label,
                overdue_at: r.overdue_at,
                overdue_notice_for: r.overdue_notice_for,
                update_time: r.update_time,
                dirty: false,
            },
        )
    })
    .collect();
    let mut reminders: HashMap<Uuid, HashMap<String, ReminderRow>> = HashMap::new();
    for r in sqlx::query!(
        "SELECT task_id, reminder_id, user_id, absolute_time, relative_seconds, trigger_time, \
         fire_at, state, fired_time, lateness_us FROM reminders WHERE task_id = ANY($1) \
         ORDER BY task_id, reminder_id FOR UPDATE",
        &ids
    )
    .fetch_all(&mut *tx)
    .await?
    {
        reminders.entry(r.task_id).or_default().insert(
            r.reminder_id,
            ReminderRow {
                user: r.user_id,
                absolute: r.absolute_time,
                relative: r.relative_seconds,
                trigger_time: r.trigger_time,
                fire_at: r.fire_at,
                state: r.state,
                fired_time: r.fired_time,
                lateness_us: r.lateness_us,
                dirty: false,
            },
        );
    }
    // Every reminder row there was, to tell which ones go.
    let before: Vec<(Uuid, String)> = reminders
        .iter()
        .flat_map(|(task, rows)| rows.keys().map(move |r| (*task, r.clone())))
        .collect();

    let mut earliest: Option<DateTime<Utc>> = None;
    for change in changes {
        let stored = tasks.get(&change.id);
        let scheduled = apply(stored, reminders.entry(change.id).or_default(), change);
        if let Some(row) = scheduled.row {
            tasks.insert(change.id, row);
        }
        if let Some(at) = scheduled.wake {
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }

    write_tasks(tx, &tasks).await?;
    let gone: Vec<&(Uuid, String)> = before
        .iter()
        .filter(|(task, id)| {
            !reminders
                .get(task)
                .is_some_and(|rows| rows.contains_key(id))
        })
        .collect();
    let mut gone = gone;
    gone.sort_unstable();
    if !gone.is_empty() {
        let tasks: Vec<Uuid> = gone.iter().map(|g| g.0).collect();
        let ids: Vec<&str> = gone.iter().map(|g| g.1.as_str()).collect();
        sqlx::query!(
            "DELETE FROM reminders r USING unnest($1::uuid[], $2::text[]) AS g(task_id, reminder_id) \
             WHERE r.task_id = g.task_id AND r.reminder_id = g.reminder_id",
            &tasks,
            &ids as &[&str]
        )
        .execute(&mut *tx)
        .await?;
    }
    write_reminders(tx, &reminders).await?;
    if let Some(at) = earliest {
        // Wake the schedulers (they may sleep past this time); delivered on commit.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WAKE_CHANNEL)
            .bind(at.to_rfc3339())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Writes the task rows this batch changed, in one statement (the scheduler's
/// `overdue_notice_for` is left as stored).
async fn write_tasks(
    tx: &mut PgConnection,
    tasks: &HashMap<Uuid, TaskRow>,
) -> Result<(), sqlx::Error> {
    // In key order, as every writer of these rows takes them: no lock-order deadlocks.
    let mut dirty: Vec<(&Uuid, &TaskRow)> = tasks.iter().filter(|(_, t)| t.dirty).collect();
    dirty.sort_unstable_by_key(|(id, _)| **id);
    if dirty.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = dirty.iter().map(|(id, _)| **id).collect();
    let users: Vec<&str> = dirty.iter().map(|(_, t)| t.user.as_str()).collect();
    let titles: Vec<&str> = dirty.iter().map(|(_, t)| t.title.as_str()).collect();
    let versions: Vec<i64> = dirty.iter().map(|(_, t)| t.version).collect();
    let open: Vec<bool> = dirty.iter().map(|(_, t)| t.open).collect();
    let deleted: Vec<bool> = dirty.iter().map(|(_, t)| t.deleted).collect();
    let due_at: Vec<Option<DateTime<Utc>>> = dirty.iter().map(|(_, t)| t.due_at).collect();
    let due_labels: Vec<&str> = dirty.iter().map(|(_, t)| t.due_label.as_str()).collect();
    let overdue_at: Vec<Option<DateTime<Utc>>> = dirty.iter().map(|(_, t)| t.overdue_at).collect();
    let update_times: Vec<DateTime<Utc>> = dirty.iter().map(|(_, t)| t.update_time).collect();
    sqlx::query!(
        "INSERT INTO tasks (id, user_id, title, version, is_open, deleted, due_at, due_label, \
         overdue_at, update_time) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], \
         $4::bigint[], $5::boolean[], $6::boolean[], $7::timestamptz[], $8::text[], \
         $9::timestamptz[], $10::timestamptz[]) \
         ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, \
         version = GREATEST(tasks.version, EXCLUDED.version), \
         is_open = EXCLUDED.is_open, deleted = EXCLUDED.deleted, due_at = EXCLUDED.due_at, \
         due_label = EXCLUDED.due_label, overdue_at = EXCLUDED.overdue_at, \
         update_time = EXCLUDED.update_time",
        &ids,
        &users as &[&str],
        &titles as &[&str],
        &versions,
        &open,
        &deleted,
        &due_at as &[Option<DateTime<Utc>>],
        &due_labels as &[&str],
        &overdue_at as &[Option<DateTime<Utc>>],
        &update_times,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes the reminder rows this batch changed, in one statement.
async fn write_reminders(
    tx: &mut PgConnection,
    reminders: &HashMap<Uuid, HashMap<String, ReminderRow>>,
) -> Result<(), sqlx::Error> {
    let mut dirty: Vec<(&Uuid, &String, &ReminderRow)> = reminders
        .iter()
        .flat_map(|(task, rows)| rows.iter().map(move |(id, r)| (task, id, r)))
        .filter(|(_, _, r)| r.dirty)
        .collect();
    dirty.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    if dirty.is_empty() {
        return Ok(());
    }
    let tasks: Vec<Uuid> = dirty.iter().map(|(t, _, _)| **t).collect();
    let ids: Vec<&str> = dirty.iter().map(|(_, id, _)| id.as_str()).collect();
    let users: Vec<&str> = dirty.iter().map(|(_, _, r)| r.user.as_str()).collect();
    let absolute: Vec<Option<DateTime<Utc>>> = dirty.iter().map(|(_, _, r)| r.absolute).collect();
    let relative: Vec<Option<i64>> = dirty.iter().map(|(_, _, r)| r.relative).collect();
    let trigger_times: Vec<DateTime<Utc>> = dirty.iter().map(|(_, _, r)| r.trigger_time).collect();
    let fire_at: Vec<DateTime<Utc>> = dirty.iter().map(|(_, _, r)| r.fire_at).collect();
    let states: Vec<i16> = dirty.iter().map(|(_, _, r)| r.state).collect();
    let fired_times: Vec<Option<DateTime<Utc>>> =
        dirty.iter().map(|(_, _, r)| r.fired_time).collect();
    let lateness: Vec<Option<i64>> = dirty.iter().map(|(_, _, r)| r.lateness_us).collect();
    sqlx::query!(
        "INSERT INTO reminders (task_id, reminder_id, user_id, absolute_time, relative_seconds, \
         trigger_time, fire_at, state, fired_time, lateness_us) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
         $5::bigint[], $6::timestamptz[], $7::timestamptz[], $8::smallint[], \
         $9::timestamptz[], $10::bigint[]) \
         ON CONFLICT (task_id, reminder_id) DO UPDATE SET absolute_time = EXCLUDED.absolute_time, \
         relative_seconds = EXCLUDED.relative_seconds, trigger_time = EXCLUDED.trigger_time, \
         fire_at = EXCLUDED.fire_at, state = EXCLUDED.state, fired_time = EXCLUDED.fired_time, \
         lateness_us = EXCLUDED.lateness_us",
        &tasks,
        &ids as &[&str],
        &users as &[&str],
        &absolute as &[Option<DateTime<Utc>>],
        &relative as &[Option<i64>],
        &trigger_times,
        &fire_at,
        &states,
        &fired_times as &[Option<DateTime<Utc>>],
        &lateness as &[Option<i64>],
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
