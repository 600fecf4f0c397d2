//! The PostgreSQL state store: for several workers (on several machines) sharing
//! pipelines. Migrations embedded; the audit chain head is extended under a
//! transaction-scoped advisory lock, so concurrent writers keep one chain.

use async_trait::async_trait;
use sqlx::Row;
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

#[async_trait]
impl StateStore for PostgresStateStore {
    async fn start_run(&self, pipeline: &str) -> Result<RunId> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO sync_runs (pipeline, status, started_at) VALUES ($1, 'running', $2) RETURNING id",
        )
        .bind(pipeline)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        Ok(RunId(id))
    }

    async fn update_run(&self, run: RunId, counts: RunCounts) -> Result<()> {
        sqlx::query(
            "UPDATE sync_runs SET records_read = $1, records_written = $2, records_failed = $3 WHERE id = $4",
        )
        .bind(count(counts.read))
        .bind(count(counts.written))
        .bind(count(counts.failed))
        .bind(run.0)
        .execute(&self.pool)
        .await
        .map_err(err)?;
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
            "UPDATE sync_runs SET status = $1, finished_at = $2, records_read = $3, records_written = $4,
             records_failed = $5, error = $6 WHERE id = $7",
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
        .map_err(err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!("no {run}")));
        }
        Ok(())
    }

    async fn run(&self, run: RunId) -> Result<SyncRun> {
        let row = sqlx::query("SELECT * FROM sync_runs WHERE id = $1")
            .bind(run.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?
            .ok_or_else(|| Error::not_found(format!("no {run}")))?;
        run_from_row(&row)
    }

    async fn recent_runs(&self, pipeline: &str, limit: u32) -> Result<Vec<SyncRun>> {
        let rows =
            sqlx::query("SELECT * FROM sync_runs WHERE pipeline = $1 ORDER BY id DESC LIMIT $2")
                .bind(pipeline)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
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
             VALUES ($1, $2, $3, $4, 1, $5)
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
        .map_err(err)?;
        Ok(sequence)
    }

    async fn checkpoint(&self, pipeline: &str, stream: &str) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query("SELECT * FROM checkpoints WHERE pipeline = $1 AND stream = $2")
            .bind(pipeline)
            .bind(stream)
            .fetch_optional(&self.pool)
            .await
            .map_err(err)?;
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
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
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
                 after_image, actor, at, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
            .map_err(err)?;
            seqs.push(seq);
            prev = hash;
        }
        tx.commit().await.map_err(err)?;
        Ok(seqs)
    }

    async fn audit(&self, run: RunId) -> Result<Vec<AuditRecord>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE run_id = $1 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run.0)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn verify_audit(&self) -> Result<ChainStatus> {
        use futures::TryStreamExt;
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq");
        let query = sqlx::query(sqlx::AssertSqlSafe(sql));
        let mut rows = query.fetch(&self.pool);
        let mut verifier = ChainVerifier::new();
        while let Some(row) = rows.try_next().await.map_err(err)? {
            if let Some(broken) = verifier.check(&audit_from_row(&row)?) {
                return Ok(broken);
            }
        }
        Ok(verifier.finish())
    }
}
