//! The List RPCs' queries: a task's history (oldest first), the caller's activity (newest
//! first), and the admin query across users with its AIP-160 filter subset. Pages are keyset
//! pages (AIP-158) whose tokens name what they were made for; a token used for something else
//! is `INVALID_ARGUMENT`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use taskmesh_platform::pages::PageTokens;
use uuid::Uuid;

use crate::entries::{ENTRY_COLUMNS, EntryRow};

/// Why a List request cannot be answered: the field at fault and what is wrong.
pub(crate) type Invalid = (&'static str, String);

/// One page of entries and the token of the next (empty on the last page).
pub(crate) type Page = (Vec<EntryRow>, String);

/// What a List call asks of its page: how many entries, from where (its `page_token`, empty
/// for the first page), and the service's token signer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Paging<'a> {
    pub(crate) tokens: &'a PageTokens,
    pub(crate) size: i64,
    pub(crate) token: &'a str,
}

/// The token of the chain-ordered Lists: the last position shown and what the list is of.
#[derive(Deserialize, Serialize)]
struct ChainToken {
    of: String,
    position: i64,
}

/// A page from `rows` fetched with one row more than `size`: that row's presence means a
/// next page, whose token `token_of` makes from the page's last row.
fn paged<T: Serialize>(
    mut rows: Vec<EntryRow>,
    paging: Paging<'_>,
    token_of: impl Fn(&EntryRow) -> T,
) -> Page {
    let more = usize::try_from(paging.size).is_ok_and(|size| rows.len() > size);
    if more {
        rows.pop();
    }
    let token = match rows.last() {
        Some(last) if more => paging.tokens.encode(&token_of(last)),
        _ => String::new(),
    };
    (rows, token)
}

fn chain_page(rows: Vec<EntryRow>, paging: Paging<'_>, of: &str) -> Page {
    paged(rows, paging, |last| ChainToken {
        of: of.to_owned(),
        position: last.content.chain_position,
    })
}

fn chain_position(paging: Paging<'_>, of: &str) -> Result<Option<i64>, Invalid> {
    if paging.token.is_empty() {
        return Ok(None);
    }
    match paging.tokens.decode::<ChainToken>(paging.token) {
        Some(t) if t.of == of => Ok(Some(t.position)),
        _ => Err(("page_token", "is not a token of this list".into())),
    }
}

/// The token of a task's history: the last row's event time and id, and the task.
#[derive(Deserialize, Serialize)]
struct HistoryToken {
    task: String,
    time: DateTime<Utc>,
    id: Uuid,
}

/// `user`'s entries about `task` (`tasks/{id}`) and its sub-resources (its reminders), in
/// event-time order (ties by entry id).
pub(crate) async fn history(
    conn: &mut PgConnection,
    user: &str,
    task: &str,
    paging: Paging<'_>,
) -> Result<Result<Page, Invalid>, sqlx::Error> {
    let after = if paging.token.is_empty() {
        None
    } else {
        match paging.tokens.decode::<HistoryToken>(paging.token) {
            Some(t) if t.task == task => Some((t.time, t.id)),
            _ => {
                return Ok(Err((
                    "page_token",
                    "is not a token of this task's history".into(),
                )));
            }
        }
    };
    // `task` is a validated `tasks/{uuid}`: no LIKE wildcard in it.
    let rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE user_id = $1 \
         AND (resource = $2 OR resource LIKE $2 || '/%') \
         AND ($3::timestamptz IS NULL OR (event_time, id) > ($3, $4)) \
         ORDER BY event_time, id LIMIT $5"
    ))
    .bind(user)
    .bind(task)
    .bind(after.map(|(time, _)| time))
    .bind(after.map_or(Uuid::nil(), |(_, id)| id))
    .bind(paging.size + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Ok(paged(rows, paging, |last| HistoryToken {
        task: task.to_owned(),
        time: last.content.event_time,
        id: last.content.id,
    })))
}

/// Whether `user`'s log mentions `task` at all.
pub(crate) async fn knows_task(
    conn: &mut PgConnection,
    user: &str,
    task: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM entries WHERE user_id = $1 \
         AND (resource = $2 OR resource LIKE $2 || '/%'))",
    )
    .bind(user)
    .bind(task)
    .fetch_one(&mut *conn)
    .await
}

/// `user`'s entries, newest first.
pub(crate) async fn activity(
    conn: &mut PgConnection,
    user: &str,
    paging: Paging<'_>,
) -> Result<Result<Page, Invalid>, sqlx::Error> {
    let before = match chain_position(paging, "activity") {
        Ok(before) => before.unwrap_or(i64::MAX),
        Err(invalid) => return Ok(Err(invalid)),
    };
    let rows = sqlx::query_as(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE user_id = $1 AND chain_position < $2 \
         ORDER BY chain_position DESC LIMIT $3"
    ))
    .bind(user)
    .bind(before)
    .bind(paging.size + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Ok(chain_page(rows, paging, "activity")))
}

/// A ListAuditEntries filter: a conjunction (`AND`) of `user = "…"`, `resource = "…"`,
/// `event_type = "…"` and `event_time <op> "<RFC 3339>"` with `<`, `<=`, `>`, `>=`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Filter {
    equal: Vec<(&'static str, String)>,
    time: Vec<(&'static str, DateTime<Utc>)>,
}

/// Parses a ListAuditEntries filter (AIP-160 subset): `field op "value"` terms joined by
/// `AND`; a value is a double-quoted string in which `\"` and `\\` stand for `"` and `\`.
pub(crate) fn filter(text: &str) -> Result<Filter, String> {
    let mut filter = Filter::default();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (field, op, value, after) = term(rest)?;
        match (field, op) {
            ("user", "=") => filter.equal.push(("user_id", value)),
            ("resource", "=") => filter.equal.push(("resource", value)),
            ("event_type", "=") => filter.equal.push(("event_type", value)),
            ("event_time", op) if op != "=" => {
                let time = DateTime::parse_from_rfc3339(&value)
                    .map_err(|_| format!("{value:?} is not an RFC 3339 time"))?
                    .with_timezone(&Utc);
                filter.time.push((op, time));
            }
            ("user" | "resource" | "event_type", _) => {
                return Err(format!("{field} supports only ="));
            }
            ("event_time", _) => return Err("event_time supports <, <=, > and >=".into()),
            _ => {
                return Err(format!(
                    "unknown field {field:?}; use user, resource, event_type or event_time"
                ));
            }
        }
        rest = after.trim_start();
        if rest.is_empty() {
            break;
        }
        rest = rest
            .strip_prefix("AND")
            .filter(|r| r.starts_with(char::is_whitespace))
            .ok_or_else(|| {
                format!(
                    "expected AND before {:?}",
                    rest.chars().take(20).collect::<String>()
                )
            })?
            .trim_start();
        if rest.is_empty() {
            return Err("a term must follow AND".into());
        }
    }
    Ok(filter)
}

/// One `field op "value"` term at the start of `text`, and what follows it.
fn term(text: &str) -> Result<(&str, &'static str, String, &str), String> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let (field, rest) = text.split_at(end);
    if field.is_empty() {
        return Err(format!(
            "expected a field name at {:?}",
            text.chars().take(20).collect::<String>()
        ));
    }
    let rest = rest.trim_start();
    let op = ["<=", ">=", "<", ">", "="]
        .into_iter()
        .find(|op| rest.starts_with(op))
        .ok_or_else(|| format!("expected an operator after {field}"))?;
    let rest = rest[op.len()..].trim_start();
    let mut chars = rest.char_indices();
    if !matches!(chars.next(), Some((_, '"'))) {
        return Err(format!("the value of {field} must be in double quotes"));
    }
    let mut value = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        match (escaped, c) {
            (true, '"' | '\\') => {
                value.push(c);
                escaped = false;
            }
            (true, _) => return Err(format!("unknown escape \\{c} in the value of {field}")),
            (false, '\\') => escaped = true,
            (false, '"') => return Ok((field, op, value, &rest[i + 1..])),
            (false, c) => value.push(c),
        }
    }
    Err(format!("the value of {field} has no closing quote"))
}

/// The token of ListAuditEntries: the last row's sort key, and the filter and order it was
/// made for.
#[derive(Deserialize, Serialize)]
struct QueryToken {
    filter: String,
    desc: bool,
    time: DateTime<Utc>,
    id: Uuid,
}

/// Entries across users matching `filter` (its text `text`), by event time (`desc` for
/// newest first), ties by entry id.
pub(crate) async fn query(
    conn: &mut PgConnection,
    text: &str,
    filter: &Filter,
    desc: bool,
    paging: Paging<'_>,
) -> Result<Result<Page, Invalid>, sqlx::Error> {
    let after = if paging.token.is_empty() {
        None
    } else {
        match paging.tokens.decode::<QueryToken>(paging.token) {
            Some(t) if t.filter == text && t.desc == desc => Some((t.time, t.id)),
            _ => {
                return Ok(Err((
                    "page_token",
                    "was made for another filter or order".into(),
                )));
            }
        }
    };
    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE true"));
    for (column, value) in &filter.equal {
        sql.push(format!(" AND {column} = "))
            .push_bind(value.clone());
    }
    for (op, time) in &filter.time {
        sql.push(format!(" AND event_time {op} ")).push_bind(*time);
    }
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
    let rows: Vec<EntryRow> = sql.build_query_as().fetch_all(&mut *conn).await?;
    Ok(Ok(paged(rows, paging, |last| QueryToken {
        filter: text.to_owned(),
        desc,
        time: last.content.event_time,
        id: last.content.id,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_what_they_do_not_know() {
        let parsed = filter(
            r#"user = "alice" AND event_type = "dev.taskmesh.task.updated.v1" AND event_time >= "2026-11-01T00:00:00Z""#,
        )
        .unwrap();
        assert_eq!(parsed.equal.len(), 2);
        assert_eq!(parsed.time.len(), 1);
        assert_eq!(filter("").unwrap(), Filter::default());
        // Quotes, operators and AND inside values; escapes.
        let odd = filter(r#"user = "a>b AND \"c\"" AND resource="tasks/x""#).unwrap();
        assert_eq!(
            odd.equal,
            [
                ("user_id", r#"a>b AND "c""#.to_owned()),
                ("resource", "tasks/x".to_owned())
            ]
        );
        for bad in [
            r#"owner = "alice""#,
            r#"user = alice"#,
            r#"user > "alice""#,
            r#"event_time = "2026-11-01T00:00:00Z""#,
            r#"event_time < "yesterday""#,
            "user",
            r#"user = "alice" AND"#,
            r#"user = "alice" OR user = "bob""#,
            r#"user = "unterminated"#,
        ] {
            assert!(filter(bad).is_err(), "{bad}");
        }
    }
}
