//! The List RPCs' queries: a task's history (oldest first), the caller's activity (newest
//! first), and the admin query across users with its AIP-160 filter subset. Pages are keyset
//! pages (AIP-158) whose tokens name what they were made for; a token used for something else
//! is `INVALID_ARGUMENT`.

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use taskmesh_platform::{
    filter::{Compiled, Field, Kind},
    pages::{Binding, PageTokens},
};
use uuid::Uuid;

use crate::entries::{ENTRY_COLUMNS, EntryRecord, EntryRow, query_entries};

/// Why a List request cannot be answered: the field at fault and what is wrong.
pub(crate) type Invalid = (&'static str, String);

/// One page of entries and the token of the next (empty on the last page).
pub(crate) type Page = (Vec<EntryRow>, String);

/// What a List call asks of its page: how many entries, from where (its `page_token`, empty
/// for the first page), for whom, and the service's token signer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Paging<'a> {
    pub(crate) tokens: &'a PageTokens,
    pub(crate) size: i64,
    pub(crate) token: &'a str,
    /// The caller (JWT `sub`), whom a page token is bound to.
    pub(crate) user: &'a str,
}

impl<'a> Paging<'a> {
    /// What this call's tokens are bound to: the List and its parameters.
    fn binding(&self, list: &'static str, params: &'a [&'a str]) -> Binding<'a> {
        Binding {
            list,
            user: self.user,
            params,
        }
    }
}

/// The resume position in `paging`'s token for `binding`'s call.
fn resume<T: DeserializeOwned>(
    paging: Paging<'_>,
    binding: &Binding<'_>,
) -> Result<Option<T>, Invalid> {
    paging
        .tokens
        .resume(binding, paging.token)
        .map_err(|e| ("page_token", e.to_string()))
}

/// A page from `rows` fetched with one row more than `size`: that row's presence means a
/// next page, whose token resumes `binding`'s call at `position_of` the page's last row.
fn paged<T: Serialize>(
    mut rows: Vec<EntryRow>,
    paging: Paging<'_>,
    binding: &Binding<'_>,
    position_of: impl Fn(&EntryRow) -> T,
) -> Page {
    let more = usize::try_from(paging.size).is_ok_and(|size| rows.len() > size);
    if more {
        rows.pop();
    }
    let token = match rows.last() {
        Some(last) if more => paging.tokens.issue(binding, position_of(last)),
        _ => String::new(),
    };
    (rows, token)
}

/// `user`'s entries about `task` (`tasks/{id}`) and its sub-resources (its reminders), in
/// event-time order (ties by entry id).
pub(crate) async fn history(
    conn: &mut PgConnection,
    user: &str,
    task: &str,
    paging: Paging<'_>,
) -> Result<Result<Page, Invalid>, sqlx::Error> {
    let params = [task];
    let binding = paging.binding("ListTaskHistory", &params);
    // The last entry shown: its event time and id.
    let after = match resume::<(DateTime<Utc>, Uuid)>(paging, &binding) {
        Ok(after) => after,
        Err(invalid) => return Ok(Err(invalid)),
    };
    // `task` is a validated `tasks/{uuid}`: no LIKE wildcard in it.
    let rows = query_entries!(
        "SELECT ",
        " FROM entries WHERE user_id = $1 \
         AND (resource = $2 OR resource LIKE $2 || '/%') \
         AND ($3::timestamptz IS NULL OR (event_time, id) > ($3, $4)) \
         ORDER BY event_time, id LIMIT $5",
        user,
        task,
        after.map(|(time, _)| time),
        after.map_or(Uuid::nil(), |(_, id)| id),
        paging.size + 1
    )
    .fetch_all(&mut *conn)
    .await?;
    let rows = rows.into_iter().map(EntryRow::from).collect();
    Ok(Ok(paged(rows, paging, &binding, |last| {
        (last.content.event_time, last.content.id)
    })))
}

/// Whether `user`'s log mentions `task` at all.
pub(crate) async fn knows_task(
    conn: &mut PgConnection,
    user: &str,
    task: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM entries WHERE user_id = $1
           AND (resource = $2 OR resource LIKE $2 || '/%')) AS "exists!""#,
        user,
        task
    )
    .fetch_one(&mut *conn)
    .await
}

/// `user`'s entries, newest first.
pub(crate) async fn activity(
    conn: &mut PgConnection,
    user: &str,
    paging: Paging<'_>,
) -> Result<Result<Page, Invalid>, sqlx::Error> {
    let binding = paging.binding("ListActivity", &[]);
    // The last chain position shown.
    let before = match resume::<i64>(paging, &binding) {
        Ok(before) => before.unwrap_or(i64::MAX),
        Err(invalid) => return Ok(Err(invalid)),
    };
    let rows = query_entries!(
        "SELECT ",
        " FROM entries WHERE user_id = $1 AND chain_position < $2 \
         ORDER BY chain_position DESC LIMIT $3",
        user,
        before,
        paging.size + 1
    )
    .fetch_all(&mut *conn)
    .await?;
    let rows = rows.into_iter().map(EntryRow::from).collect();
    Ok(Ok(paged(rows, paging, &binding, |last| {
        last.content.chain_position
    })))
}

/// Longest text value a filter compares, in characters.
const MAX_TEXT_CHARS: usize = 1024;

/// The fields a ListAuditEntries filter may name (the language is
/// [`taskmesh_platform::filter`], AIP-160, the same in every List).
pub(crate) const FIELDS: &[Field] = &[
    Field {
        name: "user",
        sql: "user_id",
        kind: Kind::Text {
            max_chars: MAX_TEXT_CHARS,
        },
    },
    Field {
        name: "resource",
        sql: "resource",
        kind: Kind::Text {
            max_chars: MAX_TEXT_CHARS,
        },
    },
    Field {
        name: "event_type",
        sql: "event_type",
        kind: Kind::Text {
            max_chars: MAX_TEXT_CHARS,
        },
    },
    Field {
        name: "event_time",
        sql: "event_time",
        kind: Kind::Timestamp { nullable: false },
    },
];

/// Entries across users matching `filter` (its text `text`), by event time (`desc` for
/// newest first), ties by entry id.
pub(crate) async fn query(
    conn: &mut PgConnection,
    text: &str,
    filter: &Compiled,
    desc: bool,
    paging: Paging<'_>,
) -> Result<Result<Page, Invalid>, sqlx::Error> {
    let params = [text, if desc { "desc" } else { "asc" }];
    let binding = paging.binding("ListAuditEntries", &params);
    // The last entry shown: its event time and id.
    let after = match resume::<(DateTime<Utc>, Uuid)>(paging, &binding) {
        Ok(after) => after,
        Err(invalid) => return Ok(Err(invalid)),
    };
    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE "));
    filter.push(&mut sql);
    let (cmp, order) = if desc { ("<", "DESC") } else { (">", "ASC") };
    if let Some((time, id)) = after {
        sql.push(format!(" AND (event_time, id) {cmp} ("))
            .push_bind(time)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(format!(" ORDER BY event_time {order}, id {order} LIMIT "))
        .push_bind(paging.size + 1);
    let rows: Vec<EntryRecord> = sql.build_query_as().fetch_all(&mut *conn).await?;
    let rows = rows.into_iter().map(EntryRow::from).collect();
    Ok(Ok(paged(rows, paging, &binding, |last| {
        (last.content.event_time, last.content.id)
    })))
}

#[cfg(test)]
mod tests {
    use taskmesh_platform::filter::{Bind, compile};

    use super::FIELDS;

    #[test]
    fn filters_use_the_common_language_and_refuse_what_they_do_not_know() {
        let (sql, binds) = compile(
            r#"user = "alice" AND event_type = "dev.taskmesh.task.updated.v1" AND event_time >= "2026-11-01T00:00:00Z""#,
            FIELDS,
        )
        .unwrap()
        .numbered(1);
        assert_eq!(
            sql,
            "(user_id = $1 AND event_type = $2 AND event_time >= $3)"
        );
        assert_eq!(binds[0], Bind::Text("alice".into()));
        let (sql, binds) = compile(r#"user = "a>b AND \"c\"" resource="tasks/x""#, FIELDS)
            .unwrap()
            .numbered(1);
        assert_eq!(sql, "(user_id = $1 AND resource = $2)");
        assert_eq!(binds[0], Bind::Text(r#"a>b AND "c""#.into()));
        let (sql, _) = compile(r#"user = "a" OR NOT resource = "b""#, FIELDS)
            .unwrap()
            .numbered(1);
        assert_eq!(sql, "(user_id = $1 OR NOT (resource = $2))");
        for (bad, message) in [
            (
                r#"title = "x""#,
                "unknown field \"title\"; use user, resource, event_type, event_time",
            ),
            (
                r#"user < "x""#,
                "operator \"<\" is not supported for field \"user\"",
            ),
            (
                r#"event_time < "yesterday""#,
                "event_time must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z",
            ),
            (
                r#"user = "x" AND"#,
                "expected a field name at end of filter",
            ),
            (r#"user = "x"#, "unterminated string starting at position 8"),
        ] {
            assert_eq!(
                compile(bad, FIELDS).expect_err(bad).to_string(),
                message,
                "{bad}"
            );
        }
    }
}
