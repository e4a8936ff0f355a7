//! ListReminders and ListNotifications: their AIP-160 filter subsets and keyset pages
//! (AIP-158). A page token is base64url JSON of the last row's sort key and the filter it was
//! made for; a token used with another filter is `INVALID_ARGUMENT`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use taskmesh_platform::{changelog, grpc::Violations, pages::PageTokens};
use taskmesh_proto::reminder::v1 as pb;
use uuid::Uuid;

use crate::{
    error::ReminderError,
    model::{
        NOTIFICATION_COLUMNS, NotificationRow, REMINDER_COLUMNS, ReminderRow, TASKS, state,
        state_of_name,
    },
};

/// A ListReminders filter: a conjunction (`AND`) of `state = <STATE>`, `task = "tasks/{id}"`
/// and `fire_time <op> "<RFC 3339>"` with `<`, `<=`, `>`, `>=`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ReminderFilter {
    states: Vec<i16>,
    task: Option<Uuid>,
    fire_time: Vec<(&'static str, DateTime<Utc>)>,
}

/// Parses a ListReminders filter; a problem is a `filter` field violation.
pub(crate) fn reminder_filter(text: &str) -> Result<ReminderFilter, String> {
    let mut filter = ReminderFilter::default();
    let text = text.trim();
    if text.is_empty() {
        filter.states = vec![state::SCHEDULED, state::SNOOZED];
        return Ok(filter);
    }
    for term in text.split(" AND ") {
        let term = term.trim();
        let (field, op, value) = ["<=", ">=", "<", ">", "="]
            .iter()
            .find_map(|op| term.split_once(op).map(|(f, v)| (f.trim(), *op, v.trim())))
            .ok_or_else(|| format!("{term:?} is not `field op value`"))?;
        let quoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
        match (field, op) {
            ("state", "=") => {
                let state = state_of_name(value).ok_or_else(|| {
                    format!("unknown state {value:?}; use SCHEDULED, FIRED, SNOOZED, DISMISSED or CANCELLED")
                })?;
                if !filter.states.is_empty() {
                    return Err("state may appear once".into());
                }
                filter.states.push(state);
            }
            ("task", "=") => {
                let id = quoted
                    .and_then(|v| v.strip_prefix(TASKS))
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .ok_or("task must be a quoted \"tasks/{uuid}\"")?;
                filter.task = Some(id);
            }
            ("fire_time", "<" | "<=" | ">" | ">=") => {
                let time = quoted
                    .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                    .ok_or("fire_time needs a quoted RFC 3339 time")?;
                filter.fire_time.push((op, time.with_timezone(&Utc)));
            }
            _ => {
                return Err(format!(
                    "unsupported term {term:?}; use state = <STATE>, task = \"tasks/{{id}}\", fire_time < \"<RFC 3339>\" joined by AND"
                ));
            }
        }
    }
    Ok(filter)
}

#[derive(Serialize, Deserialize)]
struct ReminderToken {
    /// fire_at, microseconds since the epoch.
    f: i64,
    t: Uuid,
    r: String,
    /// The filter the token was made for.
    q: String,
}

/// Longest List filter, in characters.
const MAX_FILTER_CHARS: usize = 2000;

/// A violation of `filter` when it is longer than [`MAX_FILTER_CHARS`].
fn check_filter_length(filter_text: &str, v: &mut Violations) {
    if filter_text.chars().count() > MAX_FILTER_CHARS {
        v.add(
            "filter",
            format!("must be at most {MAX_FILTER_CHARS} characters"),
        );
    }
}

/// One page of `user`'s reminders, soonest first.
pub(crate) async fn reminders(
    pool: &PgPool,
    tokens: &PageTokens,
    user: &str,
    filter_text: &str,
    page_size: i64,
    page_token: &str,
) -> Result<(Vec<pb::ScheduledReminder>, String), ReminderError> {
    let mut v = Violations::new();
    check_filter_length(filter_text, &mut v);
    let filter = reminder_filter(filter_text).unwrap_or_else(|problem| {
        v.add("filter", problem);
        ReminderFilter::default()
    });
    let after = if page_token.is_empty() {
        None
    } else {
        match tokens.decode::<ReminderToken>(page_token) {
            Some(token) if token.q == filter_text => Some(token),
            _ => {
                v.add("page_token", "is not a token of this query");
                None
            }
        }
    };
    if !v.is_empty() {
        return Err(v.into());
    }
    let mut query = QueryBuilder::<Postgres>::new(format!(
        "SELECT {REMINDER_COLUMNS} FROM reminders r JOIN tasks t ON t.id = r.task_id WHERE r.user_id = "
    ));
    query.push_bind(user);
    if !filter.states.is_empty() {
        query
            .push(" AND r.state = ANY(")
            .push_bind(filter.states.clone())
            .push(")");
    }
    if let Some(task) = filter.task {
        query.push(" AND r.task_id = ").push_bind(task);
    }
    for (op, time) in &filter.fire_time {
        query.push(format!(" AND r.fire_at {op} ")).push_bind(*time);
    }
    if let Some(token) = &after {
        let fire_at = DateTime::from_timestamp_micros(token.f).unwrap_or_default();
        query
            .push(" AND (r.fire_at, r.task_id, r.reminder_id) > (")
            .push_bind(fire_at)
            .push(", ")
            .push_bind(token.t)
            .push(", ")
            .push_bind(token.r.clone())
            .push(")");
    }
    query
        .push(" ORDER BY r.fire_at, r.task_id, r.reminder_id LIMIT ")
        .push_bind(page_size + 1);
    let mut rows: Vec<ReminderRow> = query.build_query_as().fetch_all(pool).await?;
    let mut next = String::new();
    if rows.len() as i64 > page_size {
        rows.truncate(usize::try_from(page_size).unwrap_or(0));
        if let Some(last) = rows.last() {
            next = tokens.encode(&ReminderToken {
                f: last.fire_at.timestamp_micros(),
                t: last.task_id,
                r: last.reminder_id.clone(),
                q: filter_text.to_owned(),
            });
        }
    }
    Ok((rows.iter().map(ReminderRow::to_proto).collect(), next))
}

#[derive(Serialize, Deserialize)]
struct NotificationToken {
    /// create_time, microseconds since the epoch.
    c: i64,
    i: Uuid,
    q: String,
}

/// One page of `user`'s notifications, newest first, with the notification change-log
/// position of the snapshot it was read in. Filter: empty, `unread = true` or
/// `unread = false`.
pub(crate) async fn notifications(
    pool: &PgPool,
    tokens: &PageTokens,
    user: &str,
    filter_text: &str,
    page_size: i64,
    page_token: &str,
) -> Result<(Vec<pb::Notification>, String, i64), ReminderError> {
    let mut v = Violations::new();
    check_filter_length(filter_text, &mut v);
    let unread = match filter_text
        .split_whitespace()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => None,
        ["unread", "=", "true"] => Some(true),
        ["unread", "=", "false"] => Some(false),
        _ => {
            v.add(
                "filter",
                "must be empty, `unread = true` or `unread = false`",
            );
            None
        }
    };
    let after = if page_token.is_empty() {
        None
    } else {
        match tokens.decode::<NotificationToken>(page_token) {
            Some(token) if token.q == filter_text => Some(token),
            _ => {
                v.add("page_token", "is not a token of this query");
                None
            }
        }
    };
    if !v.is_empty() {
        return Err(v.into());
    }
    let mut query = QueryBuilder::<Postgres>::new(format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = "
    ));
    query.push_bind(user);
    match unread {
        Some(true) => {
            query.push(" AND read_time IS NULL");
        }
        Some(false) => {
            query.push(" AND read_time IS NOT NULL");
        }
        None => {}
    }
    if let Some(token) = &after {
        let time = DateTime::from_timestamp_micros(token.c).unwrap_or_default();
        query
            .push(" AND (create_time, id) < (")
            .push_bind(time)
            .push(", ")
            .push_bind(token.i)
            .push(")");
    }
    query
        .push(" ORDER BY create_time DESC, id DESC LIMIT ")
        .push_bind(page_size + 1);
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut rows: Vec<NotificationRow> = query.build_query_as().fetch_all(&mut *tx).await?;
    let latest = changelog::latest(&mut tx, user).await?;
    tx.commit().await?;
    let mut next = String::new();
    if rows.len() as i64 > page_size {
        rows.truncate(usize::try_from(page_size).unwrap_or(0));
        if let Some(last) = rows.last() {
            next = tokens.encode(&NotificationToken {
                c: last.create_time.timestamp_micros(),
                i: last.id,
                q: filter_text.to_owned(),
            });
        }
    }
    Ok((
        rows.iter().map(NotificationRow::to_proto).collect(),
        next,
        latest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_reminder_filter_subset() {
        let task = Uuid::now_v7();
        let filter = reminder_filter(&format!(
            "state = FIRED AND task = \"tasks/{task}\" AND fire_time < \"2026-11-23T09:00:00Z\""
        ))
        .unwrap();
        assert_eq!(filter.states, vec![state::FIRED]);
        assert_eq!(filter.task, Some(task));
        assert_eq!(filter.fire_time.len(), 1);
        assert_eq!(filter.fire_time[0].0, "<");
        assert_eq!(
            reminder_filter("").unwrap().states,
            vec![state::SCHEDULED, state::SNOOZED]
        );
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        for bad in [
            "state = LATE",
            "task = tasks/x",
            "fire_time < tomorrow",
            "title = \"x\"",
            "state",
            "state = FIRED AND state = SCHEDULED",
            "state = FIRED OR state = SCHEDULED",
        ] {
            assert!(reminder_filter(bad).is_err(), "{bad}");
        }
    }
}
