//! [`SnowflakeSink`]: the sync engine's records bulk-loaded into Snowflake tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch as ArrowBatch};
use arrow_schema::{DataType, Field, Schema};
use async_trait::async_trait;
use aws_lc_rs::digest::SHA256;
use moodbridge_core::{
    Cell as RowCell, Error, ErrorKind, FailureKind, FieldType, Record, RecordBatch, RecordFailure,
    RecordKey, RecordOutcome, Result, RowBatch, StreamDescriptor, SyncSink, WriteAction, WriteMode,
    WriteReport,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use crate::PLATFORM;
use crate::bind::Bind;
use crate::cast::TextType;
use crate::client::SnowflakeClient;
use crate::evolution::{Evolution, SchemaPlan, table_columns};
use crate::lineage::{LoadTrace, StreamLineage};
use crate::pool::{PooledSession, SessionPool};
use crate::sql::ident;
use crate::stage::PutOptions;
use crate::timetravel::Snapshots;
use moodbridge_core::lineage::{LineageRecorder, RunEvent};
use moodbridge_core::storage::{ObjectKey, ObjectStore, ObjectStoreExt};

/// The load ledger: one row per file appended, committed with its rows.
const LEDGER: &str = "MOODBRIDGE_LOAD_LEDGER";

/// How a column is held in the Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Text,
    Integer,
    Float,
    Boolean,
}

/// One column of a stream's table.
#[derive(Debug, Clone)]
struct ColumnSpec {
    name: String,
    sql_type: String,
    held: Held,
    /// Loaded with `PARSE_JSON` (a `VARIANT` column).
    json: bool,
    required: bool,
    /// What a text-held value must look like.
    text: TextType,
}

impl ColumnSpec {
    fn of(field: &moodbridge_core::FieldDescriptor) -> ColumnSpec {
        let sql_type = crate::evolution::sql_type(field);
        let (held, json) = match &field.field_type {
            FieldType::Integer => (Held::Integer, false),
            FieldType::Number => (Held::Float, false),
            FieldType::Boolean => (Held::Boolean, false),
            FieldType::Json => (Held::Text, true),
            _ => (Held::Text, false),
        };
        ColumnSpec {
            name: field.name.clone(),
            sql_type,
            held,
            json,
            required: !field.nullable,
            text: TextType::of(&field.field_type),
        }
    }

    /// The type of the staging table's column (as the Parquet file holds it).
    fn staged_type(&self) -> &'static str {
        match self.held {
            Held::Text => "VARCHAR",
            Held::Integer => "NUMBER(38,0)",
            Held::Float => "FLOAT",
            Held::Boolean => "BOOLEAN",
        }
    }

    fn data_type(&self) -> DataType {
        match self.held {
            Held::Text => DataType::Utf8,
            Held::Integer => DataType::Int64,
            Held::Float => DataType::Float64,
            Held::Boolean => DataType::Boolean,
        }
    }

    /// The staged value as the table takes it.
    fn select(&self, alias: &str) -> String {
        let column = format!("{alias}.{}", ident(&self.name));
        if self.json {
            format!("PARSE_JSON({column})")
        } else {
            column
        }
    }
}

/// A stream being written: its table and columns.
#[derive(Debug, Clone)]
struct Target {
    table: String,
    columns: Vec<ColumnSpec>,
    key: Vec<String>,
    /// The prefix of its files' names in the stage (letters, digits and `_`).
    directory: String,
    /// Its lineage, when the sink records it.
    lineage: Option<StreamLineage>,
}

fn list(names: impl IntoIterator<Item = String>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

/// A statement-safe file or directory name for `text`.
fn safe_name(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() {
        "stream".to_owned()
    } else {
        name
    }
}

fn failure(index: usize, message: String, fields: Vec<String>) -> RecordOutcome {
    let mut failure = RecordFailure::new(FailureKind::InvalidInput, message);
    failure.fields = fields;
    RecordOutcome::failed(index, failure)
}

/// One batch, checked and columnar: the rows to load (by record index) and the
/// records refused.
struct Prepared {
    rows: Vec<usize>,
    columns: Vec<ArrayRef>,
    refused: Vec<RecordOutcome>,
}

/// A value as its column holds it, or why it cannot be held.
enum Cell<'a> {
    Null,
    Text(std::borrow::Cow<'a, str>),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

/// A field's value as the batch gives it: from a JSON record, or a cell of the engine's
/// column-shaped rows.
#[derive(Clone, Copy)]
enum Input<'a> {
    Json(Option<&'a Value>),
    Row(Option<RowCell<'a>>),
}

impl Input<'_> {
    fn is_missing(self) -> bool {
        matches!(
            self,
            Input::Json(None | Some(Value::Null)) | Input::Row(None | Some(RowCell::Null))
        )
    }
}

impl std::fmt::Display for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Json(Some(v)) => write!(f, "{v}"),
            Input::Row(Some(c)) => write!(f, "{}", c.to_value()),
            _ => f.write_str("null"),
        }
    }
}

fn cell<'a>(column: &ColumnSpec, input: Input<'a>) -> std::result::Result<Cell<'a>, String> {
    if input.is_missing() {
        return Ok(Cell::Null);
    }
    let refuse = || format!("{} cannot hold {input} ({})", column.name, column.sql_type);
    let text = |s: &'a str| -> std::result::Result<Cell<'a>, String> {
        Ok(match column.held {
            Held::Text if !column.text.accepts(s) => return Err(refuse()),
            Held::Text => Cell::Text(std::borrow::Cow::Borrowed(s)),
            Held::Integer => Cell::Integer(s.trim().parse().map_err(|_| refuse())?),
            Held::Float => Cell::Float(s.trim().parse().map_err(|_| refuse())?),
            Held::Boolean if s.eq_ignore_ascii_case("true") => Cell::Boolean(true),
            Held::Boolean if s.eq_ignore_ascii_case("false") => Cell::Boolean(false),
            Held::Boolean => return Err(refuse()),
        })
    };
    match input {
        Input::Json(Some(Value::String(s))) if !column.json => text(s),
        Input::Json(Some(value)) => Ok(match (column.held, value) {
            (Held::Text, other) => {
                let text = other.to_string();
                if !column.text.accepts(&text) {
                    return Err(refuse());
                }
                Cell::Text(std::borrow::Cow::Owned(text))
            }
            (Held::Integer, Value::Number(n)) => Cell::Integer(n.as_i64().ok_or_else(refuse)?),
            (Held::Float, Value::Number(n)) => Cell::Float(n.as_f64().ok_or_else(refuse)?),
            (Held::Boolean, Value::Bool(b)) => Cell::Boolean(*b),
            (_, Value::String(s)) => return text(s),
            _ => return Err(refuse()),
        }),
        // A JSON field in rows is its JSON text already.
        Input::Row(Some(RowCell::Text(s))) => text(s),
        Input::Row(Some(c)) => Ok(match (column.held, c) {
            (Held::Integer, RowCell::Integer(n)) => Cell::Integer(n),
            (Held::Float, RowCell::Number(n)) => Cell::Float(n),
            (Held::Float, RowCell::Integer(n)) => Cell::Float(n as f64),
            (Held::Boolean, RowCell::Bool(b)) => Cell::Boolean(b),
            (Held::Text, other) => {
                let text = match other.to_value() {
                    Value::String(s) => s,
                    v => v.to_string(),
                };
                if !column.text.accepts(&text) {
                    return Err(refuse());
                }
                Cell::Text(std::borrow::Cow::Owned(text))
            }
            _ => return Err(refuse()),
        }),
        Input::Json(None) | Input::Row(None) => Ok(Cell::Null),
    }
}

/// The batch a write loads: JSON records, or the engine's column-shaped rows.
#[derive(Clone, Copy)]
enum Batch<'a> {
    Records(&'a [Record]),
    /// The rows, and for each of the target's columns its column in the rows.
    Rows(&'a RowBatch, &'a [Option<usize>]),
}

impl<'a> Batch<'a> {
    fn len(&self) -> usize {
        match self {
            Batch::Records(records) => records.len(),
            Batch::Rows(rows, _) => rows.len(),
        }
    }

    /// Field `c` (the target's column `c`, named `name`) of record `index`.
    fn input(&self, index: usize, c: usize, name: &str) -> Input<'a> {
        match *self {
            Batch::Records(records) => Input::Json(records[index].get(name)),
            Batch::Rows(rows, positions) => {
                Input::Row(positions[c].and_then(|p| rows.row(index).and_then(|row| row.cell(p))))
            }
        }
    }

    /// Record `index`'s key for the `key` fields (columns `positions` of the target).
    fn key(&self, index: usize, target: &Target, key: &[String]) -> Option<RecordKey> {
        match *self {
            Batch::Records(records) => records[index].key(key),
            Batch::Rows(rows, positions) => {
                let row = rows.row(index)?;
                let mut parts = Vec::with_capacity(key.len());
                for k in key {
                    let c = target.columns.iter().position(|col| &col.name == k)?;
                    parts.push(row.text(positions[c]?)?.to_owned());
                }
                Some(RecordKey::new(parts))
            }
        }
    }
}

/// A column being built.
enum Builder {
    Text(StringBuilder),
    Integer(Int64Builder),
    Float(Float64Builder),
    Boolean(BooleanBuilder),
}

impl Builder {
    fn new(held: Held, rows: usize) -> Builder {
        match held {
            Held::Text => Builder::Text(StringBuilder::with_capacity(rows, rows * 16)),
            Held::Integer => Builder::Integer(Int64Builder::with_capacity(rows)),
            Held::Float => Builder::Float(Float64Builder::with_capacity(rows)),
            Held::Boolean => Builder::Boolean(BooleanBuilder::with_capacity(rows)),
        }
    }

    /// Append a checked cell (one of another kind is a null).
    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Builder::Text(b), Cell::Text(s)) => b.append_value(s),
            (Builder::Integer(b), Cell::Integer(n)) => b.append_value(n),
            (Builder::Float(b), Cell::Float(n)) => b.append_value(n),
            (Builder::Boolean(b), Cell::Boolean(x)) => b.append_value(x),
            (Builder::Text(b), _) => b.append_null(),
            (Builder::Integer(b), _) => b.append_null(),
            (Builder::Float(b), _) => b.append_null(),
            (Builder::Boolean(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Text(mut b) => Arc::new(b.finish()),
            Builder::Integer(mut b) => Arc::new(b.finish()),
            Builder::Float(mut b) => Arc::new(b.finish()),
            Builder::Boolean(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Why `record` cannot be loaded, if it cannot.
fn refusal(
    target: &Target,
    batch: Batch<'_>,
    index: usize,
    key: &[String],
) -> Option<(String, String)> {
    for (c, column) in target.columns.iter().enumerate() {
        let input = batch.input(index, c, &column.name);
        if input.is_missing() && (column.required || key.contains(&column.name)) {
            let why = if key.contains(&column.name) {
                "its key field"
            } else {
                "a required field"
            };
            return Some((
                format!("the record lacks {why} {}", column.name),
                column.name.clone(),
            ));
        }
        if let Err(message) = cell(column, input) {
            return Some((message, column.name.clone()));
        }
    }
    None
}

/// Check the batch, then build its columns straight from it (no copy of the batch in
/// between): refused records fail alone, and of several records with one key only the
/// last loadable one is loaded.
fn prepare(target: &Target, batch: Batch<'_>, key: &[String]) -> Prepared {
    let mut refused = Vec::new();
    let mut loadable = vec![true; batch.len()];
    for (index, ok) in loadable.iter_mut().enumerate() {
        if let Some((message, field)) = refusal(target, batch, index, key) {
            refused.push(failure(index, message, vec![field]));
            *ok = false;
        }
    }
    if !key.is_empty() {
        let mut last_of_key: HashMap<RecordKey, usize> = HashMap::new();
        for index in 0..batch.len() {
            if loadable[index]
                && let Some(k) = batch.key(index, target, key)
                && let Some(earlier) = last_of_key.insert(k, index)
            {
                loadable[earlier] = false;
            }
        }
    }
    let rows: Vec<usize> = (0..batch.len()).filter(|i| loadable[*i]).collect();
    // Record by record (each record's fields are read while in cache).
    let mut builders: Vec<Builder> = target
        .columns
        .iter()
        .map(|c| Builder::new(c.held, rows.len()))
        .collect();
    for &index in &rows {
        for (c, (column, builder)) in target.columns.iter().zip(&mut builders).enumerate() {
            builder.append(cell(column, batch.input(index, c, &column.name)).unwrap_or(Cell::Null));
        }
    }
    let columns = builders.into_iter().map(Builder::finish).collect();
    Prepared {
        rows,
        columns,
        refused,
    }
}

/// The Parquet file of `columns`.
/// The batch's columns as Parquet files of at most about `max_bytes` each: one file, or
/// (when it comes out larger) the rows cut evenly into as many as it takes.
fn parquet_files(
    target: &Target,
    columns: Vec<ArrayRef>,
    max_bytes: usize,
) -> Result<Vec<Vec<u8>>> {
    let rows = columns.first().map_or(0, |c| c.len());
    let whole = parquet_file(target, columns.clone())?;
    if whole.len() <= max_bytes || rows < 2 {
        return Ok(vec![whole]);
    }
    let parts = whole.len().div_ceil(max_bytes.max(1)).min(rows);
    let per_part = rows.div_ceil(parts);
    (0..rows)
        .step_by(per_part)
        .map(|start| {
            let len = per_part.min(rows - start);
            parquet_file(
                target,
                columns.iter().map(|c| c.slice(start, len)).collect(),
            )
        })
        .collect()
}

fn parquet_file(target: &Target, columns: Vec<ArrayRef>) -> Result<Vec<u8>> {
    let schema = Arc::new(Schema::new(
        target
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type(), true))
            .collect::<Vec<_>>(),
    ));
    let internal = |e: &dyn std::fmt::Display| Error::internal(format!("a Parquet file: {e}"));
    let batch = ArrowBatch::try_new(schema.clone(), columns).map_err(|e| internal(&e))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, schema, Some(properties)).map_err(|e| internal(&e))?;
    writer.write(&batch).map_err(|e| internal(&e))?;
    writer.close().map_err(|e| internal(&e))?;
    Ok(out)
}

/// The largest staged file by default.
const DEFAULT_MAX_FILE_BYTES: usize = 256 << 20;

/// Loads the sync engine's batches into Snowflake tables through staged Parquet files. Each
/// batch becomes one Parquet file (Snappy; several when it would exceed
/// [`max_file_bytes`](SnowflakeSink::max_file_bytes)), `PUT` to an internal stage, `COPY INTO` a
/// transient staging table (`MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE`), then:
///
/// - [`WriteMode::Upsert`]: `MERGE` into the table by the key (re-running a batch
///   leaves the same end state);
/// - [`WriteMode::Append`]: the file is named by its content and `COPY`'d straight into
///   the table, so a batch delivered again after a crash is skipped by Snowflake's load
///   metadata (`LOAD_SKIPPED`), which commits with the load. A stream with `VARIANT`
///   columns (loaded through `PARSE_JSON`) goes through the staging table and an
///   `INSERT … SELECT`, in one transaction with a row in the load ledger table
///   (`MOODBRIDGE_LOAD_LEDGER`) naming the file: the ledger row commits with the data,
///   or neither does;
/// - [`WriteMode::Overwrite`]: appended to a side table, swapped in (a delete and an
///   insert in one transaction) at [`commit_stream`](SyncSink::commit_stream).
///
/// Files go to an internal stage by `PUT`, or through an [`ObjectStore`] to an external
/// stage ([`external_stage`](SnowflakeSink::external_stage)). The staged file is removed
/// by its `COPY` (`PURGE = TRUE`) or through the store, and files a crashed run
/// left in the stage (named after the stream) are removed when the stream begins.
/// Records are checked before anything is sent: a record without its key, without a
/// required field, or with a value its column cannot hold fails alone, with the reason;
/// the rest of its batch is loaded. Identifiers are quoted, so tables and columns keep
/// the stream's spelling (two fields that differ only in case are refused). A sink from
/// [`pooled`](SnowflakeSink::pooled) takes a session from the pool for each operation.
/// When a stream begins, an existing table is compared with the stream
/// ([`SchemaPlan`](crate::evolution::SchemaPlan)): new fields become new columns, short
/// types are widened, and a change that would lose data fails the stream before anything
/// is loaded ([`evolution`](SnowflakeSink::evolution) to freeze the table instead).
/// [`write_rows`](SyncSink::write_rows) loads the engine's column-shaped rows cell by
/// cell, with no JSON map per record (less than half the memory of `write`).
///
/// ```no_run
/// use connector_snowflake::{SnowflakeClient, SnowflakeConfig, SnowflakeSink};
/// use moodbridge_core::{FieldDescriptor, FieldType, StreamDescriptor, SyncSink, WriteMode};
/// use secrecy::SecretString;
///
/// # async fn run() -> moodbridge_core::Result<()> {
/// let client = SnowflakeClient::login(
///     SnowflakeConfig::new("acme-prod", "LOADER", SecretString::from("…"))
///         .database("CASES")
///         .schema("PUBLIC"),
/// )
/// .await?;
/// let sink = SnowflakeSink::new(client);
/// let stream = StreamDescriptor::new("Case")
///     .field(FieldDescriptor::new("Id", FieldType::String).required())
///     .field(FieldDescriptor::new("Subject", FieldType::String))
///     .primary_key(["Id"]);
/// let mode = WriteMode::Upsert { key: vec!["Id".into()] };
/// sink.begin_stream(&stream, &mode).await?;
/// # Ok(()) }
/// ```
pub struct SnowflakeSink {
    sessions: Sessions,
    stage: String,
    /// An external stage's store and the prefix of the sink's files in it.
    external: Option<(Arc<dyn ObjectStore>, String)>,
    evolution: Evolution,
    max_file_bytes: usize,
    snapshots: Option<usize>,
    lineage: Option<Arc<dyn LineageRecorder>>,
    targets: Mutex<HashMap<String, Arc<Target>>>,
}

impl std::fmt::Debug for SnowflakeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnowflakeSink")
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

/// Where the sink's sessions come from.
enum Sessions {
    One(SnowflakeClient),
    Pool(SessionPool),
}

/// A session for one operation: the sink's own, or one from its pool.
enum Session {
    One(SnowflakeClient),
    Pooled(PooledSession),
}

impl std::ops::Deref for Session {
    type Target = SnowflakeClient;

    fn deref(&self) -> &SnowflakeClient {
        match self {
            Session::One(client) => client,
            Session::Pooled(session) => session,
        }
    }
}

async fn run(client: &SnowflakeClient, sql: &str) -> Result<crate::QueryResult> {
    client.execute(sql, &[]).await
}

impl SnowflakeSink {
    /// A sink writing through `client`'s session, into its current database and
    /// schema, staging files in the internal stage `MOODBRIDGE_LOAD` (created when
    /// missing).
    pub fn new(client: SnowflakeClient) -> SnowflakeSink {
        Self::with(Sessions::One(client))
    }

    /// A sink taking a session from `pool` for each operation (a write, the start or
    /// the commit of a stream): the kind `snowflake` integration's sink.
    pub fn pooled(pool: SessionPool) -> SnowflakeSink {
        Self::with(Sessions::Pool(pool))
    }

    fn with(sessions: Sessions) -> SnowflakeSink {
        SnowflakeSink {
            sessions,
            stage: "MOODBRIDGE_LOAD".to_owned(),
            external: None,
            evolution: Evolution::Apply,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            snapshots: None,
            lineage: None,
            targets: Mutex::new(HashMap::new()),
        }
    }

    async fn session(&self) -> Result<Session> {
        Ok(match &self.sessions {
            Sessions::One(client) => Session::One(client.clone()),
            Sessions::Pool(pool) => Session::Pooled(pool.get().await?),
        })
    }

    /// What to do when a stream's existing table differs from the stream (default
    /// [`Evolution::Apply`]).
    pub fn evolution(mut self, evolution: Evolution) -> SnowflakeSink {
        self.evolution = evolution;
        self
    }

    /// Cut a batch whose Parquet file would be larger than `bytes` into files of about
    /// that size (default 256 MiB: Snowflake loads files of 100–250 MB compressed in
    /// parallel best). A batch's files load in one `COPY`, exactly once together.
    pub fn max_file_bytes(mut self, bytes: usize) -> SnowflakeSink {
        self.max_file_bytes = bytes.max(1);
        self
    }

    /// Before a sync run first writes to an existing table, clone it as the run's
    /// snapshot (`<table>__RUN_<id>`, zero-copy; see
    /// [`Snapshots`](crate::timetravel::Snapshots)) and drop all but the newest `keep`
    /// of them: a bad run is undone with [`Snapshots::restore`](crate::timetravel::Snapshots::restore).
    /// Streams begun outside a sync run take none.
    pub fn snapshot_runs(mut self, keep: usize) -> SnowflakeSink {
        self.snapshots = Some(keep.max(1));
        self
    }

    /// Report every stream's lineage to `recorder` as OpenLineage run events: `START`
    /// when it begins, `RUNNING` per batch (the staged file in; the table out, with its
    /// row count and the `COPY` and `MERGE` / `INSERT` query ids), `COMPLETE` at its
    /// commit. Inside a sync run the run id is the run's.
    pub fn lineage(mut self, recorder: Arc<dyn LineageRecorder>) -> SnowflakeSink {
        self.lineage = Some(recorder);
        self
    }

    fn record(&self, target: &Target, event: impl FnOnce(&StreamLineage) -> RunEvent) {
        if let (Some(recorder), Some(lineage)) = (&self.lineage, &target.lineage) {
            recorder.record(event(lineage));
        }
    }

    /// Stage files in the internal stage `name` instead (letters, digits and `_`).
    ///
    /// # Errors
    /// A name that is not a plain identifier ([`InvalidInput`](ErrorKind::InvalidInput)).
    pub fn stage(mut self, name: &str) -> Result<SnowflakeSink> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(
                Error::invalid_input(format!("{name:?} is not a stage name"))
                    .with_connector(PLATFORM)
                    .with_hint("use letters, digits and _ only"),
            );
        }
        self.stage = name.to_owned();
        Ok(self)
    }

    /// Stage files in the external stage `name` instead: one the host created over its
    /// own bucket or container (`CREATE STAGE … URL = 's3://…' STORAGE_INTEGRATION = …`),
    /// reached here through `store`, whose root is the stage's URL. Files are written
    /// through the store under `prefix` (`moodbridge/`), with the bucket's own
    /// encryption rather than the client's, and removed through it once loaded.
    ///
    /// # Errors
    /// A stage name that is not a plain identifier, or a prefix that is not a relative
    /// path ([`InvalidInput`](ErrorKind::InvalidInput)).
    pub fn external_stage(
        self,
        name: &str,
        store: Arc<dyn ObjectStore>,
        prefix: &str,
    ) -> Result<SnowflakeSink> {
        let mut sink = self.stage(name)?;
        let prefix = match prefix.trim_end_matches('/') {
            "" => String::new(),
            p if p.starts_with('/') || p.split('/').any(|s| s.is_empty() || s == "..") => {
                return Err(Error::invalid_input(format!(
                    "{prefix:?} is not a relative path in the stage"
                ))
                .with_connector(PLATFORM)
                .with_hint("give a path such as moodbridge/loads, or nothing"));
            }
            p => format!("{p}/"),
        };
        sink.external = Some((store, prefix));
        Ok(sink)
    }

    /// The stage path of `file` (a name, or a prefix of names).
    fn staged(&self, file: &str) -> String {
        let prefix = self.external.as_ref().map_or("", |(_, p)| p.as_str());
        format!("@{}/{prefix}{file}", self.stage)
    }

    /// The external stage's files starting with `file` (a stopped run's leftovers).
    async fn external_files(&self, file: &str) -> Result<Vec<ObjectKey>> {
        let Some((store, prefix)) = &self.external else {
            return Ok(Vec::new());
        };
        store
            .list_keys(&format!("{prefix}{file}"))
            .await?
            .into_iter()
            .map(ObjectKey::new)
            .collect()
    }

    /// Remove `keys` from the external stage's store; how many.
    async fn remove_external(&self, keys: &[ObjectKey]) -> Result<usize> {
        let Some((store, _)) = &self.external else {
            return Ok(0);
        };
        if keys.is_empty() {
            return Ok(0);
        }
        let failed = store.delete_many(keys).await?;
        if let Some(f) = failed.first() {
            return Err(Error::unavailable(format!(
                "{} staged file(s) could not be removed, {} first",
                failed.len(),
                f.key
            ))
            .with_connector(PLATFORM));
        }
        Ok(keys.len())
    }

    fn target(&self, stream: &str) -> Result<Arc<Target>> {
        self.targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(stream)
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("stream {stream} was written before begin_stream"),
                )
                .with_connector(PLATFORM)
                .with_hint(
                    "call begin_stream with the stream's descriptor first (the sync engine does)",
                )
            })
    }

    /// Load `batch` into `target`'s table in `mode`: one outcome per record.
    async fn load(
        &self,
        target: &Target,
        batch: Batch<'_>,
        mode: &WriteMode,
    ) -> Result<WriteReport> {
        let key: &[String] = match mode {
            WriteMode::Upsert { key } => key,
            _ => &[],
        };
        let prepared = prepare(target, batch, key);
        let session = self.session().await?;
        let client: &SnowflakeClient = &session;
        let mut outcomes: BTreeMap<usize, RecordOutcome> =
            prepared.refused.into_iter().map(|o| (o.index, o)).collect();
        if !prepared.rows.is_empty() {
            let rows = prepared.rows.len();
            let files = parquet_files(target, prepared.columns, self.max_file_bytes)?;
            let mut trace = LoadTrace {
                bytes: files.iter().map(Vec::len).sum(),
                rows,
                files: files.len(),
                ..LoadTrace::default()
            };
            // Named by their content: `<stream>-<hash>-p<n>.parquet`, loaded together by
            // the prefix `<stream>-<hash>-` (on an external stage, a directory
            // `<stream>-<hash>/`: some readers of stage URLs take directories only).
            let mut hash = aws_lc_rs::digest::Context::new(&SHA256);
            for bytes in &files {
                hash.update(bytes);
            }
            let file = format!(
                "{}-{}{}",
                target.directory,
                hash.finish().as_ref()[..12]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
                if self.external.is_some() { "/" } else { "-" }
            );
            // The external stage's files written, to remove once loaded.
            let mut written = Vec::new();
            for (n, bytes) in files.into_iter().enumerate() {
                let name = format!("{file}p{n}.parquet");
                match &self.external {
                    Some((store, prefix)) => {
                        let key = ObjectKey::new(format!("{prefix}{name}"))?;
                        store
                            .put_bytes(&key, bytes, moodbridge_core::storage::PutOptions::new())
                            .await?;
                        written.push(key);
                    }
                    None => {
                        client
                            .put_bytes(
                                &name,
                                bytes,
                                &format!("@{}", self.stage),
                                PutOptions::new().overwrite(true),
                            )
                            .await?;
                    }
                }
            }
            let direct =
                matches!(mode, WriteMode::Append) && !target.columns.iter().any(|c| c.json);
            if !direct {
                trace.copy = Some(self.copy_to_staging(client, target, &file).await?);
            }
            trace.loaded = true;
            let action_of: Box<dyn Fn(usize) -> WriteAction + Send + '_> = match mode {
                WriteMode::Append if direct => {
                    let (loaded, copy) = self.copy_to_table(client, target, &file).await?;
                    trace.copy = Some(copy);
                    trace.loaded = loaded;
                    if !loaded && self.external.is_none() {
                        // PURGE removes loaded files only: the skipped ones go now (or
                        // when the stream next begins).
                        let remove = format!("REMOVE {}", self.staged(&file));
                        if let Err(e) = run(client, &remove).await {
                            tracing::debug!(error = %e, "files loaded before were left in the stage");
                        }
                    }
                    Box::new(move |_| {
                        if loaded {
                            WriteAction::Created
                        } else {
                            WriteAction::Unchanged
                        }
                    })
                }
                WriteMode::Upsert { .. } => {
                    let existing = Self::existing_keys(client, target).await?;
                    trace.apply = Some(Self::merge(client, target).await?);
                    Box::new(move |index| {
                        if batch
                            .key(index, target, &target.key)
                            .is_some_and(|k| existing.contains(&k))
                        {
                            WriteAction::Updated
                        } else {
                            WriteAction::Created
                        }
                    })
                }
                WriteMode::Append => {
                    let (loaded, insert) = Self::append(client, target, &file, rows).await?;
                    trace.loaded = loaded;
                    trace.apply = insert;
                    Box::new(move |_| {
                        if loaded {
                            WriteAction::Created
                        } else {
                            WriteAction::Unchanged
                        }
                    })
                }
                WriteMode::Overwrite => {
                    let insert = run(
                        client,
                        &Self::insert_sql(target, &Self::overwrite_table(target)),
                    )
                    .await?;
                    trace.apply = Some(insert.query_id);
                    Box::new(|_| WriteAction::Created)
                }
            };
            // An external stage's files are the sink's to remove (PURGE needs the
            // storage integration's delete permission, which it may lack).
            if let Err(e) = self.remove_external(&written).await {
                tracing::warn!(error = %e, "loaded files were left in the external stage; the stream's next start removes them");
            }
            trace.file = file;
            self.record(target, |lineage| lineage.batch(&trace));
            // Every record not refused was written: by itself, or (an earlier record of
            // the same key) by the last one of its key.
            for index in 0..batch.len() {
                outcomes
                    .entry(index)
                    .or_insert_with(|| RecordOutcome::ok(index, action_of(index)));
            }
        }
        Ok(WriteReport::new(outcomes.into_values().collect()))
    }

    fn overwrite_table(target: &Target) -> String {
        ident(&format!("{}__MB_OVERWRITE", target.table))
    }

    fn staging_table(target: &Target) -> String {
        ident(&format!("{}__MB_STAGE", target.table))
    }

    /// Load `file` (already staged) into the staging table, replacing what it held.
    async fn copy_to_staging(
        &self,
        client: &SnowflakeClient,
        target: &Target,
        file: &str,
    ) -> Result<String> {
        let staging = Self::staging_table(target);
        let columns = list(
            target
                .columns
                .iter()
                .map(|c| format!("{} {}", ident(&c.name), c.staged_type())),
        );
        run(
            client,
            &format!("CREATE OR REPLACE TRANSIENT TABLE {staging} ({columns})"),
        )
        .await?;
        let copy = run(client, &format!(
            "COPY INTO {staging} FROM {} FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE FORCE = TRUE PURGE = TRUE",
            self.staged(file)
        ))
        .await?;
        Ok(copy.query_id)
    }

    /// `COPY` the staged `file` straight into the table: `true` when it was loaded,
    /// `false` when Snowflake's load metadata shows it loaded before (a batch delivered
    /// again); and the `COPY`'s query id.
    async fn copy_to_table(
        &self,
        client: &SnowflakeClient,
        target: &Target,
        file: &str,
    ) -> Result<(bool, String)> {
        let result = run(
            client,
            &format!(
                "COPY INTO {} FROM {} FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE PURGE = TRUE",
                ident(&target.table),
                self.staged(file)
            ),
        )
        .await?;
        let rows = result.json_rows()?;
        let statuses: Vec<String> = rows
            .iter()
            .filter_map(|r| r["status"].as_str().map(str::to_ascii_uppercase))
            .collect();
        let id = result.query_id.clone();
        match statuses.first().map(String::as_str) {
            Some("LOADED") => Ok((true, id)),
            Some("LOAD_SKIPPED") => Ok((false, id)),
            Some(status) if status.starts_with("COPY EXECUTED WITH 0 FILES") => Err(Error::new(
                ErrorKind::NotFound,
                format!("no staged file matched {}", self.staged(file)),
            )
            .with_connector(PLATFORM)
            .with_hint("the files were written but the stage does not show them: check that an external stage's URL is the root of the store given to the sink")),
            Some(other) => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "Snowflake did not load {file} ({other}): {}",
                    rows[0]["first_error"].as_str().unwrap_or("no reason given")
                ),
            )
            .with_connector(PLATFORM)
            .with_hint("the message names the first rejected row; fix the records or the table")),
            // No file processed: the load metadata knew it.
            None => Ok((false, id)),
        }
    }

    /// The keys of the staged rows the table already holds.
    async fn existing_keys(
        client: &SnowflakeClient,
        target: &Target,
    ) -> Result<HashSet<RecordKey>> {
        let condition = target
            .key
            .iter()
            .map(|k| format!("t.{0} = s.{0}", ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let result = run(
            client,
            &format!(
                "SELECT {} FROM {} t WHERE EXISTS (SELECT 1 FROM {} s WHERE {condition})",
                list(target.key.iter().map(|k| format!("t.{}", ident(k)))),
                ident(&target.table),
                Self::staging_table(target),
            ),
        )
        .await?;
        Ok(result
            .json_rows()?
            .into_iter()
            .filter_map(|row| Record::from_json(row).ok())
            .filter_map(|r| r.key(&target.key))
            .collect())
    }

    /// `MERGE` the staged rows into the table; its query id.
    async fn merge(client: &SnowflakeClient, target: &Target) -> Result<String> {
        let on = target
            .key
            .iter()
            .map(|k| format!("t.{0} = s.{0}", ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let updates: Vec<String> = target
            .columns
            .iter()
            .filter(|c| !target.key.contains(&c.name))
            .map(|c| format!("{0} = s.{0}", ident(&c.name)))
            .collect();
        // The source converts the staged values (JSON text to VARIANT) once.
        let source = format!(
            "(SELECT {} FROM {} s)",
            list(
                target
                    .columns
                    .iter()
                    .map(|c| format!("{} AS {}", c.select("s"), ident(&c.name)))
            ),
            Self::staging_table(target)
        );
        let mut sql = format!(
            "MERGE INTO {} t USING {source} s ON {on}",
            ident(&target.table),
        );
        if !updates.is_empty() {
            sql.push_str(&format!(
                " WHEN MATCHED THEN UPDATE SET {}",
                updates.join(", ")
            ));
        }
        sql.push_str(&format!(
            " WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
            list(target.columns.iter().map(|c| ident(&c.name))),
            list(
                target
                    .columns
                    .iter()
                    .map(|c| format!("s.{}", ident(&c.name)))
            ),
        ));
        run(client, &sql).await.map(|r| r.query_id)
    }

    fn insert_sql(target: &Target, into: &str) -> String {
        format!(
            "INSERT INTO {into} ({}) SELECT {} FROM {} s",
            list(target.columns.iter().map(|c| ident(&c.name))),
            list(target.columns.iter().map(|c| c.select("s"))),
            Self::staging_table(target)
        )
    }

    /// Append the staged rows and the ledger row in one transaction; `false` when the
    /// ledger shows the file loaded already, and the `INSERT`'s query id when it ran.
    async fn append(
        client: &SnowflakeClient,
        target: &Target,
        file: &str,
        rows: usize,
    ) -> Result<(bool, Option<String>)> {
        let seen = client
            .execute(
                &format!(
                    "SELECT COUNT(*) AS N FROM {LEDGER} WHERE FILE_NAME = ? AND TABLE_NAME = ?"
                ),
                &[Bind::text(file), Bind::text(&target.table)],
            )
            .await?;
        let loaded = seen
            .json_rows()?
            .first()
            .and_then(|r| r["N"].as_u64())
            .unwrap_or(0);
        if loaded > 0 {
            return Ok((false, None));
        }
        run(client, "BEGIN").await?;
        let work = async {
            let insert = run(client, &Self::insert_sql(target, &ident(&target.table))).await?;
            client
                .execute(
                    &format!("INSERT INTO {LEDGER} (FILE_NAME, TABLE_NAME, ROW_COUNT, LOADED_AT) VALUES (?, ?, ?, CURRENT_TIMESTAMP())"),
                    &[Bind::text(file), Bind::text(&target.table), Bind::fixed(rows as i64)],
                )
                .await?;
            run(client, "COMMIT").await?;
            Ok::<_, Error>(insert.query_id)
        };
        match work.await {
            Ok(insert) => Ok((true, Some(insert))),
            Err(e) => {
                let _ = run(client, "ROLLBACK").await;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl SyncSink for SnowflakeSink {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        let session = self.session().await?;
        let client: &SnowflakeClient = &session;
        if stream.fields.is_empty() {
            return Err(Error::invalid_input(format!(
                "stream {} has no fields to make a table of",
                stream.name
            ))
            .with_connector(PLATFORM)
            .with_hint("discover the stream's fields first (its descriptor lists them)"));
        }
        // Staged columns are matched to the file's by name, whatever the case.
        let mut seen = HashSet::new();
        if let Some(twin) = stream
            .fields
            .iter()
            .find(|f| !seen.insert(f.name.to_uppercase()))
        {
            return Err(Error::invalid_input(format!(
                "stream {} has two fields named {} but for case",
                stream.name, twin.name
            ))
            .with_connector(PLATFORM)
            .with_hint("rename one of them (a mapping) before loading into Snowflake"));
        }
        let key = match mode {
            WriteMode::Upsert { key } => key.clone(),
            _ => stream.primary_key.clone(),
        };
        if let Some(missing) = key
            .iter()
            .find(|k| !stream.fields.iter().any(|f| &f.name == *k))
        {
            return Err(Error::invalid_input(format!(
                "the key field {missing} is not a field of stream {}",
                stream.name
            ))
            .with_connector(PLATFORM)
            .with_hint("name key fields the stream has"));
        }
        let lineage = match self.lineage {
            Some(_) => Some(StreamLineage::of(client, &stream.name, &self.stage).await?),
            None => None,
        };
        let target = Target {
            table: stream.name.clone(),
            columns: stream.fields.iter().map(ColumnSpec::of).collect(),
            key,
            directory: safe_name(&stream.name),
            lineage,
        };
        let columns = list(
            target
                .columns
                .iter()
                .map(|c| format!("{} {}", ident(&c.name), c.sql_type)),
        );
        if self.external.is_none() {
            run(
                client,
                &format!("CREATE STAGE IF NOT EXISTS {}", self.stage),
            )
            .await?;
        }
        run(client, &format!(
            "CREATE TABLE IF NOT EXISTS {LEDGER} (FILE_NAME VARCHAR, TABLE_NAME VARCHAR, ROW_COUNT NUMBER(38,0), LOADED_AT TIMESTAMP_NTZ)"
        ))
        .await?;
        // Asked first rather than `CREATE TABLE IF NOT EXISTS`: the same in Snowflake, and
        // fakesnow forgets a table's load history on the latter.
        let existing = table_columns(client, &target.table).await?;
        if existing.is_empty() {
            run(
                client,
                &format!("CREATE TABLE {} ({columns})", ident(&target.table)),
            )
            .await?;
        } else {
            let plan = SchemaPlan::diff(&target.table, stream, &existing);
            if let Some(e) = plan.conflict_error() {
                return Err(e);
            }
            if !plan.is_empty() {
                if self.evolution == Evolution::Freeze {
                    return Err(Error::invalid_input(format!(
                        "table {} differs from stream {} and its schema is frozen: {}",
                        target.table,
                        stream.name,
                        plan.statements().join("; ")
                    ))
                    .with_connector(PLATFORM)
                    .with_hint("apply these statements after review, or let the sink evolve the table (Evolution::Apply)"));
                }
                tracing::info!(table = %target.table, plan = %plan, "evolving the table to the stream's schema");
                plan.apply(client).await?;
            }
            if let Some(keep) = self.snapshots {
                let snapshots = Snapshots::new(client.clone());
                if let Some(name) = snapshots.take_for_current_run(&target.table).await? {
                    tracing::info!(table = %target.table, snapshot = %name, "the table's snapshot before this run");
                    snapshots.prune(&target.table, keep).await?;
                }
            }
        }
        if matches!(mode, WriteMode::Overwrite) {
            run(
                client,
                &format!(
                    "CREATE OR REPLACE TABLE {} ({columns})",
                    Self::overwrite_table(&target)
                ),
            )
            .await?;
        }
        // Files a crashed run left staged: their batches come again from the checkpoint.
        // Cleaning up is not worth failing the run for.
        let prefix = format!("{}-", target.directory);
        let cleanup = async {
            if self.external.is_some() {
                let left = self.external_files(&prefix).await?;
                return self.remove_external(&left).await;
            }
            let listed = run(client, &format!("LIST @{}", self.stage))
                .await?
                .json_rows()?;
            let left: Vec<String> = listed
                .iter()
                .filter_map(|r| r["name"].as_str())
                .filter_map(|name| name.rsplit('/').next())
                .filter(|file| file.starts_with(&prefix))
                .map(str::to_owned)
                .collect();
            for file in &left {
                run(client, &format!("REMOVE @{}/{file}", self.stage)).await?;
            }
            Ok::<_, Error>(left.len())
        };
        match cleanup.await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(stream = %stream.name, files = n, "removed files a stopped run left in the stage");
            }
            Err(e) => {
                tracing::warn!(stream = %stream.name, error = %e, "files left in the stage could not be removed");
            }
        }
        self.record(&target, StreamLineage::start);
        self.targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(stream.name.clone(), Arc::new(target));
        Ok(())
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        let target = self.target(&batch.stream)?;
        self.load(&target, Batch::Records(&batch.records), mode)
            .await
    }

    /// Rows are loaded as they are: no JSON map is made per record.
    async fn write_rows(&self, rows: &RowBatch, mode: &WriteMode) -> Result<WriteReport> {
        let target = self.target(&rows.stream)?;
        let positions: Vec<Option<usize>> = target
            .columns
            .iter()
            .map(|c| rows.column_index(&c.name))
            .collect();
        self.load(&target, Batch::Rows(rows, &positions), mode)
            .await
    }

    async fn commit_stream(&self, stream: &str, mode: &WriteMode) -> Result<()> {
        let target = self.target(stream)?;
        if !matches!(mode, WriteMode::Overwrite) {
            self.record(&target, StreamLineage::complete);
            return Ok(());
        }
        let session = self.session().await?;
        let client: &SnowflakeClient = &session;
        let side = Self::overwrite_table(&target);
        let table = ident(&target.table);
        run(client, "BEGIN").await?;
        let swap = async {
            run(client, &format!("DELETE FROM {table}")).await?;
            run(
                client,
                &format!(
                    "INSERT INTO {table} ({columns}) SELECT {columns} FROM {side}",
                    columns = list(target.columns.iter().map(|c| ident(&c.name)))
                ),
            )
            .await?;
            run(client, "COMMIT").await
        };
        if let Err(e) = swap.await {
            let _ = run(client, "ROLLBACK").await;
            return Err(e);
        }
        run(client, &format!("DROP TABLE IF EXISTS {side}")).await?;
        self.record(&target, StreamLineage::complete);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moodbridge_core::FieldDescriptor;
    use serde_json::json;

    fn target() -> Target {
        let stream = StreamDescriptor::new("Case")
            .field(FieldDescriptor::new("Id", FieldType::String).required())
            .field(FieldDescriptor::new("Count", FieldType::Integer))
            .field(FieldDescriptor::new("Details", FieldType::Json))
            .field(FieldDescriptor::new("Open", FieldType::Boolean))
            .primary_key(["Id"]);
        Target {
            table: stream.name.clone(),
            columns: stream.fields.iter().map(ColumnSpec::of).collect(),
            key: vec!["Id".into()],
            directory: "Case".into(),
            lineage: None,
        }
    }

    fn record(value: Value) -> Record {
        Record::from_json(value).unwrap()
    }

    #[test]
    fn bad_records_are_refused_alone_and_a_key_written_twice_keeps_its_last() {
        let records = vec![
            record(json!({"Id": "A", "Count": 1, "Details": {"x": 1}, "Open": true})),
            record(json!({"Count": 2})),
            record(json!({"Id": "B", "Count": "three"})),
            record(json!({"Id": "A", "Count": "4", "Open": "false"})),
        ];
        let prepared = prepare(&target(), Batch::Records(&records), &["Id".to_owned()]);
        let refused: Vec<usize> = prepared.refused.iter().map(|o| o.index).collect();
        assert_eq!(refused, [1, 2]);
        let messages: Vec<String> = prepared
            .refused
            .iter()
            .map(|o| o.result.clone().unwrap_err().message)
            .collect();
        assert!(messages[0].contains("key field Id"), "{messages:?}");
        assert!(messages[1].contains("Count cannot hold"), "{messages:?}");
        assert_eq!(prepared.rows, [3]);
        let bytes = parquet_file(&target(), prepared.columns).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        // The same batch makes the same file (its name is its content's hash).
        let again = prepare(&target(), Batch::Records(&records), &["Id".to_owned()]);
        assert_eq!(parquet_file(&target(), again.columns).unwrap(), bytes);
    }

    #[test]
    fn identifiers_are_quoted_and_names_made_safe() {
        assert_eq!(ident("Case"), "\"Case\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(safe_name("Case__c.x"), "Case__c_x");
        assert_eq!(
            ColumnSpec::of(&FieldDescriptor::new("D", FieldType::Decimal { scale: 2 })).sql_type,
            "NUMBER(38,2)"
        );
    }
}
