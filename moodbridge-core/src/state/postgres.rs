//! The PostgreSQL state store: for several workers (on several machines) sharing
//! pipelines. Migrations embedded; the audit chain head is extended under a
//! transaction-scoped advisory lock, so concurrent writers keep one chain.

use super::sql::sql_state_store;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::sql::prelude::*;

/// Audit rows per `INSERT` statement.
const AUDIT_ROWS_PER_INSERT: usize = 500;

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

impl PostgresStateStore {
    const FINGERPRINTS_SQL: &'static str = "SELECT record_key, fingerprint FROM sync_fingerprints
         WHERE pipeline = $1 AND stream = $2
           AND record_key IN (SELECT jsonb_array_elements_text($3::jsonb))";

    const ENSURE_LEASES_SQL: &'static str = "INSERT INTO leases (name)
         SELECT jsonb_array_elements_text($1::jsonb) ON CONFLICT (name) DO NOTHING";

    /// Rows another worker is claiming at this moment are skipped, not waited for.
    const CLAIM_LEASE_SQL: &'static str = "WITH candidate AS (
           SELECT name FROM leases
           WHERE name IN (SELECT jsonb_array_elements_text($1::jsonb))
             AND (holder IS NULL OR expires_at <= $2)
           ORDER BY expires_at, name LIMIT 1
           FOR UPDATE SKIP LOCKED)
         UPDATE leases SET holder = $3, token = leases.token + 1, expires_at = $4
         FROM candidate WHERE leases.name = candidate.name
         RETURNING leases.name, leases.holder, leases.token, leases.expires_at";

    /// The receivers of one queue take turns (a transaction-scoped advisory lock), so a
    /// FIFO group never goes to two of them at once.
    const QUEUE_LOCK_SQL: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");

    const QUEUE_RECEIVE_SQL: &'static str = "WITH picked AS (
           SELECT m.id FROM queue_messages m
           WHERE m.queue = $1 AND m.visible_at <= $2
             AND (m.group_id IS NULL OR NOT EXISTS (
               SELECT 1 FROM queue_messages p
               WHERE p.queue = m.queue AND p.group_id = m.group_id
                 AND p.id < m.id AND p.visible_at > $2))
           ORDER BY m.id LIMIT $5)
         UPDATE queue_messages q
         SET deliveries = q.deliveries + 1, visible_at = $3, receipt = $4 || '.' || q.id
         FROM picked WHERE q.id = picked.id
         RETURNING q.id, q.body, q.attributes, q.group_id, q.deliveries, q.sent_at, q.receipt";

    fn db_err(&self, e: sqlx::Error) -> Error {
        err(e)
    }

    /// Commit a cursor: an upsert, or fenced at `expected` (`Some(0)`: no cursor yet);
    /// the new sequence, `None` when the fence did not hold.
    async fn write_cursor(
        &self,
        consumer: &str,
        partition: &str,
        position: &str,
        expected: Option<i64>,
    ) -> Result<Option<i64>> {
        let sql = super::sql_cursors::cursor_statement(expected);
        let mut query = sqlx::query_scalar(sql)
            .bind(consumer)
            .bind(partition)
            .bind(position)
            .bind(now_ms());
        if let Some(e) = expected.filter(|e| *e != 0) {
            query = query.bind(e);
        }
        query.fetch_optional(&self.pool).await.map_err(err)
    }

    /// Up to `limit` events after `sequence`, in order.
    async fn read_event_rows(&self, sequence: i64, limit: u32) -> Result<Vec<super::StoredEvent>> {
        let rows =
            sqlx::query("SELECT * FROM events WHERE sequence > $1 ORDER BY sequence LIMIT $2")
                .bind(sequence)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
        Ok(rows.iter().map(super::rows::event_from_row).collect())
    }

    /// Append events in one transaction. The head row first: its lock (held to commit)
    /// orders writers, so each insert's conflict check sees every event committed
    /// before this one. One statement per new event; a duplicate costs one more.
    async fn append_event_rows(&self, events: &[super::NewEvent]) -> Result<Vec<super::Appended>> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        let mut last: i64 = sqlx::query_scalar(
            "UPDATE event_log_head SET last_sequence = last_sequence WHERE id = 1 RETURNING last_sequence",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        let first = last;
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let inserted = sqlx::query(
                "INSERT INTO events (sequence, source, event_id, partition_key, event_type, body, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (source, event_id) DO NOTHING",
            )
            .bind(last + 1)
            .bind(&event.source)
            .bind(&event.event_id)
            .bind(&event.partition_key)
            .bind(&event.event_type)
            .bind(&event.body)
            .bind(ms_since_epoch(event.received_at))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            if inserted.rows_affected() == 1 {
                last += 1;
                out.push(super::Appended::Stored(last));
            } else {
                let sequence: i64 = sqlx::query_scalar(
                    "SELECT sequence FROM events WHERE source = $1 AND event_id = $2",
                )
                .bind(&event.source)
                .bind(&event.event_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
                out.push(super::Appended::Duplicate(sequence));
            }
        }
        if last != first {
            sqlx::query("UPDATE event_log_head SET last_sequence = $1 WHERE id = 1")
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(out)
    }

    /// Extend the chain in one transaction under the advisory lock, 500 rows per
    /// `INSERT` (12 values each, well inside the bind limit).
    async fn append_audit_entries(&self, entries: &[AuditEntry]) -> Result<Vec<i64>> {
        // The backend's lock on the chain head, held until commit.
        let mut tx = self.begin_audit().await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?;
        let head = match head {
            Some(row) => Some(row),
            // Emptied by a purge: the chain goes on from the purge anchor.
            None => sqlx::query(
                "SELECT up_to_seq AS seq, hash FROM audit_anchors ORDER BY up_to_seq DESC LIMIT 1",
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.db_err(e))?,
        };
        let head = head.map(|row| (row.get::<i64, _>("seq"), row.get::<String, _>("hash")));
        let mut tail = ChainTail::new(head, now_ms());
        let at = tail.at();
        let mut seqs = Vec::with_capacity(entries.len());
        // Rows per INSERT: 12 values each, well inside both backends' bind limits.
        for chunk in entries.chunks(AUDIT_ROWS_PER_INSERT) {
            let mut rows = Vec::with_capacity(chunk.len());
            for entry in chunk {
                let (before, after) = (image_text(&entry.before), image_text(&entry.after));
                let (seq, link, hash) = tail.link(entry, before.as_deref(), after.as_deref());
                rows.push((seq, entry, before, after, link, hash));
                seqs.push(seq);
            }
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO audit_log (seq, run_id, stream, record_key, operation, before_image, after_image, after_sha256, actor, at, prev_hash, hash) ",
            );
            insert.push_values(rows, |mut row, (seq, entry, before, after, link, hash)| {
                row.push_bind(seq)
                    .push_bind(entry.run.0)
                    .push_bind(entry.stream.as_str())
                    .push_bind(entry.record_key.as_str())
                    .push_bind(entry.operation.as_str())
                    .push_bind(before)
                    .push_bind(after)
                    .push_bind(entry.after_sha256.as_deref())
                    .push_bind(entry.actor.as_str())
                    .push_bind(at)
                    .push_bind(link)
                    .push_bind(hash);
            });
            insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| self.db_err(e))?;
        }
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(seqs)
    }

    async fn begin_audit(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        Ok(tx)
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

sql_state_store!(PostgresStateStore);
