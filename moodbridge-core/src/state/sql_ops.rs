//! The SQL of the state store's operational tables — integrations, platform config, dead
//! letters, conflicts, leases, retention — written once for both backends, like
//! [`sql_state_store!`](super::sql::sql_state_store).
//!
//! [`sql_operations!`] expands inherent `*_sql` methods; the `StateStore` impl delegates to
//! them (`async_trait` cannot see methods generated inside its impl block). The backend
//! provides, besides what `sql_state_store!` needs, two SQL texts:
//! - `ENSURE_LEASES_SQL` — insert a free lease row for every name of a JSON array (`$1`);
//! - `FINGERPRINTS_SQL` — the fingerprints of `pipeline` (`$1`), `stream` (`$2`) for
//!   the record keys of a JSON array (`$3`), returning `record_key, fingerprint`;
//! - `CLAIM_LEASE_SQL` — atomically take the first free or lapsed lease among the names of
//!   a JSON array (`$1`), given now (`$2`), the holder (`$3`) and the new expiry (`$4`),
//!   returning `name, holder, token, expires_at`.

macro_rules! sql_operations {
    ($store:ty) => {
        impl $store {
            async fn put_integration_sql(&self, i: &IntegrationEntry) -> Result<()> {
                sqlx::query(
                    "INSERT INTO integrations (id, kind, metadata, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, metadata = excluded.metadata,
                     updated_at = excluded.updated_at",
                )
                .bind(&i.id)
                .bind(&i.kind)
                .bind(i.metadata.to_string())
                .bind(now_ms())
                .execute(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(())
            }

            async fn integrations_sql(&self) -> Result<Vec<IntegrationEntry>> {
                let rows = sqlx::query("SELECT id, kind, metadata FROM integrations ORDER BY id")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
                rows.iter()
                    .map(|row| {
                        Ok(IntegrationEntry {
                            id: row.get("id"),
                            kind: row.get("kind"),
                            metadata: json(Some(row.get("metadata")))?.unwrap_or_default(),
                        })
                    })
                    .collect()
            }

            async fn set_platform_config_sql(
                &self,
                integration: &str,
                key: &str,
                value: &serde_json::Value,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO platform_config (integration_id, key, value, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (integration_id, key) DO UPDATE SET value = excluded.value,
                     updated_at = excluded.updated_at",
                )
                .bind(integration)
                .bind(key)
                .bind(value.to_string())
                .bind(now_ms())
                .execute(&self.pool)
                .await
                .map_err(|e| match self.db_err(e) {
                    e if e.kind() == ErrorKind::InvalidInput => Error::invalid_input(format!(
                        "integration {integration:?} is not registered"
                    ))
                    .with_hint("register it with put_integration first"),
                    e => e,
                })?;
                Ok(())
            }

            async fn platform_config_sql(&self, integration: &str) -> Result<PlatformConfig> {
                let rows = sqlx::query(
                    "SELECT key, value FROM platform_config WHERE integration_id = $1 ORDER BY key",
                )
                .bind(integration)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.get::<String, _>("key"),
                            json(Some(row.get("value")))?.unwrap_or_default(),
                        ))
                    })
                    .collect()
            }

            async fn put_dead_letter_sql(&self, l: &NewDeadLetter) -> Result<i64> {
                let record = serde_json::to_string(&l.record)
                    .map_err(|e| Error::internal("cannot serialize a record").with_source(e))?;
                let now = now_ms();
                sqlx::query_scalar(
                    "INSERT INTO dead_letters (pipeline, stream, record_key, record, reason, stage,
                       attempts, run_id, first_seen, last_seen)
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $8)
                     ON CONFLICT (pipeline, stream, record_key) WHERE resolved_at IS NULL DO UPDATE SET
                       record = excluded.record, reason = excluded.reason, stage = excluded.stage,
                       attempts = dead_letters.attempts + 1, run_id = excluded.run_id,
                       last_seen = excluded.last_seen
                     RETURNING id",
                )
                .bind(&l.pipeline)
                .bind(&l.stream)
                .bind(&l.record_key)
                .bind(record)
                .bind(&l.reason)
                .bind(l.stage.as_str())
                .bind(l.run.map(|r| r.0))
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.db_err(e))
            }

            async fn dead_letters_sql(
                &self,
                pipeline: &str,
                stream: Option<&str>,
                limit: u32,
            ) -> Result<Vec<DeadLetter>> {
                let rows = sqlx::query(
                    "SELECT * FROM dead_letters WHERE pipeline = $1 AND ($2 IS NULL OR stream = $2)
                     AND resolved_at IS NULL ORDER BY id LIMIT $3",
                )
                .bind(pipeline)
                .bind(stream)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                rows.iter().map(dead_letter_from_row).collect()
            }

            async fn resolve_dead_letter_sql(&self, id: i64) -> Result<()> {
                let done = sqlx::query(
                    "UPDATE dead_letters SET resolved_at = $1 WHERE id = $2 AND resolved_at IS NULL",
                )
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                if done.rows_affected() == 0 {
                    return Err(Error::not_found(format!("no open dead letter {id}")));
                }
                Ok(())
            }

            async fn park_conflict_sql(&self, c: &NewConflict) -> Result<i64> {
                let image = |r: &Option<Record>| -> Result<Option<String>> {
                    r.as_ref()
                        .map(|r| {
                            serde_json::to_string(r).map_err(|e| {
                                Error::internal("cannot serialize a record").with_source(e)
                            })
                        })
                        .transpose()
                };
                sqlx::query_scalar(
                    "INSERT INTO conflicts (pipeline, stream, record_key, left_image, right_image, run_id, detected_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (pipeline, stream, record_key) WHERE resolved_at IS NULL DO UPDATE SET
                       left_image = excluded.left_image, right_image = excluded.right_image,
                       run_id = excluded.run_id, detected_at = excluded.detected_at
                     RETURNING id",
                )
                .bind(&c.pipeline)
                .bind(&c.stream)
                .bind(&c.record_key)
                .bind(image(&c.left)?)
                .bind(image(&c.right)?)
                .bind(c.run.map(|r| r.0))
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.db_err(e))
            }

            async fn conflicts_sql(&self, pipeline: &str, limit: u32) -> Result<Vec<Conflict>> {
                let rows = sqlx::query(
                    "SELECT * FROM conflicts WHERE pipeline = $1 AND resolved_at IS NULL ORDER BY id LIMIT $2",
                )
                .bind(pipeline)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                rows.iter().map(conflict_from_row).collect()
            }

            async fn resolve_conflict_sql(&self, id: i64, resolution: &str) -> Result<()> {
                let done = sqlx::query(
                    "UPDATE conflicts SET resolved_at = $1, resolution = $2 WHERE id = $3 AND resolved_at IS NULL",
                )
                .bind(now_ms())
                .bind(resolution)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                if done.rows_affected() == 0 {
                    return Err(Error::not_found(format!("no open conflict {id}")));
                }
                Ok(())
            }

            async fn acquire_lease_sql(
                &self,
                name: &str,
                holder: &str,
                ttl: std::time::Duration,
            ) -> Result<Option<Lease>> {
                let now = now_ms();
                let row = sqlx::query(
                    "INSERT INTO leases (name, holder, token, expires_at) VALUES ($1, $2, 1, $3)
                     ON CONFLICT (name) DO UPDATE SET
                       token = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > $4
                                    THEN leases.token ELSE leases.token + 1 END,
                       holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE leases.holder IS NULL OR leases.expires_at <= $4 OR leases.holder = excluded.holder
                     RETURNING name, holder, token, expires_at",
                )
                .bind(name)
                .bind(holder)
                .bind(now.saturating_add(ttl_ms(ttl)))
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(row.as_ref().map(lease_from_row))
            }

            async fn claim_lease_sql(
                &self,
                names: &[String],
                holder: &str,
                ttl: std::time::Duration,
            ) -> Result<Option<Lease>> {
                if names.is_empty() {
                    return Ok(None);
                }
                let list = serde_json::to_string(names)
                    .map_err(|e| Error::internal("cannot serialize lease names").with_source(e))?;
                sqlx::query(Self::ENSURE_LEASES_SQL)
                    .bind(&list)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
                let now = now_ms();
                let row = sqlx::query(Self::CLAIM_LEASE_SQL)
                    .bind(&list)
                    .bind(now)
                    .bind(holder)
                    .bind(now.saturating_add(ttl_ms(ttl)))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
                Ok(row.as_ref().map(lease_from_row))
            }

            async fn renew_lease_sql(&self, lease: &Lease, ttl: std::time::Duration) -> Result<Lease> {
                let row = sqlx::query(
                    "UPDATE leases SET expires_at = $1 WHERE name = $2 AND holder = $3 AND token = $4
                     RETURNING name, holder, token, expires_at",
                )
                .bind(now_ms().saturating_add(ttl_ms(ttl)))
                .bind(&lease.name)
                .bind(&lease.holder)
                .bind(lease.token)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                row.as_ref().map(lease_from_row).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Conflict,
                        format!("the lease on {} was lost to another worker", lease.name),
                    )
                    .with_hint("stop working on it: another worker resumes from the last checkpoint")
                })
            }

            async fn release_lease_sql(&self, lease: &Lease) -> Result<()> {
                sqlx::query(
                    "UPDATE leases SET holder = NULL, expires_at = 0 WHERE name = $1 AND holder = $2 AND token = $3",
                )
                .bind(&lease.name)
                .bind(&lease.holder)
                .bind(lease.token)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(())
            }

            async fn purge_as_of_sql(
                &self,
                policy: &RetentionPolicy,
                now: std::time::SystemTime,
            ) -> Result<PurgeReport> {
                let cutoff = |age: Option<std::time::Duration>| {
                    age.map(|age| ms_since_epoch(now).saturating_sub(ttl_ms(age)))
                };
                let mut report = PurgeReport::default();
                let mut tx = self.pool.begin().await.map_err(|e| self.db_err(e))?;
                if let Some(before) = cutoff(policy.dead_letters) {
                    report.dead_letters = sqlx::query(
                        "DELETE FROM dead_letters WHERE resolved_at IS NOT NULL AND resolved_at < $1",
                    )
                    .bind(before)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?
                    .rows_affected();
                }
                if let Some(before) = cutoff(policy.conflicts) {
                    report.conflicts = sqlx::query(
                        "DELETE FROM conflicts WHERE resolved_at IS NOT NULL AND resolved_at < $1",
                    )
                    .bind(before)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?
                    .rows_affected();
                }
                if let Some(before) = cutoff(policy.runs) {
                    // Runs still referred to (a committed checkpoint, an open dead letter or
                    // conflict) stay.
                    report.runs = sqlx::query(
                        "DELETE FROM sync_runs WHERE finished_at IS NOT NULL AND finished_at < $1
                         AND id NOT IN (SELECT run_id FROM checkpoints)
                         AND id NOT IN (SELECT run_id FROM dead_letters WHERE run_id IS NOT NULL)
                         AND id NOT IN (SELECT run_id FROM conflicts WHERE run_id IS NOT NULL)",
                    )
                    .bind(before)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?
                    .rows_affected();
                }
                tx.commit().await.map_err(|e| self.db_err(e))?;
                if let Some(before) = cutoff(policy.audit) {
                    report.audit = self.purge_audit_sql(before).await?;
                }
                Ok(report)
            }

            /// Remove audit entries appended before `before_ms`: record an anchor (the last
            /// removed entry's seq and hash) first, under the chain lock, so verification
            /// continues from it.
            async fn purge_audit_sql(&self, before_ms: i64) -> Result<u64> {
                let mut tx = self.begin_audit().await?;
                let last = sqlx::query(
                    "SELECT seq, hash FROM audit_log WHERE at < $1 ORDER BY seq DESC LIMIT 1",
                )
                .bind(before_ms)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
                let Some(last) = last else {
                    return Ok(0);
                };
                let seq: i64 = last.get("seq");
                sqlx::query("INSERT INTO audit_anchors (up_to_seq, hash, purged_at) VALUES ($1, $2, $3)")
                    .bind(seq)
                    .bind(last.get::<String, _>("hash"))
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                let removed = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?
                    .rows_affected();
                tx.commit().await.map_err(|e| self.db_err(e))?;
                Ok(removed)
            }

            async fn fingerprints_sql(
                &self,
                pipeline: &str,
                stream: &str,
                keys: &[String],
            ) -> Result<std::collections::HashMap<String, String>> {
                if keys.is_empty() {
                    return Ok(std::collections::HashMap::new());
                }
                let list = serde_json::to_string(keys)
                    .map_err(|e| Error::internal("cannot serialize record keys").with_source(e))?;
                let rows = sqlx::query(Self::FINGERPRINTS_SQL)
                    .bind(pipeline)
                    .bind(stream)
                    .bind(list)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
                Ok(rows
                    .iter()
                    .map(|r| (r.get("record_key"), r.get("fingerprint")))
                    .collect())
            }

            async fn put_fingerprints_sql(
                &self,
                pipeline: &str,
                stream: &str,
                prints: &[(String, String)],
            ) -> Result<()> {
                let mut tx = self.pool.begin().await.map_err(|e| self.db_err(e))?;
                let now = now_ms();
                for (key, print) in prints {
                    sqlx::query(
                        "INSERT INTO sync_fingerprints (pipeline, stream, record_key, fingerprint, updated_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (pipeline, stream, record_key) DO UPDATE SET
                           fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
                    )
                    .bind(pipeline)
                    .bind(stream)
                    .bind(key)
                    .bind(print)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                }
                tx.commit().await.map_err(|e| self.db_err(e))?;
                Ok(())
            }

            /// The newest purge anchor of the audit log.
            async fn audit_anchor_sql(&self) -> Result<Option<(i64, String)>> {
                let row = sqlx::query(
                    "SELECT up_to_seq, hash FROM audit_anchors ORDER BY up_to_seq DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(row.map(|r| (r.get("up_to_seq"), r.get("hash"))))
            }
        }
    };
}

pub(crate) use sql_operations;
