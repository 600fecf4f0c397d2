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
//!   FULL` by default), so what it reports written survives a crash or power loss. The
//!   log is copied into the database file by a checkpoint thread of the sink's own, so a
//!   commit does not stop for it.
//! - Numbers in a `REAL` column (catalog type `number`) read back as floats (`2` → `2.0`).
//!
//! It runs SQLite through `rusqlite` with cached prepared statements and values bound
//! without copying, on the calling worker thread (`block_in_place` on a multi-thread
//! runtime, so other tasks move to another worker meanwhile). The state store uses
//! `sqlx`; both link the same SQLite.
//!
//! ```
//! use connector_sqlite::SqliteTableSink;
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, params_from_iter};
use serde_json::{Map, Number, Value};

use moodbridge_core::catalog::{FieldType, StreamDescriptor};
use moodbridge_core::error::{Error, ErrorKind, Result};
use moodbridge_core::raw::sqlite_wal::{Checkpointer, WRITER_CHECKPOINT_PAGES};
use moodbridge_core::record::{Record, RecordBatch};
use moodbridge_core::rows::{Cell, RowBatch};
use moodbridge_core::sync::{
    DELETED, DELETED_AT, FailureKind, RecordFailure, RecordOutcome, SyncSink, WriteAction,
    WriteMode, WriteReport,
};

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
    /// The table's key (the upsert key while upserting by another unique key).
    key: Vec<String>,
    /// Where writes go: the table, or its staging table during an overwrite.
    writing_to: String,
}

struct Inner {
    conn: Mutex<Connection>,
    path: PathBuf,
    tables: Mutex<HashMap<String, Table>>,
    checkpointer: Checkpointer,
}

/// The SQLite table sink. See the module docs.
#[derive(Clone)]
pub struct SqliteTableSink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteTableSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTableSink")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quoted_list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(", ")
}

fn staging_name(table: &str) -> String {
    format!("{table}__staging")
}

/// Run blocking SQLite work without stalling a multi-thread runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
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
        let synchronous = if full_sync { "FULL" } else { "NORMAL" };
        let (conn, checkpointer) = blocking(|| -> Result<(Connection, Checkpointer)> {
            let err = |e| sink_error(path, e);
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(err)?;
            conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(err)?;
            conn.pragma_update(None, "synchronous", synchronous)
                .map_err(err)?;
            conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
                .map_err(err)?;
            conn.set_prepared_statement_cache_capacity(64);
            let checkpointer = Checkpointer::start(path, synchronous).map_err(err)?;
            Ok((conn, checkpointer))
        })?;
        Ok(SqliteTableSink {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_owned(),
                tables: Mutex::new(HashMap::new()),
                checkpointer,
            }),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Rows in `table` (0 if it does not exist).
    pub async fn count(&self, table: &str) -> Result<u64> {
        self.with_conn(|conn| {
            if !table_exists(conn, table).map_err(|e| self.err(e))? {
                return Ok(0);
            }
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {}", quote(table)), [], |r| {
                    r.get(0)
                })
                .map_err(|e| self.err(e))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// Every row of `table` as records, in key order (null columns left out). For
    /// inspection and tests; use SQL on the file for anything large.
    pub async fn rows(&self, table: &str) -> Result<Vec<Record>> {
        self.with_conn(|conn| {
            let info = self.table_info(conn, table)?;
            let order = if info.key.is_empty() {
                "rowid".to_owned()
            } else {
                quoted_list(&info.key)
            };
            let sql = format!(
                "SELECT {} FROM {} ORDER BY {order}",
                column_list(&info),
                quote(table)
            );
            let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                out.push(Record::from(strip_nulls(
                    decode(row, &info).map_err(|e| self.err(e))?,
                )));
            }
            Ok(out)
        })
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sink_error(&self.inner.path, e)
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let (out, wrote) = blocking(|| {
            let mut conn = self
                .inner
                .conn
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let changes = conn.total_changes();
            let out = f(&mut conn);
            (out, conn.total_changes() != changes)
        });
        if wrote {
            // What it committed is copied into the database file off this thread.
            self.inner.checkpointer.nudge();
        }
        out
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, HashMap<String, Table>> {
        self.inner
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The table as known to this sink, or as found in the file (kinds unknown then).
    fn table_info(&self, conn: &Connection, table: &str) -> Result<Table> {
        if let Some(t) = self.tables().get(table) {
            return Ok(t.clone());
        }
        let (columns, key) = pragma_columns(conn, table).map_err(|e| self.err(e))?;
        if columns.is_empty() {
            return Err(
                Error::not_found(format!("the warehouse has no table {table}"))
                    .with_hint("run a sync of the stream first"),
            );
        }
        Ok(Table {
            columns: columns.into_iter().map(|c| (c, Kind::Plain)).collect(),
            key,
            writing_to: table.to_owned(),
        })
    }
}

fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// A table's columns in order, and its primary key in key order.
fn pragma_columns(conn: &Connection, table: &str) -> rusqlite::Result<(Vec<String>, Vec<String>)> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
    let mut columns = Vec::new();
    let mut key: Vec<(i64, String)> = Vec::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get("name")?;
        let pk: i64 = r.get("pk")?;
        if pk > 0 {
            key.push((pk, name.clone()));
        }
        columns.push(name);
    }
    key.sort();
    Ok((columns, key.into_iter().map(|(_, k)| k).collect()))
}

/// The table's columns, quoted, in order. Statements name their columns rather than use
/// `*`, so a statement prepared before the table gained a column is never reused for it.
fn column_list(table: &Table) -> String {
    quoted_list(table.columns.iter().map(|(c, _)| c))
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

fn key_text<'a>(parts: impl Iterator<Item = &'a Value>) -> String {
    parts
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// A JSON value as an SQL value, borrowing strings; objects and arrays as JSON text.
enum Sql<'a> {
    Borrowed(ValueRef<'a>),
    Text(String),
}

impl rusqlite::ToSql for Sql<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(match self {
            Sql::Borrowed(v) => rusqlite::types::ToSqlOutput::Borrowed(*v),
            Sql::Text(s) => rusqlite::types::ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// The values of `record` in column order (null for a missing field).
/// Finds a record's values for the table's columns by walking its fields once, with
/// what the records before it taught about where each field sits (a batch's records
/// mostly share one layout): a name compared instead of hashed and looked up per column.
struct RowLayout<'c> {
    cols: &'c [&'c String],
    /// Per position in a record: the field name seen there last and its column, if any.
    seen: Vec<(String, Option<usize>)>,
    /// Which columns the walk of the current record filled.
    filled: Vec<bool>,
}

impl<'c> RowLayout<'c> {
    fn new(cols: &'c [&'c String]) -> Self {
        RowLayout {
            cols,
            seen: Vec::new(),
            filled: vec![false; cols.len()],
        }
    }

    /// The record's values in column order (null where it has none), as parameters.
    fn values<'a>(&mut self, record: &'a Record, null: &'a Value) -> Vec<Sql<'a>> {
        let mut out: Vec<Sql<'a>> = (0..self.cols.len()).map(|_| sql(null)).collect();
        for (i, (name, value)) in record.fields().iter().enumerate() {
            let column = match self.seen.get(i) {
                Some((seen, column)) if seen == name => *column,
                _ => {
                    let column = self.cols.iter().position(|c| *c == name);
                    let entry = (name.clone(), column);
                    match self.seen.get_mut(i) {
                        Some(slot) => *slot = entry,
                        None => self.seen.push(entry),
                    }
                    column
                }
            };
            if let Some(c) = column {
                out[c] = sql(value);
                self.filled[c] = true;
            }
        }
        for (c, col) in self.cols.iter().enumerate() {
            // A column the walk did not fill: the record lacks it, or the table names
            // it twice.
            if !std::mem::take(&mut self.filled[c])
                && let Some(v) = record.get(col.as_str())
            {
                out[c] = sql(v);
            }
        }
        out
    }
}

fn sql(v: &Value) -> Sql<'_> {
    Sql::Borrowed(match v {
        Value::Null => ValueRef::Null,
        Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ValueRef::Integer(i),
            None => ValueRef::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => ValueRef::Text(s.as_bytes()),
        other => return Sql::Text(other.to_string()),
    })
}

/// Decode a row selected with [`column_list`] (so in `table.columns` order).
fn decode(row: &rusqlite::Row<'_>, table: &Table) -> rusqlite::Result<Map<String, Value>> {
    let mut m = Map::with_capacity(table.columns.len());
    for (i, (name, kind)) in table.columns.iter().enumerate() {
        let value = match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) if *kind == Kind::Boolean => Value::Bool(n != 0),
            ValueRef::Integer(n) => Value::from(n),
            ValueRef::Real(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            ValueRef::Text(t) => {
                let s = String::from_utf8_lossy(t).into_owned();
                if *kind == Kind::Json {
                    serde_json::from_str(&s).unwrap_or(Value::String(s))
                } else {
                    Value::String(s)
                }
            }
            ValueRef::Blob(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        };
        m.insert(name.clone(), value);
    }
    Ok(m)
}

fn sink_error(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let what = format!("warehouse {}", path.display());
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            Error::unavailable(format!("{what} is busy")).with_source(e)
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            Error::new(ErrorKind::Integrity, format!("{what} is corrupt")).with_source(e)
        }
        Some(ErrorCode::DiskFull) => Error::unavailable(format!("{what}: the disk is full"))
            .with_hint("free disk space; nothing of the failed batch was written")
            .with_source(e),
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

fn value_decl(v: &Value) -> (&'static str, Kind) {
    match v {
        Value::Bool(_) => ("INTEGER", Kind::Boolean),
        Value::Object(_) | Value::Array(_) => ("TEXT", Kind::Json),
        Value::Number(n) if n.is_f64() => ("REAL", Kind::Plain),
        Value::Number(_) => ("INTEGER", Kind::Plain),
        _ => ("", Kind::Plain),
    }
}

impl SqliteTableSink {
    fn begin(
        &self,
        conn: &mut Connection,
        stream: &StreamDescriptor,
        mode: &WriteMode,
    ) -> rusqlite::Result<Table> {
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
        if !key.is_empty() {
            decls.push(format!("PRIMARY KEY ({})", quoted_list(&key)));
        }
        let tx = conn.transaction()?;
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            quote(name),
            decls.join(", ")
        ))?;
        // An existing table keeps its key; add the columns it lacks.
        let (have, table_key) = pragma_columns(&tx, name)?;
        for (c, kind) in &columns {
            if !have.contains(c) {
                let decl = if *kind == Kind::Boolean {
                    "INTEGER"
                } else {
                    ""
                };
                tx.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {decl}",
                    quote(name),
                    quote(c)
                ))?;
            }
        }
        // Columns in table order, kinds from the catalog where it says.
        let (order, _) = pragma_columns(&tx, name)?;
        let columns: Vec<(String, Kind)> = order
            .into_iter()
            .map(|c| {
                let kind = columns
                    .iter()
                    .find(|(x, _)| *x == c)
                    .map_or(Kind::Plain, |(_, k)| *k);
                (c, kind)
            })
            .collect();
        if let WriteMode::Upsert { key } = mode
            && *key != table_key
        {
            // Upsert by another key than the table's (an external id): it must be unique.
            tx.execute_batch(&format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
                quote(&format!("{name}__by_{}", key.join("_"))),
                quote(name),
                quoted_list(key)
            ))?;
        }
        let mut writing_to = name.clone();
        if *mode == WriteMode::Overwrite {
            writing_to = staging_name(name);
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS {staging}; CREATE TABLE {staging} AS SELECT * FROM {} WHERE 0",
                quote(name),
                staging = quote(&writing_to)
            ))?;
        }
        tx.commit()?;
        Ok(Table {
            columns,
            key: match mode {
                WriteMode::Upsert { key } => key.clone(),
                _ => table_key,
            },
            writing_to,
        })
    }

    /// Add columns for fields of `batch` the table lacks.
    fn evolve(
        tx: &rusqlite::Transaction<'_>,
        table: &mut Table,
        batch: &RecordBatch,
    ) -> rusqlite::Result<()> {
        // Records of a batch mostly share their fields, in the same order: a record whose
        // field names are those of the record checked before it needs no look-up.
        let mut checked: Option<&Record> = None;
        for record in &batch.records {
            if let Some(prev) = checked
                && prev.len() == record.len()
                && prev.fields().keys().eq(record.fields().keys())
            {
                continue;
            }
            checked = Some(record);
            for (field, value) in record.fields() {
                if table.columns.iter().any(|(c, _)| c == field) {
                    continue;
                }
                let (decl, kind) = value_decl(value);
                let mut targets = vec![batch.stream.clone()];
                if table.writing_to != batch.stream {
                    targets.push(table.writing_to.clone());
                }
                for t in targets {
                    tx.execute_batch(&format!(
                        "ALTER TABLE {} ADD COLUMN {} {decl}",
                        quote(&t),
                        quote(field)
                    ))?;
                }
                tracing::info!(table = %batch.stream, column = %field, "warehouse table gained a column");
                table.columns.push((field.clone(), kind));
            }
        }
        Ok(())
    }

    /// Write the rows of `batch`. Every row is first inserted with `ON CONFLICT DO
    /// NOTHING`: a new row costs one statement and no lookup (the bulk-load case). Only
    /// when the key exists is the old row read (the before-image), compared, and — for
    /// upserts, when it differs — updated.
    fn write_rows(
        tx: &rusqlite::Transaction<'_>,
        table: &Table,
        batch: &RecordBatch,
        mode: &WriteMode,
    ) -> rusqlite::Result<Vec<RecordOutcome>> {
        let null = Value::Null;
        let cols: Vec<&String> = table.columns.iter().map(|(c, _)| c).collect();
        let mut insert = tx.prepare_cached(&insert_sql(table))?;
        let mut conflicts = Conflicts::new(tx, table, mode);
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut layout = RowLayout::new(&cols);
        for (i, record) in batch.records.iter().enumerate() {
            let key: Option<Vec<&Value>> = table
                .key
                .iter()
                .map(|k| record.get(k).filter(|v| !v.is_null()))
                .collect();
            let Some(key) = key else {
                outcomes.push(no_key(i, table));
                continue;
            };
            if insert.execute(params_from_iter(layout.values(record, &null)))? == 1 {
                outcomes.push(RecordOutcome::ok(i, WriteAction::Created));
                continue;
            }
            outcomes.push(conflicts.resolve(i, record, &key, &mut layout)?);
        }
        Ok(outcomes)
    }

    /// As [`write_rows`](Self::write_rows), binding each row's cells by position; only a
    /// row whose key exists becomes a record (to be compared with the old row).
    fn write_cells(
        tx: &rusqlite::Transaction<'_>,
        table: &Table,
        rows: &RowBatch,
        mode: &WriteMode,
    ) -> rusqlite::Result<Vec<RecordOutcome>> {
        let cols: Vec<&String> = table.columns.iter().map(|(c, _)| c).collect();
        // Per table column, the rows' column holding it.
        let at: Vec<Option<usize>> = cols.iter().map(|c| rows.column_index(c)).collect();
        let key_at: Option<Vec<usize>> = table.key.iter().map(|k| rows.column_index(k)).collect();
        let mut insert = tx.prepare_cached(&insert_sql(table))?;
        let mut conflicts = Conflicts::new(tx, table, mode);
        let mut layout = RowLayout::new(&cols);
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in rows.rows() {
            let i = row.index();
            let keyed = key_at
                .as_ref()
                .is_some_and(|k| k.iter().all(|&c| row.text(c).is_some()));
            if !keyed {
                outcomes.push(no_key(i, table));
                continue;
            }
            let values = at
                .iter()
                .map(|c| cell_sql(c.and_then(|c| row.cell(c)).unwrap_or(Cell::Null)));
            if insert.execute(params_from_iter(values))? == 1 {
                outcomes.push(RecordOutcome::ok(i, WriteAction::Created));
                continue;
            }
            let record = row.to_record();
            let key: Vec<&Value> = table
                .key
                .iter()
                .map(|k| record.get(k).unwrap_or(&Value::Null))
                .collect();
            outcomes.push(conflicts.resolve(i, &record, &key, &mut layout)?);
        }
        Ok(outcomes)
    }

    /// Look up the stream's table, run `write` on it in one transaction (after adding the
    /// columns `sample`'s fields need), and keep what it learnt of the table.
    fn write_in_transaction(
        &self,
        stream: &str,
        sample: &RecordBatch,
        write: impl FnOnce(&rusqlite::Transaction<'_>, &Table) -> rusqlite::Result<Vec<RecordOutcome>>,
    ) -> Result<WriteReport> {
        let mut table = self.tables().get(stream).cloned().ok_or_else(|| {
            Error::invalid_input(format!("stream {stream} was not begun"))
                .with_hint("call begin_stream before write")
        })?;
        let outcomes = self.with_conn(|conn| {
            let run = || -> rusqlite::Result<Vec<RecordOutcome>> {
                let tx = conn.transaction()?;
                Self::evolve(&tx, &mut table, sample)?;
                let outcomes = write(&tx, &table)?;
                tx.commit()?;
                Ok(outcomes)
            };
            run().map_err(|e| self.err(e))
        })?;
        self.tables().insert(stream.to_owned(), table);
        Ok(WriteReport::new(outcomes))
    }
}

/// `INSERT` of every column of `table`, doing nothing on a key conflict.
fn insert_sql(table: &Table) -> String {
    format!(
        "INSERT INTO {} ({}) VALUES ({}){}",
        quote(&table.writing_to),
        quoted_list(table.columns.iter().map(|(c, _)| c)),
        vec!["?"; table.columns.len()].join(", "),
        if table.key.is_empty() {
            ""
        } else {
            " ON CONFLICT DO NOTHING"
        }
    )
}

/// `key1 = ? AND …`: a `WHERE` clause matching one row by `key`.
fn key_condition(key: &[String]) -> String {
    key.iter()
        .map(|k| format!("{} = ?", quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The outcome of a delete's `what` (record, tombstone) `index` lacking a key field.
fn lacks_key(index: usize, what: &str) -> RecordOutcome {
    RecordOutcome::failed(
        index,
        RecordFailure::new(
            FailureKind::InvalidInput,
            format!("the {what} lacks its key"),
        ),
    )
}

/// The outcome of a record without a value for a key field.
fn no_key(index: usize, table: &Table) -> RecordOutcome {
    RecordOutcome::failed(
        index,
        RecordFailure::new(
            FailureKind::InvalidInput,
            format!(
                "the record has no value for key field(s) {}",
                table.key.join(", ")
            ),
        ),
    )
}

/// A cell as an SQL value, borrowing text.
fn cell_sql(cell: Cell<'_>) -> Sql<'_> {
    Sql::Borrowed(match cell {
        Cell::Null => ValueRef::Null,
        Cell::Bool(b) => ValueRef::Integer(i64::from(b)),
        Cell::Integer(i) => ValueRef::Integer(i),
        Cell::Number(f) => ValueRef::Real(f),
        Cell::Text(t) => ValueRef::Text(t.as_bytes()),
    })
}

/// What happens to a record whose insert met an existing key: its statements, prepared
/// when first needed.
struct Conflicts<'t, 'c> {
    tx: &'t rusqlite::Transaction<'c>,
    table: &'t Table,
    upsert: bool,
    /// The table written to, quoted.
    target: String,
    /// `key1 = ? AND …`.
    key_cond: String,
    select: Option<rusqlite::CachedStatement<'t>>,
    update: Option<rusqlite::CachedStatement<'t>>,
}

impl<'t, 'c> Conflicts<'t, 'c> {
    fn new(tx: &'t rusqlite::Transaction<'c>, table: &'t Table, mode: &WriteMode) -> Self {
        Conflicts {
            tx,
            table,
            upsert: matches!(mode, WriteMode::Upsert { .. }),
            target: quote(&table.writing_to),
            key_cond: key_condition(&table.key),
            select: None,
            update: None,
        }
    }

    /// Record `i` (with key values `key`) met an existing row: a conflict when not
    /// upserting; else read the old row (the before-image), compare, update if it differs.
    fn resolve(
        &mut self,
        i: usize,
        record: &Record,
        key: &[&Value],
        layout: &mut RowLayout<'_>,
    ) -> rusqlite::Result<RecordOutcome> {
        let table = self.table;
        if !self.upsert {
            let k = key_text(key.iter().copied());
            return Ok(RecordOutcome::failed(
                i,
                RecordFailure {
                    kind: FailureKind::Conflict,
                    message: format!("a row with key {k} already exists"),
                    code: Some("DUPLICATE_VALUE".into()),
                    fields: table.key.clone(),
                },
            ));
        }
        let (target, key_cond) = (&self.target, &self.key_cond);
        let select = match &mut self.select {
            Some(s) => s,
            None => self.select.insert(self.tx.prepare_cached(&format!(
                "SELECT {} FROM {target} WHERE {key_cond}",
                column_list(table)
            ))?),
        };
        let old = {
            let mut rows = select.query(params_from_iter(key.iter().map(|v| sql(v))))?;
            match rows.next()? {
                Some(row) => decode(row, table)?,
                // The conflict was on another unique column than the key.
                None => {
                    return Ok(RecordOutcome::failed(
                        i,
                        RecordFailure::new(
                            FailureKind::Conflict,
                            "the row conflicts with another row on a unique column",
                        ),
                    ));
                }
            }
        };
        let null = Value::Null;
        let same = table.columns.iter().all(|(c, _)| {
            same_value(
                record.get(c.as_str()).unwrap_or(&null),
                old.get(c.as_str()).unwrap_or(&null),
            )
        });
        let image = Record::from(old);
        if same {
            return Ok(RecordOutcome::ok(i, WriteAction::Unchanged).with_before(image));
        }
        let update = match &mut self.update {
            Some(u) => u,
            None => {
                let set = table
                    .columns
                    .iter()
                    .map(|(c, _)| format!("{} = ?", quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.update.insert(
                    self.tx
                        .prepare_cached(&format!("UPDATE {target} SET {set} WHERE {key_cond}"))?,
                )
            }
        };
        let mut params = layout.values(record, &null);
        params.extend(key.iter().map(|v| sql(v)));
        update.execute(params_from_iter(params))?;
        Ok(RecordOutcome::ok(i, WriteAction::Updated).with_before(image))
    }
}

#[async_trait]
impl SyncSink for SqliteTableSink {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        if stream.fields.is_empty()
            && stream.primary_key.is_empty()
            && !matches!(mode, WriteMode::Upsert { .. })
        {
            return Err(Error::invalid_input(format!(
                "stream {} has no fields and no key: the warehouse cannot make a table for it",
                stream.name
            )));
        }
        let table =
            self.with_conn(|conn| self.begin(conn, stream, mode).map_err(|e| self.err(e)))?;
        self.tables().insert(stream.name.clone(), table);
        Ok(())
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        self.write_in_transaction(&batch.stream, batch, |tx, table| {
            Self::write_rows(tx, table, batch, mode)
        })
    }

    async fn write_rows(&self, rows: &RowBatch, mode: &WriteMode) -> Result<WriteReport> {
        // The rows share their fields: the first, as a record, tells which columns the
        // table lacks and of what type.
        let sample = RecordBatch::new(
            &rows.stream,
            rows.row(0).map(|r| r.to_record()).into_iter().collect(),
        );
        self.write_in_transaction(&rows.stream, &sample, |tx, table| {
            Self::write_cells(tx, table, rows, mode)
        })
    }

    async fn commit_stream(&self, stream: &str, mode: &WriteMode) -> Result<()> {
        if *mode != WriteMode::Overwrite {
            return Ok(());
        }
        let Some(table) = self.tables().get(stream).cloned() else {
            return Ok(());
        };
        // Keep the real table (its key and indexes); replace its rows in one transaction.
        self.with_conn(|conn| {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; DELETE FROM {t}; INSERT INTO {t} ({cols}) SELECT {cols} FROM {s}; DROP TABLE {s}; COMMIT;",
                t = quote(stream),
                s = quote(&table.writing_to),
                cols = column_list(&table),
            ))
            .map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                self.err(e)
            })
        })?;
        if let Some(t) = self.tables().get_mut(stream) {
            t.writing_to = stream.to_owned();
        }
        Ok(())
    }

    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        self.with_conn(|conn| {
            let info = self.table_info(conn, &batch.stream)?;
            let mut run = || -> rusqlite::Result<Vec<RecordOutcome>> {
                let tx = conn.transaction()?;
                let cond = key_condition(key);
                let mut outcomes = Vec::with_capacity(batch.len());
                {
                    let mut stmt = tx.prepare_cached(&format!(
                        "DELETE FROM {} WHERE {cond} RETURNING {}",
                        quote(&batch.stream),
                        column_list(&info)
                    ))?;
                    for (i, r) in batch.records.iter().enumerate() {
                        let values: Option<Vec<&Value>> = key.iter().map(|k| r.get(k)).collect();
                        let Some(values) = values else {
                            outcomes.push(lacks_key(i, "record"));
                            continue;
                        };
                        let mut rows =
                            stmt.query(params_from_iter(values.iter().map(|v| sql(v))))?;
                        let outcome = match rows.next()? {
                            Some(row) => RecordOutcome::ok(i, WriteAction::Deleted)
                                .with_before(Record::from(decode(row, &info)?)),
                            None => RecordOutcome::failed(
                                i,
                                RecordFailure::new(FailureKind::NotFound, "no such row"),
                            ),
                        };
                        outcomes.push(outcome);
                    }
                }
                tx.commit()?;
                Ok(outcomes)
            };
            run().map_err(|e| self.err(e))
        })
        .map(WriteReport::new)
    }

    /// Marks rows deleted: the table gains `_deleted` (1 for a deleted row) and
    /// `_deleted_at` (the tombstone's time, else now, RFC 3339) when it lacks them; a
    /// row written again gets both back to NULL (every write sets every column).
    async fn soft_delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let outcomes = self.with_conn(|conn| {
            let mut info = self.table_info(conn, &batch.stream)?;
            let mut run = || -> rusqlite::Result<Vec<RecordOutcome>> {
                let tx = conn.transaction()?;
                let (have, _) = pragma_columns(&tx, &batch.stream)?;
                let mut targets = vec![batch.stream.clone()];
                if info.writing_to != batch.stream {
                    targets.push(info.writing_to.clone());
                }
                for (column, decl, kind) in [
                    (DELETED, "INTEGER", Kind::Boolean),
                    (DELETED_AT, "TEXT", Kind::Plain),
                ] {
                    if !have.iter().any(|c| c == column) {
                        for t in &targets {
                            tx.execute_batch(&format!(
                                "ALTER TABLE {} ADD COLUMN {} {decl}",
                                quote(t),
                                quote(column)
                            ))?;
                        }
                    }
                    if !info.columns.iter().any(|(c, _)| c == column) {
                        info.columns.push((column.to_owned(), kind));
                    }
                }
                let cond = key_condition(key);
                let mut outcomes = Vec::with_capacity(batch.len());
                {
                    let mut select = tx.prepare_cached(&format!(
                        "SELECT {} FROM {} WHERE {cond}",
                        column_list(&info),
                        quote(&batch.stream)
                    ))?;
                    let mut mark = tx.prepare_cached(&format!(
                        "UPDATE {} SET {} = 1, {} = ? WHERE {cond}",
                        quote(&batch.stream),
                        quote(DELETED),
                        quote(DELETED_AT)
                    ))?;
                    for (i, tombstone) in batch.records.iter().enumerate() {
                        let values: Option<Vec<&Value>> =
                            key.iter().map(|k| tombstone.get(k)).collect();
                        let Some(values) = values else {
                            outcomes.push(lacks_key(i, "tombstone"));
                            continue;
                        };
                        let before = {
                            let mut rows =
                                select.query(params_from_iter(values.iter().map(|v| sql(v))))?;
                            match rows.next()? {
                                Some(row) => Some(decode(row, &info)?),
                                None => None,
                            }
                        };
                        let Some(before) = before else {
                            outcomes.push(RecordOutcome::failed(
                                i,
                                RecordFailure::new(FailureKind::NotFound, "no such row"),
                            ));
                            continue;
                        };
                        let already = matches!(before.get(DELETED), Some(Value::Bool(true)))
                            || before.get(DELETED).and_then(Value::as_i64) == Some(1);
                        if already {
                            outcomes.push(RecordOutcome::ok(i, WriteAction::Unchanged));
                            continue;
                        }
                        let at = match tombstone.get(DELETED_AT) {
                            Some(Value::String(at)) => at.clone(),
                            _ => now.clone(),
                        };
                        let mut params = vec![Sql::Text(at)];
                        params.extend(values.iter().map(|v| sql(v)));
                        mark.execute(params_from_iter(params))?;
                        outcomes.push(
                            RecordOutcome::ok(i, WriteAction::Deleted)
                                .with_before(Record::from(before)),
                        );
                    }
                }
                tx.commit()?;
                Ok(outcomes)
            };
            let outcomes = run().map_err(|e| self.err(e))?;
            if let Some(t) = self.tables().get_mut(&batch.stream) {
                t.columns.clone_from(&info.columns);
            }
            Ok(outcomes)
        })?;
        Ok(WriteReport::new(outcomes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use moodbridge_core::catalog::FieldDescriptor;
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
    async fn rows_land_as_their_records_would_and_conflicts_resolve_the_same() {
        use moodbridge_core::rows::{Column, ColumnKind};
        let columns = vec![
            Column::new("Id", ColumnKind::Text),
            Column::new("Subject", ColumnKind::Text),
            Column::new("IsEscalated", ColumnKind::Boolean),
            Column::new("Hours", ColumnKind::Number),
            Column::new("Extra", ColumnKind::Integer),
        ];
        let mut rows = RowBatch::new("Case", columns.clone());
        rows.push_row([
            Some("500A"),
            Some("One"),
            Some("true"),
            Some("1.5"),
            Some("7"),
        ])
        .unwrap();
        rows.push_row([Some("500B"), None, Some("false"), Some("n/a"), None])
            .unwrap();
        rows.push_row([None, Some("keyless"), None, None, None])
            .unwrap();
        let (_d, by_rows) = sink().await;
        let (_e, by_records) = sink().await;
        for s in [&by_rows, &by_records] {
            s.begin_stream(&cases(), &upsert()).await.unwrap();
        }
        let from_rows = by_rows.write_rows(&rows, &upsert()).await.unwrap();
        let from_records = by_records
            .write(&rows.to_records(), &upsert())
            .await
            .unwrap();
        assert_eq!(format!("{from_rows:?}"), format!("{from_records:?}"));
        assert_eq!(from_rows.succeeded(), 2);
        let landed = by_rows.rows("Case").await.unwrap();
        assert_eq!(landed, by_records.rows("Case").await.unwrap());
        assert_eq!(landed[0].get("Extra"), Some(&json!(7)), "a new column");
        assert_eq!(landed[1].get("Hours"), Some(&json!("n/a")));

        let mut again = RowBatch::new("Case", columns);
        again
            .push_row([
                Some("500A"),
                Some("One, edited"),
                Some("true"),
                Some("1.5"),
                Some("7"),
            ])
            .unwrap();
        again
            .push_row([Some("500B"), None, Some("false"), Some("n/a"), None])
            .unwrap();
        let r = by_rows.write_rows(&again, &upsert()).await.unwrap();
        assert_eq!(actions(&r), [WriteAction::Updated, WriteAction::Unchanged]);
        let before = r.outcomes[0].before.clone().unwrap();
        assert_eq!(before.get("Subject"), Some(&json!("One")));
        assert_eq!(
            by_rows.rows("Case").await.unwrap()[0].get("Subject"),
            Some(&json!("One, edited"))
        );
        let r = by_rows
            .write_rows(&again, &WriteMode::Append)
            .await
            .unwrap();
        for o in &r.outcomes {
            let failure = o.result.as_ref().unwrap_err();
            assert_eq!(failure.code.as_deref(), Some("DUPLICATE_VALUE"));
        }
    }

    #[tokio::test]
    async fn records_with_their_fields_in_any_order_or_missing_land_in_the_right_columns() {
        let (_d, s) = sink().await;
        s.begin_stream(&cases(), &upsert()).await.unwrap();
        let records = vec![
            rec(json!({"Id": "500A", "Subject": "a", "IsEscalated": true, "Hours": 1.5})),
            rec(json!({"Id": "500B", "Subject": "b", "IsEscalated": false, "Hours": 2.5})),
            rec(json!({"Hours": 3.5, "Subject": "c", "Id": "500C"})),
            rec(json!({"Id": "500D", "Extra": "x", "Subject": "d"})),
            rec(json!({"Subject": "e", "Id": "500E", "IsEscalated": true, "Tags": [1]})),
            rec(json!({"Id": "500F", "Subject": "f", "IsEscalated": false, "Hours": 6.5})),
        ];
        s.write(&RecordBatch::new("Case", records.clone()), &upsert())
            .await
            .unwrap();
        let mut rows = s.rows("Case").await.unwrap();
        rows.sort_by_key(|r| r.get("Id").and_then(Value::as_str).map(str::to_owned));
        assert_eq!(rows.len(), records.len());
        for (row, record) in rows.iter().zip(&records) {
            assert_eq!(row.len(), record.len(), "{row:?}");
            for (field, value) in record.fields() {
                assert_eq!(row.get(field), Some(value), "{field} of {record:?}");
            }
        }
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
