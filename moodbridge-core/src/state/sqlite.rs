//! The SQLite state store: the embedded default. WAL mode, a busy timeout, full
//! synchronous commits (a committed checkpoint survives a power cut), migrations embedded.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

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

    fn err(&self, e: sqlx::Error) -> Error {
        db_error(&self.path, e)
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

#[async_trait]
impl StateStore for SqliteStateStore {
    async fn start_run(&self, pipeline: &str) -> Result<RunId> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sync_runs (pipeline, status, started_at) VALUES (?, 'running', ?) RETURNING id",
        )
        .bind(pipeline)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(RunId(id))
    }

    async fn update_run(&self, run: RunId, counts: RunCounts) -> Result<()> {
        sqlx::query(
            "UPDATE sync_runs SET records_read = ?, records_written = ?, records_failed = ? WHERE id = ?",
        )
        .bind(count(counts.read))
        .bind(count(counts.written))
        .bind(count(counts.failed))
        .bind(run.0)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        counts: RunCounts,
        error: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE sync_runs SET status = ?, finished_at = ?, records_read = ?, records_written = ?,
             records_failed = ?, error = ? WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(now_ms())
        .bind(count(counts.read))
        .bind(count(counts.written))
        .bind(count(counts.failed))
        .bind(error)
        .bind(run.0)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!("no {run}")));
        }
        Ok(())
    }

    async fn run(&self, run: RunId) -> Result<SyncRun> {
        let row = sqlx::query("SELECT * FROM sync_runs WHERE id = ?")
            .bind(run.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::not_found(format!("no {run}")))?;
        run_from_row(&row)
    }

    async fn recent_runs(&self, pipeline: &str, limit: u32) -> Result<Vec<SyncRun>> {
        let rows =
            sqlx::query("SELECT * FROM sync_runs WHERE pipeline = ? ORDER BY id DESC LIMIT ?")
                .bind(pipeline)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn commit_checkpoint(
        &self,
        pipeline: &str,
        checkpoint: &Checkpoint,
        run: RunId,
    ) -> Result<i64> {
        let state = serde_json::to_string(&checkpoint.state)
            .map_err(|e| Error::internal("cannot serialize a checkpoint").with_source(e))?;
        let sequence: i64 = sqlx::query_scalar(
            "INSERT INTO checkpoints (pipeline, stream, state, run_id, sequence, committed_at)
             VALUES (?1, ?2, ?3, ?4, 1, ?5)
             ON CONFLICT (pipeline, stream) DO UPDATE SET
               state = excluded.state, run_id = excluded.run_id,
               sequence = checkpoints.sequence + 1, committed_at = excluded.committed_at
             RETURNING sequence",
        )
        .bind(pipeline)
        .bind(&checkpoint.stream)
        .bind(state)
        .bind(run.0)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(sequence)
    }

    async fn checkpoint(&self, pipeline: &str, stream: &str) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query("SELECT * FROM checkpoints WHERE pipeline = ? AND stream = ?")
            .bind(pipeline)
            .bind(stream)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.map(|row| {
            Ok(StoredCheckpoint {
                pipeline: row.get("pipeline"),
                checkpoint: Checkpoint::new(
                    row.get::<String, _>("stream"),
                    json(Some(row.get("state")))?.unwrap_or_default(),
                ),
                run: RunId(row.get("run_id")),
                sequence: row.get("sequence"),
                committed_at: time(row.get("committed_at")),
            })
        })
        .transpose()
    }

    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<i64>> {
        // BEGIN IMMEDIATE: the chain head is read and extended by one writer at a time.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))?;
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let (mut seq, mut prev) = match head {
            Some(row) => (row.get::<i64, _>("seq"), row.get::<String, _>("hash")),
            None => (0, GENESIS_HASH.to_owned()),
        };
        let at = now_ms();
        let mut seqs = Vec::with_capacity(entries.len());
        for entry in entries {
            seq += 1;
            let hash = audit_hash(&prev, seq, at, entry);
            let image = |v: &Option<serde_json::Value>| v.as_ref().map(ToString::to_string);
            sqlx::query(
                "INSERT INTO audit_log (seq, run_id, stream, record_key, operation, before_image,
                 after_image, actor, at, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(seq)
            .bind(entry.run.0)
            .bind(&entry.stream)
            .bind(&entry.record_key)
            .bind(entry.operation.as_str())
            .bind(image(&entry.before))
            .bind(image(&entry.after))
            .bind(&entry.actor)
            .bind(at)
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            seqs.push(seq);
            prev = hash;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(seqs)
    }

    async fn audit(&self, run: RunId) -> Result<Vec<AuditRecord>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE run_id = ? ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run.0)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn verify_audit(&self) -> Result<ChainStatus> {
        use futures::TryStreamExt;
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq");
        let query = sqlx::query(sqlx::AssertSqlSafe(sql));
        let mut rows = query.fetch(&self.pool);
        let mut verifier = ChainVerifier::new();
        while let Some(row) = rows.try_next().await.map_err(|e| self.err(e))? {
            if let Some(broken) = verifier.check(&audit_from_row(&row)?) {
                return Ok(broken);
            }
        }
        Ok(verifier.finish())
    }
}
