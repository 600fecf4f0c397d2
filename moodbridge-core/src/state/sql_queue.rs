//! The SQL of the embedded message queues ([`QueueStore`](super::QueueStore)), written
//! once for both backends, like [`sql_state_store!`](super::sql::sql_state_store) (which
//! expands this too). The backend provides two SQL texts:
//! - `QUEUE_LOCK_SQL` — run first in a receive's transaction with the queue's name
//!   (`$1`): PostgreSQL serializes the receivers of a queue with an advisory lock, so a
//!   FIFO group is never handed to two of them; SQLite's writes are serialized already;
//! - `QUEUE_RECEIVE_SQL` — hand out up to `$5` messages of queue `$1` visible at `$2`
//!   (for FIFO groups: none behind an earlier message of the group that is hidden),
//!   hiding them until `$3` with receipts `$4.<id>`, returning `id, body, attributes,
//!   group_id, deliveries, sent_at, receipt`.

macro_rules! sql_queue_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl super::QueueStore for $store {
            async fn queue_send(
                &self,
                queue: &str,
                messages: &[super::QueuedMessage],
            ) -> Result<Vec<i64>> {
                let now = now_ms();
                let mut tx = self.pool.begin().await.map_err(|e| self.db_err(e))?;
                if messages.iter().any(|m| m.dedup_id.is_some()) {
                    sqlx::query("DELETE FROM queue_dedup WHERE queue = $1 AND seen_at < $2")
                        .bind(queue)
                        .bind(now - super::DEDUP_WINDOW_MS)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db_err(e))?;
                }
                let mut ids = Vec::with_capacity(messages.len());
                for m in messages {
                    if let Some(dedup) = &m.dedup_id {
                        let seen: Option<i64> = sqlx::query_scalar(
                            "SELECT message_id FROM queue_dedup WHERE queue = $1 AND dedup_id = $2",
                        )
                        .bind(queue)
                        .bind(dedup)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(|e| self.db_err(e))?;
                        if let Some(id) = seen {
                            ids.push(id);
                            continue;
                        }
                    }
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO queue_messages (queue, body, attributes, group_id, sent_at, visible_at)
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    )
                    .bind(queue)
                    .bind(&m.body)
                    .bind(&m.attributes)
                    .bind(&m.group)
                    .bind(now)
                    .bind(now + m.delay_ms)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                    if let Some(dedup) = &m.dedup_id {
                        sqlx::query(
                            "INSERT INTO queue_dedup (queue, dedup_id, message_id, seen_at) VALUES ($1, $2, $3, $4)",
                        )
                        .bind(queue)
                        .bind(dedup)
                        .bind(id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db_err(e))?;
                    }
                    ids.push(id);
                }
                tx.commit().await.map_err(|e| self.db_err(e))?;
                Ok(ids)
            }

            async fn queue_receive(
                &self,
                queue: &str,
                request: &super::QueueReceive,
            ) -> Result<Vec<super::QueueRow>> {
                let now = now_ms();
                let mut tx = self.pool.begin().await.map_err(|e| self.db_err(e))?;
                if let Some(lock) = Self::QUEUE_LOCK_SQL {
                    sqlx::query(lock)
                        .bind(queue)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.db_err(e))?;
                }
                if let Some((dead_letters, after)) = &request.dead_letter {
                    sqlx::query(
                        "UPDATE queue_messages SET queue = $2, deliveries = 0, receipt = NULL, visible_at = $3
                         WHERE queue = $1 AND visible_at <= $3 AND deliveries >= $4",
                    )
                    .bind(queue)
                    .bind(dead_letters)
                    .bind(now)
                    .bind(i64::from(*after))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                }
                let rows = sqlx::query(Self::QUEUE_RECEIVE_SQL)
                    .bind(queue)
                    .bind(now)
                    .bind(now + request.visibility_ms)
                    .bind(&request.nonce)
                    .bind(i64::from(request.max))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.db_err(e))?;
                tx.commit().await.map_err(|e| self.db_err(e))?;
                let mut out = rows
                    .iter()
                    .map(|r| {
                        Ok(super::QueueRow {
                            id: r.try_get("id")?,
                            body: r.try_get("body")?,
                            attributes: r.try_get("attributes")?,
                            group: r.try_get("group_id")?,
                            deliveries: r.try_get::<i32, _>("deliveries")?.max(0) as u32,
                            sent_at_ms: r.try_get("sent_at")?,
                            receipt: r.try_get("receipt")?,
                        })
                    })
                    .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                    .map_err(|e| self.db_err(e))?;
                out.sort_by_key(|r| r.id);
                Ok(out)
            }

            async fn queue_settle(
                &self,
                queue: &str,
                receipt: &str,
                settle: super::Settle,
            ) -> Result<bool> {
                let now = now_ms();
                let query = match settle {
                    super::Settle::Delete => {
                        sqlx::query("DELETE FROM queue_messages WHERE queue = $1 AND receipt = $2")
                            .bind(queue)
                            .bind(receipt)
                    }
                    super::Settle::Release { delay_ms } => sqlx::query(
                        "UPDATE queue_messages SET visible_at = $3, receipt = NULL WHERE queue = $1 AND receipt = $2",
                    )
                    .bind(queue)
                    .bind(receipt)
                    .bind(now + delay_ms),
                    super::Settle::Hide { for_ms } => sqlx::query(
                        "UPDATE queue_messages SET visible_at = $3 WHERE queue = $1 AND receipt = $2",
                    )
                    .bind(queue)
                    .bind(receipt)
                    .bind(now + for_ms),
                };
                let done = query.execute(&self.pool).await.map_err(|e| self.db_err(e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn queue_depth(&self, queue: &str) -> Result<u64> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM queue_messages WHERE queue = $1 AND visible_at <= $2",
                )
                .bind(queue)
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.db_err(e))?;
                Ok(n.max(0) as u64)
            }
        }
    };
}

pub(crate) use sql_queue_store;
