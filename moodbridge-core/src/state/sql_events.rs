//! The SQL of the event log, written once for both backends, like
//! [`sql_state_store!`](super::sql::sql_state_store) (which expands this too). The
//! append is each backend's own `append_event_rows`, its fastest way of inserting under
//! the head row's lock, and its own `read_event_rows`.

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
                self.append_event_rows(events).await
            }

            async fn events_after(
                &self,
                sequence: i64,
                limit: u32,
            ) -> Result<Vec<super::StoredEvent>> {
                self.read_event_rows(sequence, limit).await
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
                let done =
                    sqlx::query("DELETE FROM events WHERE received_at < $1 AND sequence <= $2")
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
