//! Audit entries: appending one to its user's chain, reading them back, verifying a chain.

use sqlx::{PgConnection, PgPool};
use taskmesh_domain::timestamp;
use taskmesh_proto::audit::v1 as pb;
use uuid::Uuid;

use crate::{
    chain::{Content, GENESIS},
    changes::to_proto_value,
};

/// The columns of an entry, as [`EntryRow`] reads them.
pub(crate) const ENTRY_COLUMNS: &str = "id, event_id, event_type, source, topic, actor, user_id, \
     resource, event_time, trace_id, request_id, changes, chain_position, previous_hash, chain_hash";

/// An `entries` row: its hashed content and its place in the chain.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct EntryRow {
    #[sqlx(flatten)]
    pub(crate) content: Content,
    pub(crate) previous_hash: Vec<u8>,
    pub(crate) chain_hash: Vec<u8>,
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

/// Appends an entry with `content` (its `id` and `chain_position` are assigned here) to its
/// user's chain, unless an entry of the same event exists already (an event seen on two
/// topics, or redelivered). Returns whether it was appended.
pub(crate) async fn append(
    tx: &mut PgConnection,
    mut content: Content,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "INSERT INTO chains (user_id, last_position, last_hash, start_position, start_hash) \
         VALUES ($1, 0, $2, 1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(&content.user)
    .bind(&GENESIS[..])
    .execute(&mut *tx)
    .await?;
    // The chain head's row lock serialises one user's appends: positions stay gapless.
    let (last_position, last_hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT last_position, last_hash FROM chains WHERE user_id = $1 FOR UPDATE")
            .bind(&content.user)
            .fetch_one(&mut *tx)
            .await?;
    let seen: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM entries WHERE event_id = $1)")
            .bind(content.event_id)
            .fetch_one(&mut *tx)
            .await?;
    if seen {
        return Ok(false);
    }
    content.id = Uuid::now_v7();
    content.chain_position = last_position + 1;
    let hash = content.hash(&last_hash);
    sqlx::query(
        "INSERT INTO entries (id, event_id, event_type, source, topic, actor, user_id, resource, \
         event_time, trace_id, request_id, changes, chain_position, previous_hash, chain_hash, \
         record_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         clock_timestamp())",
    )
    .bind(content.id)
    .bind(content.event_id)
    .bind(&content.event_type)
    .bind(&content.source)
    .bind(&content.topic)
    .bind(&content.actor)
    .bind(&content.user)
    .bind(&content.resource)
    .bind(content.event_time)
    .bind(&content.trace_id)
    .bind(&content.request_id)
    .bind(&content.changes)
    .bind(content.chain_position)
    .bind(&last_hash)
    .bind(&hash[..])
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE chains SET last_position = $2, last_hash = $3 WHERE user_id = $1")
        .bind(&content.user)
        .bind(content.chain_position)
        .bind(&hash[..])
        .execute(&mut *tx)
        .await?;
    Ok(true)
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
    let head: Option<(i64, Vec<u8>, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT start_position, start_hash, last_position, last_hash FROM chains WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    // No head: there must be no entry either.
    let (mut expected, mut previous, last_position, last_hash) =
        head.unwrap_or((1, GENESIS.to_vec(), 0, GENESIS.to_vec()));
    let mut verified = Verified::default();
    let below: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM entries WHERE user_id = $1 AND chain_position < $2 \
         ORDER BY chain_position LIMIT 1",
    )
    .bind(user)
    .bind(expected)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = below {
        verified.first_invalid = Some(id);
        return Ok(verified);
    }
    loop {
        let rows: Vec<EntryRow> = sqlx::query_as(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE user_id = $1 AND chain_position >= $2 \
             ORDER BY chain_position LIMIT 1000"
        ))
        .bind(user)
        .bind(expected)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            verified.complete = expected == last_position + 1 && previous == last_hash;
            return Ok(verified);
        }
        for row in rows {
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
