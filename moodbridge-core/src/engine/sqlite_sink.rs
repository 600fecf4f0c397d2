//! The embedded warehouse: a [`SyncSink`] that keeps each stream in a SQLite table.
//!
//! - One table per stream, named after it, with a column per field (types from the
//!   catalog) and the stream's primary key; a field that appears later adds a column
//!   (the schema evolves, nothing is lost).
//! - Upsert by key reports created / updated / unchanged per record with the row as it
//!   was (the before-image the audit log keeps); unchanged rows are not rewritten.
//!   Append inserts (a duplicate key is a per-record conflict); overwrite fills a staging
//!   table and swaps it in at `commit_stream`.
//! - Each `write` is one transaction, committed before it returns (WAL, `synchronous =
//!   FULL` by default), so what it reports written survives a crash or power loss.
//!
//! ```
//! use moodbridge_core::engine::SqliteTableSink;
//! use moodbridge_core::{Record, RecordBatch, StreamDescriptor, SyncSink, WriteMode};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let sink = SqliteTableSink::open(&dir.path().join("warehouse.db")).await.unwrap();
//! let mode = WriteMode::Upsert { key: vec!["Id".into()] };
//! sink.begin_stream(&StreamDescriptor::new("Case").primary_key(["Id"]), &mode).await.unwrap();
//! let case = Record::from_json(serde_json::json!({"Id": "500A", "Subject": "Review"})).unwrap();
//! sink.write(&RecordBatch::new("Case", vec![case.clone()]), &mode).await.unwrap();
//! assert_eq!(sink.rows("Case").await.unwrap(), vec![case]);
//! # });
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Number, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlitePool, TypeInfo, ValueRef};
use tokio::sync::Mutex;

use crate::catalog::{FieldType, StreamDescriptor};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{Record, RecordBatch};
use crate::sync::{
    FailureKind, RecordFailure, RecordOutcome, SyncSink, WriteAction, WriteMode, WriteReport,
};

/// SQLite's limit of bound values per statement (since 3.32).
const MAX_BINDS: usize = 32_766;
/// Rows per statement at most.
const MAX_ROWS: usize = 500;

/// How a column's values turn back into JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Boolean,
    Json,
}

#[derive(Debug, Clone)]
struct Table {
    /// Columns in table order, with their kinds.
    columns: Vec<(String, Kind)>,
    key: Vec<String>,
    /// Where writes go: the table, or its staging table during an overwrite.
    writing_to: String,
}

/// The SQLite table sink. See the module docs.
#[derive(Debug, Clone)]
pub struct SqliteTableSink {
    pool: SqlitePool,
    path: PathBuf,
    tables: std::sync::Arc<Mutex<HashMap<String, Table>>>,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn staging_name(table: &str) -> String {
    format!("{table}__staging")
}

impl SqliteTableSink {
    /// Open (creating if needed) the warehouse database at `path`, durable per write
    /// (`synchronous = FULL`).
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, true).await
    }

    /// Open with `full_sync` = `false` for `synchronous = NORMAL`: still safe against a
    /// crash of the process (WAL), not against a power cut; faster bulk loads.
    pub async fn open_with(path: &Path, full_sync: bool) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| Error::internal("invalid SQLite options").with_source(e))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if full_sync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|e| sink_error(path, e))?;
        Ok(SqliteTableSink {
            pool,
            path: path.to_owned(),
            tables: Default::default(),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows in `table` (0 if it does not exist).
    pub async fn count(&self, table: &str) -> Result<u64> {
        if !self.table_exists(table).await? {
            return Ok(0);
        }
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            quote(table)
        )))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Every row of `table` as records, in key order (null columns left out). For
    /// inspection and tests; use SQL on the file for anything large.
    pub async fn rows(&self, table: &str) -> Result<Vec<Record>> {
        let info = self.table_info(table).await?;
        let order = if info.key.is_empty() {
            "rowid".to_owned()
        } else {
            info.key
                .iter()
                .map(|k| quote(k))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {} ORDER BY {order}",
            column_list(&info),
            quote(table)
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| decode(r, &info).map(|m| Record::from(strip_nulls(m))))
            .collect()
    }

    /// Close the pool.
    pub async fn close(self) {
        self.pool.close().await;
    }

    fn err(&self, e: sqlx::Error) -> Error {
        sink_error(&self.path, e)
    }

    async fn table_exists(&self, table: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = $1",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// The table as known to this sink, or as found in the file (kinds unknown then).
    async fn table_info(&self, table: &str) -> Result<Table> {
        if let Some(t) = self.tables.lock().await.get(table) {
            return Ok(t.clone());
        }
        let rows = sqlx::query(AssertSqlSafe(format!(
            "PRAGMA table_info({})",
            quote(table)
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if rows.is_empty() {
            return Err(
                Error::not_found(format!("the warehouse has no table {table}"))
                    .with_hint("run a sync of the stream first"),
            );
        }
        let mut key: Vec<(i64, String)> = Vec::new();
        let mut columns = Vec::new();
        for r in &rows {
            let name: String = r.get("name");
            let pk: i64 = r.get("pk");
            if pk > 0 {
                key.push((pk, name.clone()));
            }
            columns.push((name, Kind::Plain));
        }
        key.sort();
        Ok(Table {
            columns,
            key: key.into_iter().map(|(_, k)| k).collect(),
            writing_to: table.to_owned(),
        })
    }

    /// Add columns for fields of `batch` the table lacks.
    async fn evolve(
        &self,
        conn: &mut sqlx::SqliteConnection,
        table: &mut Table,
        batch: &RecordBatch,
    ) -> Result<()> {
        for record in &batch.records {
            for (field, value) in record.fields() {
                if table.columns.iter().any(|(c, _)| c == field) {
                    continue;
                }
                let (decl, kind) = match value {
                    Value::Bool(_) => ("INTEGER", Kind::Boolean),
                    Value::Object(_) | Value::Array(_) => ("TEXT", Kind::Json),
                    Value::Number(n) if n.is_f64() => ("REAL", Kind::Plain),
                    Value::Number(_) => ("INTEGER", Kind::Plain),
                    _ => ("", Kind::Plain),
                };
                for t in [batch.stream.clone(), staging_name(&batch.stream)] {
                    if t == batch.stream || table.writing_to != batch.stream {
                        sqlx::query(AssertSqlSafe(format!(
                            "ALTER TABLE {} ADD COLUMN {} {decl}",
                            quote(&t),
                            quote(field)
                        )))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| self.err(e))?;
                    }
                }
                tracing::info!(table = %batch.stream, column = %field, "warehouse table gained a column");
                table.columns.push((field.clone(), kind));
            }
        }
        Ok(())
    }

    /// The current rows of `keys`, decoded, by key text.
    async fn existing(
        &self,
        conn: &mut sqlx::SqliteConnection,
        table: &Table,
        keys: &[Vec<&Value>],
    ) -> Result<HashMap<String, Map<String, Value>>> {
        let mut out = HashMap::with_capacity(keys.len());
        if table.key.is_empty() || keys.is_empty() {
            return Ok(out);
        }
        let per = (MAX_BINDS / table.key.len()).min(MAX_ROWS);
        let key_cols = table
            .key
            .iter()
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        for chunk in keys.chunks(per) {
            let tuple = format!("({})", vec!["?"; table.key.len()].join(", "));
            let sql = format!(
                "SELECT {} FROM {} WHERE ({key_cols}) IN (VALUES {})",
                column_list(table),
                quote(&table.writing_to),
                vec![tuple; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for key in chunk {
                for v in key {
                    q = bind(q, v);
                }
            }
            for row in q.fetch_all(&mut *conn).await.map_err(|e| self.err(e))? {
                let m = decode(&row, table)?;
                out.insert(
                    key_text(table.key.iter().map(|k| m.get(k).unwrap_or(&Value::Null))),
                    m,
                );
            }
        }
        Ok(out)
    }
}

fn key_text<'a>(parts: impl Iterator<Item = &'a Value>) -> String {
    parts
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The table's columns, quoted, in order. Statements name their columns rather than use
/// `*`: a cached `SELECT *` would keep its old column count after the table gains one.
fn column_list(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|(c, _)| quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Equal as stored: numbers by value (a REAL column turns 2 into 2.0).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn strip_nulls(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|_, v| !v.is_null());
    m
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind<'q>(q: Query<'q>, v: &'q Value) -> Query<'q> {
    match v {
        Value::Null => q.bind(None::<String>),
        Value::Bool(b) => q.bind(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => q.bind(i),
            None => q.bind(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => q.bind(s.as_str()),
        other => q.bind(other.to_string()),
    }
}

/// Decode a row selected with [`column_list`] (so in `table.columns` order).
fn decode(row: &SqliteRow, table: &Table) -> Result<Map<String, Value>> {
    let mut m = Map::with_capacity(table.columns.len());
    for (i, (name, kind)) in table.columns.iter().enumerate() {
        let raw = row
            .try_get_raw(i)
            .map_err(|e| Error::internal("cannot read a warehouse row").with_source(e))?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            let ty = raw.type_info().name().to_owned();
            let read =
                |e: sqlx::Error| Error::internal("cannot read a warehouse value").with_source(e);
            match ty.as_str() {
                "INTEGER" | "BOOLEAN" => {
                    let i: i64 = row.try_get(i).map_err(read)?;
                    if *kind == Kind::Boolean {
                        Value::Bool(i != 0)
                    } else {
                        Value::from(i)
                    }
                }
                "REAL" => Number::from_f64(row.try_get::<f64, _>(i).map_err(read)?)
                    .map_or(Value::Null, Value::Number),
                _ => {
                    let s: String = row.try_get(i).map_err(read)?;
                    if *kind == Kind::Json {
                        serde_json::from_str(&s).unwrap_or(Value::String(s))
                    } else {
                        Value::String(s)
                    }
                }
            }
        };
        m.insert(name.clone(), value);
    }
    Ok(m)
}

fn sink_error(path: &Path, e: sqlx::Error) -> Error {
    let what = format!("warehouse {}", path.display());
    match &e {
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("5" | "6")) => {
            Error::unavailable(format!("{what} is busy")).with_source(e)
        }
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("11" | "26")) => {
            Error::new(ErrorKind::Integrity, format!("{what} is corrupt")).with_source(e)
        }
        _ => Error::internal(format!("{what} failed")).with_source(e),
    }
}

fn column_decl(t: &FieldType) -> (&'static str, Kind) {
    match t {
        FieldType::Integer => ("INTEGER", Kind::Plain),
        FieldType::Number => ("REAL", Kind::Plain),
        FieldType::Boolean => ("INTEGER", Kind::Boolean),
        FieldType::Json => ("TEXT", Kind::Json),
        // Decimals as text keep every digit; dates and times as ISO text sort correctly.
        _ => ("TEXT", Kind::Plain),
    }
}

#[async_trait]
impl SyncSink for SqliteTableSink {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        let name = &stream.name;
        let key = match mode {
            WriteMode::Upsert { key } if stream.primary_key.is_empty() => key.clone(),
            _ => stream.primary_key.clone(),
        };
        let mut columns: Vec<(String, Kind)> = Vec::new();
        let mut decls = Vec::new();
        for f in &stream.fields {
            let (decl, kind) = column_decl(&f.field_type);
            decls.push(format!("{} {decl}", quote(&f.name)));
            columns.push((f.name.clone(), kind));
        }
        for k in &key {
            if !columns.iter().any(|(c, _)| c == k) {
                decls.push(format!("{} TEXT", quote(k)));
                columns.push((k.clone(), Kind::Plain));
            }
        }
        if decls.is_empty() {
            return Err(Error::invalid_input(format!(
                "stream {name} has no fields and no key: the warehouse cannot make a table for it"
            )));
        }
        if !key.is_empty() {
            decls.push(format!(
                "PRIMARY KEY ({})",
                key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
            ));
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let create = |t: &str| {
            format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                quote(t),
                decls.join(", ")
            )
        };
        sqlx::query(AssertSqlSafe(create(name)))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        // An existing table keeps its key; add what it lacks.
        let existing = sqlx::query(AssertSqlSafe(format!("PRAGMA table_info({})", quote(name))))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let have: Vec<String> = existing.iter().map(|r| r.get("name")).collect();
        let mut table_key: Vec<(i64, String)> = existing
            .iter()
            .filter(|r| r.get::<i64, _>("pk") > 0)
            .map(|r| (r.get("pk"), r.get("name")))
            .collect();
        table_key.sort();
        for (c, kind) in &columns {
            if !have.contains(c) {
                let decl = match kind {
                    Kind::Boolean => "INTEGER",
                    _ => "",
                };
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER TABLE {} ADD COLUMN {} {decl}",
                    quote(name),
                    quote(c)
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            }
        }
        for c in have {
            if !columns.iter().any(|(x, _)| *x == c) {
                columns.push((c, Kind::Plain));
            }
        }
        let table_key: Vec<String> = table_key.into_iter().map(|(_, k)| k).collect();
        if let WriteMode::Upsert { key } = mode
            && *key != table_key
        {
            // Upsert by another key than the table's (an external id): it must be unique.
            sqlx::query(AssertSqlSafe(format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
                quote(&format!("{name}__by_{}", key.join("_"))),
                quote(name),
                key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
            )))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        let mut writing_to = name.clone();
        if *mode == WriteMode::Overwrite {
            writing_to = staging_name(name);
            sqlx::query(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS {}",
                quote(&writing_to)
            )))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE {} AS SELECT * FROM {} WHERE 0",
                quote(&writing_to),
                quote(name)
            )))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        let key = match mode {
            WriteMode::Upsert { key } => key.clone(),
            _ => table_key,
        };
        self.tables.lock().await.insert(
            name.clone(),
            Table {
                columns,
                key,
                writing_to,
            },
        );
        Ok(())
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        let mut tables = self.tables.lock().await;
        let table = tables.get_mut(&batch.stream).ok_or_else(|| {
            Error::invalid_input(format!("stream {} was not begun", batch.stream))
                .with_hint("call begin_stream before write")
        })?;
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        self.evolve(&mut tx, table, batch).await?;

        let key_fields = match mode {
            WriteMode::Upsert { key } => key.clone(),
            _ => table.key.clone(),
        };
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; batch.len()];
        let mut keys: Vec<Vec<&Value>> = Vec::new();
        let mut writable: Vec<usize> = Vec::new();
        for (i, r) in batch.records.iter().enumerate() {
            let key: Option<Vec<&Value>> = key_fields
                .iter()
                .map(|k| r.get(k).filter(|v| !v.is_null()))
                .collect();
            match key {
                Some(k) => {
                    keys.push(k);
                    writable.push(i);
                }
                None => {
                    outcomes[i] = Some(RecordOutcome::failed(
                        i,
                        RecordFailure::new(
                            FailureKind::InvalidInput,
                            format!(
                                "the record has no value for key field(s) {}",
                                key_fields.join(", ")
                            ),
                        ),
                    ));
                }
            }
        }
        let upsert = matches!(mode, WriteMode::Upsert { .. });
        let before = if upsert {
            self.existing(&mut tx, table, &keys).await?
        } else {
            HashMap::new()
        };

        // What to write, and what each record's outcome is.
        let mut rows: Vec<usize> = Vec::with_capacity(writable.len());
        for (n, &i) in writable.iter().enumerate() {
            let record = &batch.records[i];
            let k = key_text(keys[n].iter().copied());
            let outcome = match before.get(&k) {
                Some(old) => {
                    let same = table.columns.iter().all(|(c, _)| {
                        same_value(
                            record.get(c).unwrap_or(&Value::Null),
                            old.get(c).unwrap_or(&Value::Null),
                        )
                    });
                    let image = Record::from(old.clone());
                    if same {
                        RecordOutcome::ok(i, WriteAction::Unchanged).with_before(image)
                    } else {
                        rows.push(i);
                        RecordOutcome::ok(i, WriteAction::Updated).with_before(image)
                    }
                }
                None => {
                    rows.push(i);
                    RecordOutcome::ok(i, WriteAction::Created)
                }
            };
            outcomes[i] = Some(outcome);
        }

        if !rows.is_empty() {
            let cols: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
            let col_list = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
            let per = (MAX_BINDS / cols.len().max(1)).clamp(1, MAX_ROWS);
            let tuple = format!("({})", vec!["?"; cols.len()].join(", "));
            let conflict = if upsert {
                let updates = cols
                    .iter()
                    .filter(|c| !key_fields.iter().any(|k| k == *c))
                    .map(|c| format!("{0} = excluded.{0}", quote(c)))
                    .collect::<Vec<_>>();
                let target = key_fields
                    .iter()
                    .map(|k| quote(k))
                    .collect::<Vec<_>>()
                    .join(", ");
                if updates.is_empty() {
                    format!(" ON CONFLICT ({target}) DO NOTHING")
                } else {
                    format!(
                        " ON CONFLICT ({target}) DO UPDATE SET {}",
                        updates.join(", ")
                    )
                }
            } else if !table.key.is_empty() {
                " ON CONFLICT DO NOTHING".to_owned()
            } else {
                String::new()
            };
            let returning = if !upsert && !table.key.is_empty() {
                format!(" RETURNING {}", column_list(table))
            } else {
                String::new()
            };
            let null = Value::Null;
            for chunk in rows.chunks(per) {
                let sql = format!(
                    "INSERT INTO {} ({col_list}) VALUES {}{conflict}{returning}",
                    quote(&table.writing_to),
                    vec![tuple.as_str(); chunk.len()].join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for &i in chunk {
                    let r = &batch.records[i];
                    for c in &cols {
                        q = bind(q, r.get(c).unwrap_or(&null));
                    }
                }
                if returning.is_empty() {
                    q.execute(&mut *tx).await.map_err(|e| self.err(e))?;
                } else {
                    // Append with a key: rows that were not inserted hit an existing key.
                    let inserted: std::collections::HashSet<String> = q
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(|e| self.err(e))?
                        .iter()
                        .map(|row| {
                            decode(row, table).map(|m| {
                                key_text(table.key.iter().map(|k| m.get(k).unwrap_or(&Value::Null)))
                            })
                        })
                        .collect::<Result<_>>()?;
                    for &i in chunk {
                        let k = key_text(
                            table
                                .key
                                .iter()
                                .map(|f| batch.records[i].get(f).unwrap_or(&Value::Null)),
                        );
                        if !inserted.contains(&k) {
                            outcomes[i] = Some(RecordOutcome::failed(
                                i,
                                RecordFailure {
                                    kind: FailureKind::Conflict,
                                    message: format!("a row with key {k} already exists"),
                                    code: Some("DUPLICATE_VALUE".into()),
                                    fields: table.key.clone(),
                                },
                            ));
                        }
                    }
                }
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        let outcomes = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.ok_or_else(|| Error::internal(format!("no outcome was computed for record {i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WriteReport::new(outcomes))
    }

    async fn commit_stream(&self, stream: &str, mode: &WriteMode) -> Result<()> {
        if *mode != WriteMode::Overwrite {
            return Ok(());
        }
        let mut tables = self.tables.lock().await;
        let Some(table) = tables.get_mut(stream) else {
            return Ok(());
        };
        let staging = staging_name(stream);
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        // Keep the real table (its key and indexes); replace its rows in one transaction.
        for sql in [
            format!("DELETE FROM {}", quote(stream)),
            format!(
                "INSERT INTO {} SELECT * FROM {}",
                quote(stream),
                quote(&staging)
            ),
            format!("DROP TABLE {}", quote(&staging)),
        ] {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        table.writing_to = stream.to_owned();
        Ok(())
    }

    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        let info = self.table_info(&batch.stream).await?;
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let cond = key
            .iter()
            .map(|k| format!("{} = ?", quote(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut outcomes = Vec::with_capacity(batch.len());
        for (i, r) in batch.records.iter().enumerate() {
            let values: Option<Vec<&Value>> = key.iter().map(|k| r.get(k)).collect();
            let Some(values) = values else {
                outcomes.push(RecordOutcome::failed(
                    i,
                    RecordFailure::new(FailureKind::InvalidInput, "the record lacks its key"),
                ));
                continue;
            };
            let mut q = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {} WHERE {cond} RETURNING {}",
                quote(&batch.stream),
                column_list(&info)
            )));
            for v in &values {
                q = bind(q, v);
            }
            match q.fetch_optional(&mut *tx).await.map_err(|e| self.err(e))? {
                Some(row) => outcomes.push(
                    RecordOutcome::ok(i, WriteAction::Deleted)
                        .with_before(Record::from(decode(&row, &info)?)),
                ),
                None => outcomes.push(RecordOutcome::failed(
                    i,
                    RecordFailure::new(FailureKind::NotFound, "no such row"),
                )),
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(WriteReport::new(outcomes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use crate::catalog::FieldDescriptor;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        Record::from_json(v).unwrap()
    }

    fn upsert() -> WriteMode {
        WriteMode::Upsert {
            key: vec!["Id".into()],
        }
    }

    fn cases() -> StreamDescriptor {
        StreamDescriptor::new("Case")
            .field(FieldDescriptor::new("Id", FieldType::String))
            .field(FieldDescriptor::new("Subject", FieldType::String))
            .field(FieldDescriptor::new("IsEscalated", FieldType::Boolean))
            .field(FieldDescriptor::new("Hours", FieldType::Number))
            .field(FieldDescriptor::new("Tags", FieldType::Json))
            .primary_key(["Id"])
    }

    async fn sink() -> (tempfile::TempDir, SqliteTableSink) {
        let dir = tempfile::tempdir().unwrap();
        let sink = SqliteTableSink::open(&dir.path().join("w.db"))
            .await
            .unwrap();
        (dir, sink)
    }

    fn actions(r: &WriteReport) -> Vec<WriteAction> {
        r.outcomes
            .iter()
            .map(|o| *o.result.as_ref().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn upserts_report_created_updated_unchanged_with_the_row_before() {
        let (_d, s) = sink().await;
        s.begin_stream(&cases(), &upsert()).await.unwrap();
        let a = rec(
            json!({"Id": "500A", "Subject": "One", "IsEscalated": true, "Hours": 1.5, "Tags": ["x", 1]}),
        );
        let b = rec(json!({"Id": "500B", "Subject": "Two", "IsEscalated": false, "Hours": 2.5}));
        let r = s
            .write(
                &RecordBatch::new("Case", vec![a.clone(), b.clone()]),
                &upsert(),
            )
            .await
            .unwrap();
        assert_eq!(actions(&r), [WriteAction::Created, WriteAction::Created]);

        let a2 = rec(
            json!({"Id": "500A", "Subject": "One, edited", "IsEscalated": true, "Hours": 1.5, "Tags": ["x", 1]}),
        );
        let r = s
            .write(
                &RecordBatch::new("Case", vec![a2.clone(), b.clone()]),
                &upsert(),
            )
            .await
            .unwrap();
        assert_eq!(actions(&r), [WriteAction::Updated, WriteAction::Unchanged]);
        let before = r.outcomes[0].before.clone().unwrap();
        assert_eq!(before.get("Subject"), Some(&json!("One")));
        assert_eq!(
            before.get("Tags"),
            Some(&json!(["x", 1])),
            "JSON comes back as JSON"
        );
        assert_eq!(
            before.get("IsEscalated"),
            Some(&json!(true)),
            "booleans come back as booleans"
        );
        assert_eq!(s.rows("Case").await.unwrap(), vec![a2, b]);
    }

    #[tokio::test]
    async fn a_new_field_adds_a_column_and_nothing_is_lost() {
        let (_d, s) = sink().await;
        s.begin_stream(&cases(), &upsert()).await.unwrap();
        let r = rec(
            json!({"Id": "500A", "Subject": "x", "Priority__c": "High", "Meta": {"a": 1}, "Flag": true}),
        );
        s.write(&RecordBatch::new("Case", vec![r.clone()]), &upsert())
            .await
            .unwrap();
        assert_eq!(s.rows("Case").await.unwrap(), vec![r]);
        // A new sink on the same file sees the column too.
        let again = SqliteTableSink::open(s.path()).await.unwrap();
        again.begin_stream(&cases(), &upsert()).await.unwrap();
        assert_eq!(
            again.rows("Case").await.unwrap()[0].get("Priority__c"),
            Some(&json!("High"))
        );
    }

    #[tokio::test]
    async fn append_reports_an_existing_key_as_a_conflict_and_writes_the_rest() {
        let (_d, s) = sink().await;
        s.begin_stream(&cases(), &WriteMode::Append).await.unwrap();
        let one = rec(json!({"Id": "500A", "Subject": "x"}));
        s.write(
            &RecordBatch::new("Case", vec![one.clone()]),
            &WriteMode::Append,
        )
        .await
        .unwrap();
        let r = s
            .write(
                &RecordBatch::new("Case", vec![one, rec(json!({"Id": "500B"}))]),
                &WriteMode::Append,
            )
            .await
            .unwrap();
        let failure = r.outcomes[0].result.as_ref().unwrap_err();
        assert_eq!(failure.kind, FailureKind::Conflict);
        assert!(failure.message.contains("500A"));
        assert_eq!(r.outcomes[1].result, Ok(WriteAction::Created));
        assert_eq!(s.count("Case").await.unwrap(), 2);
    }

    #[tokio::test]
    async fn overwrite_swaps_in_the_new_rows_only_at_commit() {
        let (_d, s) = sink().await;
        s.begin_stream(&cases(), &upsert()).await.unwrap();
        s.write(
            &RecordBatch::new("Case", vec![rec(json!({"Id": "old"}))]),
            &upsert(),
        )
        .await
        .unwrap();
        s.begin_stream(&cases(), &WriteMode::Overwrite)
            .await
            .unwrap();
        s.write(
            &RecordBatch::new("Case", vec![rec(json!({"Id": "new"}))]),
            &WriteMode::Overwrite,
        )
        .await
        .unwrap();
        assert_eq!(
            s.rows("Case").await.unwrap()[0].get("Id"),
            Some(&json!("old")),
            "not yet"
        );
        s.commit_stream("Case", &WriteMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(
            s.rows("Case").await.unwrap(),
            vec![rec(json!({"Id": "new"}))]
        );
    }

    #[tokio::test]
    async fn delete_returns_the_deleted_row_and_reports_missing_ones() {
        let (_d, s) = sink().await;
        s.begin_stream(&cases(), &upsert()).await.unwrap();
        s.write(
            &RecordBatch::new("Case", vec![rec(json!({"Id": "500A", "Subject": "x"}))]),
            &upsert(),
        )
        .await
        .unwrap();
        let r = s
            .delete(
                &RecordBatch::new(
                    "Case",
                    vec![rec(json!({"Id": "500A"})), rec(json!({"Id": "nope"}))],
                ),
                &["Id".to_owned()],
            )
            .await
            .unwrap();
        assert_eq!(r.outcomes[0].result, Ok(WriteAction::Deleted));
        assert_eq!(
            r.outcomes[0].before.as_ref().unwrap().get("Subject"),
            Some(&json!("x"))
        );
        assert_eq!(
            r.outcomes[1].result.as_ref().unwrap_err().kind,
            FailureKind::NotFound
        );
        assert_eq!(s.count("Case").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn hostile_names_are_quoted_not_executed() {
        let (_d, s) = sink().await;
        let evil = StreamDescriptor::new("Case\"; DROP TABLE x; --")
            .field(FieldDescriptor::new("a\"b", FieldType::String))
            .primary_key(["a\"b"]);
        let mode = WriteMode::Upsert {
            key: vec!["a\"b".into()],
        };
        s.begin_stream(&evil, &mode).await.unwrap();
        let r = rec(json!({"a\"b": "v'); --"}));
        s.write(&RecordBatch::new(evil.name.clone(), vec![r.clone()]), &mode)
            .await
            .unwrap();
        assert_eq!(s.rows(&evil.name).await.unwrap(), vec![r]);
    }

    #[tokio::test]
    async fn a_record_without_its_key_fails_alone() {
        let (_d, s) = sink().await;
        s.begin_stream(&cases(), &upsert()).await.unwrap();
        let r = s
            .write(
                &RecordBatch::new(
                    "Case",
                    vec![rec(json!({"Subject": "no id"})), rec(json!({"Id": "500A"}))],
                ),
                &upsert(),
            )
            .await
            .unwrap();
        assert_eq!(
            r.outcomes[0].result.as_ref().unwrap_err().kind,
            FailureKind::InvalidInput
        );
        assert_eq!(r.outcomes[1].result, Ok(WriteAction::Created));
    }
}
