//! The SQL of the cursor store, written once for both backends, like
//! [`sql_state_store!`](super::sql::sql_state_store) (which expands this too). A commit
//! is each backend's own `write_cursor` (SQLite's goes through its one writing
//! connection, so that a consumer's commit does not wait on the busy handler while
//! events are appended).

/// The statements of a cursor commit, with `$N` placeholders: an upsert, the insert of a
/// first cursor (fenced at sequence 0), the update fenced at a sequence.
pub(crate) const UPSERT_CURSOR: &str =
    "INSERT INTO cursors (consumer, partition_key, position, sequence, committed_at)
     VALUES ($1, $2, $3, 1, $4)
     ON CONFLICT (consumer, partition_key) DO UPDATE SET
       position = excluded.position, sequence = cursors.sequence + 1,
       committed_at = excluded.committed_at
     RETURNING sequence";
pub(crate) const INSERT_FIRST_CURSOR: &str =
    "INSERT INTO cursors (consumer, partition_key, position, sequence, committed_at)
     VALUES ($1, $2, $3, 1, $4)
     ON CONFLICT (consumer, partition_key) DO NOTHING
     RETURNING sequence";
/// The statement of a commit fenced at `expected` (`Some(0)`: no cursor yet), or an
/// upsert (`None`).
pub(crate) fn cursor_statement(expected: Option<i64>) -> &'static str {
    match expected {
        None => UPSERT_CURSOR,
        Some(0) => INSERT_FIRST_CURSOR,
        Some(_) => UPDATE_CURSOR_AT,
    }
}

pub(crate) const UPDATE_CURSOR_AT: &str =
    "UPDATE cursors SET position = $3, sequence = sequence + 1, committed_at = $4
     WHERE consumer = $1 AND partition_key = $2 AND sequence = $5
     RETURNING sequence";

macro_rules! sql_cursor_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl super::CursorStore for $store {
            async fn cursor(
                &self,
                consumer: &str,
                partition: &str,
            ) -> Result<Option<super::StoredCursor>> {
                let row = sqlx::query(
                    "SELECT * FROM cursors WHERE consumer = $1 AND partition_key = $2",
                )
                .bind(consumer)
                .bind(partition)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(row.map(|row| cursor_from_row(&row)))
            }

            async fn commit_cursor(
                &self,
                consumer: &str,
                partition: &str,
                position: &str,
            ) -> Result<i64> {
                let done = self.write_cursor(consumer, partition, position, None).await?;
                done.ok_or_else(|| Error::internal("a cursor commit wrote nothing"))
            }

            async fn commit_cursor_if(
                &self,
                consumer: &str,
                partition: &str,
                position: &str,
                expected: i64,
            ) -> Result<i64> {
                let done = self
                    .write_cursor(consumer, partition, position, Some(expected))
                    .await?;
                done.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "the cursor of {consumer:?} in {partition:?} moved past sequence {expected}"
                        ),
                    )
                    .with_hint("another worker advanced it: read the cursor again and decide")
                })
            }

            async fn cursors(&self, consumer: &str) -> Result<Vec<super::StoredCursor>> {
                let rows = sqlx::query(
                    "SELECT * FROM cursors WHERE consumer = $1 ORDER BY partition_key",
                )
                .bind(consumer)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(rows.iter().map(cursor_from_row).collect())
            }

            async fn reset_cursors(&self, consumer: &str) -> Result<u64> {
                let done = sqlx::query("DELETE FROM cursors WHERE consumer = $1")
                    .bind(consumer)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| self.db_err(e))?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use sql_cursor_store;
