//! AIP-158 page tokens: base64url (no padding) of JSON of whatever a List needs to resume
//! (the last row's sort key, and what the token was made for, so a token used with other
//! parameters can be refused), followed by an HMAC-SHA256 tag (16 bytes) over it. A token the
//! service did not make, or made and then altered, is refused before anything in it reaches
//! SQL (crafted sort keys once surfaced as `INTERNAL` from PostgreSQL's casts).
//!
//! The key is per service: 32 random bytes kept in the service's schema (table
//! `page_token_key`, from its migrations; the row is written by the first process that
//! starts, in [`PageTokens::load`]), so every replica signs alike and tokens survive
//! restarts.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Serialize, de::DeserializeOwned};
use sha2::Sha256;

/// Bytes of the tag appended to a token (HMAC-SHA256 truncated; RFC 2104 §5 allows it).
const TAG_BYTES: usize = 16;

/// Longest page token accepted, in characters (anything longer is not ours: a token holds a
/// sort key and the filter it was made for, at most 2,000 characters).
pub const MAX_TOKEN_CHARS: usize = 16 * 1024;

/// Signs and checks page tokens with a service's key. Cheap to clone.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens(***)")
    }
}

impl PageTokens {
    /// Tokens signed with `key` (tests, tools).
    pub fn with_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The key of the schema `pool` is on: created (random) by the first process to start,
    /// read by every other one.
    ///
    /// # Errors
    /// The database's.
    pub async fn load(pool: &sqlx::PgPool) -> Result<Self, sqlx::Error> {
        let fresh: [u8; 32] = rand::random();
        sqlx::query("INSERT INTO page_token_key (key) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&fresh[..])
            .execute(pool)
            .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT key FROM page_token_key")
            .fetch_one(pool)
            .await?;
        let key = stored
            .try_into()
            .map_err(|_| sqlx::Error::Protocol("page_token_key is not 32 bytes".into()))?;
        Ok(Self { key })
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        // A key of any length is accepted by HMAC: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(payload);
        mac
    }

    /// The token of `state`.
    pub fn encode(&self, state: &impl Serialize) -> String {
        let mut bytes = serde_json::to_vec(state).unwrap_or_default();
        let tag = self.mac(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The state of `token`; `None` when it is not one this service made, unaltered.
    pub fn decode<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let split = bytes.len().checked_sub(TAG_BYTES)?;
        let (payload, tag) = bytes.split_at(split);
        self.mac(payload).verify_truncated_left(tag).ok()?;
        serde_json::from_slice(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct State {
        k: Vec<String>,
        at: i64,
    }

    #[test]
    fn tokens_round_trip_and_altered_ones_are_refused() {
        let tokens = PageTokens::with_key([7; 32]);
        let state = State {
            k: vec!["2026-12-01 10:00:00+00".into()],
            at: 42,
        };
        let token = tokens.encode(&state);
        assert_eq!(tokens.decode::<State>(&token), Some(state));
        // Another key, a flipped byte, a re-encoded payload without a tag, garbage.
        assert_eq!(PageTokens::with_key([8; 32]).decode::<State>(&token), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[3] ^= 1;
        assert_eq!(
            tokens.decode::<State>(&URL_SAFE_NO_PAD.encode(&bytes)),
            None
        );
        let forged = URL_SAFE_NO_PAD.encode(br#"{"k":["\u0000"],"at":1}"#);
        assert_eq!(tokens.decode::<State>(&forged), None);
        for garbage in ["", "!!", "AA", &"A".repeat(10_000)] {
            assert_eq!(tokens.decode::<State>(garbage), None, "{garbage}");
        }
    }
}
