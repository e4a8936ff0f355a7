//! ListTasks' `order_by` (AIP-132): the sortable fields, their SQL sort expressions and the
//! parser.
//!
//! The SQL refers to the `tasks` table as alias `t`.

/// Longest piece of user input echoed back in an error message, in characters.
const MAX_ECHO_CHARS: usize = 40;

/// Why an `order_by` (AIP-132) is rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum OrderByError {
    /// An `order_by` field that cannot be sorted on.
    #[error(
        "unknown order_by field \"{field}\"; expected due_time, priority, create_time, update_time or title"
    )]
    UnknownOrderField { field: String },
    /// An `order_by` field listed twice.
    #[error("order_by field \"{field}\" appears more than once")]
    DuplicateOrderField { field: &'static str },
    /// An empty item in `order_by`, e.g. `"title,"`.
    #[error("order_by has an empty item")]
    EmptyOrderItem,
    /// Something other than `asc`/`desc` after an `order_by` field.
    #[error(
        "order_by field \"{field}\" may only be followed by \"asc\" or \"desc\", not \"{found}\""
    )]
    BadDirection { field: &'static str, found: String },
}

/// User input shortened for an error message.
fn echo(text: &str) -> String {
    taskmesh_platform::grpc::truncate(text, MAX_ECHO_CHARS).into_owned()
}

/// One sortable field of AIP-132 `order_by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrderField {
    /// `due_time`; tasks without a due time sort last in both directions.
    DueTime,
    /// `priority` (NONE=1 .. URGENT=5).
    Priority,
    /// `create_time`.
    CreateTime,
    /// `update_time`.
    UpdateTime,
    /// `title`, case-insensitively.
    Title,
}

/// One `ORDER BY` key: a field and its direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OrderKey {
    /// The field to sort on.
    pub(crate) field: OrderField,
    /// `true` for `desc`, `false` for `asc` (the AIP-132 default).
    pub(crate) descending: bool,
}

impl OrderField {
    /// Every field with its AIP-132 `order_by` name.
    const NAMES: [(Self, &'static str); 5] = [
        (Self::DueTime, "due_time"),
        (Self::Priority, "priority"),
        (Self::CreateTime, "create_time"),
        (Self::UpdateTime, "update_time"),
        (Self::Title, "title"),
    ];

    /// The field's name as written in `order_by`.
    fn name(self) -> &'static str {
        Self::NAMES
            .into_iter()
            .find(|(f, _)| *f == self)
            .map_or("", |(_, name)| name)
    }

    /// SQL sort expression over alias `t`. It is never NULL, so keyset pagination can compare row
    /// values; a missing due time maps to whichever infinity sorts last in the given direction.
    pub(crate) fn sql(self, descending: bool) -> &'static str {
        match self {
            Self::DueTime if descending => "COALESCE(t.due_at, '-infinity'::timestamptz)",
            Self::DueTime => "COALESCE(t.due_at, 'infinity'::timestamptz)",
            Self::Priority => "t.priority",
            Self::CreateTime => "t.create_time",
            Self::UpdateTime => "t.update_time",
            Self::Title => "lower(t.title)",
        }
    }

    /// PostgreSQL type of [`Self::sql`], for casting keyset-pagination cursor parameters.
    pub(crate) fn sql_type(self) -> &'static str {
        match self {
            Self::DueTime | Self::CreateTime | Self::UpdateTime => "timestamptz",
            Self::Priority => "smallint",
            Self::Title => "text",
        }
    }
}

/// Parses AIP-132 `order_by`: comma-separated field names, each optionally followed by `asc` or
/// `desc` (case-insensitive). Each field may appear once. Empty means
/// `due_time, priority desc, create_time`.
pub(crate) fn parse_order_by(order_by: &str) -> Result<Vec<OrderKey>, OrderByError> {
    if order_by.trim().is_empty() {
        let default = [
            (OrderField::DueTime, false),
            (OrderField::Priority, true),
            (OrderField::CreateTime, false),
        ];
        return Ok(default
            .map(|(field, descending)| OrderKey { field, descending })
            .to_vec());
    }
    let mut keys: Vec<OrderKey> = Vec::new();
    for item in order_by.split(',') {
        let mut words = item.split_whitespace();
        let name = words.next().ok_or(OrderByError::EmptyOrderItem)?;
        let field = OrderField::NAMES
            .into_iter()
            .find(|(_, n)| *n == name)
            .map(|(f, _)| f)
            .ok_or_else(|| OrderByError::UnknownOrderField { field: echo(name) })?;
        let bad = |found: &str| OrderByError::BadDirection {
            field: field.name(),
            found: echo(found),
        };
        let descending = match words.next() {
            None => false,
            Some(d) if d.eq_ignore_ascii_case("asc") => false,
            Some(d) if d.eq_ignore_ascii_case("desc") => true,
            Some(other) => return Err(bad(other)),
        };
        if let Some(extra) = words.next() {
            return Err(bad(extra));
        }
        if keys.iter().any(|k| k.field == field) {
            return Err(OrderByError::DuplicateOrderField {
                field: field.name(),
            });
        }
        keys.push(OrderKey { field, descending });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by() {
        use OrderField::*;
        let keys = |s: &str| {
            parse_order_by(s).map(|k| {
                k.iter()
                    .map(|k| (k.field, k.descending))
                    .collect::<Vec<_>>()
            })
        };
        let default = vec![(DueTime, false), (Priority, true), (CreateTime, false)];
        assert_eq!(keys(""), Ok(default.clone()));
        assert_eq!(keys("  "), Ok(default));
        assert_eq!(
            keys(" title  DESC ,update_time asc,priority,due_time Desc, create_time"),
            Ok(vec![
                (Title, true),
                (UpdateTime, false),
                (Priority, false),
                (DueTime, true),
                (CreateTime, false)
            ])
        );
        let err = |s: &str| parse_order_by(s).expect_err(s).to_string();
        assert_eq!(
            err("title, title desc"),
            r#"order_by field "title" appears more than once"#
        );
        assert!(err("state").starts_with(r#"unknown order_by field "state""#));
        assert!(err("Title").starts_with(r#"unknown order_by field "Title""#));
        assert_eq!(err("title,"), "order_by has an empty item");
        assert!(err("title up").ends_with(r#"not "up""#));
        assert!(err("title desc x").ends_with(r#"not "x""#));
    }

    #[test]
    fn order_field_sql() {
        assert_eq!(
            OrderField::DueTime.sql(false),
            "COALESCE(t.due_at, 'infinity'::timestamptz)"
        );
        assert_eq!(
            OrderField::DueTime.sql(true),
            "COALESCE(t.due_at, '-infinity'::timestamptz)"
        );
        assert_eq!(OrderField::Title.sql(true), "lower(t.title)");
        assert_eq!(OrderField::Priority.sql(false), "t.priority");
        assert_eq!(OrderField::CreateTime.sql(true), "t.create_time");
        assert_eq!(OrderField::Priority.sql_type(), "smallint");
        assert_eq!(OrderField::UpdateTime.sql_type(), "timestamptz");
        assert_eq!(OrderField::Title.sql_type(), "text");
    }
}
