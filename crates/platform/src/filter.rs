//! The one AIP-160 filter language of every List RPC: a parser that produces an AST
//! ([`parse`]), and a compiler that checks it against the fields a List declares
//! ([`Field`]) and binds every value ([`compile`], then [`Compiled::push`] onto sqlx's
//! `QueryBuilder`). Each service declares its fields; the language, its limits and its error
//! messages are the same everywhere.
//!
//! ```text
//! filter     := [expression]
//! expression := factor { ["AND"] factor }          -- juxtaposition is AND
//! factor     := term { "OR" term }                 -- OR binds tighter than AND
//! term       := ["NOT" | "-"] ( "(" expression ")" | field op value | field ":" "*" )
//! op         := "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
//! value      := bare word | "double-quoted string" (escapes: \" and \\)
//! ```
//!
//! Values by field type: enums by name, case-insensitive, with or without their prefix
//! (`OPEN`, `STATE_OPEN`); timestamps in RFC 3339 (`2026-12-01T09:00:00Z`); booleans `true` /
//! `false`; resource names quoted (`"tasks/…"`); text exact (no NUL character). As in
//! AIP-160, `OR` binds tighter than `AND`: `a AND b OR c` is `a AND (b OR c)`. `field:*` tests presence where a
//! field can be absent. Limits: [`MAX_FILTER_CHARS`] characters, [`MAX_DEPTH`] nested
//! parentheses, [`MAX_COMPARISONS`] comparisons, so parsing takes bounded time and stack on
//! any input. Error positions are 1-based characters. User values never reach the SQL text:
//! each one is a bind parameter.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::grpc::truncate;

/// Longest accepted filter, in characters.
pub const MAX_FILTER_CHARS: usize = 2_000;
/// Deepest accepted parenthesis nesting; bounds the parser's recursion.
pub const MAX_DEPTH: usize = 32;
/// Most comparisons accepted in one filter; bounds the size of the generated SQL.
pub const MAX_COMPARISONS: usize = 100;
/// Longest piece of user input echoed back in an error message, in characters.
const MAX_ECHO_CHARS: usize = 40;

/// An AIP-160 comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `:` (has)
    Has,
}

impl Op {
    /// The operators that compare by order (`=`, `!=`, `<`, `<=`, `>`, `>=`).
    pub const ORDERING: &'static [Op] = &[Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge];
    /// `=` and `!=`.
    pub const EQUALITY: &'static [Op] = &[Op::Eq, Op::Ne];

    /// As written in a filter.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Has => ":",
        }
    }

    /// As written in SQL (`:` compares as `=`).
    fn sql(self) -> &'static str {
        match self {
            Op::Ne => "<>",
            Op::Has => "=",
            other => other.as_str(),
        }
    }
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Every operand holds (at least two).
    And(Vec<Expr>),
    /// Some operand holds (at least two).
    Or(Vec<Expr>),
    /// The operand does not hold.
    Not(Box<Expr>),
    /// `field op value`.
    Compare(Comparison),
    /// `field:*`: the field is present.
    Present {
        /// The field as written.
        field: String,
    },
}

/// One `field op value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The field as written (identifier characters).
    pub field: String,
    /// The operator.
    pub op: Op,
    /// The value, unescaped.
    pub value: String,
    /// Whether the value was double-quoted.
    pub quoted: bool,
}

/// Why a `filter` is rejected; its `Display` is the field violation's description.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
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
    UnexpectedEnd {
        /// What was expected.
        expected: String,
    },
    /// A token that does not fit the grammar.
    #[error("expected {expected} but found \"{found}\" at position {pos}")]
    Unexpected {
        /// What was expected.
        expected: String,
        /// What was found (shortened).
        found: String,
        /// 1-based character position.
        pos: usize,
    },
    /// An operator with nothing after it.
    #[error("expected a value after \"{op}\" at position {pos}")]
    MissingValue {
        /// The operator.
        op: &'static str,
        /// 1-based character position of the operator.
        pos: usize,
    },
    /// A quoted string without its closing quote.
    #[error("unterminated string starting at position {pos}")]
    UnterminatedString {
        /// 1-based character position of the opening quote.
        pos: usize,
    },
    /// A backslash escape other than `\"` or `\\`.
    #[error("unsupported escape \"\\{escape}\" at position {pos}")]
    BadEscape {
        /// The character after the backslash.
        escape: char,
        /// 1-based character position.
        pos: usize,
    },
    /// `()` with nothing inside.
    #[error("empty parentheses at position {pos}")]
    EmptyParentheses {
        /// 1-based character position of the `(`.
        pos: usize,
    },
    /// A `(` that is never closed.
    #[error("missing \")\" for the \"(\" at position {pos}")]
    UnclosedParenthesis {
        /// 1-based character position of the `(`.
        pos: usize,
    },
    /// A `)` without a matching `(`.
    #[error("unexpected \")\" at position {pos}")]
    UnmatchedParenthesis {
        /// 1-based character position.
        pos: usize,
    },
    /// A field this List does not filter on.
    #[error("unknown field \"{field}\"; use {known}")]
    UnknownField {
        /// The field as written (shortened).
        field: String,
        /// The List's fields, comma-separated.
        known: String,
    },
    /// A known field with an operator it does not support (`:*` included).
    #[error("operator \"{op}\" is not supported for field \"{field}\"")]
    UnsupportedOperator {
        /// The field.
        field: &'static str,
        /// The operator.
        op: &'static str,
    },
    /// A value that is invalid for its field.
    #[error("{field} must be {expected}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: String,
    },
}

/// Parses `text`; `Ok(None)` for an empty or blank filter (which matches everything).
///
/// # Errors
/// [`FilterError`] for input outside the grammar or its limits.
pub fn parse(text: &str) -> Result<Option<Expr>, FilterError> {
    if text.chars().count() > MAX_FILTER_CHARS {
        return Err(FilterError::TooLong);
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        depth: 0,
        comparisons: 0,
    };
    let expr = parser.parse_and()?;
    parser.skip_ws();
    match parser.peek() {
        None => Ok(Some(expr)),
        Some(')') => Err(FilterError::UnmatchedParenthesis {
            pos: parser.pos + 1,
        }),
        Some(_) => Err(parser.expected("AND, OR or the end of the filter")),
    }
}

/// Recursive-descent parser over the filter's characters.
struct Parser {
    /// The filter as characters, so no index can split a UTF-8 sequence.
    chars: Vec<char>,
    /// Index into `chars` of the next unread character; never exceeds `chars.len()`.
    pos: usize,
    /// Current parenthesis nesting depth.
    depth: usize,
    /// Comparisons parsed so far.
    comparisons: usize,
}

impl Parser {
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

    /// Consumes the upper-case keyword `kw` (`AND`/`OR`/`NOT`) if it is the next word.
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
                // One character, escaped when it would not show (controls, bidi marks).
                let found = if word.is_empty() && c != '"' {
                    c.escape_debug().to_string()
                } else if word.is_empty() {
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

    /// `expression := factor { ["AND"] factor }`; it ends at `)` or the end of input.
    fn parse_and(&mut self) -> Result<Expr, FilterError> {
        let mut parts = vec![self.parse_or()?];
        loop {
            self.skip_ws();
            if matches!(self.peek(), None | Some(')')) {
                break;
            }
            self.eat_keyword("AND"); // Optional: AIP-160 reads `a b` as `a AND b`.
            parts.push(self.parse_or()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    /// `factor := term { "OR" term }`.
    fn parse_or(&mut self) -> Result<Expr, FilterError> {
        let mut parts = vec![self.parse_term()?];
        while self.eat_keyword("OR") {
            parts.push(self.parse_term()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    /// `term := ["NOT" | "-"] ( "(" expression ")" | comparison )`.
    fn parse_term(&mut self) -> Result<Expr, FilterError> {
        self.skip_ws();
        let negated = if self.peek() == Some('-') {
            self.pos += 1;
            true
        } else {
            self.eat_keyword("NOT")
        };
        self.skip_ws();
        let expr = if self.peek() == Some('(') {
            self.parse_group()?
        } else {
            self.parse_comparison()?
        };
        Ok(if negated {
            Expr::Not(Box::new(expr))
        } else {
            expr
        })
    }

    /// `"(" expression ")"`, with the current position on the `(`.
    fn parse_group(&mut self) -> Result<Expr, FilterError> {
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
        let expr = self.parse_and()?;
        self.skip_ws();
        match self.peek() {
            Some(')') => self.pos += 1,
            None => return Err(FilterError::UnclosedParenthesis { pos: open }),
            Some(_) => return Err(self.expected("\")\"")),
        }
        self.depth -= 1;
        Ok(expr)
    }

    /// `field op value` or `field:*`.
    fn parse_comparison(&mut self) -> Result<Expr, FilterError> {
        let field = self.word();
        if field.is_empty() || ["AND", "OR", "NOT"].contains(&field.as_str()) {
            return Err(self.expected("a field name"));
        }
        self.pos += field.len(); // Identifier characters are ASCII: one char per byte.
        self.skip_ws();
        let op_pos = self.pos + 1;
        let op = self
            .take_op()
            .ok_or_else(|| self.expected(&format!("an operator after \"{}\"", echo(&field))))?;
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
            return Err(FilterError::MissingValue {
                op: op.as_str(),
                pos: op_pos,
            });
        }
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(FilterError::TooManyComparisons);
        }
        Ok(if op == Op::Has && value == "*" && !quoted {
            Expr::Present { field }
        } else {
            Expr::Compare(Comparison {
                field,
                op,
                value,
                quoted,
            })
        })
    }

    /// Consumes a comparison operator (longest match first).
    fn take_op(&mut self) -> Option<Op> {
        let next = self.chars.get(self.pos + 1).copied();
        let op = match (self.peek()?, next) {
            ('<', Some('=')) => Op::Le,
            ('>', Some('=')) => Op::Ge,
            ('!', Some('=')) => Op::Ne,
            ('<', _) => Op::Lt,
            ('>', _) => Op::Gt,
            ('=', _) => Op::Eq,
            (':', _) => Op::Has,
            _ => return None,
        };
        self.pos += op.as_str().len();
        Some(op)
    }

    /// Consumes a double-quoted string starting at the current `"`; returns it unescaped.
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
}

/// Whether `c` may appear in a field name or keyword.
fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// Whether `c` may appear in an unquoted value (so RFC 3339 timestamps, with `:` and `-`, fit).
fn is_bare_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '"')
}

/// User input shortened for an error message.
fn echo(text: &str) -> String {
    truncate(text, MAX_ECHO_CHARS).into_owned()
}

/// A field a List filters on: its name in filters, the SQL it compares, and its type.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The AIP-160 field path, e.g. `due_time`.
    pub name: &'static str,
    /// The SQL expression compared (over the List's table alias), e.g. `t.due_at`.
    pub sql: &'static str,
    /// Its type, which decides the values and operators it takes.
    pub kind: Kind,
}

/// What a [`Field`] holds.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// An enum stored as `smallint`: values by name, case-insensitive, with or without
    /// `prefix` (e.g. `STATE_`). `ordered` enums also take `<`, `<=`, `>`, `>=`.
    Enum {
        /// The enum's value prefix in the proto, e.g. `STATE_`.
        prefix: &'static str,
        /// Each name (without prefix, upper case) with its stored number.
        values: &'static [(&'static str, i16)],
        /// Whether the values compare by order.
        ordered: bool,
    },
    /// A `timestamptz`: an RFC 3339 value, every ordering operator; `nullable` fields also
    /// take `:*` (present).
    Timestamp {
        /// Whether the field can be absent.
        nullable: bool,
    },
    /// A `boolean`: `true` or `false`, with `=`.
    Bool,
    /// A yes/no property written as two fixed SQL conditions (no bind, so the planner sees
    /// the condition itself, e.g. to use a partial index): `true` or `false`, with `=`.
    Flag {
        /// The condition for `= true`.
        when_true: &'static str,
        /// The condition for `= false`.
        when_false: &'static str,
    },
    /// A `text` compared exactly with `=` and `!=`, at most `max_chars` characters.
    Text {
        /// Longest value, in characters.
        max_chars: usize,
    },
    /// A `uuid` column holding the id of a resource whose name a filter gives, e.g.
    /// `task = "tasks/…"`, with `=` and `!=`.
    Name {
        /// Parses the name into its id (a `taskmesh_proto::names` type's `parse_id`).
        parse: fn(&str) -> Result<Uuid, taskmesh_proto::names::NameError>,
        /// The name's pattern, for errors, e.g. `tasks/{uuid}`.
        pattern: &'static str,
    },
    /// A text value tested by a boolean SQL expression: `before` + the bound value + `after`
    /// (e.g. a tag's name matched through a subquery), with `=` and `:`; 1 to `max_chars`
    /// characters.
    Matches {
        /// SQL before the bound value.
        before: &'static str,
        /// SQL after the bound value.
        after: &'static str,
        /// Longest value, in characters.
        max_chars: usize,
        /// What the value is, for errors, e.g. `a tag name`.
        noun: &'static str,
    },
}

/// A value bound to a parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum Bind {
    /// `smallint`.
    Small(i16),
    /// `timestamptz`.
    Time(DateTime<Utc>),
    /// `boolean`.
    Bool(bool),
    /// `text`.
    Text(String),
    /// `uuid`.
    Uuid(Uuid),
}

/// A filter checked against a List's fields, every value typed and ready to bind.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled(Node);

#[derive(Clone, Debug, PartialEq)]
enum Node {
    True,
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Compare {
        sql: &'static str,
        op: Op,
        value: Bind,
    },
    Present(&'static str),
    Fixed(&'static str),
    Matches {
        before: &'static str,
        after: &'static str,
        value: Bind,
    },
}

/// Parses `text` and checks it against `fields`: the filter of a List RPC, ready to push onto
/// its query. An empty filter matches everything.
///
/// # Errors
/// [`FilterError`]: the `filter` field violation's description.
pub fn compile(text: &str, fields: &[Field]) -> Result<Compiled, FilterError> {
    Ok(Compiled(match parse(text)? {
        None => Node::True,
        Some(expr) => node(&expr, fields)?,
    }))
}

fn node(expr: &Expr, fields: &[Field]) -> Result<Node, FilterError> {
    let all = |parts: &[Expr]| -> Result<Vec<Node>, FilterError> {
        parts.iter().map(|p| node(p, fields)).collect()
    };
    Ok(match expr {
        Expr::And(parts) => Node::And(all(parts)?),
        Expr::Or(parts) => Node::Or(all(parts)?),
        Expr::Not(inner) => Node::Not(Box::new(node(inner, fields)?)),
        Expr::Present { field } => {
            let field = find(field, fields)?;
            match field.kind {
                Kind::Timestamp { nullable: true } => Node::Present(field.sql),
                _ => {
                    return Err(FilterError::UnsupportedOperator {
                        field: field.name,
                        op: ":*",
                    });
                }
            }
        }
        Expr::Compare(c) => comparison(c, find(&c.field, fields)?)?,
    })
}

fn find<'f>(name: &str, fields: &'f [Field]) -> Result<&'f Field, FilterError> {
    fields
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| FilterError::UnknownField {
            field: echo(name),
            known: fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
        })
}

fn comparison(c: &Comparison, field: &Field) -> Result<Node, FilterError> {
    let require = |allowed: &[Op]| {
        if allowed.contains(&c.op) {
            Ok(())
        } else {
            Err(FilterError::UnsupportedOperator {
                field: field.name,
                op: c.op.as_str(),
            })
        }
    };
    let invalid = |expected: String| FilterError::InvalidValue {
        field: field.name,
        expected,
    };
    let value = match field.kind {
        Kind::Enum {
            prefix,
            values,
            ordered,
        } => {
            require(if ordered { Op::ORDERING } else { Op::EQUALITY })?;
            let upper = c.value.to_ascii_uppercase();
            let name = upper.strip_prefix(prefix).unwrap_or(&upper);
            let number = values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, number)| *number)
                .ok_or_else(|| invalid(one_of(values)))?;
            Bind::Small(number)
        }
        Kind::Timestamp { .. } => {
            require(Op::ORDERING)?;
            let time = DateTime::parse_from_rfc3339(&c.value).map_err(|_| {
                invalid("an RFC 3339 timestamp such as 2024-05-01T09:00:00Z".into())
            })?;
            Bind::Time(time.to_utc())
        }
        Kind::Bool => {
            require(&[Op::Eq])?;
            Bind::Bool(boolean(&c.value).ok_or_else(|| invalid("true or false".into()))?)
        }
        Kind::Flag {
            when_true,
            when_false,
        } => {
            require(&[Op::Eq])?;
            let yes = boolean(&c.value).ok_or_else(|| invalid("true or false".into()))?;
            return Ok(Node::Fixed(if yes { when_true } else { when_false }));
        }
        Kind::Text { max_chars } => {
            require(Op::EQUALITY)?;
            if c.value.chars().count() > max_chars {
                return Err(invalid(format!("at most {max_chars} characters")));
            }
            if c.value.contains('\0') {
                return Err(invalid(NO_NUL.into()));
            }
            Bind::Text(c.value.clone())
        }
        Kind::Name { parse, pattern } => {
            require(Op::EQUALITY)?;
            Bind::Uuid(parse(&c.value).map_err(|_| invalid(format!("a name {pattern}")))?)
        }
        Kind::Matches {
            before,
            after,
            max_chars,
            noun,
        } => {
            require(&[Op::Has, Op::Eq])?;
            if !(1..=max_chars).contains(&c.value.chars().count()) {
                return Err(invalid(format!("{noun} of 1 to {max_chars} characters")));
            }
            if c.value.contains('\0') {
                return Err(invalid(NO_NUL.into()));
            }
            return Ok(Node::Matches {
                before,
                after,
                value: Bind::Text(c.value.clone()),
            });
        }
    };
    if c.op == Op::Has {
        return Err(FilterError::UnsupportedOperator {
            field: field.name,
            op: ":",
        });
    }
    Ok(Node::Compare {
        sql: field.sql,
        op: c.op,
        value,
    })
}

/// `true` or `false`, case-insensitive.
fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// What a text value with a NUL is told (PostgreSQL's text cannot hold one).
const NO_NUL: &str = "text without NUL characters";

/// `one of A, B or C` (or `A or B`) for an enum's values.
fn one_of(values: &[(&str, i16)]) -> String {
    let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
    match names.as_slice() {
        [] => "empty".into(),
        [one] => (*one).to_owned(),
        [a, b] => format!("{a} or {b}"),
        [rest @ .., last] => format!("one of {}, {last}", rest.join(", ")),
    }
}

/// Where compiled SQL goes: a `QueryBuilder`, or text with numbered placeholders.
trait Sink {
    fn sql(&mut self, sql: &str);
    fn bind(&mut self, value: &Bind);
}

impl Sink for QueryBuilder<'_, Postgres> {
    fn sql(&mut self, sql: &str) {
        self.push(sql);
    }

    fn bind(&mut self, value: &Bind) {
        match value.clone() {
            Bind::Small(v) => self.push_bind(v),
            Bind::Time(v) => self.push_bind(v),
            Bind::Bool(v) => self.push_bind(v),
            Bind::Text(v) => self.push_bind(v),
            Bind::Uuid(v) => self.push_bind(v),
        };
    }
}

/// Text with `$N` placeholders from a first number, and the values in order.
struct Numbered {
    sql: String,
    next: usize,
    binds: Vec<Bind>,
}

impl Sink for Numbered {
    fn sql(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    fn bind(&mut self, value: &Bind) {
        self.sql.push_str(&format!("${}", self.next));
        self.next = self.next.saturating_add(1);
        self.binds.push(value.clone());
    }
}

impl Compiled {
    /// Pushes the filter as a parenthesised boolean SQL expression, its values as binds.
    pub fn push(&self, builder: &mut QueryBuilder<'_, Postgres>) {
        render(&self.0, builder);
    }

    /// The filter as SQL text with placeholders numbered from `$first`, and the values they
    /// bind in order: for queries built without a `QueryBuilder`, and for tests.
    pub fn numbered(&self, first: usize) -> (String, Vec<Bind>) {
        let mut sink = Numbered {
            sql: String::new(),
            next: first,
            binds: Vec::new(),
        };
        render(&self.0, &mut sink);
        (sink.sql, sink.binds)
    }
}

fn render(node: &Node, sink: &mut impl Sink) {
    match node {
        Node::True => sink.sql("TRUE"),
        Node::And(parts) | Node::Or(parts) => {
            let separator = if matches!(node, Node::And(_)) {
                " AND "
            } else {
                " OR "
            };
            sink.sql("(");
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    sink.sql(separator);
                }
                render(part, sink);
            }
            sink.sql(")");
        }
        Node::Not(inner) => {
            sink.sql("NOT (");
            render(inner, sink);
            sink.sql(")");
        }
        Node::Compare { sql, op, value } => {
            sink.sql(&format!("{sql} {} ", op.sql()));
            sink.bind(value);
        }
        Node::Present(sql) => sink.sql(&format!("{sql} IS NOT NULL")),
        Node::Fixed(sql) => {
            sink.sql("(");
            sink.sql(sql);
            sink.sql(")");
        }
        Node::Matches {
            before,
            after,
            value,
        } => {
            sink.sql(before);
            sink.bind(value);
            sink.sql(after);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every kind of field, for the properties below.
    const FIELDS: &[Field] = &[
        Field {
            name: "state",
            sql: "t.state",
            kind: Kind::Enum {
                prefix: "STATE_",
                values: &[("OPEN", 1), ("DONE", 2)],
                ordered: false,
            },
        },
        Field {
            name: "when",
            sql: "t.at",
            kind: Kind::Timestamp { nullable: true },
        },
        Field {
            name: "flag",
            sql: "t.flag",
            kind: Kind::Bool,
        },
        Field {
            name: "done",
            sql: "t.done_at",
            kind: Kind::Flag {
                when_true: "t.done_at IS NOT NULL",
                when_false: "t.done_at IS NULL",
            },
        },
        Field {
            name: "who",
            sql: "t.who",
            kind: Kind::Text { max_chars: 8 },
        },
        Field {
            name: "task",
            sql: "t.task_id",
            kind: Kind::Name {
                parse:
                    <taskmesh_proto::names::TaskName as taskmesh_proto::names::UuidName>::parse_id,
                pattern: "tasks/{uuid}",
            },
        },
        Field {
            name: "tag",
            sql: "t.tags",
            kind: Kind::Matches {
                before: "f(",
                after: ")",
                max_chars: 4,
                noun: "a tag",
            },
        },
    ];

    /// Pieces filters are made of, valid and not.
    const VOCABULARY: &[&str] = &[
        " ",
        "(",
        ")",
        "\"",
        "\\",
        "-",
        "NOT ",
        " AND ",
        " OR ",
        "AND",
        "OR",
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        ":",
        ":*",
        "*",
        "state",
        "when",
        "flag",
        "who",
        "task",
        "tag",
        "x",
        "OPEN",
        "STATE_DONE",
        "true",
        "2026-12-01T09:00:00Z",
        "\"tasks/0190b9a4-0000-7000-8000-000000000001\"",
        "done",
        "false",
        "é",
        "🦀",
        "\u{0}",
        "\u{200b}",
        "a.b",
    ];

    fn soup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(VOCABULARY), 0..60).prop_map(|p| p.concat())
    }

    /// Placeholders `$1`.. in `sql`, counted.
    fn placeholders(sql: &str) -> usize {
        sql.match_indices('$').count()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any input: an answer (no panic), and a compiled filter binds exactly the values
        /// its SQL names, none of them in the SQL text.
        #[test]
        fn any_input_is_answered(text in any::<String>()) {
            if let Ok(compiled) = compile(&text, FIELDS) {
                let (sql, binds) = compiled.numbered(1);
                prop_assert_eq!(placeholders(&sql), binds.len());
            }
        }

        /// Inputs made of the language's own tokens, valid and not, the same.
        #[test]
        fn token_soup_is_answered(text in soup()) {
            if let Ok(compiled) = compile(&text, FIELDS) {
                let (sql, binds) = compiled.numbered(1);
                prop_assert_eq!(placeholders(&sql), binds.len());
                prop_assert!(binds.len() <= MAX_COMPARISONS);
            }
        }

        /// Nesting and length limits hold whatever the shape.
        #[test]
        fn depth_and_length_are_bounded(open in 0usize..200, close in 0usize..200, dashes in 0usize..50) {
            let text = format!("{}{}state=OPEN{}", "(".repeat(open), "-".repeat(dashes), ")".repeat(close));
            match parse(&text) {
                Ok(_) => prop_assert!(open <= MAX_DEPTH && open == close && dashes <= 1),
                Err(FilterError::TooDeep) => prop_assert!(open > MAX_DEPTH),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn huge_inputs_are_refused_quickly() {
        assert_eq!(
            parse(&"(".repeat(1_000_000)),
            Err(FilterError::TooLong),
            "the length is checked before parsing"
        );
        let widest = vec!["state=OPEN"; MAX_COMPARISONS].join(" OR ");
        assert!(compile(&widest, FIELDS).is_ok());
        let wider = vec!["state=OPEN"; MAX_COMPARISONS + 1].join(" OR ");
        assert_eq!(
            compile(&wider, FIELDS),
            Err(FilterError::TooManyComparisons)
        );
    }

    #[test]
    fn every_kind_compiles_to_bound_sql() {
        let (sql, binds) = compile(
            r#"state = open AND -when < 2026-12-01T09:00:00Z OR (flag = TRUE who != "ann") task = "tasks/0190b9a4-0000-7000-8000-000000000001" tag:"x" when:*"#,
            FIELDS,
        )
        .unwrap()
        .numbered(3);
        assert_eq!(
            sql,
            "(t.state = $3 AND (NOT (t.at < $4) OR (t.flag = $5 AND t.who <> $6)) AND t.task_id = $7 AND f($8) AND t.at IS NOT NULL)"
        );
        assert_eq!(binds.len(), 6);
        assert_eq!(binds[0], Bind::Small(1));
        assert_eq!(binds[5], Bind::Text("x".into()));
        let refused = [
            ("who = \"toolongname\"", "who must be at most 8 characters"),
            ("task = \"tasks/x\"", "task must be a name tasks/{uuid}"),
            (
                "tag < x",
                "operator \"<\" is not supported for field \"tag\"",
            ),
            (
                "flag:*",
                "operator \":*\" is not supported for field \"flag\"",
            ),
            (
                "state:OPEN",
                "operator \":\" is not supported for field \"state\"",
            ),
            ("state = LATER", "state must be OPEN or DONE"),
            (
                "who = \"a\u{0}b\"",
                "who must be text without NUL characters",
            ),
            ("tag:\"\u{0}\"", "tag must be text without NUL characters"),
            (
                "state = OPEN \u{1}",
                "expected a field name but found \"\\u{1}\" at position 14",
            ),
            ("state = OPEN)", "unexpected \")\" at position 13"),
            (
                "nope = 1",
                "unknown field \"nope\"; use state, when, flag, done, who, task, tag",
            ),
            (
                "done != true",
                "operator \"!=\" is not supported for field \"done\"",
            ),
        ];
        for (text, message) in refused {
            assert_eq!(
                compile(text, FIELDS).unwrap_err().to_string(),
                message,
                "{text}"
            );
        }
        assert_eq!(compile("  ", FIELDS).unwrap().numbered(1).0, "TRUE");
        assert_eq!(
            compile("done = FALSE", FIELDS).unwrap().numbered(1),
            ("(t.done_at IS NULL)".to_owned(), Vec::new())
        );
    }
}
