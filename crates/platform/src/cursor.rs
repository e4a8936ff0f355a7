//! The live-stream cursor: one position per change log (tasks, notifications), carried to
//! clients as an opaque URL-safe string.
//!
//! Encoding: base64url (no padding) of `v1;t=<task sequence>;n=<notification sequence>`.
//! A missing position (a cursor from ListTasks knows only the task log, one from
//! ListNotifications only the notification log) means "that log from when the stream opens";
//! at least one is present. [`Cursor::merge`] combines a ListTasks and a ListNotifications
//! cursor.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// Positions in each change log: the last change the holder has seen (0 = none yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Last seen sequence of the task change log; `None` = from the stream's start.
    pub task: Option<i64>,
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
        let mut text = String::from("v1");
        if let Some(t) = self.task {
            text.push_str(&format!(";t={t}"));
        }
        if let Some(n) = self.notification {
            text.push_str(&format!(";n={n}"));
        }
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
        for part in parts {
            let (key, value) = part.split_once('=').ok_or(BadCursor)?;
            let value: i64 = value.parse().map_err(|_| BadCursor)?;
            if value < 0 {
                return Err(BadCursor);
            }
            match key {
                "t" if cursor.task.is_none() => cursor.task = Some(value),
                "n" if cursor.notification.is_none() => cursor.notification = Some(value),
                _ => return Err(BadCursor),
            }
        }
        if cursor.task.is_none() && cursor.notification.is_none() {
            return Err(BadCursor);
        }
        Ok(cursor)
    }

    /// This cursor with the positions it lacks taken from `other` (e.g. a ListTasks cursor
    /// merged with a ListNotifications cursor).
    pub fn merge(self, other: Cursor) -> Cursor {
        Cursor {
            task: self.task.or(other.task),
            notification: self.notification.or(other.notification),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for cursor in [
            Cursor {
                task: Some(0),
                notification: None,
            },
            Cursor {
                task: Some(42),
                notification: Some(7),
            },
            Cursor {
                task: Some(i64::MAX),
                notification: None,
            },
            Cursor {
                task: None,
                notification: Some(3),
            },
        ] {
            assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        }
    }

    #[test]
    fn rejects_garbage() {
        // "", "!!", "v1;t=-1", "xyz", "v1", "v1;t=1;t=2"
        for text in ["", "!!", "djE7dD0tMQ", "eHl6", "djE", "djE7dD0xO3Q9Mg"] {
            assert_eq!(Cursor::decode(text), Err(BadCursor), "{text}");
        }
    }

    #[test]
    fn merges_positions_it_lacks() {
        let tasks = Cursor {
            task: Some(5),
            notification: None,
        };
        let notifications = Cursor {
            task: None,
            notification: Some(9),
        };
        assert_eq!(
            tasks.merge(notifications),
            Cursor {
                task: Some(5),
                notification: Some(9)
            }
        );
        let both = Cursor {
            task: Some(1),
            notification: Some(2),
        };
        assert_eq!(both.merge(tasks), both);
    }
}
