//! ListTasks' `filter` and `order_by`: the fields a filter may name (the language is
//! [`taskmesh_platform::filter`], AIP-160, the same in every List) and the AIP-132 ordering.
//!
//! The SQL refers to the `tasks` table as alias `t`, and user values never reach the SQL
//! text: each one is a bind parameter.
//!
//! This module holds the filter's fields; the ordering is in `order_by`.

mod order_by;

use taskmesh_platform::filter::{Field, Kind};

pub(crate) use order_by::{OrderKey, parse_order_by};

/// Longest tag name a `tags` comparison accepts, in characters.
const MAX_TAG_CHARS: usize = 64;

/// The filterable fields of ListTasks (AIP-160 field paths) and the SQL each one compares.
pub(crate) const FIELDS: &[Field] = &[
    Field {
        name: "state",
        sql: "t.state",
        kind: Kind::Enum {
            prefix: "STATE_",
            values: &[("OPEN", 1), ("COMPLETED", 2)],
            ordered: false,
        },
    },
    Field {
        name: "priority",
        sql: "t.priority",
        kind: Kind::Enum {
            prefix: "PRIORITY_",
            values: &[
                ("NONE", 1),
                ("LOW", 2),
                ("MEDIUM", 3),
                ("HIGH", 4),
                ("URGENT", 5),
            ],
            ordered: true,
        },
    },
    Field {
        name: "tags",
        sql: "t.tag_ids",
        kind: Kind::Matches {
            before: "EXISTS (SELECT 1 FROM tags g WHERE g.id = ANY(t.tag_ids) AND lower(g.display_name) = lower(",
            after: "))",
            max_chars: MAX_TAG_CHARS,
            noun: "a tag name",
        },
    },
    Field {
        name: "due_time",
        sql: "t.due_at",
        kind: Kind::Timestamp { nullable: true },
    },
    Field {
        name: "create_time",
        sql: "t.create_time",
        kind: Kind::Timestamp { nullable: false },
    },
    Field {
        name: "update_time",
        sql: "t.update_time",
        kind: Kind::Timestamp { nullable: false },
    },
    Field {
        name: "complete_time",
        sql: "t.complete_time",
        kind: Kind::Timestamp { nullable: true },
    },
    Field {
        name: "recurring",
        sql: "(t.rrule IS NOT NULL)",
        kind: Kind::Bool,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use taskmesh_platform::filter::{self, Bind, FilterError, Op};

    /// A compiled filter: `sql` is a boolean SQL expression over table alias `t` that uses
    /// placeholders `$N` numbered from the `first_param` passed to [`compile_filter`]; `params[i]`
    /// binds placeholder `$(first_param + i)`.
    #[derive(Clone, Debug, PartialEq)]
    struct SqlFilter {
        /// Boolean SQL expression, safe to splice into a `WHERE` clause.
        sql: String,
        /// Values for the placeholders in `sql`, in placeholder order.
        params: Vec<Bind>,
    }

    /// Compiles a ListTasks `filter` into SQL whose placeholders start at `$first_param`. An
    /// empty or whitespace-only filter matches everything: `TRUE` with no parameters.
    ///
    /// # Errors
    /// [`FilterError`], the `filter` field violation's description.
    fn compile_filter(filter: &str, first_param: usize) -> Result<SqlFilter, FilterError> {
        let (sql, params) = filter::compile(filter, FIELDS)?.numbered(first_param);
        Ok(SqlFilter { sql, params })
    }
    use Bind::{Bool, Small as Int, Text};
    use chrono::DateTime;

    /// Asserts that `filter` compiles (placeholders from `$1`) to `sql` with `params`.
    fn check(filter: &str, sql: &str, params: &[Bind]) {
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

    /// A `Bind::Time` from RFC 3339 text.
    fn time(s: &str) -> Bind {
        Bind::Time(DateTime::parse_from_rfc3339(s).expect(s).to_utc())
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
        for op in Op::ORDERING.iter().map(|op| op.as_str()) {
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
            x OR y AND z          => ((X OR Y) AND Z)
            x AND y OR z          => (X AND (Y OR Z))
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
            foo=1                         => unknown field "foo"; use state, priority, tags, due_time, create_time, update_time, complete_time, recurring
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
        assert!(err(&long).starts_with(&format!("unknown field \"{}…\"; use", "x".repeat(40))));
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
}
