//! The PostgreSQL state store: for several workers (on several machines) sharing
//! pipelines. Migrations embedded; the audit chain head is extended under a
//! transaction-scoped advisory lock, so concurrent writers keep one chain.

use super::sql::sql_state_store;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::sql::prelude::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The advisory lock key serializing audit appends ("MBAUDIT" in ASCII).
const AUDIT_LOCK: i64 = 0x004d_4241_5544_4954;

/// Connections in the pool by default.
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// The PostgreSQL state store.
///
/// ```no_run
/// use moodbridge_core::state::{PostgresStateStore, StateStore};
///
/// # async fn run() -> moodbridge_core::Result<()> {
/// let store = PostgresStateStore::connect("postgres://moodbridge@db.internal/moodbridge").await?;
/// let run = store.start_run("salesforce-to-warehouse").await?;
/// # let _ = run; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStateStore {
    pool: PgPool,
}

impl PostgresStateStore {
    /// Connect to `url` with the default pool size and apply pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, DEFAULT_POOL_SIZE).await
    }

    /// Connect with `pool_size` connections.
    pub async fn connect_with(url: &str, pool_size: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect(url)
            .await
            .map_err(|e| {
                // The URL may hold a password: never show it.
                Error::unavailable("cannot connect to the PostgreSQL state store")
                    .with_hint(
                        "check the host, port, database and credentials of the state store URL",
                    )
                    .with_source(e)
            })?;
        MIGRATOR.run(&pool).await.map_err(|e| {
            Error::new(
                ErrorKind::Integrity,
                "the PostgreSQL state store could not be migrated",
            )
            .with_hint("it may have been changed by hand, or written by a newer SDK version")
            .with_source(e)
        })?;
        Ok(PostgresStateStore { pool })
    }

    /// Close the pool.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

impl PostgresStateStore {
    const FINGERPRINTS_SQL: &'static str = "SELECT record_key, fingerprint FROM sync_fingerprints
         WHERE pipeline = $1 AND stream = $2
           AND record_key IN (SELECT jsonb_array_elements_text($3::jsonb))";

    const ENSURE_LEASES_SQL: &'static str = "INSERT INTO leases (name)
         SELECT jsonb_array_elements_text($1::jsonb) ON CONFLICT (name) DO NOTHING";

    /// Rows another worker is claiming at this moment are skipped, not waited for.
    const CLAIM_LEASE_SQL: &'static str = "WITH candidate AS (
           SELECT name FROM leases
           WHERE name IN (SELECT jsonb_array_elements_text($1::jsonb))
             AND (holder IS NULL OR expires_at <= $2)
           ORDER BY expires_at, name LIMIT 1
           FOR UPDATE SKIP LOCKED)
         UPDATE leases SET holder = $3, token = leases.token + 1, expires_at = $4
         FROM candidate WHERE leases.name = candidate.name
         RETURNING leases.name, leases.holder, leases.token, leases.expires_at";

    fn db_err(&self, e: sqlx::Error) -> Error {
        err(e)
    }

    fn audit_appended(&self) {
        // PostgreSQL checkpoints on its own.
    }

    async fn begin_audit(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        Ok(tx)
    }
}

fn err(e: sqlx::Error) -> Error {
    let code = match &e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    match code.as_deref() {
        Some("23503") => Error::invalid_input("the row refers to a run that does not exist")
            .with_hint("start the run with start_run first")
            .with_source(e),
        Some("40001" | "40P01" | "55P03" | "57P01") => {
            Error::unavailable("the PostgreSQL state store is busy").with_source(e)
        }
        _ if matches!(
            e,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        ) =>
        {
            Error::unavailable("the PostgreSQL state store is unreachable").with_source(e)
        }
        _ => Error::internal("the PostgreSQL state store failed").with_source(e),
    }
}

sql_state_store!(PostgresStateStore);
