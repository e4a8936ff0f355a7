//! AIP-158 page tokens: base64url (no padding) JSON of whatever a List needs to resume (the
//! last row's sort key, and what the token was made for, so a token used with other
//! parameters can be refused).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};

/// The token of `state`.
pub fn encode(state: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(state).unwrap_or_default())
}

/// The state of `token`; `None` when it is not one of ours.
pub fn decode<T: DeserializeOwned>(token: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token).ok()?).ok()
}
