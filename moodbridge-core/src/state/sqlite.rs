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
    /// Extends the audit chain, appends events, commits cursors.
    appender: Arc<Appender>,
    /// Reads events for consumers.
    reader: Arc<EventReader>,
}

/// A connection of its own for consumers' reads of the event log: a page in one hop to a
/// blocking thread, where the pool streams rows back through a channel (a wake-up of the
/// reading task per chunk, each a turn in a busy runtime's queue).
#[derive(Debug)]
struct EventReader {
    conn: std::sync::Mutex<rusqlite::Connection>,
}

impl EventReader {
    fn open(path: &Path) -> rusqlite::Result<EventReader> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(EventReader {
            conn: std::sync::Mutex::new(conn),
        })
    }

    fn read(&self, after: i64, limit: u32) -> rusqlite::Result<Vec<super::StoredEvent>> {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut statement = conn.prepare_cached(
            "SELECT sequence, source, event_id, partition_key, event_type, body, received_at
             FROM events WHERE sequence > ?1 ORDER BY sequence LIMIT ?2",
        )?;
        let rows = statement.query_map(rusqlite::params![after, i64::from(limit)], |r| {
            Ok(super::StoredEvent {
                sequence: r.get(0)?,
                event: super::NewEvent {
                    source: r.get(1)?,
                    event_id: r.get(2)?,
                    partition_key: r.get(3)?,
                    event_type: r.get(4)?,
                    body: r.get(5)?,
                    received_at: time(r.get(6)?),
                },
            })
        })?;
        rows.collect()
    }
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

impl Appender {
    /// Commit a cursor on the writing connection (see `write_cursor`).
    fn write_cursor(
        &self,
        consumer: &str,
        partition: &str,
        position: &str,
        expected: Option<i64>,
    ) -> rusqlite::Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SQLite reads `$N` as the name "$N", numbered in order of first appearance:
        // bind by name so that the shared statements mean the same here.
        let at = now_ms();
        let sql = super::sql_cursors::cursor_statement(expected);
        let mut statement = conn.prepare_cached(sql)?;
        match expected.filter(|e| *e != 0) {
            None => statement
                .query_row(
                    rusqlite::named_params! {"$1": consumer, "$2": partition, "$3": position, "$4": at},
                    |r| r.get(0),
                )
                .optional(),
            Some(e) => statement
                .query_row(
                    rusqlite::named_params! {"$1": consumer, "$2": partition, "$3": position, "$4": at, "$5": e},
                    |r| r.get(0),
                )
                .optional(),
        }
    }

    /// Append events under SQLite's write lock, in one transaction: the head row read,
    /// one cached `INSERT … ON CONFLICT DO NOTHING` per event (a duplicate costs one
    /// lookup more), the head row written once.
    fn append_events(&self, events: &[super::NewEvent]) -> rusqlite::Result<Vec<super::Appended>> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut last: i64 = tx.query_row(
            "SELECT last_sequence FROM event_log_head WHERE id = 1",
            [],
            |r| r.get(0),
        )?;
        let first = last;
        let mut out = Vec::with_capacity(events.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (sequence, source, event_id, partition_key, event_type, body, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (source, event_id) DO NOTHING",
            )?;
            let mut existing = tx.prepare_cached(
                "SELECT sequence FROM events WHERE source = ?1 AND event_id = ?2",
            )?;
            for event in events {
                let inserted = insert.execute(rusqlite::params![
                    last + 1,
                    event.source,
                    event.event_id,
                    event.partition_key,
                    event.event_type,
                    event.body,
                    ms_since_epoch(event.received_at),
                ])?;
                if inserted == 1 {
                    last += 1;
                    out.push(super::Appended::Stored(last));
                } else {
                    let sequence = existing
                        .query_row(rusqlite::params![event.source, event.event_id], |r| {
                            r.get(0)
                        })?;
                    out.push(super::Appended::Duplicate(sequence));
                }
            }
        }
        if last != first {
            tx.execute(
                "UPDATE event_log_head SET last_sequence = ?1 WHERE id = 1",
                [last],
            )?;
        }
        tx.commit()?;
        Ok(out)
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
        let reader = EventReader::open(path).map_err(|e| {
            Error::unavailable(format!("state store {} cannot be opened", path.display()))
                .with_source(e)
        })?;
        Ok(SqliteStateStore {
            pool,
            path: path.to_owned(),
            checkpointer: Arc::new(checkpointer),
            appender: Arc::new(appender),
            reader: Arc::new(reader),
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
    /// SQLite serializes writers: no lock of its own.
    const QUEUE_LOCK_SQL: Option<&'static str> = None;

    /// One statement: atomic under SQLite's write lock.
    const QUEUE_RECEIVE_SQL: &'static str = "UPDATE queue_messages
         SET deliveries = deliveries + 1, visible_at = $3, receipt = $4 || '.' || id
         WHERE id IN (
           SELECT m.id FROM queue_messages m
           WHERE m.queue = $1 AND m.visible_at <= $2
             AND (m.group_id IS NULL OR NOT EXISTS (
               SELECT 1 FROM queue_messages p
               WHERE p.queue = m.queue AND p.group_id = m.group_id
                 AND p.id < m.id AND p.visible_at > $2))
           ORDER BY m.id LIMIT $5)
         RETURNING id, body, attributes, group_id, deliveries, sent_at, receipt";

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

impl SqliteStateStore {
    /// Commit a cursor through the writing connection: it takes its turn with the
    /// event and audit appends instead of polling for SQLite's write lock.
    async fn write_cursor(
        &self,
        consumer: &str,
        partition: &str,
        position: &str,
        expected: Option<i64>,
    ) -> Result<Option<i64>> {
        let appender = self.appender.clone();
        let (consumer, partition, position) = (
            consumer.to_owned(),
            partition.to_owned(),
            position.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            appender.write_cursor(&consumer, &partition, &position, expected)
        })
        .await
        .map_err(|e| {
            Error::internal(format!(
                "a cursor commit of state store {} did not finish: {e}",
                self.path.display()
            ))
        })?
        .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Read a page of events on the reader's connection, on a blocking thread.
    async fn read_event_rows(&self, after: i64, limit: u32) -> Result<Vec<super::StoredEvent>> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || reader.read(after, limit))
            .await
            .map_err(|e| {
                Error::internal(format!(
                    "an event read of state store {} did not finish: {e}",
                    self.path.display()
                ))
            })?
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Append events through the appender's connection (cached statements, no hop
    /// between threads per statement), on a blocking thread.
    async fn append_event_rows(&self, events: &[super::NewEvent]) -> Result<Vec<super::Appended>> {
        let appender = self.appender.clone();
        let events = events.to_vec();
        let appended = tokio::task::spawn_blocking(move || appender.append_events(&events))
            .await
            .map_err(|e| {
                Error::internal(format!(
                    "the event append of state store {} did not finish: {e}",
                    self.path.display()
                ))
            })?;
        let out = appended.map_err(|e| sqlite_error(&self.path, e))?;
        self.checkpointer.nudge();
        Ok(out)
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
