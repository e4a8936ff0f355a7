//! AIP-158 page tokens: base64url (no padding) of JSON of whatever a List needs to resume
//! (the last row's sort key, and what the token was made for, so a token used with other
//! parameters can be refused), followed by an HMAC-SHA256 tag (16 bytes) over it. A token the
//! service did not make, or made and then altered, is refused before anything in it reaches
//! SQL (crafted sort keys once surfaced as `INTERNAL` from PostgreSQL's casts).
//!
//! Every List issues its tokens with [`PageTokens::issue`] and reads them with
//! [`PageTokens::resume`]: the signed JSON is an envelope with a version, a digest of what the
//! token is for ([`Binding`]: the List, the caller and the request's other fields) and the
//! List's own resume position, so a token is tamper-proof and resumes only its own call.
//! [`page_size`] is every List's `page_size` rule.
//!
//! The key is per service: 32 random bytes kept in the service's schema (table
//! `page_token_key`, from its migrations; the row is written by the first process that
//! starts, in [`PageTokens::load`]), so every replica signs alike and tokens survive
//! restarts.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Serialize, de::DeserializeOwned};
use sha2::Sha256;

use crate::grpc::Violations;

/// Bytes of the tag appended to a token (HMAC-SHA256 truncated; RFC 2104 §5 allows it).
const TAG_BYTES: usize = 16;

/// Longest page token accepted, in characters (anything longer is not ours: a token holds a
/// sort key, a few hundred characters at most, and a digest of its call).
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
        sqlx::query!(
            "INSERT INTO page_token_key (key) VALUES ($1) ON CONFLICT DO NOTHING",
            &fresh[..]
        )
        .execute(pool)
        .await?;
        let stored = sqlx::query_scalar!("SELECT key FROM page_token_key")
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

/// Largest `page_size` a List accepts (AIP-158).
pub const MAX_PAGE_SIZE: i32 = 1000;

/// A List's `page_size` (AIP-158): 0 means `default`, 1 to [`MAX_PAGE_SIZE`] is taken as
/// is; anything else is a `page_size` violation (added to `v`) and `default` is returned.
pub fn page_size(size: i32, default: i64, v: &mut Violations) -> i64 {
    match size {
        0 => default,
        1..=MAX_PAGE_SIZE => i64::from(size),
        _ => {
            v.add(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE}"),
            );
            default
        }
    }
}

/// The version of the token envelope ([`PageTokens::issue`]); a token of another version is
/// refused like any other stranger.
const VERSION: u8 = 1;

/// What a page token is for: the List RPC, the caller, and every request field that shapes
/// the result (its parent, `filter`, `order_by`, `query`, ...), in a fixed order. A token
/// resumes only the call it was made for (AIP-158: "the other fields must be the same").
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    /// The List RPC, e.g. `ListTasks`.
    pub list: &'static str,
    /// The caller (JWT `sub`), so a token shared with another user resumes nothing.
    pub user: &'a str,
    /// The request fields that shape the result, each as sent.
    pub params: &'a [&'a str],
}

impl Binding<'_> {
    /// SHA-256 over the list, the user and the parameters, each length-prefixed (so no two
    /// different bindings hash alike by moving a boundary), truncated to 16 bytes.
    fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut hash = Sha256::new();
        for part in [self.list, self.user].iter().chain(self.params) {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(&hash.finalize()[..16])
    }
}

/// A page token's content: the envelope version, the binding's digest, and the List's
/// resume position.
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope<T> {
    v: u8,
    b: String,
    p: T,
}

/// A `page_token` that is not one this List made for this call: the `page_token` field
/// violation's description is its `Display`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "is not a token from a previous call of this list with the same parameters (send the call's other fields unchanged)"
)]
pub struct ForeignToken;

impl PageTokens {
    /// The `next_page_token` resuming `binding`'s call at `position` (AIP-158): versioned,
    /// bound to the call, signed.
    pub fn issue<T: Serialize>(&self, binding: &Binding<'_>, position: T) -> String {
        self.encode(&Envelope {
            v: VERSION,
            b: binding.digest(),
            p: position,
        })
    }

    /// The position in `token` (a request's `page_token`) for `binding`'s call: `Ok(None)`
    /// for an empty token (the first page).
    ///
    /// # Errors
    /// [`ForeignToken`] when this service did not make it, it was altered, or it was made
    /// for another List, user or parameters, or by another token version.
    pub fn resume<T: DeserializeOwned>(
        &self,
        binding: &Binding<'_>,
        token: &str,
    ) -> Result<Option<T>, ForeignToken> {
        if token.is_empty() {
            return Ok(None);
        }
        let envelope: Envelope<T> = self.decode(token).ok_or(ForeignToken)?;
        if envelope.v != VERSION || envelope.b != binding.digest() {
            return Err(ForeignToken);
        }
        Ok(Some(envelope.p))
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

    #[test]
    fn a_token_resumes_only_the_call_it_was_made_for() {
        let tokens = PageTokens::with_key([7; 32]);
        let params = ["state = OPEN", "due_time", ""];
        let call = Binding {
            list: "ListTasks",
            user: "alice",
            params: &params,
        };
        let token = tokens.issue(&call, (42_i64, "k".to_owned()));
        assert_eq!(
            tokens.resume::<(i64, String)>(&call, &token),
            Ok(Some((42, "k".to_owned())))
        );
        assert_eq!(tokens.resume::<(i64, String)>(&call, ""), Ok(None));
        let other_params = ["state = OPEN", "due_time desc", ""];
        let shifted = ["state = OPENdue_time", "", ""];
        for other in [
            Binding {
                list: "ListTags",
                ..call
            },
            Binding {
                user: "bob",
                ..call
            },
            Binding {
                params: &other_params,
                ..call
            },
            Binding {
                params: &shifted,
                ..call
            },
        ] {
            assert_eq!(
                tokens.resume::<(i64, String)>(&other, &token),
                Err(ForeignToken),
                "{other:?}"
            );
        }
        // A token of the bare format (no envelope), or of another version, is a stranger.
        let bare = tokens.encode(&(42_i64, "k"));
        assert_eq!(
            tokens.resume::<(i64, String)>(&call, &bare),
            Err(ForeignToken)
        );
        let future = tokens.encode(&Envelope {
            v: VERSION + 1,
            b: call.digest(),
            p: (42_i64, "k"),
        });
        assert_eq!(
            tokens.resume::<(i64, String)>(&call, &future),
            Err(ForeignToken)
        );
    }

    #[test]
    fn page_sizes_follow_aip_158() {
        let mut v = Violations::new();
        assert_eq!(page_size(0, 50, &mut v), 50);
        assert_eq!(page_size(1, 50, &mut v), 1);
        assert_eq!(page_size(1000, 50, &mut v), 1000);
        assert!(v.is_empty());
        assert_eq!(page_size(1001, 50, &mut v), 50);
        assert_eq!(page_size(-1, 50, &mut v), 50);
        assert!(!v.is_empty());
    }
}
