//! The SQL of the event log, written once for both backends, like
//! [`sql_state_store!`](super::sql::sql_state_store) (which expands this too).

macro_rules! sql_event_log {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl super::EventLog for $store {
            async fn append_events(
                &self,
                events: &[super::NewEvent],
            ) -> Result<Vec<super::Appended>> {
                if events.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.pool.begin().await.map_err(|e| self.db_err(e))?;
                // The head row first: its lock (held to commit) orders writers, so the
                // duplicate checks below see every event committed before this one.
                let mut last: i64 = sqlx::query_scalar(
                    "UPDATE event_log_head SET last_sequence = last_sequence WHERE id = 1 RETURNING last_sequence",
                )
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
                let first = last;
                let mut out = Vec::with_capacity(events.len());
                for event in events {
                    let existing: Option<i64> = sqlx::query_scalar(
                        "SELECT sequence FROM events WHERE source = $1 AND event_id = $2",
                    )
                    .bind(&event.source)
                    .bind(&event.event_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                    if let Some(sequence) = existing {
                        out.push(super::Appended::Duplicate(sequence));
                        continue;
                    }
                    last += 1;
                    sqlx::query(
                        "INSERT INTO events (sequence, source, event_id, partition_key, event_type, body, received_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(last)
                    .bind(&event.source)
                    .bind(&event.event_id)
                    .bind(&event.partition_key)
                    .bind(&event.event_type)
                    .bind(&event.body)
                    .bind(ms_since_epoch(event.received_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                    out.push(super::Appended::Stored(last));
                }
                if last != first {
                    sqlx::query("UPDATE event_log_head SET last_sequence = $1 WHERE id = 1")
                        .bind(last)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db_err(e))?;
                }
                tx.commit().await.map_err(|e| self.db_err(e))?;
                Ok(out)
            }

            async fn events_after(
                &self,
                sequence: i64,
                limit: u32,
            ) -> Result<Vec<super::StoredEvent>> {
                let rows = sqlx::query(
                    "SELECT * FROM events WHERE sequence > $1 ORDER BY sequence LIMIT $2",
                )
                .bind(sequence)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(rows.iter().map(event_from_row).collect())
            }

            async fn last_sequence(&self) -> Result<i64> {
                sqlx::query_scalar("SELECT last_sequence FROM event_log_head WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))
            }

            async fn sequence_before(&self, time: std::time::SystemTime) -> Result<i64> {
                let first: Option<i64> =
                    sqlx::query_scalar("SELECT MIN(sequence) FROM events WHERE received_at >= $1")
                        .bind(ms_since_epoch(time))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| self.db_err(e))?;
                match first {
                    Some(s) => Ok(s - 1),
                    None => super::EventLog::last_sequence(self).await,
                }
            }

            async fn purge_events(&self, before: std::time::SystemTime, up_to: i64) -> Result<u64> {
                let done = sqlx::query("DELETE FROM events WHERE received_at < $1 AND sequence <= $2")
                    .bind(ms_since_epoch(before))
                    .bind(up_to)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use sql_event_log;
