//! Upgrading a database made by an earlier release: the fixture
//! `tests/fixtures/schemas-1432c9c.sql` is what `taskmesh migrate` of commit `1432c9c` (the
//! release before the platform's tables became one migration set) left in the four schemas,
//! with a few rows in each platform table, dumped by `pg_dump`. Migrating it with this release
//! must leave the same schema as migrating an empty database, keep the rows, and record the
//! same history.

use sqlx::{Connection as _, PgConnection, Row as _};
use taskmesh::mesh;
use taskmesh_testkit::TestDb;

/// The dump (`pg_dump --inserts --no-owner --no-privileges --schema=task --schema=reminder
/// --schema=recurrence --schema=audit`, with psql's `\restrict` lines taken out).
const RELEASED: &str = include_str!("../fixtures/schemas-1432c9c.sql");

const SCHEMAS: [&str; 4] = ["task", "reminder", "recurrence", "audit"];

/// A new database holding the fixture, and a connection to it.
async fn released() -> (TestDb, PgConnection) {
    let released = TestDb::create().await.expect("create database");
    let mut conn = PgConnection::connect(&released.url())
        .await
        .expect("connect");
    sqlx::raw_sql(RELEASED)
        .execute(&mut conn)
        .await
        .expect("load the released schemas");
    (released, conn)
}

/// What a client of `schema` can see of its definition, one line per column (position, type
/// with its modifier, NOT NULL, default, generated, the table's persistence), index,
/// constraint, trigger, function and sequence, sorted.
async fn definition(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT line FROM (
           SELECT format('column %s.%s #%s %s not_null=%s default=%s generated=%s %s',
                         cl.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
                         a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), '-'),
                         a.attgenerated, cl.relpersistence) AS line
           FROM pg_attribute a
           JOIN pg_class cl ON cl.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = cl.relnamespace
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE n.nspname = $1 AND cl.relkind IN ('r', 'p', 'v', 'm')
             AND a.attnum > 0 AND NOT a.attisdropped
           UNION ALL
           SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = $1
           UNION ALL
           SELECT format('constraint %s.%s %s', cl.relname, con.conname,
                         pg_get_constraintdef(con.oid))
           FROM pg_constraint con
           JOIN pg_class cl ON cl.oid = con.conrelid
           JOIN pg_namespace n ON n.oid = cl.relnamespace
           WHERE n.nspname = $1
           UNION ALL
           SELECT format('trigger %s', pg_get_triggerdef(t.oid))
           FROM pg_trigger t
           JOIN pg_class cl ON cl.oid = t.tgrelid
           JOIN pg_namespace n ON n.oid = cl.relnamespace
           WHERE n.nspname = $1 AND NOT t.tgisinternal
           UNION ALL
           SELECT format('function %s', pg_get_functiondef(p.oid))
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = $1
           UNION ALL
           SELECT format('sequence %s', sequence_name)
           FROM information_schema.sequences WHERE sequence_schema = $1
         ) lines ORDER BY line",
    )
    .bind(schema)
    .fetch_all(conn)
    .await
    .expect("read the catalog")
}

/// `schema`'s migration history: version, description and checksum (hex), in order.
async fn history(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(&format!(
        "SELECT format('%s %s %s %s', version, description, encode(checksum, 'hex'), success)
         FROM {schema}._sqlx_migrations ORDER BY version"
    ))
    .fetch_all(conn)
    .await
    .expect("read the migration history")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_of_the_release_before_upgrades_to_the_same_schema_as_a_new_one() {
    let (released, mut conn) = released().await;
    // The dump leaves an empty search_path on the session; the checks below qualify names.
    let rows_before = platform_rows(&mut conn).await;
    assert!(
        rows_before.iter().all(|(_, n)| *n > 0),
        "the fixture has rows in every platform table it had: {rows_before:?}"
    );

    // Twice: the second run finds nothing to do (and nothing to repair).
    for _ in 0..2 {
        let pools = mesh::migrate(&released.url(), 1)
            .await
            .expect("migrate the released database");
        for pool in [pools.task, pools.reminder, pools.recurrence, pools.audit] {
            pool.close().await;
        }
    }

    let fresh = TestDb::create().await.expect("create database");
    let pools = mesh::migrate(&fresh.url(), 1)
        .await
        .expect("migrate a new database");
    for pool in [pools.task, pools.reminder, pools.recurrence, pools.audit] {
        pool.close().await;
    }
    let mut fresh_conn = PgConnection::connect(&fresh.url()).await.expect("connect");

    for schema in SCHEMAS {
        let upgraded = definition(&mut conn, schema).await;
        let new = definition(&mut fresh_conn, schema).await;
        assert!(
            upgraded.iter().any(|l| l.starts_with("column outbox.")),
            "{schema} has the platform's outbox"
        );
        let only_upgraded: Vec<_> = upgraded.iter().filter(|l| !new.contains(l)).collect();
        let only_new: Vec<_> = new.iter().filter(|l| !upgraded.contains(l)).collect();
        assert!(
            only_upgraded.is_empty() && only_new.is_empty(),
            "schema {schema}: only in the upgraded database {only_upgraded:#?}, \
             only in a new one {only_new:#?}"
        );
        assert_eq!(
            history(&mut conn, schema).await,
            history(&mut fresh_conn, schema).await,
            "schema {schema}: migration history, upgraded vs new"
        );
    }
    assert_eq!(
        platform_rows(&mut conn).await,
        rows_before,
        "the rows of the release before are still there"
    );
    conn.close().await.expect("close");
    fresh_conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_applied_migration_edited_other_than_by_a_release_is_refused_before_anything_changes() {
    let (released, mut conn) = released().await;
    // As if someone had applied their own version of AuditService's first migration. The
    // platform's migrations come before it in version order: none of them may be applied.
    sqlx::query(
        "UPDATE audit._sqlx_migrations SET checksum = sha384('not the released text')
         WHERE version = 20261123000001",
    )
    .execute(&mut conn)
    .await
    .expect("edit the history");
    let before = history(&mut conn, "audit").await;
    let error = mesh::migrate(&released.url(), 1)
        .await
        .expect_err("a checksum no release wrote is refused");
    assert!(
        format!("{error:#}")
            .contains("migration 20261123000001 was previously applied but has been modified"),
        "the error names the migration: {error:#}"
    );
    assert_eq!(
        history(&mut conn, "audit").await,
        before,
        "nothing was applied or repaired in the refused schema"
    );
    conn.close().await.expect("close");
}

/// Rows in each platform table of each schema that had it in the release before.
async fn platform_rows(conn: &mut PgConnection) -> Vec<(String, i64)> {
    let mut rows = Vec::new();
    const LOGGED: &[&str] = &[
        "outbox",
        "changes",
        "change_counters",
        "requests",
        "processed_events",
        "page_token_key",
    ];
    for (schema, tables) in [
        ("task", LOGGED),
        ("reminder", LOGGED),
        (
            "recurrence",
            &["outbox", "requests", "processed_events"][..],
        ),
        ("audit", &["processed_events", "page_token_key"][..]),
    ] {
        for table in tables {
            let count: i64 = sqlx::query(&format!("SELECT count(*) FROM {schema}.{table}"))
                .fetch_one(&mut *conn)
                .await
                .expect("count")
                .get(0);
            rows.push((format!("{schema}.{table}"), count));
        }
    }
    rows
}
