//! ListReminders and ListNotifications: their filter fields (the language is
//! [`taskmesh_platform::filter`]) and keyset pages (AIP-158); a page token
//! ([`taskmesh_platform::pages`]) used with another filter is `INVALID_ARGUMENT`.

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use taskmesh_platform::{
    changelog,
    filter::{self, Field, Kind},
    grpc::Violations,
    pages::{Binding, PageTokens},
};
use taskmesh_proto::{
    names::{TaskName, UuidName as _},
    reminder::v1 as pb,
};
use uuid::Uuid;

use crate::{
    error::ReminderError,
    model::{NOTIFICATION_COLUMNS, NotificationRow, REMINDER_COLUMNS, ReminderRow, state},
};

/// The fields a ListReminders filter may name (the language is
/// [`taskmesh_platform::filter`], AIP-160, the same in every List). An empty filter means
/// `state = SCHEDULED OR state = SNOOZED` (what is still to come).
pub(crate) const REMINDER_FIELDS: &[Field] = &[
    Field {
        name: "state",
        sql: "r.state",
        kind: Kind::Enum {
            prefix: "STATE_",
            values: &[
                ("SCHEDULED", state::SCHEDULED),
                ("FIRED", state::FIRED),
                ("SNOOZED", state::SNOOZED),
                ("DISMISSED", state::DISMISSED),
                ("CANCELLED", state::CANCELLED),
            ],
            ordered: false,
        },
    },
    Field {
        name: "task",
        sql: "r.task_id",
        kind: Kind::Name {
            parse: TaskName::parse_id,
            pattern: TaskName::PATTERN,
        },
    },
    Field {
        name: "fire_time",
        sql: "r.fire_at",
        kind: Kind::Timestamp { nullable: false },
    },
];

/// The fields a ListNotifications filter may name: `unread` (`true` or `false`).
pub(crate) const NOTIFICATION_FIELDS: &[Field] = &[Field {
    name: "unread",
    sql: "read_time",
    kind: Kind::Flag {
        when_true: "read_time IS NULL",
        when_false: "read_time IS NOT NULL",
    },
}];

/// Where a ListReminders page ends: the last reminder's sort key.
#[derive(Serialize, Deserialize)]
struct ReminderToken {
    /// fire_at, microseconds since the epoch.
    f: i64,
    t: Uuid,
    r: String,
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
    let filter = filter::compile(filter_text, REMINDER_FIELDS)
        .map_err(|e| v.add("filter", e.to_string()))
        .ok();
    let binding = Binding {
        list: "ListReminders",
        user,
        params: &[filter_text],
    };
    let after = tokens
        .resume::<ReminderToken>(&binding, page_token)
        .map_err(|e| v.add("page_token", e.to_string()))
        .ok()
        .flatten();
    let (Some(filter), true) = (filter, v.is_empty()) else {
        return Err(v.into());
    };
    let mut query = QueryBuilder::<Postgres>::new(format!(
        "SELECT {REMINDER_COLUMNS} FROM reminders r JOIN tasks t ON t.id = r.task_id WHERE r.user_id = "
    ));
    query.push_bind(user).push(" AND ");
    if filter_text.trim().is_empty() {
        query
            .push("r.state = ANY(")
            .push_bind(vec![state::SCHEDULED, state::SNOOZED])
            .push(")");
    } else {
        filter.push(&mut query);
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
            next = tokens.issue(
                &binding,
                ReminderToken {
                    f: last.fire_at.timestamp_micros(),
                    t: last.task_id,
                    r: last.reminder_id.clone(),
                },
            );
        }
    }
    Ok((rows.iter().map(ReminderRow::to_proto).collect(), next))
}

/// Where a ListNotifications page ends: the last notification's sort key.
#[derive(Serialize, Deserialize)]
struct NotificationToken {
    /// create_time, microseconds since the epoch.
    c: i64,
    i: Uuid,
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
    let filter = filter::compile(filter_text, NOTIFICATION_FIELDS)
        .map_err(|e| v.add("filter", e.to_string()))
        .ok();
    let binding = Binding {
        list: "ListNotifications",
        user,
        params: &[filter_text],
    };
    let after = tokens
        .resume::<NotificationToken>(&binding, page_token)
        .map_err(|e| v.add("page_token", e.to_string()))
        .ok()
        .flatten();
    let (Some(filter), true) = (filter, v.is_empty()) else {
        return Err(v.into());
    };
    let mut query = QueryBuilder::<Postgres>::new(format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE user_id = "
    ));
    query.push_bind(user).push(" AND ");
    filter.push(&mut query);
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
            next = tokens.issue(
                &binding,
                NotificationToken {
                    c: last.create_time.timestamp_micros(),
                    i: last.id,
                },
            );
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

    fn sql(filter: &str, fields: &[Field]) -> (String, Vec<filter::Bind>) {
        filter::compile(filter, fields)
            .unwrap_or_else(|e| panic!("{filter:?}: {e}"))
            .numbered(1)
    }

    #[test]
    fn reminder_filters_use_the_common_language() {
        let task = Uuid::now_v7();
        let (text, binds) = sql(
            &format!(
                "state = FIRED AND task = \"tasks/{task}\" AND fire_time < \"2026-11-23T09:00:00Z\""
            ),
            REMINDER_FIELDS,
        );
        assert_eq!(text, "(r.state = $1 AND r.task_id = $2 AND r.fire_at < $3)");
        assert_eq!(binds[0], filter::Bind::Small(state::FIRED));
        assert_eq!(binds[1], filter::Bind::Uuid(task));
        let (text, _) = sql("state = FIRED OR -state = STATE_CANCELLED", REMINDER_FIELDS);
        assert_eq!(text, "(r.state = $1 OR NOT (r.state = $2))");
        assert_eq!(
            sql("unread = true", NOTIFICATION_FIELDS),
            ("(read_time IS NULL)".to_owned(), Vec::new())
        );
        assert_eq!(
            sql("-unread = false", NOTIFICATION_FIELDS).0,
            "NOT ((read_time IS NOT NULL))"
        );
    }

    #[test]
    fn reminder_filters_refuse_what_they_do_not_know() {
        for (bad, message) in [
            (
                "state = LATE",
                "state must be one of SCHEDULED, FIRED, SNOOZED, DISMISSED, CANCELLED",
            ),
            ("task = tasks/x", "task must be a name tasks/{uuid}"),
            (
                "fire_time < tomorrow",
                "fire_time must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z",
            ),
            (
                "title = \"x\"",
                "unknown field \"title\"; use state, task, fire_time",
            ),
            (
                "state",
                "expected an operator after \"state\" at end of filter",
            ),
            (
                "unread = yes",
                "unknown field \"unread\"; use state, task, fire_time",
            ),
        ] {
            let error = filter::compile(bad, REMINDER_FIELDS).expect_err(bad);
            assert_eq!(error.to_string(), message, "{bad}");
        }
        assert!(filter::compile("unread = maybe", NOTIFICATION_FIELDS).is_err());
    }
}
