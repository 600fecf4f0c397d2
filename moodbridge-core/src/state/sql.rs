//! The SQL of the state store, written once for both backends.
//!
//! sqlx accepts PostgreSQL's `$N` placeholders on SQLite too, so one text serves both.
//! [`sql_state_store!`] expands the whole [`StateStore`](super::StateStore) implementation
//! for a backend type that provides a `pool` field and these methods:
//! - `fn db_err(&self, e: sqlx::Error) -> Error` — the backend's error mapping;
//! - `async fn begin_audit(&self) -> Result<sqlx::Transaction<'_, DB>>` — a transaction
//!   holding the backend's lock on the audit chain head;
//! - `async fn append_audit_entries(&self, entries: &[AuditEntry]) -> Result<Vec<i64>>` —
//!   the audit append, each backend's fastest way of extending the chain.

/// Everything the expanded SQL refers to; each backend imports it whole.
pub(crate) mod prelude {
    pub(crate) use super::super::rows::{
        AUDIT_COLUMNS, audit_from_row, conflict_from_row, count, cursor_from_row,
        dead_letter_from_row, json, lease_from_row, ms_since_epoch, now_ms, run_from_row, time,
        ttl_ms,
    };
    pub(crate) use super::super::{
        AuditEntry, AuditRecord, ChainStatus, ChainTail, ChainVerifier, Conflict, DeadLetter,
        IntegrationEntry, Lease, LeaseStore, NewConflict, NewDeadLetter, PlatformConfig,
        PurgeReport, RetentionPolicy, RunCounts, RunId, RunStatus, StateStore, StoredCheckpoint,
        SyncRun, image_text,
    };
    pub(crate) use crate::error::{Error, ErrorKind, Result};
    pub(crate) use crate::record::Record;
    pub(crate) use crate::sync::Checkpoint;
    pub(crate) use sqlx::Row;
}

macro_rules! sql_state_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl LeaseStore for $store {
            async fn acquire_lease(
                &self,
                name: &str,
                holder: &str,
                ttl: std::time::Duration,
            ) -> Result<Option<Lease>> {
                self.acquire_lease_sql(name, holder, ttl).await
            }

            async fn claim_lease(
                &self,
                names: &[String],
                holder: &str,
                ttl: std::time::Duration,
            ) -> Result<Option<Lease>> {
                self.claim_lease_sql(names, holder, ttl).await
            }

            async fn renew_lease(&self, lease: &Lease, ttl: std::time::Duration) -> Result<Lease> {
                self.renew_lease_sql(lease, ttl).await
            }

            async fn release_lease(&self, lease: &Lease) -> Result<()> {
                self.release_lease_sql(lease).await
            }
        }

        #[async_trait::async_trait]
        impl StateStore for $store {
            async fn start_run(&self, pipeline: &str) -> Result<RunId> {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO sync_runs (pipeline, status, started_at, heartbeat_at) VALUES ($1, 'running', $2, $2) RETURNING id",
                )
                .bind(pipeline)
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(RunId(id))
            }

            async fn update_run(&self, run: RunId, counts: RunCounts) -> Result<()> {
                sqlx::query(
                    "UPDATE sync_runs SET records_read = $1, records_written = $2, records_failed = $3, heartbeat_at = $4 WHERE id = $5",
                )
                .bind(count(counts.read))
                .bind(count(counts.written))
                .bind(count(counts.failed))
                .bind(now_ms())
                .bind(run.0)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(())
            }

            async fn heartbeat_run(&self, run: RunId) -> Result<()> {
                sqlx::query("UPDATE sync_runs SET heartbeat_at = $1 WHERE id = $2 AND status = 'running'")
                    .bind(now_ms())
                    .bind(run.0)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
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
                .map_err(|e| self.db_err(e))?;
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
                    .map_err(|e| self.db_err(e))?
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
                        .map_err(|e| self.db_err(e))?;
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
                .map_err(|e| self.db_err(e))?;
                Ok(sequence)
            }

            async fn checkpoint(&self, pipeline: &str, stream: &str) -> Result<Option<StoredCheckpoint>> {
                let row = sqlx::query("SELECT * FROM checkpoints WHERE pipeline = $1 AND stream = $2")
                    .bind(pipeline)
                    .bind(stream)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
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
                self.append_audit_entries(entries).await
            }

            async fn audit(&self, run: RunId) -> Result<Vec<AuditRecord>> {
                let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE run_id = $1 ORDER BY seq");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(run.0)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
                rows.iter().map(audit_from_row).collect()
            }

            async fn verify_audit(&self) -> Result<ChainStatus> {
                use futures::TryStreamExt;
                let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq");
                let query = sqlx::query(sqlx::AssertSqlSafe(sql));
                let mut rows = query.fetch(&self.pool);
                let mut verifier = ChainVerifier::new(self.audit_anchor_sql().await?);
                while let Some(row) = rows.try_next().await.map_err(|e| self.db_err(e))? {
                    if let Some(broken) = verifier.check(&audit_from_row(&row)?) {
                        return Ok(broken);
                    }
                }
                Ok(verifier.finish())
            }

            async fn put_integration(&self, integration: &IntegrationEntry) -> Result<()> {
                self.put_integration_sql(integration).await
            }

            async fn integrations(&self) -> Result<Vec<IntegrationEntry>> {
                self.integrations_sql().await
            }

            async fn set_platform_config(
                &self,
                integration: &str,
                key: &str,
                value: &serde_json::Value,
            ) -> Result<()> {
                self.set_platform_config_sql(integration, key, value).await
            }

            async fn platform_config(&self, integration: &str) -> Result<PlatformConfig> {
                self.platform_config_sql(integration).await
            }

            async fn put_dead_letter(&self, letter: &NewDeadLetter) -> Result<i64> {
                self.put_dead_letter_sql(letter).await
            }

            async fn dead_letters(
                &self,
                pipeline: &str,
                stream: Option<&str>,
                limit: u32,
            ) -> Result<Vec<DeadLetter>> {
                self.dead_letters_sql(pipeline, stream, limit).await
            }

            async fn resolve_dead_letter(&self, id: i64) -> Result<()> {
                self.resolve_dead_letter_sql(id).await
            }

            async fn park_conflict(&self, conflict: &NewConflict) -> Result<i64> {
                self.park_conflict_sql(conflict).await
            }

            async fn conflicts(&self, pipeline: &str, limit: u32) -> Result<Vec<Conflict>> {
                self.conflicts_sql(pipeline, limit).await
            }

            async fn resolve_conflict(&self, id: i64, resolution: &str) -> Result<()> {
                self.resolve_conflict_sql(id, resolution).await
            }

            async fn fingerprints(
                &self,
                pipeline: &str,
                stream: &str,
                keys: &[String],
            ) -> Result<std::collections::HashMap<String, String>> {
                self.fingerprints_sql(pipeline, stream, keys).await
            }

            async fn put_fingerprints(
                &self,
                pipeline: &str,
                stream: &str,
                prints: &[(String, String)],
            ) -> Result<()> {
                self.put_fingerprints_sql(pipeline, stream, prints).await
            }

            async fn purge_as_of(
                &self,
                policy: &RetentionPolicy,
                now: std::time::SystemTime,
            ) -> Result<PurgeReport> {
                self.purge_as_of_sql(policy, now).await
            }
        }

        super::sql_ops::sql_operations!($store);
        super::sql_cursors::sql_cursor_store!($store);
        super::sql_events::sql_event_log!($store);
        super::sql_queue::sql_queue_store!($store);
    };
}

pub(crate) use sql_state_store;
