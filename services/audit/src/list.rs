//! The List RPCs' queries: a task's history (oldest first), the caller's activity (newest
//! first), and the admin query across users with its AIP-160 filter subset. Pages are keyset
//! pages (AIP-158) whose tokens name what they were made for; a token used for something else
//! is `INVALID_ARGUMENT`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use taskmesh_platform::pages;
use uuid::Uuid;

use crate::entries::{ENTRY_COLUMNS, EntryRow};

/// Why a List request cannot be answered: the field at fault and what is wrong.
pub(crate) type Invalid = (&'static str, String);

/// One page of entries and the token of the next (empty on the last page).
pub(crate) type Page = (Vec<EntryRow>, String);

/// The token of the chain-ordered Lists: the last position shown and what the list is of.
#[derive(Deserialize, Serialize)]
struct ChainToken {
    of: String,
    position: i64,
}

fn chain_page(mut rows: Vec<EntryRow>, size: i64, of: &str) -> Page {
    let more = usize::try_from(size).is_ok_and(|size| rows.len() > size);
    if more {
        rows.pop();
    }
    let token = match rows.last() {
        Some(last) if more => pages::encode(&ChainToken {
            of: of.to_owned(),
            position: last.chain_position,
        }),
        _ => String::new(),
    };
    (rows, token)
}

fn chain_position(token: &str, of: &str) -> Result<Option<i64>, Invalid> {
    if token.is_empty() {
        return Ok(None);
    }
    match pages::decode::<ChainToken>(token) {
        Some(t) if t.of == of => Ok(Some(t.position)),
        _ => Err(("page_token", "is not a token of this list".into())),
    }
}

/// `user`'s entries about `resource`, oldest first.
pub(crate) async fn history(
    conn: &mut PgConnection,
    user: &str,
    resource: &str,
    size: i64,
    token: &str,
) -> Result<Result<Page, Invalid>, sqlx::Error> {
    let of = format!("history:{resource}");
    let after = match chain_position(token, &of) {
        Ok(after) => after.unwrap_or(0),
        Err(invalid) => return Ok(Err(invalid)),
    };
    let rows = sqlx::query_as(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE user_id = $1 AND resource = $2 \
         AND chain_position > $3 ORDER BY chain_position LIMIT $4"
    ))
    .bind(user)
    .bind(resource)
    .bind(after)
    .bind(size + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Ok(chain_page(rows, size, &of)))
}

/// `user`'s entries, newest first.
pub(crate) async fn activity(
    conn: &mut PgConnection,
    user: &str,
    size: i64,
    token: &str,
) -> Result<Result<Page, Invalid>, sqlx::Error> {
    let before = match chain_position(token, "activity") {
        Ok(before) => before.unwrap_or(i64::MAX),
        Err(invalid) => return Ok(Err(invalid)),
    };
    let rows = sqlx::query_as(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE user_id = $1 AND chain_position < $2 \
         ORDER BY chain_position DESC LIMIT $3"
    ))
    .bind(user)
    .bind(before)
    .bind(size + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Ok(chain_page(rows, size, "activity")))
}

/// A ListAuditEntries filter: a conjunction (`AND`) of `user = "…"`, `resource = "…"`,
/// `event_type = "…"` and `event_time <op> "<RFC 3339>"` with `<`, `<=`, `>`, `>=`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Filter {
    equal: Vec<(&'static str, String)>,
    time: Vec<(&'static str, DateTime<Utc>)>,
}

/// Parses a ListAuditEntries filter (AIP-160 subset).
pub(crate) fn filter(text: &str) -> Result<Filter, String> {
    let mut filter = Filter::default();
    let text = text.trim();
    if text.is_empty() {
        return Ok(filter);
    }
    for term in text.split(" AND ") {
        let term = term.trim();
        let (field, op, value) = ["<=", ">=", "<", ">", "="]
            .iter()
            .find_map(|op| term.split_once(op).map(|(f, v)| (f.trim(), *op, v.trim())))
            .ok_or_else(|| format!("{term:?} is not `field op \"value\"`"))?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("the value of {field} must be in double quotes"))?;
        match (field, op) {
            ("user", "=") => filter.equal.push(("user_id", value.to_owned())),
            ("resource", "=") => filter.equal.push(("resource", value.to_owned())),
            ("event_type", "=") => filter.equal.push(("event_type", value.to_owned())),
            ("event_time", op) if op != "=" => {
                let time = DateTime::parse_from_rfc3339(value)
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
    }
    Ok(filter)
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
    size: i64,
    token: &str,
) -> Result<Result<Page, Invalid>, sqlx::Error> {
    let after = if token.is_empty() {
        None
    } else {
        match pages::decode::<QueryToken>(token) {
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
        .push_bind(size + 1);
    let mut rows: Vec<EntryRow> = sql.build_query_as().fetch_all(&mut *conn).await?;
    let more = usize::try_from(size).is_ok_and(|size| rows.len() > size);
    if more {
        rows.pop();
    }
    let next = match rows.last() {
        Some(last) if more => pages::encode(&QueryToken {
            filter: text.to_owned(),
            desc,
            time: last.event_time,
            id: last.id,
        }),
        _ => String::new(),
    };
    Ok(Ok((rows, next)))
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
        for bad in [
            r#"owner = "alice""#,
            r#"user = alice"#,
            r#"user > "alice""#,
            r#"event_time = "2026-11-01T00:00:00Z""#,
            r#"event_time < "yesterday""#,
            "user",
        ] {
            assert!(filter(bad).is_err(), "{bad}");
        }
    }
}
