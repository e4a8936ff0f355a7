//! The live-stream cursor: one position per change log (tasks, notifications), carried to
//! clients as an opaque URL-safe string.
//!
//! Encoding: base64url (no padding) of `v1;t=<task sequence>;n=<notification sequence>`.
//! A missing `n` (a cursor from ListTasks, which knows only the task log) means "the
//! notification log from when the stream opens".

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// Positions in each change log: the last change the holder has seen (0 = none yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Last seen sequence of the task change log.
    pub task: i64,
    /// Last seen sequence of the notification change log; `None` = from the stream's start.
    pub notification: Option<i64>,
}

/// A cursor string that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed cursor")]
pub struct BadCursor;

impl Cursor {
    /// The opaque string form.
    pub fn encode(&self) -> String {
        let text = match self.notification {
            Some(n) => format!("v1;t={};n={n}", self.task),
            None => format!("v1;t={}", self.task),
        };
        URL_SAFE_NO_PAD.encode(text)
    }

    /// Parses the opaque string form.
    ///
    /// # Errors
    /// [`BadCursor`] for anything [`Cursor::encode`] did not produce.
    pub fn decode(text: &str) -> Result<Self, BadCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| BadCursor)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| BadCursor)?;
        let mut parts = text.split(';');
        if parts.next() != Some("v1") {
            return Err(BadCursor);
        }
        let mut cursor = Cursor::default();
        let mut seen_task = false;
        for part in parts {
            let (key, value) = part.split_once('=').ok_or(BadCursor)?;
            let value: i64 = value.parse().map_err(|_| BadCursor)?;
            if value < 0 {
                return Err(BadCursor);
            }
            match key {
                "t" => {
                    cursor.task = value;
                    seen_task = true;
                }
                "n" => cursor.notification = Some(value),
                _ => return Err(BadCursor),
            }
        }
        if !seen_task {
            return Err(BadCursor);
        }
        Ok(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for cursor in [
            Cursor::default(),
            Cursor {
                task: 42,
                notification: Some(7),
            },
            Cursor {
                task: i64::MAX,
                notification: None,
            },
        ] {
            assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "!!", "djE7dD0tMQ", "eHl6", "djE7bj0z"] {
            assert_eq!(Cursor::decode(text), Err(BadCursor), "{text}");
        }
    }
}
