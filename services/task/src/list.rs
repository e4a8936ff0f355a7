//! ListTasks (AIP-132, AIP-158, AIP-160) and ListChanges.
//!
//! Pages are keyset positions: the token holds the sort-key values and id of the last task
//! returned, so inserts and deletes between pages shift nothing. A token is bound to its
//! filter, order and query ([`taskmesh_platform::pages::Binding`]); a token used with other
//! parameters is `INVALID_ARGUMENT`. Each page is read in a REPEATABLE READ snapshot together with the
//! user's change-log position, which becomes the response's stream cursor.

use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Row};
use taskmesh_platform::{
    changelog,
    grpc::Violations,
    pages::{Binding, ForeignToken, PageTokens},
};
use taskmesh_proto::task::v1 as pb;
use uuid::Uuid;

use crate::{
    error::TaskError,
    filter::{FIELDS, OrderKey, parse_order_by},
    model::{TASK_COLUMNS, TaskRow, timestamp},
};

/// A validated ListTasks request.
#[derive(Debug)]
pub(crate) struct ListQuery {
    pub(crate) page_size: i64,
    pub(crate) filter: String,
    pub(crate) order_by: String,
    pub(crate) query: String,
    pub(crate) page_token: String,
}

/// Where a ListTasks page ends: the sort-key values of the last task returned (as
/// PostgreSQL text) and its id.
#[derive(Serialize, Deserialize)]
struct Position {
    k: Vec<String>,
    i: Uuid,
}

/// Full-text words of `query`: letters and digits, lower-cased, each matched as a prefix.
fn tsquery(query: &str) -> Option<String> {
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(20)
        .map(|w| format!("{}:*", w.to_lowercase()))
        .collect();
    (!words.is_empty()).then(|| words.join(" & "))
}

/// Pushes the keyset condition: rows strictly after the token's position (`values`, the sort
/// keys as text, then `id`) in the order `keys`:
/// `(k0 > a OR (k0 = a AND (k1 < b OR (k1 = b AND (t.id > c)))))`.
fn push_after(
    sql: &mut QueryBuilder<'_, Postgres>,
    keys: &[OrderKey],
    values: &[String],
    id: Uuid,
) {
    for (key, value) in keys.iter().zip(values) {
        let expr = key.field.sql(key.descending);
        let cast = key.field.sql_type();
        let op = if key.descending { "<" } else { ">" };
        sql.push(format!("({expr} {op} "))
            .push_bind(value.clone())
            .push(format!("::{cast} OR ({expr} = "))
            .push_bind(value.clone())
            .push(format!("::{cast} AND ("));
    }
    sql.push("t.id > ").push_bind(id);
    for _ in keys.iter().zip(values) {
        sql.push(")))");
    }
}

/// Reads one page. Returns the tasks, the next page token and the change-log position of the
/// snapshot.
pub(crate) async fn tasks(
    pool: &PgPool,
    tokens: &PageTokens,
    user: &str,
    q: &ListQuery,
) -> Result<(Vec<pb::Task>, String, i64), TaskError> {
    let mut v = Violations::new();
    let filter = taskmesh_platform::filter::compile(&q.filter, FIELDS)
        .map_err(|e| v.add("filter", e.to_string()))
        .ok();
    let keys = parse_order_by(&q.order_by)
        .map_err(|e| v.add("order_by", e.to_string()))
        .ok();
    let params = [q.filter.as_str(), q.order_by.as_str(), q.query.as_str()];
    let binding = Binding {
        list: "ListTasks",
        user,
        params: &params,
    };
    let token = match tokens.resume::<Position>(&binding, &q.page_token) {
        Ok(None) => None,
        Ok(Some(t)) if keys.as_ref().is_some_and(|k| k.len() == t.k.len()) => Some(t),
        // A token of this call always has one value per sort key; `keys` is `None` only
        // when `order_by` is already a violation.
        Ok(Some(_)) if keys.is_none() => None,
        Ok(Some(_)) | Err(_) => {
            v.add("page_token", ForeignToken.to_string());
            None
        }
    };
    let (Some(filter), Some(keys), true) = (filter, keys, v.is_empty()) else {
        return Err(TaskError::Invalid(v));
    };
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "SELECT {TASK_COLUMNS}{} FROM tasks t WHERE t.user_id = ",
        keys.iter()
            .enumerate()
            .map(|(i, k)| format!(", ({})::text AS k{i}", k.field.sql(k.descending)))
            .collect::<String>(),
    ));
    sql.push_bind(user).push(" AND ");
    filter.push(&mut sql);
    if let Some(words) = tsquery(&q.query) {
        sql.push(" AND t.search @@ to_tsquery('simple', ")
            .push_bind(words)
            .push(")");
    }
    if let Some(t) = &token {
        sql.push(" AND ");
        push_after(&mut sql, &keys, &t.k, t.i);
    }
    sql.push(" ORDER BY ");
    for key in &keys {
        sql.push(key.field.sql(key.descending));
        sql.push(if key.descending { " DESC, " } else { " ASC, " });
    }
    sql.push(format!("t.id ASC LIMIT {}", q.page_size + 1));

    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let rows = sql
        .build()
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| match &e {
            // A timestamp the filter let through but PostgreSQL rejects, and the like.
            sqlx::Error::Database(d)
                if d.code().as_deref().is_some_and(|c| c.starts_with("22")) =>
            {
                let mut v = Violations::new();
                v.add("filter", "a value is out of range");
                TaskError::Invalid(v)
            }
            _ => e.into(),
        })?;
    let cursor = changelog::latest(&mut tx, user).await?;
    tx.commit().await?;

    let more = rows.len() as i64 > q.page_size;
    let mut tasks = Vec::with_capacity(rows.len());
    let mut next = String::new();
    for (i, row) in rows.iter().enumerate() {
        if i as i64 == q.page_size {
            break;
        }
        let task = TaskRow::from_row(row)?;
        if more && i as i64 == q.page_size - 1 {
            let k = (0..keys.len())
                .map(|j| row.try_get::<String, _>(format!("k{j}").as_str()))
                .collect::<Result<Vec<_>, _>>()?;
            next = tokens.issue(&binding, Position { k, i: task.id });
        }
        tasks.push(task.to_proto());
    }
    Ok((tasks, next, cursor))
}

/// Changes of `user` after `after`, at most `limit`, and the latest sequence.
/// `ChangesExpired` when changes after `after` were purged.
pub(crate) async fn changes(
    pool: &PgPool,
    user: &str,
    after: i64,
    limit: i64,
) -> Result<(Vec<pb::Change>, i64), TaskError> {
    let (entries, latest) = changelog::read(pool, user, after, limit)
        .await
        .map_err(|error| match error {
            changelog::ReadError::Expired(after) => TaskError::ChangesExpired(after),
            changelog::ReadError::Database(e) => TaskError::Database(e),
        })?;
    let changes = entries
        .into_iter()
        .map(|entry| pb::Change {
            sequence: entry.sequence,
            event_id: entry.event_id.to_string(),
            r#type: entry.event_type,
            subject: entry.subject,
            time: Some(timestamp(entry.time)),
            data: entry.data,
        })
        .collect();
    Ok((changes, latest))
}
