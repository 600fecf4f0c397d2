//! The SQLite state store: the embedded default. WAL mode, a busy timeout, full
//! synchronous commits (a committed checkpoint survives a power cut), migrations embedded;
//! the WAL is checkpointed after audit appends by a thread of its own, off the appender.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::sql::sql_state_store;
use crate::raw::sqlite_wal::{Checkpointer, WRITER_CHECKPOINT_PAGES};

use super::sql::prelude::*;

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
    /// Checkpoints the WAL after audit appends, off the appender's path.
    checkpointer: Arc<Checkpointer>,
    /// Extends the audit chain.
    appender: Arc<Appender>,
}

/// The audit appender: a connection of its own, used on a blocking thread, inserting
/// every entry through one cached prepared statement — no value boxed per bind and no
/// hop between threads per statement, which at bulk rates cost more than the inserts.
#[derive(Debug)]
struct Appender {
    conn: std::sync::Mutex<rusqlite::Connection>,
}

impl Appender {
    fn open(path: &Path) -> rusqlite::Result<Appender> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        Ok(Appender {
            conn: std::sync::Mutex::new(conn),
        })
    }

    /// Append `rows` (entries without their images, and the images as stored) under
    /// SQLite's write lock, in one transaction; returns their sequence numbers.
    fn append(
        &self,
        rows: &[(AuditEntry, Option<String>, Option<String>)],
    ) -> rusqlite::Result<Vec<i64>> {
        use rusqlite::OptionalExtension;
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // IMMEDIATE takes the write lock at once: one appender at a time.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let head = |sql: &str| {
            tx.query_row(sql, [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
        };
        let head = match head("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")? {
            Some(h) => Some(h),
            // Emptied by a purge: the chain goes on from the purge anchor.
            None => {
                head("SELECT up_to_seq, hash FROM audit_anchors ORDER BY up_to_seq DESC LIMIT 1")?
            }
        };
        let mut tail = ChainTail::new(head, now_ms());
        let mut seqs = Vec::with_capacity(rows.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO audit_log (seq, run_id, stream, record_key, operation, before_image, after_image, after_sha256, actor, at, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for (entry, before, after) in rows {
                let (seq, prev, hash) = tail.link(entry, before.as_deref(), after.as_deref());
                insert.execute(rusqlite::params![
                    seq,
                    entry.run.0,
                    entry.stream,
                    entry.record_key,
                    entry.operation.as_str(),
                    before,
                    after,
                    entry.after_sha256,
                    entry.actor,
                    tail.at(),
                    prev,
                    hash,
                ])?;
                seqs.push(seq);
            }
        }
        tx.commit()?;
        Ok(seqs)
    }
}

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string());
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
        // Opening a connection and starting a thread: brief, like the pool's own connect.
        let checkpointer = Checkpointer::start(path, "FULL").map_err(|e| {
            Error::unavailable(format!("state store {} cannot be opened", path.display()))
                .with_source(e)
        })?;
        let appender = Appender::open(path).map_err(|e| {
            Error::unavailable(format!("state store {} cannot be opened", path.display()))
                .with_source(e)
        })?;
        Ok(SqliteStateStore {
            pool,
            path: path.to_owned(),
            checkpointer: Arc::new(checkpointer),
            appender: Arc::new(appender),
        })
    }

    /// Close the pool, folding the write-ahead log into the database file.
    pub async fn close(self) {
        self.pool.close().await;
    }

    const FINGERPRINTS_SQL: &'static str = "SELECT record_key, fingerprint FROM sync_fingerprints
         WHERE pipeline = $1 AND stream = $2 AND record_key IN (SELECT value FROM json_each($3))";

    const ENSURE_LEASES_SQL: &'static str = "INSERT INTO leases (name)
         SELECT value FROM json_each($1) WHERE true ON CONFLICT (name) DO NOTHING";

    /// One statement, so atomic: SQLite has one writer at a time.
    const CLAIM_LEASE_SQL: &'static str =
        "UPDATE leases SET holder = $3, token = token + 1, expires_at = $4
         WHERE name = (SELECT name FROM leases
                       WHERE name IN (SELECT value FROM json_each($1))
                         AND (holder IS NULL OR expires_at <= $2)
                       ORDER BY expires_at, name LIMIT 1)
         RETURNING name, holder, token, expires_at";

    /// Write a consistent copy of the store to `dest` while it stays in use (SQLite's
    /// `VACUUM INTO`: a snapshot of one read transaction, compacted). `dest` must not
    /// exist.
    ///
    /// ```
    /// use moodbridge_core::state::{SqliteStateStore, StateStore};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap();
    /// let run = store.start_run("nightly").await.unwrap();
    /// store.backup(&dir.path().join("backup.db")).await.unwrap();
    ///
    /// let restored = dir.path().join("restored.db");
    /// SqliteStateStore::restore(&dir.path().join("backup.db"), &restored).await.unwrap();
    /// let copy = SqliteStateStore::open(&restored).await.unwrap();
    /// assert_eq!(copy.run(run).await.unwrap().pipeline, "nightly");
    /// # });
    /// ```
    pub async fn backup(&self, dest: &Path) -> Result<()> {
        if dest.exists() {
            return Err(Error::invalid_input(format!(
                "backup destination {} already exists",
                dest.display()
            ))
            .with_hint("choose a new file name, or remove the old backup first"));
        }
        let dest_text = dest.to_str().ok_or_else(|| {
            Error::invalid_input(format!("backup path {} is not UTF-8", dest.display()))
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(dest_text)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Restore a backup made by [`backup`](Self::backup) to `path`, which must not be in
    /// use. The backup is checked first (it opens, migrates and its audit chain verifies);
    /// then it is copied beside `path`, synced, and renamed over it, so `path` is either
    /// the old database or the whole backup, never half of one.
    pub async fn restore(backup: &Path, path: &Path) -> Result<()> {
        let staged = path.with_extension("restoring");
        let _ = tokio::fs::remove_file(&staged).await;
        tokio::fs::copy(backup, &staged).await.map_err(|e| {
            Error::invalid_input(format!("cannot read backup {}", backup.display())).with_source(e)
        })?;
        let check = async {
            let store = SqliteStateStore::open_with(&staged, 1).await?;
            let chain = store.verify_audit().await;
            store.pool.close().await;
            match chain? {
                ChainStatus::Intact { .. } => Ok(()),
                ChainStatus::Broken { seq, reason } => Err(Error::new(
                    ErrorKind::Integrity,
                    format!(
                        "backup {} has a broken audit chain at entry {seq}: {reason}",
                        backup.display()
                    ),
                )),
            }
        };
        if let Err(e) = check.await {
            let _ = tokio::fs::remove_file(&staged).await;
            return Err(e);
        }
        let io = |e: std::io::Error| {
            Error::unavailable(format!("cannot restore into {}", path.display())).with_source(e)
        };
        // Opening wrote the WAL back into the file; sync it, then swap it in.
        tokio::fs::File::open(&staged)
            .await
            .map_err(io)?
            .sync_all()
            .await
            .map_err(io)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let _ = tokio::fs::remove_file(std::path::PathBuf::from(side)).await;
        }
        tokio::fs::rename(&staged, path).await.map_err(io)?;
        Ok(())
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

    async fn append_audit_entries(&self, entries: &[AuditEntry]) -> Result<Vec<i64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // Each image is serialized here, once; the entries go to the blocking thread
        // without them.
        let rows: Vec<_> = entries
            .iter()
            .map(|e| {
                let bare = AuditEntry {
                    run: e.run,
                    stream: e.stream.clone(),
                    record_key: e.record_key.clone(),
                    operation: e.operation,
                    before: None,
                    after: None,
                    after_sha256: e.after_sha256.clone(),
                    actor: e.actor.clone(),
                };
                (bare, image_text(&e.before), image_text(&e.after))
            })
            .collect();
        let appender = self.appender.clone();
        let appended = tokio::task::spawn_blocking(move || appender.append(&rows))
            .await
            .map_err(|e| {
                Error::internal(format!(
                    "the audit append of state store {} did not finish: {e}",
                    self.path.display()
                ))
            })?;
        let seqs = appended.map_err(|e| sqlite_error(&self.path, e))?;
        // An append writes a batch of entries: copy them into the file off this path.
        self.checkpointer.nudge();
        Ok(seqs)
    }
}

/// A failure of the appender's own connection, classified as the pool's are.
fn sqlite_error(path: &Path, err: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let failure = match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Failure::Corrupt,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Failure::Busy,
        _ => Failure::Other,
    };
    failure.error(path).with_source(err)
}

/// What kind of failure a database error is.
enum Failure {
    Corrupt,
    Busy,
    ForeignKey,
    Other,
}

impl Failure {
    fn error(self, path: &Path) -> Error {
        let what = format!("state store {}", path.display());
        match self {
            Failure::ForeignKey => Error::invalid_input(format!(
                "{what}: the row refers to a run that does not exist"
            ))
            .with_hint("start the run with start_run first"),
            Failure::Corrupt => Error::new(ErrorKind::Integrity, format!("{what} is corrupt")),
            Failure::Busy => Error::unavailable(format!("{what} is busy")),
            Failure::Other => Error::internal(format!("{what} failed")),
        }
    }
}

fn db_error(path: &Path, err: sqlx::Error) -> Error {
    let code = match &err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let failure = match code.as_deref() {
        Some("11" | "26") => Failure::Corrupt,
        Some("5" | "6") => Failure::Busy,
        Some("787") => Failure::ForeignKey,
        _ => Failure::Other,
    };
    failure.error(path).with_source(err)
}

sql_state_store!(SqliteStateStore);
