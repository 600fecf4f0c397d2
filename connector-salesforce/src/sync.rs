//! Salesforce objects as a core [`SyncSource`] and [`SyncSink`], so the sync engine moves
//! them like any other stream.
//!
//! **Reading** ([`SalesforceSource`]): the catalog comes from describe (primary key `Id`,
//! cursor `SystemModstamp`). Incremental reads resume after a `(SystemModstamp, Id)`
//! checkpoint — `SystemModstamp > c OR (SystemModstamp = c AND Id > id)` — so records
//! sharing a timestamp across a page boundary are neither lost nor read twice. A read
//! first counts its records (`SELECT COUNT()`): up to [`SalesforceSource::bulk_threshold`]
//! (default 2,000, Salesforce's guidance) it pages the REST query, ordered by
//! `(SystemModstamp, Id)`, with a checkpoint after every batch; above it, a Bulk API 2.0
//! query job streams the result pages. Bulk results carry no order to resume within, so
//! the position a later read starts after — the largest `(SystemModstamp, Id)` read —
//! is known at the end of the job; meanwhile the checkpoint after each page keeps the
//! job id and the next page's locator, and a read restarted from it reads that job's
//! remaining pages (a new job when Salesforce no longer has it: results are kept 7 days,
//! or when the read asks for other fields). The job's query has no ORDER BY: it would buy nothing, and
//! Salesforce turns off PK chunking for an ordered Bulk API 2.0 query, which makes large
//! jobs slow and can time them out.
//!
//! **Writing** ([`SalesforceSink`]): `Upsert { key: [external id] }` upserts by that
//! field, `Upsert { key: ["Id"] }` updates records that carry an `Id` and creates the
//! others, `Append` creates. Batches up to the bulk threshold go through sObject
//! Collections (200 records per request), larger ones through Bulk API 2.0 ingest; either
//! way each record gets its own outcome, with the Salesforce id as its key. Fields the
//! object does not let you write (system fields, formulas) are left out; fields it does
//! not have are sent, so Salesforce names them in the record's failure.
//!
//! ```no_run
//! # async fn run(sf: connector_salesforce::client::SalesforceClient) -> moodbridge_core::Result<()> {
//! use connector_salesforce::sync::{SalesforceSink, SalesforceSource};
//! use moodbridge_core::SyncSource;
//! let source = SalesforceSource::new(sf.clone(), ["Account", "Contact", "Case"]).bulk_threshold(2_000);
//! let catalog = source.discover().await?;   // Id keys, SystemModstamp cursors
//! let sink = SalesforceSink::new(sf);        // for writes back into the org
//! # let _ = (catalog, sink); Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use moodbridge_core::{
    Catalog, Checkpoint, DELETED_AT, Error, ErrorKind, FailureKind, ReadRequest, Record,
    RecordBatch, RecordFailure, RecordKey, RecordOutcome, Result, RowBatch, SourceMessage,
    SourceStream, StreamDescriptor, SyncMode, SyncSink, SyncSource, WriteAction, WriteMode,
    WriteReport,
};
use serde_json::{Map, Value, json};

use crate::bulk::{
    BulkQueryOptions, BulkQueryPage, BulkQueryResume, IngestOperation, IngestOptions, PollOptions,
    RecordState, row_map,
};
use crate::client::parse_datetime;
use crate::client::{RecordResult, SalesforceClient};
use crate::soql::{Order, Soql, field};
use crate::streaming::{ChangeStream, ChangeType, ReplayFrom, SubscribeOptions};

/// Salesforce's guidance: above this many records, use Bulk API 2.0.
pub const DEFAULT_BULK_THRESHOLD: u64 = 2_000;

/// Records per Bulk API 2.0 result page the source asks for: a page is parsed in memory
/// at once, and the next one is fetched while it is consumed, so this bounds the read's
/// footprint (two pages; 1M records into SQLite measured 84–87 MiB peak in the client
/// with 5,000-record pages and glibc held to one arena; docs/performance.md).
pub const DEFAULT_BULK_PAGE: u64 = 5_000;

/// Field types Bulk API 2.0 queries cannot select (compound and binary fields); the
/// source leaves them out of reads that select all fields.
const UNSELECTABLE: &[&str] = &["address", "location", "complexvalue", "base64"];

/// Salesforce objects as a [`SyncSource`]; see the [module docs](crate::sync).
#[derive(Clone)]
pub struct SalesforceSource {
    client: SalesforceClient,
    objects: Vec<String>,
    bulk_threshold: u64,
    poll: PollOptions,
    bulk_page: Option<u64>,
    /// CDC-driven incremental reads: how long the change channel must stay quiet to end
    /// a read, and the most events one read takes.
    cdc: Option<(Duration, usize)>,
}

impl SalesforceSource {
    /// A source offering `objects` (API names: `Account`, `Matter__c`); none: any object
    /// of the org that a read names.
    pub fn new<I, S>(client: SalesforceClient, objects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SalesforceSource {
            client,
            objects: objects.into_iter().map(Into::into).collect(),
            bulk_threshold: DEFAULT_BULK_THRESHOLD,
            poll: PollOptions::default(),
            bulk_page: Some(DEFAULT_BULK_PAGE),
            cdc: None,
        }
    }

    /// Read through Bulk API 2.0 when a read has more than `records` records
    /// (`u64::MAX`: never).
    #[must_use]
    pub fn bulk_threshold(mut self, records: u64) -> Self {
        self.bulk_threshold = records;
        self
    }

    /// How bulk query jobs are polled.
    #[must_use]
    pub fn poll(mut self, poll: PollOptions) -> Self {
        self.poll = poll;
        self
    }

    /// Records per bulk result page (`maxRecords`; default [`DEFAULT_BULK_PAGE`]).
    #[must_use]
    pub fn bulk_page_size(mut self, records: u64) -> Self {
        self.bulk_page = Some(records);
        self
    }

    /// Drive incremental reads by Change Data Capture: after a first read by query (with
    /// the object's change channel already subscribed from the oldest retained event, so
    /// nothing changed meanwhile is missed and the next read has a replay id), each read takes the change events after the checkpoint's replay id until
    /// the channel has been quiet for `quiet` (or `max_events` arrived), and reads the
    /// changed records' current state by `Id`. If the stored replay id has left
    /// Salesforce's retention window, the read falls back to `SystemModstamp` for that
    /// run — nothing is lost. The object must be selected for Change Data Capture.
    /// Deletes are not passed on (the sync contract has no tombstones).
    #[must_use]
    pub fn cdc_incremental(mut self, quiet: Duration, max_events: usize) -> Self {
        self.cdc = Some((quiet, max_events.max(1)));
        self
    }

    /// With no objects given, any object may be read (its name is still checked and it
    /// must exist); otherwise only those.
    fn check_object(&self, name: &str) -> Result<()> {
        if self.objects.is_empty() {
            crate::client::check_name(name)
        } else if self.objects.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            Ok(())
        } else {
            Err(
                Error::not_found(format!("this Salesforce source does not offer {name}"))
                    .with_hint(format!("offered: {}", self.objects.join(", "))),
            )
        }
    }

    /// The query of `request`: fields, resume filter, and its descriptor.
    async fn plan(&self, request: &ReadRequest) -> Result<Plan> {
        self.check_object(&request.stream)?;
        let describe = self.client.describe(&request.stream).await?;
        let catalog_stream = crate::client::stream_of(&describe)?;
        request.check_against(&catalog_stream)?;
        let incremental = request.mode == SyncMode::Incremental;
        let cursor = catalog_stream.cursor_field.clone();
        let mut fields: Vec<String> = if request.fields.is_empty() {
            describe["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| !UNSELECTABLE.contains(&f["type"].as_str().unwrap_or_default()))
                .filter_map(|f| f["name"].as_str().map(str::to_owned))
                .collect()
        } else {
            request.fields.clone()
        };
        // An incremental read reports deletes: it reads through queryAll and needs to
        // see which records are deleted.
        let has_is_deleted = describe["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["name"] == "IsDeleted");
        let needed = std::iter::once("Id")
            .chain(cursor.as_deref().filter(|_| incremental))
            .chain((incremental && has_is_deleted).then_some("IsDeleted"));
        for needed in needed {
            if !fields.iter().any(|f| f.eq_ignore_ascii_case(needed)) {
                fields.push(needed.to_owned());
            }
        }
        let position = request
            .checkpoint
            .as_ref()
            .map(|c| Position::from_state(&c.state))
            .transpose()?
            .flatten();
        let filter = match (&position, incremental, &cursor) {
            (
                Some(Position {
                    cursor: Some(at),
                    id,
                }),
                true,
                Some(c),
            ) => {
                let at = crate::soql::Value::DateTime(*at);
                Some(
                    field(c)
                        .gt(at.clone())
                        .or(field(c).eq(at).and(field("Id").gt(id.as_str()))),
                )
            }
            (Some(Position { id, .. }), _, _) => Some(field("Id").gt(id.as_str())),
            (None, _, _) => None,
        };
        let mut select = Soql::select(fields.clone()).from(&request.stream);
        let mut count = Soql::count().from(&request.stream);
        if let Some(f) = &filter {
            select = select.filter(f.clone());
            count = count.filter(f.clone());
        }
        // A Bulk API 2.0 job gets the query without ORDER BY: its results carry no order
        // the read could resume within (the checkpoint comes at the end), and an ORDER BY
        // turns off Salesforce's PK chunking of the job, which makes large jobs slow and
        // can time them out.
        let unordered = select.clone();
        let order_cursor = cursor.clone().filter(|_| incremental);
        if let Some(c) = &order_cursor {
            select = select.order_by(c, Order::Asc);
        }
        select = select.order_by("Id", Order::Asc);
        Ok(Plan {
            select,
            unordered,
            count,
            cursor: order_cursor,
            fields,
        })
    }
}

struct Plan {
    /// The query, ordered by `(cursor, Id)`: for REST pages.
    select: Soql,
    /// The same query without ORDER BY: for a Bulk API 2.0 job.
    unordered: Soql,
    count: Soql,
    /// The cursor field of an incremental read.
    cursor: Option<String>,
    fields: Vec<String>,
}

impl Plan {
    fn select_fields(&self) -> Vec<String> {
        self.fields.clone()
    }
}

fn subscribe_options(replay: ReplayFrom) -> SubscribeOptions {
    SubscribeOptions {
        replay,
        buffer: 1_024,
        ..SubscribeOptions::default()
    }
}

/// Records in batches, then the tombstones, then a checkpoint with `state`.
fn emit(
    stream: &str,
    records: Vec<Record>,
    tombstones: Vec<Record>,
    batch_size: usize,
    state: Value,
) -> SourceStream {
    let mut messages: Vec<Result<SourceMessage>> = record_batches(stream, records, batch_size)
        .into_iter()
        .map(Ok)
        .collect();
    if !tombstones.is_empty() {
        messages.push(Ok(SourceMessage::Deletes(RecordBatch::new(
            stream, tombstones,
        ))));
    }
    messages.push(Ok(SourceMessage::Checkpoint(Checkpoint::new(
        stream, state,
    ))));
    futures::stream::iter(messages).boxed()
}

/// `records` of `stream` as messages of at most `batch_size` records each.
fn record_batches(
    stream: &str,
    records: impl IntoIterator<Item = Record>,
    batch_size: usize,
) -> Vec<SourceMessage> {
    let mut records = records.into_iter().peekable();
    let mut out = Vec::new();
    while records.peek().is_some() {
        let batch: Vec<Record> = records.by_ref().take(batch_size.max(1)).collect();
        out.push(SourceMessage::Records(RecordBatch::new(stream, batch)));
    }
    out
}

/// A bulk result page as a source's messages of at most `batch_size` records: rows as
/// they are, unless a column reaches through a parent relationship (`Owner.Name`), whose
/// value nests, as in REST results.
fn page_messages(page: RowBatch, batch_size: usize) -> Vec<SourceMessage> {
    if page.columns().iter().any(|c| c.name.contains('.')) {
        let records = page.rows().map(|r| Record::from(row_map(r)));
        return record_batches(&page.stream, records, batch_size);
    }
    page.into_chunks(batch_size)
        .into_iter()
        .filter(|b| !b.is_empty())
        .map(SourceMessage::Rows)
        .collect()
}

/// A bulk result page of a queryAll read as messages: the live rows as
/// [`page_messages`] makes them, the deleted ones as tombstones.
fn split_deletes(page: RowBatch, batch_size: usize, cursor: Option<&str>) -> Vec<SourceMessage> {
    let Some(flag) = page.column_index("IsDeleted") else {
        return page_messages(page, batch_size);
    };
    let deleted = |row: &moodbridge_core::Row<'_>| {
        matches!(
            row.cell(flag),
            Some(moodbridge_core::rows::Cell::Bool(true))
        ) || row.text(flag) == Some("true")
    };
    if !page.rows().any(|r| deleted(&r)) {
        return page_messages(page, batch_size);
    }
    let (mut live, mut tombstones) = (Vec::new(), Vec::new());
    for row in page.rows() {
        let fields = row_map(row);
        if deleted(&row) {
            tombstones.push(tombstone(&fields, cursor));
        } else {
            live.push(Record::from(fields));
        }
    }
    let mut out = record_batches(&page.stream, live, batch_size);
    out.push(SourceMessage::Deletes(RecordBatch::new(
        &page.stream,
        tombstones,
    )));
    out
}

/// Whether a record read through queryAll is deleted.
fn is_deleted(fields: &Map<String, Value>) -> bool {
    match fields.get("IsDeleted") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// A deleted record's tombstone: its `Id`, and its time of deletion (the cursor field,
/// which Salesforce moves when it deletes a record) as [`DELETED_AT`].
fn tombstone(fields: &Map<String, Value>, cursor: Option<&str>) -> Record {
    let mut t = Record::new();
    t.set("Id", fields.get("Id").cloned().unwrap_or_default());
    let at = cursor
        .and_then(|c| fields.get(c))
        .and_then(Value::as_str)
        .and_then(parse_datetime)
        .map(|t| Value::from(humantime::format_rfc3339_millis(t).to_string()))
        .unwrap_or_default();
    t.set(DELETED_AT, at);
    t
}

/// Where a read stands: after `(cursor, id)` (incremental) or after `id` (full refresh).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    cursor: Option<SystemTime>,
    id: String,
}

impl Position {
    fn from_state(state: &Value) -> Result<Option<Position>> {
        let Some(id) = state.get("id").and_then(Value::as_str) else {
            return Ok(None);
        };
        let cursor = match state.get("cursor") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(parse_datetime)
                    .ok_or_else(|| {
                        Error::invalid_input(format!(
                            "the checkpoint's cursor {v} is not a datetime"
                        ))
                        .with_hint("this checkpoint was not made by the Salesforce source; reset the stream's state")
                    })?,
            ),
        };
        Ok(Some(Position {
            cursor,
            id: id.to_owned(),
        }))
    }

    fn of(record: &Map<String, Value>, cursor: Option<&str>) -> Option<Position> {
        let (cursor, id) = Position::key_of(record, cursor)?;
        Some(Position {
            cursor,
            id: id.to_owned(),
        })
    }

    /// A record's position borrowed from it, ordered as [`Position`]s are.
    fn key_of<'r>(
        record: &'r Map<String, Value>,
        cursor: Option<&str>,
    ) -> Option<(Option<SystemTime>, &'r str)> {
        let id = record.get("Id")?.as_str()?;
        let cursor = match cursor {
            Some(c) => Some(record.get(c)?.as_str().and_then(parse_datetime)?),
            None => None,
        };
        Some((cursor, id))
    }

    /// The furthest position among a result page's rows, borrowed from it.
    fn furthest_row<'r>(
        rows: &'r RowBatch,
        cursor: Option<&str>,
    ) -> Option<(Option<SystemTime>, &'r str)> {
        let id = rows.column_index("Id")?;
        let at = match cursor {
            Some(c) => Some(rows.column_index(c)?),
            None => None,
        };
        rows.rows()
            .filter_map(|row| {
                let cursor = match at {
                    Some(c) => Some(row.text(c).and_then(parse_datetime)?),
                    None => None,
                };
                Some((cursor, row.text(id)?))
            })
            .max()
    }

    fn state(&self) -> Value {
        json!({
            "cursor": self.cursor.map(|t| humantime::format_rfc3339_millis(t).to_string()),
            "id": self.id,
        })
    }
}

/// A bulk read in progress, kept in its checkpoints (`bulk`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BulkProgress {
    /// The digest of the job's query: a read asking for something else starts afresh.
    query: String,
    /// The job and the next page to read.
    #[serde(flatten)]
    resume: BulkQueryResume,
    /// The largest position read so far (as a checkpoint states a position).
    best: Option<Value>,
}

/// A short digest of a query's text.
fn query_digest(soql: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(soql.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn to_record(value: Value) -> Result<Record> {
    match value {
        Value::Object(mut map) => {
            map.remove("attributes");
            Ok(Record::from(map))
        }
        other => Err(Error::new(
            ErrorKind::Protocol,
            format!("Salesforce returned a record that is not an object: {other}"),
        )),
    }
}

#[async_trait]
impl SyncSource for SalesforceSource {
    /// `salesforce://<instance host>`: each object is a dataset of the org.
    async fn lineage_namespace(&self) -> Option<String> {
        let origin = self.client.instance_origin().await.ok()?;
        let host = origin.split("://").nth(1).unwrap_or(&origin).to_owned();
        Some(format!("salesforce://{host}"))
    }

    async fn discover(&self) -> Result<Catalog> {
        let names: Vec<&str> = self.objects.iter().map(String::as_str).collect();
        self.client.catalog(&names).await
    }

    /// Describes just the objects named (of those the source offers, when it was given
    /// a list); an object the org does not have is left out (the engine names it).
    async fn discover_streams(&self, names: &[&str]) -> Result<Catalog> {
        let mut streams = Vec::with_capacity(names.len());
        for name in names {
            if self.check_object(name).is_err() {
                continue;
            }
            match self.client.catalog(&[name]).await {
                Ok(catalog) => streams.extend(catalog.streams),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Catalog::new(streams))
    }

    async fn count_hint(&self, request: &ReadRequest) -> Result<Option<u64>> {
        let plan = self.plan(request).await?;
        Ok(Some(self.client.count(&plan.count.build()?).await?))
    }

    async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
        match self.cdc {
            Some((quiet, max)) if request.mode == SyncMode::Incremental => {
                self.read_by_cdc(request, quiet, max).await
            }
            _ => self.read_by_query(request).await,
        }
    }
}

/// `/data/AccountChangeEvent`; custom `Matter__c` → `/data/Matter__ChangeEvent`.
fn change_channel(object: &str) -> String {
    match object.strip_suffix("__c") {
        Some(base) => format!("/data/{base}__ChangeEvent"),
        None => format!("/data/{object}ChangeEvent"),
    }
}

impl SalesforceSource {
    /// A CDC-driven incremental read; see [`SalesforceSource::cdc_incremental`].
    async fn read_by_cdc(
        &self,
        request: ReadRequest,
        quiet: Duration,
        max: usize,
    ) -> Result<SourceStream> {
        let channel = change_channel(&request.stream);
        let previous = request.checkpoint.as_ref().map(|c| c.state.clone());
        let stored = previous
            .as_ref()
            .and_then(|s| s.get("replay_id"))
            .and_then(Value::as_i64);
        if let Some(replay) = stored {
            match self
                .client
                .subscribe(&channel, subscribe_options(ReplayFrom::After(replay)))
                .await
            {
                Ok(changes) => {
                    let plan = self.plan(&request).await?;
                    let fields = plan.select_fields();
                    // Retained events the last query already covered (a previous drain
                    // may have stopped before reaching them) only advance the replay id.
                    let covered = previous
                        .as_ref()
                        .and_then(|s| s.get("cursor"))
                        .and_then(Value::as_str)
                        .and_then(parse_datetime);
                    let (records, tombstones, last) = self
                        .drain(changes, &request.stream, &fields, quiet, max, covered)
                        .await?;
                    let mut state = previous.unwrap_or_else(|| json!({}));
                    state["replay_id"] = json!(last.unwrap_or(replay));
                    return Ok(emit(
                        &request.stream,
                        records,
                        tombstones,
                        request.batch_size,
                        state,
                    ));
                }
                Err(e) if e.kind() == ErrorKind::InvalidInput => {
                    tracing::warn!(object = %request.stream, error = %e, "CDC replay window passed: this read falls back to SystemModstamp");
                }
                Err(e) => return Err(e),
            }
        }
        // Subscribe first — to everything retained, which gives the next read its replay
        // id — then read by query: changes made during the read are kept, and retained
        // events the query already covered are skipped.
        let changes = self
            .client
            .subscribe(&channel, subscribe_options(ReplayFrom::AllRetained))
            .await?;
        let plan = self.plan(&request).await?;
        let fields = plan.select_fields();
        let snapshot = self.read_by_query(request.clone()).await?;
        let last_state = Arc::new(Mutex::new(previous.map(|mut p| {
            if let Some(o) = p.as_object_mut() {
                o.remove("replay_id");
            }
            p
        })));
        let seen = last_state.clone();
        let snapshot = snapshot.map_ok(move |m| {
            if let SourceMessage::Checkpoint(cp) = &m {
                *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(cp.state.clone());
            }
            m
        });
        let source = self.clone();
        let stream = request.stream.clone();
        let batch = request.batch_size;
        let tail = futures::stream::once(async move {
            let mut state = last_state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_else(|| json!({"id": null}));
            let covered = state["cursor"].as_str().and_then(parse_datetime);
            let (records, tombstones, last) = source
                .drain(changes, &stream, &fields, quiet, max, covered)
                .await?;
            if let Some(last) = last {
                state["replay_id"] = json!(last);
            }
            Ok::<_, Error>(emit(&stream, records, tombstones, batch, state))
        })
        .try_flatten();
        Ok(snapshot.chain(tail).boxed())
    }

    /// Take change events until the channel is quiet; the changed records' current state
    /// and the last replay id. Events committed at or before `covered` (the newest
    /// `SystemModstamp` a query just read) only advance the replay id.
    async fn drain(
        &self,
        mut changes: ChangeStream,
        object: &str,
        fields: &[String],
        quiet: Duration,
        max: usize,
        covered: Option<SystemTime>,
    ) -> Result<(Vec<Record>, Vec<Record>, Option<i64>)> {
        let mut ids: Vec<String> = Vec::new();
        let mut tombstones: Vec<Record> = Vec::new();
        let mut last = None;
        let mut taken = 0;
        while taken < max {
            match tokio::time::timeout(quiet, changes.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(event)) => {
                    let event = event?;
                    taken += 1;
                    last = Some(event.replay_id);
                    let already = covered
                        .zip(event.commit_timestamp)
                        .is_some_and(|(c, t)| t <= c);
                    if already {
                        continue;
                    }
                    if event.change_type == ChangeType::Delete {
                        let at = event.commit_timestamp.map_or(Value::Null, |t| {
                            Value::from(humantime::format_rfc3339_millis(t).to_string())
                        });
                        for id in event.record_ids {
                            ids.retain(|seen| *seen != id);
                            let mut t = Record::new();
                            t.set("Id", Value::from(id));
                            t.set(DELETED_AT, at.clone());
                            tombstones.push(t);
                        }
                    } else {
                        for id in event.record_ids {
                            tombstones.retain(|t| t.get("Id").and_then(Value::as_str) != Some(&id));
                            if !ids.contains(&id) {
                                ids.push(id);
                            }
                        }
                    }
                }
            }
        }
        drop(changes);
        let mut records = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let q = Soql::select(fields.to_vec())
                .from(object)
                .filter(field("Id").is_in(chunk.iter().map(String::as_str)))
                .build()?;
            let found: Vec<Value> = self.client.query(&q).try_collect().await?;
            for v in found {
                records.push(to_record(v)?);
            }
        }
        Ok((records, tombstones, last))
    }

    /// A read through a Bulk API 2.0 query job. Bulk results carry no usable order, so
    /// the position a later read starts after — the largest `(cursor, Id)` read — is
    /// known only at the end of the job. Meanwhile, after each result page, a checkpoint
    /// keeps the position the job started after, the job, the next page's locator and the
    /// largest position so far (`bulk`), so that a read restarted from it reads the same
    /// job's remaining pages while Salesforce keeps them, instead of the whole job again.
    fn read_by_bulk(
        &self,
        request: &ReadRequest,
        soql: String,
        cursor: Option<String>,
        batch_size: usize,
    ) -> SourceStream {
        let previous = request.checkpoint.as_ref().map(|c| c.state.clone());
        let base = previous
            .clone()
            .unwrap_or_else(|| json!({"cursor": null, "id": null}));
        let digest = query_digest(&soql);
        let saved = previous
            .as_ref()
            .and_then(|s| s.get("bulk"))
            .and_then(|b| serde_json::from_value::<BulkProgress>(b.clone()).ok())
            .filter(|b| b.query == digest);
        let mut best = saved
            .as_ref()
            .and_then(|b| b.best.as_ref())
            .and_then(|b| Position::from_state(b).ok().flatten());
        let resume = saved.map(|b| b.resume);
        let incremental = request.mode == SyncMode::Incremental;
        let pages = self.client.bulk_query_pages(
            &soql,
            BulkQueryOptions {
                // An incremental read reports deletes (queryAll); a full read holds the
                // live records only.
                all_rows: incremental,
                max_records: self.bulk_page,
                poll: self.poll.clone(),
            },
            resume,
        );
        let name = request.stream.clone();
        // The job is named in the run's lineage: the sink's events say which job of
        // the org the rows came from.
        let scope = moodbridge_core::observe::RunScope::current();
        pages
            .map_ok(move |page| {
                let BulkQueryPage {
                    mut rows,
                    next,
                    job_id,
                    ..
                } = page;
                if let Some(scope) = &scope {
                    scope.note_source_job(&name, &job_id);
                }
                rows.stream.clone_from(&name);
                if let Some((at, id)) = Position::furthest_row(&rows, cursor.as_deref())
                    && best
                        .as_ref()
                        .is_none_or(|t| (at, id) > (t.cursor, t.id.as_str()))
                {
                    best = Some(Position {
                        cursor: at,
                        id: id.to_owned(),
                    });
                }
                let state = match next {
                    Some(resume) => {
                        let mut state = base.clone();
                        state["bulk"] = json!(BulkProgress {
                            query: digest.clone(),
                            resume,
                            best: best.as_ref().map(Position::state),
                        });
                        state
                    }
                    None => match &best {
                        Some(p) => p.state(),
                        // Nothing read: the read stands where it started.
                        None => {
                            let mut state = base.clone();
                            if let Some(o) = state.as_object_mut() {
                                o.remove("bulk");
                            }
                            state
                        }
                    },
                };
                let mut messages = if incremental {
                    split_deletes(rows, batch_size, cursor.as_deref())
                } else {
                    page_messages(rows, batch_size)
                };
                messages.push(SourceMessage::Checkpoint(Checkpoint::new(&name, state)));
                futures::stream::iter(messages.into_iter().map(Ok))
            })
            .try_flatten()
            .boxed()
    }

    /// A read by query; an incremental one resumed from a checkpoint first reports the
    /// records deleted since (`sObject Get Deleted`, which also knows records deleted for
    /// good, which queryAll no longer returns), and its checkpoints keep where that
    /// window ended (`deleted_through`).
    async fn read_by_query(&self, request: ReadRequest) -> Result<SourceStream> {
        let gone = match request.mode {
            SyncMode::Incremental => self.deleted_since(&request).await?,
            SyncMode::FullRefresh => None,
        };
        let rows = self.read_rows_by_query(request.clone()).await?;
        let Some((tombstones, through)) = gone else {
            return Ok(rows);
        };
        let name = request.stream.clone();
        // A record in the Recycle Bin is reported by both; once is enough.
        let reported: std::collections::HashSet<String> = tombstones
            .iter()
            .filter_map(|t| t.get("Id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let mut head = Vec::new();
        if !tombstones.is_empty() {
            head.push(Ok(SourceMessage::Deletes(RecordBatch::new(
                &name, tombstones,
            ))));
        }
        let through = Value::from(through);
        let with_through = move |mut state: Value| {
            if let Some(o) = state.as_object_mut() {
                o.insert("deleted_through".into(), through.clone());
            }
            state
        };
        let mark = with_through.clone();
        let checkpointed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = checkpointed.clone();
        let rows = rows.try_filter_map(move |m| {
            futures::future::ready(Ok(match m {
                SourceMessage::Checkpoint(cp) => {
                    seen.store(true, std::sync::atomic::Ordering::Relaxed);
                    Some(SourceMessage::Checkpoint(Checkpoint::new(
                        cp.stream,
                        mark(cp.state),
                    )))
                }
                SourceMessage::Deletes(mut batch) => {
                    batch.records.retain(|t| {
                        t.get("Id")
                            .and_then(Value::as_str)
                            .is_none_or(|id| !reported.contains(id))
                    });
                    (!batch.is_empty()).then_some(SourceMessage::Deletes(batch))
                }
                other => Some(other),
            }))
        });
        // A read that found nothing new still keeps where the deletes' window ended.
        let previous = request.checkpoint.map(|c| c.state);
        let tail = futures::stream::once(async move {
            (!checkpointed.load(std::sync::atomic::Ordering::Relaxed)).then(|| {
                let state = previous.unwrap_or_else(|| json!({"cursor": null, "id": null}));
                Ok(SourceMessage::Checkpoint(Checkpoint::new(
                    name,
                    with_through(state),
                )))
            })
        })
        .filter_map(futures::future::ready);
        Ok(futures::stream::iter(head).chain(rows).chain(tail).boxed())
    }

    /// The records of the request's object deleted since its checkpoint (where the last
    /// window ended, else the checkpoint's cursor), as tombstones, and where this window
    /// ends (RFC 3339). `None` for a read from scratch. A window Salesforce cannot answer
    /// (its delete log keeps 15 days) is skipped with a warning: deletes older than that
    /// and no longer in the Recycle Bin are not reported.
    async fn deleted_since(&self, request: &ReadRequest) -> Result<Option<(Vec<Record>, String)>> {
        let Some(state) = request.checkpoint.as_ref().map(|c| &c.state) else {
            return Ok(None);
        };
        let at = |key: &str| {
            state
                .get(key)
                .and_then(Value::as_str)
                .and_then(parse_datetime)
        };
        let Some(from) = at("deleted_through").or_else(|| at("cursor")) else {
            return Ok(None);
        };
        let now = SystemTime::now();
        // Salesforce ignores seconds and wants a window of more than a minute.
        let minute = Duration::from_secs(60);
        let start = from
            .checked_sub(minute)
            .unwrap_or(from)
            .min(now.checked_sub(2 * minute).unwrap_or(now));
        let stamp = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        match self.client.deleted(&request.stream, start, now).await {
            Ok(found) => {
                let tombstones = found
                    .records
                    .into_iter()
                    .map(|(id, when)| {
                        let mut t = Record::new();
                        t.set("Id", Value::from(id));
                        t.set(DELETED_AT, Value::from(stamp(when)));
                        t
                    })
                    .collect();
                Ok(Some((tombstones, stamp(found.latest_covered))))
            }
            Err(e) if e.is_temporary() => Err(e),
            Err(e) => {
                if e.context_value("error_code") == Some("INVALID_REPLICATION_DATE") {
                    tracing::warn!(object = %request.stream, error = %e, "records deleted before Salesforce's delete log (15 days) and emptied from the Recycle Bin are not reported; a full refresh with write = overwrite mirrors the org exactly");
                } else {
                    tracing::debug!(object = %request.stream, error = %e, "no getDeleted for this object: deletes come from queryAll only");
                }
                Ok(Some((
                    Vec::new(),
                    stamp(now.checked_sub(minute).unwrap_or(now)),
                )))
            }
        }
    }

    /// The rows of a read by query (REST below the bulk threshold, Bulk API 2.0 above).
    async fn read_rows_by_query(&self, request: ReadRequest) -> Result<SourceStream> {
        let plan = self.plan(&request).await?;
        let total = self.client.count(&plan.count.build()?).await?;
        let stream_name = request.stream.clone();
        let batch_size = request.batch_size.max(1);
        let cursor = plan.cursor.clone();
        tracing::debug!(object = %stream_name, total, bulk = total > self.bulk_threshold, "Salesforce read planned");
        if total > self.bulk_threshold {
            let soql = plan.unordered.build()?;
            return Ok(self.read_by_bulk(&request, soql, cursor, batch_size));
        }
        let name = stream_name.clone();
        let incremental = request.mode == SyncMode::Incremental;
        let soql = plan.select.build()?;
        // An incremental read goes through queryAll: deleted records come as tombstones.
        let pages = if incremental {
            self.client.query_all(&soql).boxed()
        } else {
            self.client.query(&soql).boxed()
        };
        let batches = pages
            .try_chunks(batch_size)
            .map_err(|e| e.1)
            .map(move |chunk| -> Result<Vec<SourceMessage>> {
                let chunk = chunk?;
                let records = chunk
                    .into_iter()
                    .map(to_record)
                    .collect::<Result<Vec<_>>>()?;
                let last = records
                    .last()
                    .and_then(|r| Position::of(r.fields(), cursor.as_deref()));
                let (gone, live): (Vec<Record>, Vec<Record>) = records
                    .into_iter()
                    .partition(|r| incremental && is_deleted(r.fields()));
                let mut out = Vec::with_capacity(3);
                if !live.is_empty() {
                    out.push(SourceMessage::Records(RecordBatch::new(&name, live)));
                }
                if !gone.is_empty() {
                    let tombstones = gone
                        .iter()
                        .map(|r| tombstone(r.fields(), cursor.as_deref()))
                        .collect();
                    out.push(SourceMessage::Deletes(RecordBatch::new(&name, tombstones)));
                }
                if let Some(p) = last {
                    out.push(SourceMessage::Checkpoint(Checkpoint::new(&name, p.state())));
                }
                Ok(out)
            })
            .map_ok(|messages| futures::stream::iter(messages.into_iter().map(Ok)))
            .try_flatten();
        Ok(batches.boxed())
    }
}

/// Salesforce objects as a [`SyncSink`]; see the [module docs](crate::sync).
#[derive(Clone)]
pub struct SalesforceSink {
    client: SalesforceClient,
    bulk_threshold: usize,
    ingest: IngestOptions,
    fields: Arc<Mutex<HashMap<String, Arc<FieldMap>>>>,
}

/// An object's fields: lowercase name → writable (createable or updateable).
type FieldMap = HashMap<String, bool>;

impl SalesforceSink {
    /// A sink writing through `client`.
    pub fn new(client: SalesforceClient) -> Self {
        SalesforceSink {
            client,
            bulk_threshold: usize::try_from(DEFAULT_BULK_THRESHOLD).unwrap_or(usize::MAX),
            ingest: IngestOptions::default(),
            fields: Arc::default(),
        }
    }

    /// Write batches of more than `records` records through Bulk API 2.0 (default 2,000).
    #[must_use]
    pub fn bulk_threshold(mut self, records: usize) -> Self {
        self.bulk_threshold = records;
        self
    }

    /// Options of the bulk ingest jobs.
    #[must_use]
    pub fn ingest_options(mut self, options: IngestOptions) -> Self {
        self.ingest = options;
        self
    }

    /// The fields of `object` (lowercase name → writable), from its describe, asked once
    /// per object and kept.
    async fn fields(&self, object: &str) -> Result<Arc<FieldMap>> {
        if let Some(f) = self
            .fields
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(object)
        {
            return Ok(f.clone());
        }
        let describe = self.client.describe(object).await?;
        let fields: FieldMap = describe["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let writable =
                    f["createable"] == Value::Bool(true) || f["updateable"] == Value::Bool(true);
                Some((f["name"].as_str()?.to_ascii_lowercase(), writable))
            })
            .collect();
        let fields = Arc::new(fields);
        self.fields
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(object.to_owned(), fields.clone());
        Ok(fields)
    }

    /// The body of `record`: writable fields, plus fields describe does not list (for
    /// Salesforce to name in its answer), plus `keep` (`Id` for updates).
    fn body(record: &Record, fields: &FieldMap, keep: &str) -> Value {
        let mut out = Map::new();
        for (k, v) in record.fields() {
            if k == "attributes" || v.is_object() {
                continue;
            }
            let send = k.eq_ignore_ascii_case(keep)
                || fields
                    .get(&k.to_ascii_lowercase())
                    .is_none_or(|writable| *writable);
            if send {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    }

    /// Write `bodies` (indices into the batch) with one operation.
    async fn apply(
        &self,
        object: &str,
        op: IngestOperation,
        items: Vec<(usize, Value)>,
        outcomes: &mut Vec<RecordOutcome>,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let update_like = matches!(op, IngestOperation::Update);
        if items.len() > self.bulk_threshold {
            let indices: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
            let report = self
                .client
                .bulk_ingest(
                    object,
                    op,
                    futures::stream::iter(items.into_iter().map(|(_, v)| v)),
                    &self.ingest,
                )
                .await?;
            for o in report.outcomes {
                let index = usize::try_from(o.index)
                    .ok()
                    .and_then(|i| indices.get(i).copied())
                    .ok_or_else(|| {
                        Error::internal("a bulk outcome for a record that was not sent")
                    })?;
                outcomes.push(match o.state {
                    RecordState::Succeeded => {
                        let action = if o.created {
                            WriteAction::Created
                        } else {
                            WriteAction::Updated
                        };
                        with_id(RecordOutcome::ok(index, action), o.id)
                    }
                    RecordState::Failed | RecordState::Unprocessed => {
                        let failure = bulk_failure(
                            o.error.as_deref().unwrap_or("unprocessed"),
                            o.state == RecordState::Unprocessed,
                        );
                        with_id(RecordOutcome::failed(index, failure), o.id)
                    }
                });
            }
            return Ok(());
        }
        let (indices, bodies): (Vec<usize>, Vec<Value>) = items.into_iter().unzip();
        let results = match &op {
            IngestOperation::Insert => self.client.create_many(object, &bodies, false).await?,
            IngestOperation::Update => self.client.update_many(object, &bodies, false).await?,
            IngestOperation::Upsert { external_id } => {
                self.client
                    .upsert_many(object, external_id, &bodies, false)
                    .await?
            }
            IngestOperation::Delete | IngestOperation::HardDelete => {
                let ids: Vec<&str> = bodies.iter().filter_map(|b| b["Id"].as_str()).collect();
                self.client.delete_many(&ids, false).await?
            }
        };
        for (index, r) in indices.into_iter().zip(results) {
            outcomes.push(collection_outcome(index, r, &op, update_like));
        }
        Ok(())
    }
}

fn with_id(outcome: RecordOutcome, id: Option<String>) -> RecordOutcome {
    match id {
        Some(id) => outcome.with_key(RecordKey::new(vec![id])),
        None => outcome,
    }
}

fn collection_outcome(
    index: usize,
    r: RecordResult,
    op: &IngestOperation,
    update: bool,
) -> RecordOutcome {
    if r.success {
        let action = match op {
            IngestOperation::Delete | IngestOperation::HardDelete => WriteAction::Deleted,
            IngestOperation::Insert => WriteAction::Created,
            _ if update => WriteAction::Updated,
            _ => {
                if r.created == Some(true) {
                    WriteAction::Created
                } else {
                    WriteAction::Updated
                }
            }
        };
        return with_id(RecordOutcome::ok(index, action), r.id);
    }
    let first = r.errors.first();
    let code = first.map(|e| e.status_code.clone());
    let kind = code
        .as_deref()
        .and_then(crate::error::kind_of_code)
        .map_or(FailureKind::Other, FailureKind::from);
    let failure = RecordFailure {
        kind,
        message: r
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.status_code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        code,
        fields: r.errors.iter().flat_map(|e| e.fields.clone()).collect(),
    };
    with_id(RecordOutcome::failed(index, failure), r.id)
}

/// `CODE:message:fields --` (a bulk `sf__Error`) as a record failure.
fn bulk_failure(text: &str, unprocessed: bool) -> RecordFailure {
    if unprocessed {
        return RecordFailure::new(FailureKind::Temporary, format!("not processed: {text}"));
    }
    let body = text.trim_end_matches(" --").trim_end_matches("--");
    let mut parts = body.splitn(2, ':');
    let code = parts.next().unwrap_or_default().to_owned();
    let rest = parts.next().unwrap_or_default();
    let (message, fields) = match rest.rsplit_once(':') {
        Some((m, f)) => (
            m.to_owned(),
            f.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        None => (rest.to_owned(), Vec::new()),
    };
    RecordFailure {
        kind: crate::error::kind_of_code(&code).map_or(FailureKind::Other, FailureKind::from),
        message: format!("{code}: {message}"),
        code: Some(code),
        fields,
    }
}

fn key_field(mode: &WriteMode) -> Result<Option<&str>> {
    match mode {
        WriteMode::Append => Ok(None),
        WriteMode::Upsert { key } => match key.as_slice() {
            [one] => Ok(Some(one.as_str())),
            _ => Err(
                Error::invalid_input(format!("Salesforce upserts by one field, not {key:?}"))
                    .with_hint("use an external id field (or Id) as the key"),
            ),
        },
        WriteMode::Overwrite => Err(Error::new(
            ErrorKind::Unsupported,
            "a Salesforce object cannot be overwritten as a whole",
        )
        .with_hint("write with Upsert by an external id (and delete what is gone), or Append")),
    }
}

#[async_trait]
impl SyncSink for SalesforceSink {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        let key = key_field(mode)?;
        let describe = self.client.describe(&stream.name).await?;
        if let Some(key) = key.filter(|k| !k.eq_ignore_ascii_case("Id")) {
            let external = describe["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| {
                    f["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(key))
                        && f["externalId"] == Value::Bool(true)
                });
            if !external {
                return Err(Error::invalid_input(format!(
                    "{key} is not an external id field of {}",
                    stream.name
                ))
                .with_hint("mark the field as External ID in Salesforce, or upsert by Id"));
            }
        }
        Ok(())
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        let object = batch.stream.as_str();
        let key = key_field(mode)?;
        let fields = self.fields(object).await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        match key {
            Some(k) if !k.eq_ignore_ascii_case("Id") => {
                let items = batch
                    .records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i, Self::body(r, &fields, k)))
                    .collect();
                let op = IngestOperation::Upsert {
                    external_id: k.to_owned(),
                };
                self.apply(object, op, items, &mut outcomes).await?;
            }
            _ => {
                // By Id: records with one are updated, the others created.
                let by_id = key.is_some();
                let (mut updates, mut inserts) = (Vec::new(), Vec::new());
                for (i, r) in batch.records.iter().enumerate() {
                    let has_id = r
                        .get("Id")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty());
                    if by_id && has_id {
                        updates.push((i, Self::body(r, &fields, "Id")));
                    } else {
                        let mut body = Self::body(r, &fields, "");
                        if let Value::Object(m) = &mut body {
                            m.remove("Id");
                        }
                        inserts.push((i, body));
                    }
                }
                self.apply(object, IngestOperation::Update, updates, &mut outcomes)
                    .await?;
                self.apply(object, IngestOperation::Insert, inserts, &mut outcomes)
                    .await?;
            }
        }
        outcomes.sort_by_key(|o| o.index);
        let report = WriteReport::new(outcomes);
        report.check_complete(batch.len())?;
        Ok(report)
    }

    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        let field_name = match key {
            [one] if one.eq_ignore_ascii_case("Id") => one.as_str(),
            _ => {
                return Err(Error::invalid_input(format!(
                    "Salesforce records are deleted by Id, not {key:?}"
                )));
            }
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut items = Vec::new();
        for (i, r) in batch.records.iter().enumerate() {
            match r.get(field_name).and_then(Value::as_str) {
                Some(id) => items.push((i, json!({"Id": id}))),
                None => outcomes.push(RecordOutcome::failed(
                    i,
                    RecordFailure::new(FailureKind::InvalidInput, "the record has no Id to delete"),
                )),
            }
        }
        self.apply(&batch.stream, IngestOperation::Delete, items, &mut outcomes)
            .await?;
        outcomes.sort_by_key(|o| o.index);
        let report = WriteReport::new(outcomes);
        report.check_complete(batch.len())?;
        Ok(report)
    }

    /// Salesforce's delete is itself soft: the record goes to the Recycle Bin
    /// (`IsDeleted`, restorable for 15 days), so a soft delete is a delete.
    async fn soft_delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        self.delete(batch, key).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use super::*;

    #[test]
    fn both_datetime_spellings_parse_to_the_same_instant() {
        let rest = parse_datetime("2026-11-20T10:00:00.250+0000").unwrap();
        let bulk = parse_datetime("2026-11-20T10:00:00.250Z").unwrap();
        assert_eq!(rest, bulk);
        assert!(parse_datetime("yesterday").is_none());
    }

    #[test]
    fn positions_order_by_cursor_then_id_and_round_trip_through_state() {
        let a = Position {
            cursor: parse_datetime("2026-01-01T00:00:00.000Z"),
            id: "001B".into(),
        };
        let b = Position {
            cursor: parse_datetime("2026-01-01T00:00:00.000Z"),
            id: "001C".into(),
        };
        let c = Position {
            cursor: parse_datetime("2026-01-01T00:00:00.001Z"),
            id: "001A".into(),
        };
        assert!(a < b && b < c);
        // Borrowed from records, positions order the same way.
        let record = |at: &str, id: &str| -> Map<String, Value> {
            let Value::Object(m) = json!({"Id": id, "SystemModstamp": at}) else {
                unreachable!()
            };
            m
        };
        let records = [
            record("2026-01-01T00:00:00.000Z", "001B"),
            record("2026-01-01T00:00:00.000Z", "001C"),
            record("2026-01-01T00:00:00.001Z", "001A"),
        ];
        let keys: Vec<_> = records
            .iter()
            .map(|r| Position::key_of(r, Some("SystemModstamp")).unwrap())
            .collect();
        assert!(keys[0] < keys[1] && keys[1] < keys[2]);
        assert_eq!(
            Position::of(&records[2], Some("SystemModstamp")),
            Some(c.clone())
        );
        // Without a cursor (a full read), the id alone.
        assert!(Position::key_of(&records[2], None) < Position::key_of(&records[0], None));
        assert_eq!(Position::from_state(&c.state()).unwrap(), Some(c));
        assert!(Position::from_state(&json!({"cursor": 5, "id": "x"})).is_err());
    }

    #[test]
    fn bulk_pages_go_as_rows_unless_a_column_nests_and_their_furthest_position_counts() {
        use moodbridge_core::{Column, ColumnKind};
        let page = |names: &[&str], rows: &[[&str; 3]]| {
            let columns: Vec<Column> = names
                .iter()
                .map(|n| Column::new(*n, ColumnKind::Text))
                .collect();
            let mut batch = RowBatch::new("Contact", columns);
            for r in rows {
                batch
                    .push_row(r.iter().map(|t| (!t.is_empty()).then_some(*t)))
                    .unwrap();
            }
            batch
        };
        let rows = [
            ["003B", "2026-01-01T00:00:00.000Z", "Ann"],
            ["003C", "2026-01-01T00:00:00.000Z", ""],
            ["003A", "2026-01-01T00:00:00.001Z", "Bob"],
            ["003D", "", "no cursor"],
        ];
        let plain = page(&["Id", "SystemModstamp", "Name"], &rows);
        assert_eq!(
            Position::furthest_row(&plain, Some("SystemModstamp")),
            Some((parse_datetime("2026-01-01T00:00:00.001Z"), "003A"))
        );
        assert_eq!(Position::furthest_row(&plain, None), Some((None, "003D")));
        let messages = page_messages(plain.clone(), 3);
        let sizes: Vec<usize> = messages
            .iter()
            .map(|m| match m {
                SourceMessage::Rows(r) => r.len(),
                other => panic!("rows expected, got {other:?}"),
            })
            .collect();
        assert_eq!(sizes, [3, 1]);

        let nested = page(&["Id", "SystemModstamp", "Owner.Name"], &rows);
        let messages = page_messages(nested, 3);
        let SourceMessage::Records(first) = &messages[0] else {
            panic!("records expected, got {:?}", messages[0]);
        };
        assert_eq!(
            first.records[0].get("Owner"),
            Some(&json!({"Name": "Ann"})),
            "a parent's field nests, as in REST results"
        );
        assert_eq!(messages.len(), 2);
    }

    #[test]
    fn bulk_errors_become_record_failures_naming_code_and_fields() {
        let f = bulk_failure(
            "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --",
            false,
        );
        assert_eq!(f.kind, FailureKind::InvalidInput);
        assert_eq!(f.code.as_deref(), Some("REQUIRED_FIELD_MISSING"));
        assert_eq!(f.fields, ["Name"]);
        assert!(
            f.message.contains("Required fields are missing: [Name]"),
            "{}",
            f.message
        );
        assert_eq!(bulk_failure("x", true).kind, FailureKind::Temporary);
    }

    #[test]
    fn overwrite_and_compound_keys_are_refused_with_the_fix() {
        let e = key_field(&WriteMode::Overwrite).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        let e = key_field(&WriteMode::Upsert {
            key: vec!["A".into(), "B".into()],
        })
        .unwrap_err();
        assert!(e.hint().contains("external id"));
    }
}
