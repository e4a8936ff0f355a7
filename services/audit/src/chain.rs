//! Each user's hash chain: entry `n`'s `chain_hash` is SHA-256 over entry `n - 1`'s hash and
//! entry `n`'s canonical form, so changing, removing or reordering an entry breaks every hash
//! after it. The chain starts from 32 zero bytes, or after retention from the hash of the last
//! removed entry (`chains.start_hash`).
//!
//! Canonical form: every field of the entry that the API shows, in a fixed order, each as a
//! big-endian `u32` byte length followed by its bytes (UTF-8 text; the time as the decimal
//! count of microseconds since the Unix epoch; the changes as JSON with sorted keys).

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The hash a chain starts from.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// The hashed content of an entry (an `entries` row but for its hashes).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Content {
    pub(crate) id: Uuid,
    pub(crate) event_id: Uuid,
    pub(crate) event_type: String,
    pub(crate) source: String,
    pub(crate) topic: String,
    pub(crate) actor: String,
    /// The `user_id` column.
    pub(crate) user: String,
    pub(crate) resource: String,
    pub(crate) event_time: DateTime<Utc>,
    pub(crate) trace_id: String,
    pub(crate) request_id: String,
    /// `[{"field", "before", "after"}]`; `serde_json`'s maps keep keys sorted, so the text is
    /// the same before storing and after reading back from `jsonb`.
    pub(crate) changes: serde_json::Value,
    pub(crate) chain_position: i64,
}

impl Content {
    /// The entry's hash after `previous`.
    pub(crate) fn hash(&self, previous: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(previous);
        let position = self.chain_position.to_string();
        let time = self.event_time.timestamp_micros().to_string();
        let (id, event_id) = (self.id.to_string(), self.event_id.to_string());
        let mut changes = String::new();
        canonical_json(&self.changes, &mut changes);
        for part in [
            position.as_str(),
            &id,
            &event_id,
            &self.event_type,
            &self.source,
            &self.topic,
            &self.actor,
            &self.user,
            &self.resource,
            &time,
            &self.trace_id,
            &self.request_id,
            &changes,
        ] {
            let length = u32::try_from(part.len()).unwrap_or(u32::MAX);
            hasher.update(length.to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().into()
    }
}

/// `value` as JSON text with object keys sorted (by their UTF-8 bytes) at every depth and no
/// white space, whatever order the map at hand keeps (serde_json's `preserve_order`, or
/// `jsonb`'s own order), so the same content always hashes the same.
fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        Content {
            id: Uuid::from_u128(1),
            event_id: Uuid::from_u128(2),
            event_type: "dev.taskmesh.task.updated.v1".into(),
            source: "/taskmesh/task".into(),
            topic: "task-events".into(),
            actor: "alice".into(),
            user: "alice".into(),
            resource: "tasks/x".into(),
            event_time: DateTime::from_timestamp_micros(1_790_000_000_000_001).unwrap(),
            trace_id: String::new(),
            request_id: "r1".into(),
            changes: serde_json::json!([{"field": "title", "before": "a", "after": "b"}]),
            chain_position: 3,
        }
    }

    #[test]
    fn every_field_and_the_predecessor_change_the_hash() {
        let base = content().hash(&GENESIS);
        assert_eq!(base, content().hash(&GENESIS), "deterministic");
        assert_ne!(base, content().hash(&[1; 32]));
        let mut changed = content();
        changed.changes = serde_json::json!([{"field": "title", "before": "a", "after": "c"}]);
        assert_ne!(base, changed.hash(&GENESIS));
        let mut moved = content();
        moved.chain_position = 4;
        assert_ne!(base, moved.hash(&GENESIS));
        // Length prefixes: moving a character between neighbouring fields changes the hash.
        // The same changes in another key order (as jsonb hands them back) hash the same.
        let mut reordered = content();
        reordered.changes =
            serde_json::from_str(r#"[{"after": "b", "field": "title", "before": "a"}]"#).unwrap();
        assert_eq!(base, reordered.hash(&GENESIS));
        let mut shifted = content();
        shifted.actor = "alic".into();
        shifted.user = "ealice".into();
        assert_ne!(base, shifted.hash(&GENESIS));
    }
}
