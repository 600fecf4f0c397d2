//! The SQLite state store: the embedded default. WAL mode, a busy timeout, full
//! synchronous commits (a committed checkpoint survives a power cut), migrations embedded.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::sql::sql_state_store;

use super::rows::{AUDIT_COLUMNS, audit_from_row, count, json, now_ms, run_from_row, time};
use super::{
    AuditEntry, AuditRecord, ChainStatus, ChainVerifier, GENESIS_HASH, RunCounts, RunId, RunStatus,
    StateStore, StoredCheckpoint, SyncRun, audit_hash,
};
use crate::error::{Error, ErrorKind, Result};
use crate::sync::Checkpoint;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite state store.
///
/// ```
/// use moodbridge_core::state::{RunCounts, RunStatus, SqliteStateStore, StateStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap();
/// let run = store.start_run("salesforce-to-warehouse").await.unwrap();
/// store.finish_run(run, RunStatus::Succeeded, RunCounts::default(), None).await.unwrap();
/// assert_eq!(store.run(run).await.unwrap().status, RunStatus::Succeeded);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStateStore {
    pool: SqlitePool,
    path: PathBuf,
}

/// Connections in the pool by default: one writer at a time in SQLite, a few readers.
pub const DEFAULT_POOL_SIZE: u32 = 4;

impl SqliteStateStore {
    /// Open (creating if needed) the state database at `path`, with the default pool size.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, DEFAULT_POOL_SIZE).await
    }

    /// Open with `pool_size` connections.
    pub async fn open_with(path: &Path, pool_size: u32) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| Error::internal("invalid SQLite options").with_source(e))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect_with(options)
            .await
            .map_err(|e| db_error(path, e))?;
        MIGRATOR.run(&pool).await.map_err(|e| {
            Error::new(
                ErrorKind::Integrity,
                format!("state store {} could not be migrated", path.display()),
            )
            .with_hint("it may be corrupt, or written by a newer SDK version")
            .with_source(e)
        })?;
        Ok(SqliteStateStore {
            pool,
            path: path.to_owned(),
        })
    }

    /// Close the pool, folding the write-ahead log into the database file.
    pub async fn close(self) {
        self.pool.close().await;
    }

    fn db_err(&self, e: sqlx::Error) -> Error {
        db_error(&self.path, e)
    }

    async fn begin_audit(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>> {
        // BEGIN IMMEDIATE takes SQLite's write lock at once: one appender at a time.
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.db_err(e))
    }
}

fn db_error(path: &Path, err: sqlx::Error) -> Error {
    let corrupt = matches!(&err, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("11" | "26")));
    let busy = matches!(&err, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("5" | "6")));
    let foreign_key = matches!(&err, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("787"));
    let what = format!("state store {}", path.display());
    if foreign_key {
        Error::invalid_input(format!(
            "{what}: the row refers to a run that does not exist"
        ))
        .with_hint("start the run with start_run first")
        .with_source(err)
    } else if corrupt {
        Error::new(ErrorKind::Integrity, format!("{what} is corrupt")).with_source(err)
    } else if busy {
        Error::unavailable(format!("{what} is busy")).with_source(err)
    } else {
        Error::internal(format!("{what} failed")).with_source(err)
    }
}

sql_state_store!(SqliteStateStore);
