//! Resource names (AIP-122) of the mesh's resources, parsed and printed here only: every
//! service converts a request's `name` (or a field that holds one) at the edge with
//! `parse`, and prints one with `Display`. No other code splits names on `/`.
//!
//! | type | pattern | |
//! |---|---|---|
//! | [`TaskName`] | `tasks/{task}` | `{task}` a UUID |
//! | [`TagName`] | `tags/{tag}` | `{tag}` a UUID |
//! | [`ReminderName`] | `tasks/{task}/reminders/{reminder}` | `{reminder}` 1–64 of `a-z`, `0-9`, `-` |
//! | [`NotificationName`] | `notifications/{notification}` | a UUID |
//! | [`SeriesName`] | `series/{series}` | a UUID |
//!
//! A UUID is printed in its hyphenated lower-case form (as every stored name and event
//! carries it); parsing accepts what `uuid` parses (upper case included), so a lookup by a
//! name in another case finds the resource and the response carries the canonical name.

use std::fmt;

use uuid::Uuid;

/// A malformed resource name: its `Display` is the field-violation description AIP-122
/// asks for (`must be tasks/{uuid}`), without repeating the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameError {
    /// The pattern the name must follow, e.g. `tasks/{uuid}`.
    pub pattern: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "must be {}", self.pattern)
    }
}

impl std::error::Error for NameError {}

/// A name whose last segment is a UUID ([`TaskName`], [`TagName`], [`NotificationName`],
/// [`SeriesName`]), for code generic over which one it parses.
pub trait UuidName: Sized + fmt::Display {
    /// Parses a name into its id.
    ///
    /// # Errors
    /// [`NameError`] when `name` does not follow the type's pattern.
    fn parse_id(name: &str) -> Result<Uuid, NameError>;
}

/// `prefix{uuid}`, or `None`.
fn uuid_after(name: &str, prefix: &str) -> Option<Uuid> {
    name.strip_prefix(prefix)
        .and_then(|id| Uuid::parse_str(id).ok())
}

macro_rules! uuid_name {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The collection prefix, with its `/`.
            pub const PREFIX: &'static str = concat!($prefix, "/");
            /// The pattern, as errors show it.
            pub const PATTERN: &'static str = concat!($prefix, "/{uuid}");

            /// Parses a name.
            ///
            /// # Errors
            /// [`NameError`] when `name` does not follow [`Self::PATTERN`].
            pub fn parse(name: &str) -> Result<Self, NameError> {
                uuid_after(name, Self::PREFIX).map(Self).ok_or(NameError {
                    pattern: Self::PATTERN,
                })
            }

            /// The resource's id.
            pub fn id(self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", Self::PREFIX, self.0)
            }
        }

        impl UuidName for $name {
            fn parse_id(name: &str) -> Result<Uuid, NameError> {
                Self::parse(name).map(Self::id)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.to_string()
            }
        }
    };
}

uuid_name!(
    /// `tasks/{task}`: a task.
    TaskName,
    "tasks"
);
uuid_name!(
    /// `tags/{tag}`: a tag.
    TagName,
    "tags"
);
uuid_name!(
    /// `notifications/{notification}`: an in-app notification.
    NotificationName,
    "notifications"
);
uuid_name!(
    /// `series/{series}`: a recurring series of tasks.
    SeriesName,
    "series"
);

/// `tasks/{task}/reminders/{reminder}`: a reminder of a task; `{reminder}` is 1–64 of
/// `a-z`, `0-9` and `-`, chosen by the client (unique within the task).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReminderName {
    /// The task.
    pub task: TaskName,
    /// The reminder's id within the task.
    pub reminder: String,
}

impl ReminderName {
    /// The pattern, as errors show it.
    pub const PATTERN: &'static str = "tasks/{uuid}/reminders/{id}";
    /// Longest reminder id, in characters.
    pub const MAX_ID_CHARS: usize = 64;

    /// The reminder `reminder` of the task `task`.
    pub fn new(task: Uuid, reminder: impl Into<String>) -> Self {
        Self {
            task: TaskName(task),
            reminder: reminder.into(),
        }
    }

    /// Whether `id` is a valid reminder id.
    pub fn valid_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= Self::MAX_ID_CHARS
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }

    /// Parses a name.
    ///
    /// # Errors
    /// [`NameError`] when `name` does not follow [`Self::PATTERN`].
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let error = NameError {
            pattern: Self::PATTERN,
        };
        let rest = name.strip_prefix(TaskName::PREFIX).ok_or(error)?;
        let (task, reminder) = rest.split_once("/reminders/").ok_or(error)?;
        let task = Uuid::parse_str(task).map_err(|_| error)?;
        if !Self::valid_id(reminder) {
            return Err(error);
        }
        Ok(Self {
            task: TaskName(task),
            reminder: reminder.to_owned(),
        })
    }
}

impl fmt::Display for ReminderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/reminders/{}", self.task, self.reminder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0190b9a4-0000-7000-8000-000000000001";

    #[test]
    fn names_round_trip_and_print_canonically() {
        let task = TaskName::parse(&format!("tasks/{ID}")).unwrap();
        assert_eq!(task.to_string(), format!("tasks/{ID}"));
        let upper = TaskName::parse(&format!("tasks/{}", ID.to_uppercase())).unwrap();
        assert_eq!(upper, task, "the id's case does not matter");
        assert_eq!(
            upper.to_string(),
            format!("tasks/{ID}"),
            "printed lower case"
        );
        assert_eq!(
            TagName::parse(&format!("tags/{ID}")).unwrap().to_string(),
            format!("tags/{ID}")
        );
        let reminder = ReminderName::parse(&format!("tasks/{ID}/reminders/at-9")).unwrap();
        assert_eq!(reminder.task, task);
        assert_eq!(reminder.reminder, "at-9");
        assert_eq!(reminder.to_string(), format!("tasks/{ID}/reminders/at-9"));
    }

    #[test]
    fn malformed_names_say_the_pattern() {
        for bad in [
            "",
            "tasks/",
            "tasks/x",
            "task/0190b9a4-0000-7000-8000-000000000001",
            "tags/0190b9a4-0000-7000-8000-000000000001",
            "tasks/0190b9a4-0000-7000-8000-000000000001/",
        ] {
            assert_eq!(
                TaskName::parse(bad).unwrap_err().to_string(),
                "must be tasks/{uuid}",
                "{bad:?}"
            );
        }
        for bad in [
            format!("tasks/{ID}"),
            format!("tasks/{ID}/reminders/"),
            format!("tasks/{ID}/reminders/A"),
            format!("tasks/{ID}/reminders/{}", "a".repeat(65)),
            "tasks/x/reminders/a".to_owned(),
            format!("series/{ID}/reminders/a"),
        ] {
            assert_eq!(
                ReminderName::parse(&bad).unwrap_err().to_string(),
                "must be tasks/{uuid}/reminders/{id}",
                "{bad:?}"
            );
        }
        assert!(SeriesName::parse(&format!("tasks/{ID}")).is_err());
        assert!(NotificationName::parse(&format!("notifications/{ID}")).is_ok());
    }
}
