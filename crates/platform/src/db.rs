//! PostgreSQL access: each service gets a pool whose connections have `search_path` set to the
//! service's own schema, so its tables (and its `_sqlx_migrations` bookkeeping) live there and
//! services never see each other's tables.

use std::str::FromStr;

use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    error::BoxDynError,
    migrate::{Migrate, MigrateError, Migration, MigrationSource, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Errors of preparing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// `DATABASE_URL` is not a PostgreSQL URL.
    #[error("invalid database url")]
    Url(#[source] sqlx::Error),
    /// Connecting, creating or querying failed.
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The schema name is not a plain lower-case identifier.
    #[error("invalid schema name {0:?}")]
    Schema(String),
}

/// Creates the database named in `url` when it does not exist (connecting to the server's
/// `postgres` database to do so). Used by `taskmesh dev` and `taskmesh migrate`.
///
/// # Errors
/// [`DbError`] when the server cannot be reached or the role may not create databases.
pub async fn ensure_database(url: &str) -> Result<(), DbError> {
    let options = connect_options(url)?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// The connection options of `url` (a libpq-style URL: `sslmode` `disable`, `prefer`,
/// `require`, `verify-ca` or `verify-full`, `sslrootcert`, `sslcert`, `sslkey`, ...).
///
/// # Errors
/// [`DbError::Url`] for a malformed URL.
///
/// TLS is OpenSSL's (through `native-tls`), the same library librdkafka uses. (sqlx 0.8's
/// rustls backend checks the host name even for `verify-ca`, with rustls 0.23.24 and later:
/// sqlx issue 3793.)
pub fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    PgConnectOptions::from_str(url).map_err(DbError::Url)
}

/// How long a pooled connection may sit idle before it is checked on its way out.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest that check may take before the connection is dropped for another.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens a pool whose connections use `schema` as their `search_path`, creating the schema
/// if needed.
///
/// # Errors
/// [`DbError`] for a bad URL or schema name, or when the server cannot be reached.
pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<PgPool, DbError> {
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
    {
        return Err(DbError::Schema(schema.to_owned()));
    }
    let options = connect_options(url)?
        .application_name(&format!("taskmesh-{schema}"))
        .log_statements(tracing::log::LevelFilter::Trace);
    {
        let mut conn = PgConnection::connect_with(&options).await?;
        if let Err(e) = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut conn)
            .await
        {
            // A concurrent CREATE SCHEMA of another replica can race on the catalog.
            let duplicate = matches!(&e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("23505") | Some("42P06")));
            if !duplicate {
                return Err(e.into());
            }
        }
        conn.close().await?;
    }
    let options = options.options([
        ("search_path", schema),
        ("statement_timeout", STATEMENT_TIMEOUT),
        ("lock_timeout", LOCK_TIMEOUT),
        (
            "idle_in_transaction_session_timeout",
            IDLE_IN_TRANSACTION_TIMEOUT,
        ),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        // A call waits at most this long for a connection: during a database outage callers
        // get UNAVAILABLE within seconds rather than hang until their own deadline.
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A connection taken from the pool is checked (a round trip) only when it sat idle
        // for IDLE_BEFORE_PING or more: one in steady use costs no extra round trip per
        // transaction (sqlx checks each one as it goes back to the pool anyway), and one that
        // sat idle through a server restart is replaced before a caller sees it fail. A
        // connection broken less than that ago fails its caller's statement, which is
        // retried (consumers) or answered UNAVAILABLE (calls).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < IDLE_BEFORE_PING {
                    return Ok(true);
                }
                let ping = tokio::time::timeout(PING_TIMEOUT, sqlx::Connection::ping(conn));
                Ok(matches!(ping.await, Ok(Ok(()))))
            })
        })
        .connect_with(options)
        .await?)
}

/// Longest one statement of a pooled connection may run before PostgreSQL cancels it
/// (SQLSTATE 57014: a call gets `DEADLINE_EXCEEDED`, a consumer counts a failed attempt).
/// Work that is long by nature (retention purges, migrations) sets its own.
pub const STATEMENT_TIMEOUT: &str = "30s";

/// Longest a statement of a pooled connection waits for a lock (SQLSTATE 55P03).
pub const LOCK_TIMEOUT: &str = "10s";

/// Longest a pooled connection may sit idle inside a transaction before PostgreSQL ends its
/// session (a stuck caller must not hold locks for ever).
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";

/// How long a pool's caller waits for a connection before the call fails (`UNAVAILABLE`).
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The platform's tables (`migrations/platform`): processed events ([`crate::consumer`]), the
/// transactional outbox ([`crate::outbox`]), the per-user change log ([`crate::changelog`]),
/// request ids ([`crate::requests`]) and the page token key ([`crate::pages`]). One migration
/// set, applied by [`migrate`] to every service's schema beside the service's own.
pub static PLATFORM_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/platform");

/// The migrations of one service's schema: the service's own, applied with
/// [`PLATFORM_MIGRATOR`]'s in one version order and one `_sqlx_migrations` history.
#[derive(Debug)]
pub struct Migrations {
    /// The service's own migrations (`sqlx::migrate!("../../migrations/<service>")`).
    pub own: &'static Migrator,
    /// The service's migrations whose text changed after a release applied them, leaving the
    /// schema they make the same.
    pub edited: &'static [Edited],
}

/// A migration whose text changed after a release had applied it, with no change to the
/// schema it leaves (the platform's tables moved out of the services' first migrations into
/// `migrations/platform`, whose `IF NOT EXISTS` makes them no-ops where they exist).
///
/// sqlx refuses to run when an applied migration's checksum differs from its file's
/// (`MigrateError::VersionMismatch`). Before running, [`migrate`] rewrites the checksum of a
/// history row that has exactly `applied_sha384` to the current file's ("repair", as Flyway
/// calls it); any other checksum still fails. The upgrade test migrates a database made by the
/// release before and compares its schema with a new one's.
#[derive(Clone, Copy, Debug)]
pub struct Edited {
    /// The migration's version (the number its file name starts with).
    pub version: i64,
    /// The SHA-384 of the text the release applied (sqlx's checksum), in lower-case hex.
    pub applied_sha384: &'static str,
}

/// `migrations`' own and the platform's migrations as one set, in version order (up
/// migrations only: taskmesh never runs a down migration).
///
/// # Errors
/// [`DbError::Migrate`] when a version is in both sets (a defect the upgrade test catches).
pub async fn migrator(migrations: &Migrations) -> Result<Migrator, DbError> {
    let mut all: Vec<Migration> = migrations
        .own
        .iter()
        .chain(PLATFORM_MIGRATOR.iter())
        .filter(|m| !m.migration_type.is_down_migration())
        .cloned()
        .collect();
    all.sort_by_key(|m| m.version);
    if let Some(pair) = all
        .windows(2)
        .find(|pair| pair[0].version == pair[1].version)
    {
        return Err(DbError::Migrate(MigrateError::Source(
            format!(
                "migration version {} is both the service's and the platform's",
                pair[0].version
            )
            .into(),
        )));
    }
    Ok(Migrator::new(Merged(all)).await?)
}

/// Migrations already resolved, as a [`MigrationSource`].
#[derive(Debug)]
struct Merged(Vec<Migration>);

impl MigrationSource<'static> for Merged {
    fn resolve(
        self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<Migration>, BoxDynError>> + Send>,
    > {
        Box::pin(std::future::ready(Ok(self.0)))
    }
}

/// Applies `migrations` (the service's and the platform's) to the pool's schema, after
/// repairing the history of [`Migrations::edited`] ones.
///
/// The repair, a check of the whole history and the run happen under sqlx's advisory lock
/// (one per database), so a replica migrating at the same time waits, and a history that
/// differs from the files (other than as [`Edited`] allows) is refused before anything is
/// applied.
///
/// # Errors
/// [`DbError::Migrate`] when a migration fails, or an applied one differs from its file or
/// is missing from the set (`VersionMismatch`, `VersionMissing`: nothing applied then);
/// [`DbError::Sqlx`] when the database fails.
pub async fn migrate(pool: &PgPool, migrations: &Migrations) -> Result<(), DbError> {
    let mut migrator = migrator(migrations).await?;
    // A migration may rewrite a big table: no statement or lock limit on its own
    // connection, which is closed afterwards rather than going back to the pool (closing
    // it also releases the lock when something below fails).
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut conn)
        .await?;
    sqlx::query("SET lock_timeout = 0")
        .execute(&mut conn)
        .await?;
    conn.lock().await?;
    if has_history(&mut conn).await? {
        repair(&mut conn, &migrator, migrations.edited).await?;
        check_history(&mut conn, &migrator).await?;
    }
    migrator.set_locking(false);
    migrator.run(&mut conn).await?;
    conn.unlock().await?;
    conn.close().await?;
    Ok(())
}

/// Whether the pool's schema has sqlx's `_sqlx_migrations` (it was migrated before).
async fn has_history(conn: &mut PgConnection) -> Result<bool, DbError> {
    let history: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&mut *conn)
            .await?;
    Ok(history.is_some())
}

/// Fails, before anything is applied, when an applied migration is not in `migrator` or its
/// checksum differs from the file's (sqlx itself finds a difference only when its run gets
/// to that version, after applying the versions before it).
async fn check_history(conn: &mut PgConnection, migrator: &Migrator) -> Result<(), DbError> {
    for applied in conn.list_applied_migrations().await? {
        match migrator.iter().find(|m| m.version == applied.version) {
            None => return Err(MigrateError::VersionMissing(applied.version).into()),
            Some(m) if m.checksum != applied.checksum => {
                return Err(MigrateError::VersionMismatch(applied.version).into());
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Rewrites the checksum of each [`Edited`] migration in the schema's history from the
/// released text's to the current file's. Idempotent.
async fn repair(
    conn: &mut PgConnection,
    migrator: &Migrator,
    edited: &[Edited],
) -> Result<(), DbError> {
    for edit in edited {
        let Some(current) = migrator.iter().find(|m| m.version == edit.version) else {
            return Err(DbError::Migrate(MigrateError::Source(
                format!("edited migration {} is not in the set", edit.version).into(),
            )));
        };
        let repaired = sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $1 \
             WHERE version = $2 AND encode(checksum, 'hex') = $3",
        )
        .bind(current.checksum.as_ref())
        .bind(edit.version)
        .bind(edit.applied_sha384)
        .execute(&mut *conn)
        .await?;
        if repaired.rows_affected() > 0 {
            tracing::info!(
                version = edit.version,
                "repaired the checksum of an edited migration"
            );
        }
    }
    Ok(())
}

/// How a database error should be treated by whoever retries or reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The database is unreachable, restarting or overloaded, or the transaction lost a
    /// serialization or lock race: the same work succeeds later (gRPC `UNAVAILABLE`).
    Unavailable,
    /// A statement or lock wait hit its time limit (gRPC `DEADLINE_EXCEEDED`).
    Timeout,
    /// Anything else: a defect or data the code did not expect (gRPC `INTERNAL`).
    Other,
}

/// Classifies `error` (SQLSTATE classes per the PostgreSQL manual, appendix A "PostgreSQL
/// Error Codes").
pub fn classify(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Failure::Unavailable,
        sqlx::Error::Database(e) => match e.code().as_deref() {
            // query_canceled (statement_timeout), lock_not_available (lock_timeout).
            Some("57014" | "55P03") => Failure::Timeout,
            Some(code)
                if code.starts_with("08") // connection exception
                    || code.starts_with("53") // insufficient resources
                    || code.starts_with("57P") // operator intervention: shutdown, restart
                    || code == "40001" // serialization_failure
                    || code == "40P01" // deadlock_detected
                    || code == "25006" // read_only_sql_transaction: a failover in progress
                    // idle_in_transaction_session_timeout ended the session
                    || code == "25P03"
                    || code == "58000" =>
            // system_error (I/O)
            {
                Failure::Unavailable
            }
            _ => Failure::Other,
        },
        _ => Failure::Other,
    }
}

/// Whether retrying the work that failed with `error` can succeed (see [`classify`]).
pub fn is_transient(error: &sqlx::Error) -> bool {
    classify(error) != Failure::Other
}
