//! Compiles the `filter` and `order_by` strings of `ListTasks` into PostgreSQL fragments.
//!
//! `filter` is a subset of [AIP-160](https://google.aip.dev/160):
//!
//! ```text
//! expression := term { ["AND" | "OR"] term }      -- AND binds tighter than OR; juxtaposition is AND
//! term       := ["NOT" | "-"] ( "(" expression ")" | field op value | field ":*" )
//! op         := "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
//! value      := bare word | "double-quoted string" (escapes: \" and \\)
//! ```
//!
//! `order_by` follows [AIP-132](https://google.aip.dev/132#ordering). The SQL refers to the
//! `tasks` table as alias `t`, and user values never reach the SQL text: each one becomes a `$N`
//! bind parameter. Error positions are 1-based character (not byte) columns of the input.

use chrono::{DateTime, Utc};

/// Longest accepted filter, in characters.
const MAX_FILTER_CHARS: usize = 2_000;
/// Deepest accepted parenthesis nesting; bounds the parser's recursion.
const MAX_DEPTH: usize = 32;
/// Most comparisons accepted in one filter; bounds the size of the generated SQL.
const MAX_COMPARISONS: usize = 100;
/// Longest tag name a `tags` comparison accepts, in characters.
const MAX_TAG_CHARS: usize = 64;
/// Longest piece of user input echoed back in an error message, in characters.
const MAX_ECHO_CHARS: usize = 40;
/// The filterable fields (AIP-160 field paths) and the SQL each one compares.
const FIELDS: [(&str, &str); 8] = [
    ("state", "t.state"),
    ("priority", "t.priority"),
    ("tags", "t.tag_ids"),
    ("due_time", "t.due_at"),
    ("create_time", "t.create_time"),
    ("update_time", "t.update_time"),
    ("complete_time", "t.complete_time"),
    ("recurring", "(t.rrule IS NOT NULL)"),
];
/// Operators that order values (AIP-160 comparison operators, minus `:`).
const ORDERING_OPS: [&str; 6] = ["=", "!=", "<", "<=", ">", ">="];

/// A bind parameter value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SqlValue {
    /// A `text` value.
    Text(String),
    /// An integer, compared against `smallint` enum columns.
    Int(i64),
    /// A `timestamptz` value.
    Time(DateTime<Utc>),
    /// A `boolean` value.
    Bool(bool),
}

/// A compiled filter: `sql` is a boolean SQL expression over table alias `t` that uses
/// placeholders `$N` numbered from the `first_param` passed to [`compile_filter`]; `params[i]`
/// binds placeholder `$(first_param + i)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SqlFilter {
    /// Boolean SQL expression, safe to splice into a `WHERE` clause.
    pub(crate) sql: String,
    /// Values for the placeholders in `sql`, in placeholder order.
    pub(crate) params: Vec<SqlValue>,
}

/// Why a `filter` (AIP-160) or `order_by` (AIP-132) is rejected. Positions are 1-based characters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum FilterError {
    /// The filter exceeds [`MAX_FILTER_CHARS`].
    #[error("filter is longer than {MAX_FILTER_CHARS} characters")]
    TooLong,
    /// Parentheses nest deeper than [`MAX_DEPTH`].
    #[error("filter nests parentheses deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The filter has more than [`MAX_COMPARISONS`] comparisons.
    #[error("filter has more than {MAX_COMPARISONS} comparisons")]
    TooManyComparisons,
    /// The input ended where something else was required.
    #[error("expected {expected} at end of filter")]
    UnexpectedEnd { expected: String },
    /// A token that does not fit the grammar.
    #[error("expected {expected} but found \"{found}\" at position {pos}")]
    Unexpected {
        expected: String,
        found: String,
        pos: usize,
    },
    /// An operator with nothing after it.
    #[error("expected a value after \"{op}\" at position {pos}")]
    MissingValue { op: &'static str, pos: usize },
    /// A quoted string without its closing quote.
    #[error("unterminated string starting at position {pos}")]
    UnterminatedString { pos: usize },
    /// A backslash escape other than `\"` or `\\`.
    #[error("unsupported escape \"\\{escape}\" at position {pos}")]
    BadEscape { escape: char, pos: usize },
    /// `()` with nothing inside.
    #[error("empty parentheses at position {pos}")]
    EmptyParentheses { pos: usize },
    /// A `(` that is never closed.
    #[error("missing \")\" for the \"(\" at position {pos}")]
    UnclosedParenthesis { pos: usize },
    /// A `)` without a matching `(`.
    #[error("unexpected \")\" at position {pos}")]
    UnmatchedParenthesis { pos: usize },
    /// A filter field this service does not support.
    #[error("unknown field \"{field}\"")]
    UnknownField { field: String },
    /// A known field used with an operator it does not support (`:*` included).
    #[error("operator \"{op}\" is not supported for field \"{field}\"")]
    UnsupportedOperator {
        field: &'static str,
        op: &'static str,
    },
    /// A value that is invalid for its field.
    #[error("{field} must be {expected}")]
    InvalidValue {
        field: &'static str,
        expected: &'static str,
    },
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

/// Parses and compiles an AIP-160 `filter` into SQL whose placeholders start at `$first_param`
/// (use 1 when the filter's parameters come first). An empty or whitespace-only filter matches
/// everything: `TRUE` with no parameters.
pub(crate) fn compile_filter(filter: &str, first_param: usize) -> Result<SqlFilter, FilterError> {
    if filter.chars().count() > MAX_FILTER_CHARS {
        return Err(FilterError::TooLong);
    }
    if filter.trim().is_empty() {
        return Ok(SqlFilter {
            sql: "TRUE".into(),
            params: Vec::new(),
        });
    }
    let mut parser = Parser {
        chars: filter.chars().collect(),
        pos: 0,
        params: Vec::new(),
        first_param,
        depth: 0,
        comparisons: 0,
    };
    let sql = parser.parse_or()?;
    parser.skip_ws();
    match parser.peek() {
        None => Ok(SqlFilter {
            sql,
            params: parser.params,
        }),
        Some(')') => Err(FilterError::UnmatchedParenthesis {
            pos: parser.pos + 1,
        }),
        Some(_) => Err(parser.expected("AND, OR or the end of the filter")),
    }
}

/// Recursive-descent parser over the filter's characters that emits SQL as it goes (no AST).
struct Parser {
    /// The filter as characters, so no index can split a UTF-8 sequence.
    chars: Vec<char>,
    /// Index into `chars` of the next unread character; never exceeds `chars.len()`.
    pos: usize,
    /// Bind values collected so far, in placeholder order.
    params: Vec<SqlValue>,
    /// Placeholder number of `params[0]`.
    first_param: usize,
    /// Current parenthesis nesting depth.
    depth: usize,
    /// Comparisons parsed so far.
    comparisons: usize,
}

impl Parser {
    /// The next unread character, if any.
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Skips whitespace, which AIP-160 allows (but does not require) between tokens.
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// The run of identifier characters starting at the current position (not consumed).
    fn word(&self) -> String {
        self.chars
            .iter()
            .skip(self.pos)
            .take_while(|c| is_ident_char(**c))
            .collect()
    }

    /// Consumes the upper-case keyword `kw` (AIP-160 `AND`/`OR`/`NOT`) if it is the next word.
    fn eat_keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let found = self.word() == kw;
        if found {
            self.pos += kw.len();
        }
        found
    }

    /// An error saying `what` was expected at the current position.
    fn expected(&self, what: &str) -> FilterError {
        let expected = what.to_owned();
        match self.peek() {
            None => FilterError::UnexpectedEnd { expected },
            Some(c) => {
                let word = self.word();
                let found = if word.is_empty() {
                    c.to_string()
                } else {
                    echo(&word)
                };
                FilterError::Unexpected {
                    expected,
                    found,
                    pos: self.pos + 1,
                }
            }
        }
    }

    /// `expression := and_chain { "OR" and_chain }`.
    fn parse_or(&mut self) -> Result<String, FilterError> {
        let mut parts = vec![self.parse_and()?];
        while self.eat_keyword("OR") {
            parts.push(self.parse_and()?);
        }
        Ok(join(parts, " OR "))
    }

    /// `and_chain := term { ["AND"] term }`; a chain ends at `)`, `OR` or the end of input.
    fn parse_and(&mut self) -> Result<String, FilterError> {
        let mut parts = vec![self.parse_term()?];
        loop {
            self.skip_ws();
            if matches!(self.peek(), None | Some(')')) || self.word() == "OR" {
                break;
            }
            self.eat_keyword("AND"); // Optional: AIP-160 reads `a b` as `a AND b`.
            parts.push(self.parse_term()?);
        }
        Ok(join(parts, " AND "))
    }

    /// `term := ["NOT" | "-"] ( "(" expression ")" | comparison )`.
    fn parse_term(&mut self) -> Result<String, FilterError> {
        self.skip_ws();
        let negated = if self.peek() == Some('-') {
            self.pos += 1;
            true
        } else {
            self.eat_keyword("NOT")
        };
        self.skip_ws();
        let sql = if self.peek() == Some('(') {
            self.parse_group()?
        } else {
            self.parse_comparison()?
        };
        Ok(if negated { format!("NOT ({sql})") } else { sql })
    }

    /// `"(" expression ")"`, with the current position on the `(`.
    fn parse_group(&mut self) -> Result<String, FilterError> {
        let open = self.pos + 1;
        self.pos += 1;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::TooDeep);
        }
        self.skip_ws();
        if self.peek() == Some(')') {
            return Err(FilterError::EmptyParentheses { pos: open });
        }
        let sql = self.parse_or()?;
        self.skip_ws();
        match self.peek() {
            Some(')') => self.pos += 1,
            None => return Err(FilterError::UnclosedParenthesis { pos: open }),
            Some(_) => return Err(self.expected("\")\"")),
        }
        self.depth -= 1;
        Ok(sql)
    }

    /// `field op value` or `field:*`.
    fn parse_comparison(&mut self) -> Result<String, FilterError> {
        let name = self.word();
        if name.is_empty() || ["AND", "OR", "NOT"].contains(&name.as_str()) {
            return Err(self.expected("a field name"));
        }
        let (field, lhs) = FIELDS
            .into_iter()
            .find(|(f, _)| *f == name)
            .ok_or_else(|| FilterError::UnknownField { field: echo(&name) })?;
        self.pos += name.len(); // Identifier characters are ASCII: one char per byte.
        self.skip_ws();
        let op_pos = self.pos + 1;
        let op = self
            .take_op()
            .ok_or_else(|| self.expected(&format!("an operator after \"{field}\"")))?;
        self.skip_ws();
        let (value, quoted) = if self.peek() == Some('"') {
            (self.take_quoted()?, true)
        } else {
            let bare: String = self
                .chars
                .iter()
                .skip(self.pos)
                .take_while(|c| is_bare_char(**c))
                .collect();
            self.pos += bare.chars().count();
            (bare, false)
        };
        if value.is_empty() && !quoted {
            return Err(FilterError::MissingValue { op, pos: op_pos });
        }
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(FilterError::TooManyComparisons);
        }
        self.comparison_sql(field, lhs, op, &value, quoted)
    }

    /// Consumes a comparison operator (longest match first).
    fn take_op(&mut self) -> Option<&'static str> {
        let next = self.chars.get(self.pos + 1).copied();
        let op = match (self.peek()?, next) {
            ('<', Some('=')) => "<=",
            ('>', Some('=')) => ">=",
            ('!', Some('=')) => "!=",
            ('<', _) => "<",
            ('>', _) => ">",
            ('=', _) => "=",
            (':', _) => ":",
            _ => return None,
        };
        self.pos += op.len();
        Some(op)
    }

    /// Consumes a double-quoted string starting at the current `"` and returns its unescaped text.
    fn take_quoted(&mut self) -> Result<String, FilterError> {
        let start = self.pos + 1;
        self.pos += 1;
        let mut text = String::new();
        loop {
            let c = self
                .peek()
                .ok_or(FilterError::UnterminatedString { pos: start })?;
            self.pos += 1;
            match c {
                '"' => return Ok(text),
                '\\' => match self.peek() {
                    Some(e @ ('"' | '\\')) => {
                        text.push(e);
                        self.pos += 1;
                    }
                    Some(escape) => {
                        return Err(FilterError::BadEscape {
                            escape,
                            pos: self.pos,
                        });
                    }
                    None => return Err(FilterError::UnterminatedString { pos: start }),
                },
                _ => text.push(c),
            }
        }
    }

    /// Appends a bind parameter and returns its placeholder, e.g. `$3`.
    fn bind(&mut self, value: SqlValue) -> String {
        let n = self.first_param.saturating_add(self.params.len());
        self.params.push(value);
        format!("${n}")
    }

    /// SQL for one comparison on a known `field` whose SQL is `lhs`; `quoted` tells `"*"` apart
    /// from the `:*` presence test.
    fn comparison_sql(
        &mut self,
        field: &'static str,
        lhs: &str,
        op: &'static str,
        value: &str,
        quoted: bool,
    ) -> Result<String, FilterError> {
        let invalid = |expected| FilterError::InvalidValue { field, expected };
        if op == ":" && value == "*" && !quoted {
            return match field {
                "due_time" | "complete_time" => Ok(format!("{lhs} IS NOT NULL")),
                _ => Err(FilterError::UnsupportedOperator { field, op: ":*" }),
            };
        }
        let upper = value.to_ascii_uppercase();
        let value = match field {
            "state" => {
                require_op(field, op, &["=", "!="])?;
                SqlValue::Int(match upper.strip_prefix("STATE_").unwrap_or(&upper) {
                    "OPEN" => 1,
                    "COMPLETED" => 2,
                    _ => return Err(invalid("OPEN or COMPLETED")),
                })
            }
            "priority" => {
                require_op(field, op, &ORDERING_OPS)?;
                SqlValue::Int(match upper.strip_prefix("PRIORITY_").unwrap_or(&upper) {
                    "NONE" => 1,
                    "LOW" => 2,
                    "MEDIUM" => 3,
                    "HIGH" => 4,
                    "URGENT" => 5,
                    _ => return Err(invalid("one of NONE, LOW, MEDIUM, HIGH, URGENT")),
                })
            }
            "tags" => {
                require_op(field, op, &[":", "="])?;
                if !(1..=MAX_TAG_CHARS).contains(&value.chars().count()) {
                    return Err(invalid("a tag name of 1 to 64 characters"));
                }
                let p = self.bind(SqlValue::Text(value.to_owned()));
                return Ok(format!(
                    "EXISTS (SELECT 1 FROM tags g WHERE g.id = ANY(t.tag_ids) AND lower(g.display_name) = lower({p}))"
                ));
            }
            "recurring" => {
                require_op(field, op, &["="])?;
                SqlValue::Bool(match upper.as_str() {
                    "TRUE" => true,
                    "FALSE" => false,
                    _ => return Err(invalid("true or false")),
                })
            }
            "due_time" | "create_time" | "update_time" | "complete_time" => {
                require_op(field, op, &ORDERING_OPS)?;
                let time = DateTime::parse_from_rfc3339(value)
                    .map_err(|_| invalid("an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"))?;
                SqlValue::Time(time.to_utc())
            }
            _ => {
                return Err(FilterError::UnknownField {
                    field: field.into(),
                });
            }
        };
        Ok(format!("{lhs} {} {}", sql_op(op), self.bind(value)))
    }
}

/// Whether `c` may appear in a field name or keyword.
fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// Whether `c` may appear in an unquoted value (so RFC 3339 timestamps, with `:` and `-`, fit).
fn is_bare_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '"')
}

/// Joins operands with ` AND ` or ` OR `, parenthesised when there is more than one.
fn join(parts: Vec<String>, separator: &str) -> String {
    if parts.len() == 1 {
        parts.concat()
    } else {
        format!("({})", parts.join(separator))
    }
}

/// Rejects an operator that `field` does not support.
fn require_op(field: &'static str, op: &'static str, allowed: &[&str]) -> Result<(), FilterError> {
    if allowed.contains(&op) {
        Ok(())
    } else {
        Err(FilterError::UnsupportedOperator { field, op })
    }
}

/// The SQL spelling of an AIP-160 comparison operator.
fn sql_op(op: &'static str) -> &'static str {
    if op == "!=" { "<>" } else { op }
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
pub(crate) fn parse_order_by(order_by: &str) -> Result<Vec<OrderKey>, FilterError> {
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
        let name = words.next().ok_or(FilterError::EmptyOrderItem)?;
        let field = OrderField::NAMES
            .into_iter()
            .find(|(_, n)| *n == name)
            .map(|(f, _)| f)
            .ok_or_else(|| FilterError::UnknownOrderField { field: echo(name) })?;
        let bad = |found: &str| FilterError::BadDirection {
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
            return Err(FilterError::DuplicateOrderField {
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
    use SqlValue::{Bool, Int, Text};

    /// Asserts that `filter` compiles (placeholders from `$1`) to `sql` with `params`.
    fn check(filter: &str, sql: &str, params: &[SqlValue]) {
        let compiled = compile_filter(filter, 1).unwrap_or_else(|e| panic!("{filter:?}: {e}"));
        assert_eq!(
            (compiled.sql.as_str(), compiled.params.as_slice()),
            (sql, params),
            "{filter:?}"
        );
    }

    /// The Display text of the error `filter` must produce.
    fn err(filter: &str) -> String {
        compile_filter(filter, 1).expect_err(filter).to_string()
    }

    /// The non-blank `input => expected` lines of `cases`, trimmed.
    fn table(cases: &str) -> Vec<(&str, &str)> {
        let rows = cases.lines().filter(|l| !l.trim().is_empty());
        rows.map(|l| {
            l.split_once(" => ")
                .map(|(a, b)| (a.trim(), b.trim()))
                .expect(l)
        })
        .collect()
    }

    /// A `SqlValue::Time` from RFC 3339 text.
    fn time(s: &str) -> SqlValue {
        SqlValue::Time(DateTime::parse_from_rfc3339(s).expect(s).to_utc())
    }

    /// SQL of a `tags` comparison bound to `$n`.
    fn tag(n: usize) -> String {
        format!(
            "EXISTS (SELECT 1 FROM tags g WHERE g.id = ANY(t.tag_ids) AND lower(g.display_name) = lower(${n}))"
        )
    }

    #[test]
    fn empty_filter_matches_everything() {
        for f in ["", "   ", "\t\n"] {
            check(f, "TRUE", &[]);
        }
    }

    #[test]
    fn each_field() {
        check("state = OPEN", "t.state = $1", &[Int(1)]);
        check("state!=state_completed", "t.state <> $1", &[Int(2)]);
        check("state=\"Open\"", "t.state = $1", &[Int(1)]);
        for op in ORDERING_OPS {
            let sql = format!("t.priority {} $1", op.replace("!=", "<>"));
            check(&format!("priority{op}HIGH"), &sql, &[Int(4)]);
        }
        for (n, name) in (1..).zip(["none", "LOW", "Medium", "PRIORITY_HIGH", "urgent"]) {
            check(&format!("priority = {name}"), "t.priority = $1", &[Int(n)]);
        }
        check("tags:work", &tag(1), &[Text("work".into())]);
        check(
            r#"tags = "say \"hi\" \\ ok""#,
            &tag(1),
            &[Text(r#"say "hi" \ ok"#.into())],
        );
        check(r#"tags:"*""#, &tag(1), &[Text("*".into())]);
        check(
            &format!("tags:{}", "é".repeat(64)),
            &tag(1),
            &[Text("é".repeat(64))],
        );
        check(
            "recurring=true",
            "(t.rrule IS NOT NULL) = $1",
            &[Bool(true)],
        );
        check(
            "recurring = FALSE",
            "(t.rrule IS NOT NULL) = $1",
            &[Bool(false)],
        );
    }

    #[test]
    fn timestamps_and_presence() {
        let nine = [time("2024-05-01T09:00:00Z")];
        check(r#"due_time<"2024-05-01T09:00:00Z""#, "t.due_at < $1", &nine);
        check(
            "create_time>=2024-05-01T11:00:00+02:00",
            "t.create_time >= $1",
            &nine,
        );
        check(
            "update_time > 2024-05-01T09:00:00.000Z",
            "t.update_time > $1",
            &nine,
        );
        check(
            "complete_time!=2024-05-01T09:00:00Z",
            "t.complete_time <> $1",
            &nine,
        );
        check("due_time:*", "t.due_at IS NOT NULL", &[]);
        check("complete_time : *", "t.complete_time IS NOT NULL", &[]);
    }

    #[test]
    fn combinations() {
        // x, y, z stand for three comparisons and X, Y, Z for their SQL.
        let cases = r#"
            x OR y AND z          => (X OR (Y AND Z))
            x AND y OR z          => ((X AND Y) OR Z)
            x y  z                => (X AND Y AND Z)
            x(y OR z)             => (X AND (Y OR Z))
            (x OR y) AND z        => ((X OR Y) AND Z)
            ((( x ))) NOT y -z    => (X AND NOT (Y) AND NOT (Z))
            NOT(x OR y) OR -(z)   => (NOT ((X OR Y)) OR NOT (Z))
        "#;
        for (filter, sql) in table(cases) {
            let filter = filter
                .replace('x', "state=OPEN")
                .replace('y', "priority=HIGH")
                .replace('z', "recurring=true");
            let sql = sql
                .replace('X', "t.state = $1")
                .replace('Y', "t.priority = $2")
                .replace('Z', "(t.rrule IS NOT NULL) = $3");
            check(&filter, &sql, &[Int(1), Int(4), Bool(true)]);
        }
    }

    #[test]
    fn placeholders_start_at_first_param() {
        let f = compile_filter("state=OPEN AND tags:x", 3).expect("valid");
        assert_eq!(f.sql, format!("(t.state = $3 AND {})", tag(4)));
        assert_eq!(f.params, [Int(1), Text("x".into())]);
    }

    #[test]
    fn errors() {
        let cases = r#"
            foo=1                         => unknown field "foo"
            state<OPEN                    => operator "<" is not supported for field "state"
            tags<x                        => operator "<" is not supported for field "tags"
            recurring!=true               => operator "!=" is not supported for field "recurring"
            due_time:2024-05-01T09:00:00Z => operator ":" is not supported for field "due_time"
            create_time:*                 => operator ":*" is not supported for field "create_time"
            state=DONE                    => state must be OPEN or COMPLETED
            priority=HUGE                 => priority must be one of NONE, LOW, MEDIUM, HIGH, URGENT
            recurring=yes                 => recurring must be true or false
            tags:""                       => tags must be a tag name of 1 to 64 characters
            due_time<2024-05-01           => due_time must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z
            state=OPEN AND priority<      => expected a value after "<" at position 24
            state                         => expected an operator after "state" at end of filter
            state OPEN                    => expected an operator after "state" but found "OPEN" at position 7
            state=OPEN AND                => expected a field name at end of filter
            state=OPEN OR OR x            => expected a field name but found "OR" at position 15
            NOT NOT state=OPEN            => expected a field name but found "NOT" at position 5
            =OPEN                         => expected a field name but found "=" at position 1
            tags:"abc                     => unterminated string starting at position 6
            tags:"a\nb"                   => unsupported escape "\n" at position 8
            (state=OPEN                   => missing ")" for the "(" at position 1
            state=OPEN)                   => unexpected ")" at position 11
            state=OPEN ()                 => empty parentheses at position 12
            (state=OPEN "x")              => expected a field name but found """ at position 13
        "#;
        for (input, message) in table(cases) {
            assert_eq!(err(input), message, "{input:?}");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(
            err(&" ".repeat(2001)),
            "filter is longer than 2000 characters"
        );
        let nested = |n| format!("{}state=OPEN{}", "(".repeat(n), ")".repeat(n));
        check(&nested(32), "t.state = $1", &[Int(1)]);
        assert_eq!(
            err(&nested(33)),
            "filter nests parentheses deeper than 32 levels"
        );
        let many = |n| vec!["state=OPEN"; n].join(" OR ");
        assert_eq!(
            compile_filter(&many(100), 1).map(|f| f.params.len()),
            Ok(100)
        );
        assert_eq!(err(&many(101)), "filter has more than 100 comparisons");
        let long = format!("{}=1", "x".repeat(500));
        assert_eq!(err(&long), format!("unknown field \"{}…\"", "x".repeat(40)));
    }

    #[test]
    fn odd_inputs_never_panic() {
        let fixed = r#""" " \ ( ) (((( )))) () - -- NOT AND OR = != <= : :* * state= state=" tags:"\ tags:"\"
            é=1 état=OPEN tags:日本 tags:"🦀" state=OPEN\0 -(-(-( NOT( state=OPEN_OR due_time:*) tags:a:b
            priority<<HIGH priority=>HIGH a.b.c=1 priority>=HIGH)"#;
        let vocab: Vec<&str> = fixed
            .split(' ')
            .chain([
                "state",
                "tags",
                "2024-05-01T09:00:00Z",
                "\u{200b}",
                "\0",
                "\u{10ffff}",
            ])
            .collect();
        let mut seed: u64 = 0x5eed;
        for _ in 0..20_000 {
            let mut input = String::new();
            for _ in 0..seed % 12 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                input.push_str(vocab[(seed >> 33) as usize % vocab.len()]);
            }
            seed = seed.wrapping_add(7);
            let _ = compile_filter(&input, 1);
        }
        for input in fixed.split_whitespace() {
            let _ = compile_filter(input, 1);
        }
        let _ = compile_filter(&"(".repeat(1_000_000), 1);
        let _ = compile_filter(&"-".repeat(2000), usize::MAX);
    }

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
