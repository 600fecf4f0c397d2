//! The SQL of the cursor store, written once for both backends, like
//! [`sql_state_store!`](super::sql::sql_state_store) (which expands this too).

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
                sqlx::query_scalar(
                    "INSERT INTO cursors (consumer, partition_key, position, sequence, committed_at)
                     VALUES ($1, $2, $3, 1, $4)
                     ON CONFLICT (consumer, partition_key) DO UPDATE SET
                       position = excluded.position, sequence = cursors.sequence + 1,
                       committed_at = excluded.committed_at
                     RETURNING sequence",
                )
                .bind(consumer)
                .bind(partition)
                .bind(position)
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.db_err(e))
            }

            async fn commit_cursor_if(
                &self,
                consumer: &str,
                partition: &str,
                position: &str,
                expected: i64,
            ) -> Result<i64> {
                // One statement either way: the insert of a first cursor conflicts with
                // a concurrent one (primary key), the update matches only the sequence read.
                let done: Option<i64> = if expected == 0 {
                    sqlx::query_scalar(
                        "INSERT INTO cursors (consumer, partition_key, position, sequence, committed_at)
                         VALUES ($1, $2, $3, 1, $4)
                         ON CONFLICT (consumer, partition_key) DO NOTHING
                         RETURNING sequence",
                    )
                    .bind(consumer)
                    .bind(partition)
                    .bind(position)
                    .bind(now_ms())
                    .fetch_optional(&self.pool)
                    .await
                } else {
                    sqlx::query_scalar(
                        "UPDATE cursors SET position = $3, sequence = sequence + 1, committed_at = $4
                         WHERE consumer = $1 AND partition_key = $2 AND sequence = $5
                         RETURNING sequence",
                    )
                    .bind(consumer)
                    .bind(partition)
                    .bind(position)
                    .bind(now_ms())
                    .bind(expected)
                    .fetch_optional(&self.pool)
                    .await
                }
                .map_err(|e| self.db_err(e))?;
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
