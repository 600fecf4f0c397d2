//! The PostgreSQL state store: for several workers (on several machines) sharing
//! pipelines. Migrations embedded; the audit chain head is extended under a
//! transaction-scoped advisory lock, so concurrent writers keep one chain.

use sqlx::Row;

use super::sql::sql_state_store;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::rows::{AUDIT_COLUMNS, audit_from_row, count, json, now_ms, run_from_row, time};
use super::{
    AuditEntry, AuditRecord, ChainStatus, ChainVerifier, GENESIS_HASH, RunCounts, RunId, RunStatus,
    StateStore, StoredCheckpoint, SyncRun, audit_hash,
};
use crate::error::{Error, ErrorKind, Result};
use crate::sync::Checkpoint;

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
    fn db_err(&self, e: sqlx::Error) -> Error {
        err(e)
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
