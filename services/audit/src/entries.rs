//! Audit entries: appending them to their users' chains (a batch at a time), reading them
//! back, verifying a chain.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use taskmesh_domain::timestamp;
use taskmesh_proto::audit::v1 as pb;
use uuid::Uuid;

use crate::{
    chain::{Content, GENESIS},
    changes::to_proto_value,
};

/// The columns of an entry, as [`EntryRecord`] reads them, written once:
/// `with_entry_columns!(m!(args…))` expands to `m!("<columns>"; args…)`.
macro_rules! with_entry_columns {
    ($callback:ident!($($args:tt)*)) => {
        $callback!(
            "id, event_id, event_type, source, topic, actor, user_id, resource, event_time, \
             trace_id, request_id, changes, chain_position, previous_hash, chain_hash";
            $($args)*
        )
    };
}

/// The column list [`with_entry_columns!`] hands it, as a `&str`.
macro_rules! entry_columns_literal {
    ($columns:literal;) => {
        $columns
    };
}

/// The columns of an entry, as [`EntryRecord`] reads them, for the run-time built List
/// (ListAuditEntries).
pub(crate) const ENTRY_COLUMNS: &str = with_entry_columns!(entry_columns_literal!());

/// `sqlx::query_as!(EntryRecord, …)` of a statement that yields entry rows: `$head`, the
/// columns of [`EntryRecord`] and `$tail` are joined into one SQL text, checked at compile
/// time like any `query_as!`, with the column list written once (in
/// [`with_entry_columns!`]). Convert each record with `EntryRow::from`.
macro_rules! query_entries {
    ($columns:literal; $head:literal, $tail:literal $(, $arg:expr)*) => {
        sqlx::query_as!($crate::entries::EntryRecord, $head + $columns + $tail $(, $arg)*)
    };
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        $crate::entries::with_entry_columns!(query_entries!($head, $tail $(, $arg)*))
    };
}
pub(crate) use {query_entries, with_entry_columns};

/// An `entries` row as it reads: one field per column of [`ENTRY_COLUMNS`], by name.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct EntryRecord {
    pub(crate) id: Uuid,
    pub(crate) event_id: Uuid,
    pub(crate) event_type: String,
    pub(crate) source: String,
    pub(crate) topic: String,
    pub(crate) actor: String,
    pub(crate) user_id: String,
    pub(crate) resource: String,
    pub(crate) event_time: DateTime<Utc>,
    pub(crate) trace_id: String,
    pub(crate) request_id: String,
    pub(crate) changes: serde_json::Value,
    pub(crate) chain_position: i64,
    pub(crate) previous_hash: Vec<u8>,
    pub(crate) chain_hash: Vec<u8>,
}

/// An `entries` row: its hashed content and its place in the chain.
#[derive(Clone, Debug)]
pub(crate) struct EntryRow {
    pub(crate) content: Content,
    pub(crate) previous_hash: Vec<u8>,
    pub(crate) chain_hash: Vec<u8>,
}

impl From<EntryRecord> for EntryRow {
    fn from(record: EntryRecord) -> Self {
        Self {
            content: Content {
                id: record.id,
                event_id: record.event_id,
                event_type: record.event_type,
                source: record.source,
                topic: record.topic,
                actor: record.actor,
                user: record.user_id,
                resource: record.resource,
                event_time: record.event_time,
                trace_id: record.trace_id,
                request_id: record.request_id,
                changes: record.changes,
                chain_position: record.chain_position,
            },
            previous_hash: record.previous_hash,
            chain_hash: record.chain_hash,
        }
    }
}

impl EntryRow {
    /// The `AuditEntry` resource.
    pub(crate) fn to_proto(&self) -> pb::AuditEntry {
        let entry = &self.content;
        let changes = entry
            .changes
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|c| pb::FieldChange {
                        field: c["field"].as_str().unwrap_or_default().to_owned(),
                        before: Some(to_proto_value(&c["before"])),
                        after: Some(to_proto_value(&c["after"])),
                    })
                    .collect()
            })
            .unwrap_or_default();
        pb::AuditEntry {
            name: format!("auditEntries/{}", entry.id),
            event_id: entry.event_id.to_string(),
            event_type: entry.event_type.clone(),
            actor: entry.actor.clone(),
            user: entry.user.clone(),
            resource: entry.resource.clone(),
            event_time: Some(timestamp(entry.event_time)),
            trace_id: entry.trace_id.clone(),
            request_id: entry.request_id.clone(),
            changes,
            chain_position: entry.chain_position,
            chain_hash: self.chain_hash.clone(),
        }
    }
}

/// Appends entries with `contents` (ids and positions assigned here), in order, to their
/// users' chains, skipping those whose event has an entry already (an event seen on two
/// topics, or redelivered); six statements whatever the number. The chain heads of the users
/// involved are locked in user order, so concurrent appenders cannot deadlock, and each
/// hash is computed here after the one before it. Returns how many were appended.
///
/// # Errors
/// The database error.
pub(crate) async fn append_all(
    tx: &mut PgConnection,
    contents: Vec<Content>,
) -> Result<usize, sqlx::Error> {
    if contents.is_empty() {
        return Ok(0);
    }
    let mut users: Vec<String> = contents.iter().map(|c| c.user.clone()).collect();
    users.sort_unstable();
    users.dedup();
    sqlx::query!(
        "INSERT INTO chains (user_id, last_position, last_hash, start_position, start_hash) \
         SELECT u, 0, $2, 1, $2 FROM unnest($1::text[]) AS u ORDER BY u ON CONFLICT DO NOTHING",
        &users,
        &GENESIS[..]
    )
    .execute(&mut *tx)
    .await?;
    // The chain heads' row locks serialise each user's appends: positions stay gapless.
    let heads = sqlx::query!(
        "SELECT user_id, last_position, last_hash FROM chains WHERE user_id = ANY($1) \
         ORDER BY user_id FOR UPDATE",
        &users
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut heads: std::collections::HashMap<String, (i64, Vec<u8>)> = heads
        .into_iter()
        .map(|head| (head.user_id, (head.last_position, head.last_hash)))
        .collect();
    let ids: Vec<Uuid> = contents.iter().map(|c| c.event_id).collect();
    let seen: std::collections::HashSet<Uuid> = sqlx::query_scalar!(
        "SELECT event_id FROM entries WHERE event_id = ANY($1)",
        &ids
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mut rows: Vec<(Content, Vec<u8>, [u8; 32])> = Vec::with_capacity(contents.len());
    let mut taken = std::collections::HashSet::with_capacity(contents.len());
    for mut content in contents {
        if seen.contains(&content.event_id) || !taken.insert(content.event_id) {
            continue;
        }
        let Some((position, hash)) = heads.get_mut(&content.user) else {
            return Err(sqlx::Error::RowNotFound);
        };
        content.id = Uuid::now_v7();
        content.chain_position = *position + 1;
        let next = content.hash(hash);
        let previous = std::mem::replace(hash, next.to_vec());
        *position = content.chain_position;
        rows.push((content, previous, next));
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let text =
        |f: fn(&Content) -> &str| -> Vec<&str> { rows.iter().map(|(c, _, _)| f(c)).collect() };
    sqlx::query!(
        "INSERT INTO entries (id, event_id, event_type, source, topic, actor, user_id, resource, \
         event_time, trace_id, request_id, changes, chain_position, previous_hash, chain_hash, \
         record_time) SELECT *, clock_timestamp() FROM unnest($1::uuid[], $2::uuid[], \
         $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
         $9::timestamptz[], $10::text[], $11::text[], $12::jsonb[], $13::bigint[], \
         $14::bytea[], $15::bytea[])",
        &rows.iter().map(|(c, _, _)| c.id).collect::<Vec<_>>(),
        &rows.iter().map(|(c, _, _)| c.event_id).collect::<Vec<_>>(),
        &text(|c| &c.event_type) as &[&str],
        &text(|c| &c.source) as &[&str],
        &text(|c| &c.topic) as &[&str],
        &text(|c| &c.actor) as &[&str],
        &text(|c| &c.user) as &[&str],
        &text(|c| &c.resource) as &[&str],
        &rows
            .iter()
            .map(|(c, _, _)| c.event_time)
            .collect::<Vec<_>>(),
        &text(|c| &c.trace_id) as &[&str],
        &text(|c| &c.request_id) as &[&str],
        &rows
            .iter()
            .map(|(c, _, _)| c.changes.clone())
            .collect::<Vec<_>>(),
        &rows
            .iter()
            .map(|(c, _, _)| c.chain_position)
            .collect::<Vec<_>>(),
        &rows
            .iter()
            .map(|(_, p, _)| p.as_slice())
            .collect::<Vec<_>>() as &[&[u8]],
        &rows.iter().map(|(_, _, h)| &h[..]).collect::<Vec<_>>() as &[&[u8]],
    )
    .execute(&mut *tx)
    .await?;
    let (heads_users, heads_positions, heads_hashes): (Vec<&str>, Vec<i64>, Vec<&[u8]>) = users
        .iter()
        .filter_map(|u| heads.get(u).map(|(p, h)| (u.as_str(), *p, h.as_slice())))
        .fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |mut acc, (u, p, h)| {
                acc.0.push(u);
                acc.1.push(p);
                acc.2.push(h);
                acc
            },
        );
    sqlx::query!(
        "UPDATE chains c SET last_position = u.position, last_hash = u.hash \
         FROM unnest($1::text[], $2::bigint[], $3::bytea[]) AS u(user_id, position, hash) \
         WHERE c.user_id = u.user_id AND c.last_position <> u.position",
        &heads_users as &[&str],
        &heads_positions,
        &heads_hashes as &[&[u8]]
    )
    .execute(&mut *tx)
    .await?;
    Ok(rows.len())
}

/// The outcome of [`verify`].
#[derive(Debug, Default)]
pub(crate) struct Verified {
    /// Entries checked.
    pub(crate) checked: i64,
    /// The first entry whose position, predecessor or hash does not match.
    pub(crate) first_invalid: Option<Uuid>,
    /// Whether the entries reach the chain's recorded head (entries removed from the end
    /// leave no entry to blame).
    pub(crate) complete: bool,
}

impl Verified {
    /// Whether the chain is intact.
    pub(crate) fn valid(&self) -> bool {
        self.first_invalid.is_none() && self.complete
    }
}

/// Recomputes `user`'s chain from its verifiable start, 1,000 entries at a time, in one
/// read-only snapshot (so appends and purges meanwhile do not look like damage), and stops
/// at the first entry that does not match: one below the verifiable start (retention removes
/// a prefix only), a gap in positions, one beyond the recorded head, a stored predecessor
/// hash that is not the previous entry's, or content that does not hash to the stored hash.
/// Entries missing from the end show as an incomplete chain.
pub(crate) async fn verify(pool: &PgPool, user: &str) -> Result<Verified, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let head = sqlx::query!(
        "SELECT start_position, start_hash, last_position, last_hash FROM chains WHERE user_id = $1",
        user
    )
    .fetch_optional(&mut *tx)
    .await?;
    // No head: there must be no entry either.
    let (mut expected, mut previous, last_position, last_hash) = head.map_or_else(
        || (1, GENESIS.to_vec(), 0, GENESIS.to_vec()),
        |head| {
            (
                head.start_position,
                head.start_hash,
                head.last_position,
                head.last_hash,
            )
        },
    );
    let mut verified = Verified::default();
    let below: Option<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM entries WHERE user_id = $1 AND chain_position < $2 \
         ORDER BY chain_position LIMIT 1",
        user,
        expected
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = below {
        verified.first_invalid = Some(id);
        return Ok(verified);
    }
    loop {
        let rows = query_entries!(
            "SELECT ",
            " FROM entries WHERE user_id = $1 AND chain_position >= $2 \
             ORDER BY chain_position LIMIT 1000",
            user,
            expected
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            verified.complete = expected == last_position + 1 && previous == last_hash;
            return Ok(verified);
        }
        for row in rows.into_iter().map(EntryRow::from) {
            verified.checked += 1;
            let hash = row.content.hash(&previous);
            let position = row.content.chain_position;
            let intact = position == expected
                && position <= last_position
                && row.previous_hash == previous
                && row.chain_hash == hash;
            if !intact {
                verified.first_invalid = Some(row.content.id);
                return Ok(verified);
            }
            previous = row.chain_hash;
            expected += 1;
        }
    }
}
