//! In-memory source and sink: doubles for engine tests and benchmarks, and a way to try a
//! pipeline without a platform.
//!
//! [`MemorySource`] reads streams in cursor order with the record id as tie-breaker, so
//! its incremental reads resume exactly after the last record of a checkpoint even when
//! many records share a cursor value. Streams hold records, or generate them on the fly
//! ([`MemorySource::accounts`]: Salesforce-shaped Accounts, ~600 bytes each, in constant
//! memory however many). Both doubles can inject faults: temporary errors, rate limits
//! and latency, from a seeded random generator so a failing run can be replayed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::catalog::{Catalog, FieldDescriptor, FieldType, StreamDescriptor};
use crate::engine::key_of;
use crate::error::{Error, Result};
use crate::record::{Record, RecordBatch};
use crate::rows::{Column, ColumnKind, RowBatch};
use crate::sync::{
    Checkpoint, FailureKind, ReadRequest, RecordFailure, RecordOutcome, SourceMessage,
    SourceStream, SyncSink, SyncSource, WriteAction, WriteMode, WriteReport,
};

/// Injected faults: each call (a source page, a sink write) fails with probability
/// `error_rate` — half as `Unavailable`, half as `RateLimited` with a short retry-after —
/// and takes `latency` (plus up to as much again at random).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Share of calls that fail with a temporary error, 0.0–1.0.
    pub error_rate: f64,
    /// Added time per call.
    pub latency: Duration,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Faults {
    /// No faults.
    pub const NONE: Faults = Faults {
        error_rate: 0.0,
        latency: Duration::ZERO,
        seed: 0,
    };
}

struct FaultGen {
    faults: Faults,
    rng: StdRng,
    injected: u64,
}

impl FaultGen {
    fn new(faults: Faults) -> Self {
        FaultGen {
            faults,
            rng: StdRng::seed_from_u64(faults.seed),
            injected: 0,
        }
    }

    /// The latency and the error (if any) of the next call.
    fn next(&mut self, what: &str) -> (Duration, Option<Error>) {
        let f = self.faults;
        let latency = if f.latency.is_zero() {
            Duration::ZERO
        } else {
            f.latency.mul_f64(1.0 + self.rng.random::<f64>())
        };
        if f.error_rate <= 0.0 || self.rng.random::<f64>() >= f.error_rate {
            return (latency, None);
        }
        self.injected += 1;
        let err = if self.rng.random::<bool>() {
            Error::unavailable(format!("injected fault: {what} unavailable"))
        } else {
            Error::rate_limited(
                format!("injected fault: {what} rate limited"),
                Some(Duration::from_millis(5)),
            )
        };
        (latency, Some(err))
    }
}

fn injected(faults: &Mutex<Option<FaultGen>>) -> u64 {
    faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map_or(0, |g| g.injected)
}

type Generator = Arc<dyn Fn(u64) -> Record + Send + Sync>;

/// What appends generated row `i` to a batch.
type RowPusher = Arc<dyn Fn(u64, &mut RowBatch) + Send + Sync>;

/// Generated rows: the columns, and what appends row `i` to a batch.
#[derive(Clone)]
struct RowGenerator {
    columns: Arc<[Column]>,
    push: RowPusher,
}

enum Data {
    Stored(Vec<Record>),
    Generated {
        count: u64,
        make: Generator,
        rows: Option<RowGenerator>,
    },
}

struct MemStream {
    descriptor: StreamDescriptor,
    data: Data,
}

/// An in-memory [`SyncSource`]. See the module docs.
///
/// ```
/// use moodbridge_core::testing::MemorySource;
/// use moodbridge_core::{Record, StreamDescriptor};
///
/// let source = MemorySource::new();
/// source.add_stream(StreamDescriptor::new("Case").primary_key(["Id"]).cursor("SystemModstamp"));
/// source.put("Case", Record::from_json(serde_json::json!({
///     "Id": "500A", "SystemModstamp": "2026-11-20T10:00:00.000Z", "Subject": "Hello"
/// })).unwrap());
/// assert_eq!(source.len("Case"), 1);
/// ```
#[derive(Clone, Default)]
pub struct MemorySource {
    streams: Arc<Mutex<BTreeMap<String, MemStream>>>,
    faults: Arc<Mutex<Option<FaultGen>>>,
}

impl std::fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySource").finish_non_exhaustive()
    }
}

/// The Salesforce-shaped Account stream of [`MemorySource::accounts`].
pub fn account_descriptor() -> StreamDescriptor {
    let s = |n: &str| FieldDescriptor::new(n, FieldType::String);
    StreamDescriptor::new("Account")
        .field(s("Id").required())
        .field(s("Name").required())
        .field(s("Type"))
        .field(s("Industry"))
        .field(s("BillingStreet"))
        .field(s("BillingCity"))
        .field(s("BillingState"))
        .field(s("BillingPostalCode"))
        .field(s("BillingCountry"))
        .field(s("Phone"))
        .field(s("Website"))
        .field(FieldDescriptor::new("AnnualRevenue", FieldType::Number))
        .field(FieldDescriptor::new(
            "NumberOfEmployees",
            FieldType::Integer,
        ))
        .field(s("Rating"))
        .field(s("Description"))
        .field(s("OwnerId"))
        .field(FieldDescriptor::new("IsDeleted", FieldType::Boolean))
        .field(FieldDescriptor::new("CreatedDate", FieldType::DateTime))
        .field(FieldDescriptor::new(
            "LastModifiedDate",
            FieldType::DateTime,
        ))
        .field(FieldDescriptor::new("SystemModstamp", FieldType::DateTime).required())
        .primary_key(["Id"])
        .cursor("SystemModstamp")
}

/// The values generated accounts cycle through.
const INDUSTRIES: [&str; 6] = [
    "Legal",
    "Banking",
    "Insurance",
    "Healthcare",
    "Government",
    "Technology",
];
const CITIES: [(&str, &str); 4] = [
    ("San Francisco", "CA"),
    ("New York", "NY"),
    ("Chicago", "IL"),
    ("Austin", "TX"),
];
const RATINGS: [&str; 3] = ["Hot", "Warm", "Cold"];

/// Account number `i` of [`MemorySource::accounts`]: deterministic, ~600 bytes as JSON.
/// Every four consecutive accounts share a `SystemModstamp` (ties on the cursor).
pub fn account(i: u64) -> Record {
    let (city, state) = CITIES[(i % 4) as usize];
    let rating = RATINGS[(i % 3) as usize];
    let base = UNIX_EPOCH + Duration::from_secs(1_763_600_000);
    let modstamp = stamp(base + Duration::from_secs(i / 4));
    let created = stamp(base - Duration::from_secs(86_400 + i % 86_400));
    let value = json!({
        "Id": format!("001{i:015}"),
        "Name": format!("Account {i} Holdings"),
        "Type": if i.is_multiple_of(3) { "Customer - Direct" } else { "Prospect" },
        "Industry": INDUSTRIES[(i % 6) as usize],
        "BillingStreet": format!("{} Market Street, Suite {}", 100 + i % 900, i % 50),
        "BillingCity": city,
        "BillingState": state,
        "BillingPostalCode": format!("{:05}", 10_000 + i % 89_999),
        "BillingCountry": "United States",
        "Phone": format!("(415) 555-{:04}", i % 10_000),
        "Website": format!("https://www.account{i}.example.com"),
        "AnnualRevenue": ((i % 1_000) * 125_000) as f64,
        "NumberOfEmployees": i % 5_000,
        "Rating": rating,
        "Description": "Long-standing client of the firm; litigation and contract review matters.",
        "OwnerId": format!("005{:015}", i % 20),
        "IsDeleted": false,
        "CreatedDate": created,
        "LastModifiedDate": modstamp,
        "SystemModstamp": modstamp,
    });
    Record::from_json(value).unwrap_or_default()
}

/// The columns of [`MemorySource::account_rows`]: [`account_descriptor`]'s fields, each
/// read as its type.
///
/// ```
/// use moodbridge_core::ColumnKind;
/// let columns = moodbridge_core::testing::account_columns();
/// assert_eq!(columns[0].name, "Id");
/// assert!(columns.iter().any(|c| c.name == "NumberOfEmployees" && c.kind == ColumnKind::Integer));
/// ```
pub fn account_columns() -> Vec<Column> {
    account_descriptor()
        .fields
        .iter()
        .map(|f| {
            let kind = match f.field_type {
                FieldType::Integer => ColumnKind::Integer,
                FieldType::Number => ColumnKind::Number,
                FieldType::Boolean => ColumnKind::Boolean,
                _ => ColumnKind::Text,
            };
            Column::new(f.name.clone(), kind)
        })
        .collect()
}

/// Append account number `i` ([`account`]) to `rows` (of [`account_columns`]) as a row,
/// writing each cell's text straight into the batch.
///
/// ```
/// use moodbridge_core::RowBatch;
/// use moodbridge_core::testing::{account, account_columns, push_account_row};
///
/// let mut rows = RowBatch::new("Account", account_columns());
/// push_account_row(7, &mut rows);
/// assert_eq!(rows.row(0).unwrap().to_record(), account(7));
/// ```
///
/// # Panics
/// If the batch passes 2 GiB of text: a batch of accounts is far smaller.
pub fn push_account_row(i: u64, rows: &mut RowBatch) {
    use std::fmt::Write as _;
    let (city, state) = CITIES[(i % 4) as usize];
    let base = UNIX_EPOCH + Duration::from_secs(1_763_600_000);
    let modstamp = humantime::format_rfc3339_millis(base + Duration::from_secs(i / 4));
    let created = humantime::format_rfc3339_millis(base - Duration::from_secs(86_400 + i % 86_400));
    let mut fits = true;
    let mut cell = |write: &dyn Fn(&mut String)| fits &= rows.push_text_cell(|t| write(t));
    cell(&|t| {
        let _ = write!(t, "001{i:015}");
    });
    cell(&|t| {
        let _ = write!(t, "Account {i} Holdings");
    });
    cell(&|t| {
        t.push_str(if i.is_multiple_of(3) {
            "Customer - Direct"
        } else {
            "Prospect"
        });
    });
    cell(&|t| t.push_str(INDUSTRIES[(i % 6) as usize]));
    cell(&|t| {
        let _ = write!(t, "{} Market Street, Suite {}", 100 + i % 900, i % 50);
    });
    cell(&|t| t.push_str(city));
    cell(&|t| t.push_str(state));
    cell(&|t| {
        let _ = write!(t, "{:05}", 10_000 + i % 89_999);
    });
    cell(&|t| t.push_str("United States"));
    cell(&|t| {
        let _ = write!(t, "(415) 555-{:04}", i % 10_000);
    });
    cell(&|t| {
        let _ = write!(t, "https://www.account{i}.example.com");
    });
    cell(&|t| {
        let _ = write!(t, "{}", ((i % 1_000) * 125_000) as f64);
    });
    cell(&|t| {
        let _ = write!(t, "{}", i % 5_000);
    });
    cell(&|t| t.push_str(RATINGS[(i % 3) as usize]));
    cell(&|t| {
        t.push_str("Long-standing client of the firm; litigation and contract review matters.");
    });
    cell(&|t| {
        let _ = write!(t, "005{:015}", i % 20);
    });
    cell(&|t| t.push_str("false"));
    cell(&|t| {
        let _ = write!(t, "{created}");
    });
    cell(&|t| {
        let _ = write!(t, "{modstamp}");
    });
    cell(&|t| {
        let _ = write!(t, "{modstamp}");
    });
    assert!(fits, "a batch of accounts passed 2 GiB of text");
}

fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl MemorySource {
    /// A source with no streams.
    pub fn new() -> Self {
        Self::default()
    }

    /// A source with one stream, `Account`, of `count` generated accounts ([`account`]).
    pub fn accounts(count: u64) -> Self {
        let source = Self::new();
        source.add_generated(account_descriptor(), count, account);
        source
    }

    /// As [`accounts`](Self::accounts), the stream yielding its records as rows
    /// ([`SourceMessage::Rows`]), as a source whose results come as a table does.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use futures::StreamExt;
    /// use moodbridge_core::testing::{MemorySource, account};
    /// use moodbridge_core::{ReadRequest, SourceMessage, SyncMode, SyncSource};
    ///
    /// let source = MemorySource::account_rows(3);
    /// let mut read = source.read(ReadRequest::new("Account", SyncMode::FullRefresh)).await.unwrap();
    /// let Some(Ok(SourceMessage::Rows(rows))) = read.next().await else { panic!("rows first") };
    /// assert_eq!(rows.len(), 3);
    /// assert_eq!(rows.row(2).unwrap().to_record(), account(2));
    /// # });
    /// ```
    pub fn account_rows(count: u64) -> Self {
        let source = Self::new();
        source.add_generated_rows(
            account_descriptor(),
            count,
            account,
            account_columns(),
            push_account_row,
        );
        source
    }

    /// Add (or replace) an empty stream of stored records.
    pub fn add_stream(&self, descriptor: StreamDescriptor) {
        self.lock().insert(
            descriptor.name.clone(),
            MemStream {
                descriptor,
                data: Data::Stored(Vec::new()),
            },
        );
    }

    /// Add (or replace) a stream of `count` records made by `make(index)`. The records
    /// must come out in cursor order (then id order) by index.
    pub fn add_generated(
        &self,
        descriptor: StreamDescriptor,
        count: u64,
        make: impl Fn(u64) -> Record + Send + Sync + 'static,
    ) {
        self.insert_generated(descriptor, count, Arc::new(make), None);
    }

    /// As [`add_generated`](Self::add_generated), the stream read as rows of `columns`:
    /// `push(i, batch)` appends record `i` as a row, its cells' values those of
    /// `make(i)` (which still serves the checkpoints). Generated rows are never deleted.
    ///
    /// ```
    /// use moodbridge_core::testing::MemorySource;
    /// use moodbridge_core::{Column, ColumnKind, Record, StreamDescriptor};
    ///
    /// let source = MemorySource::new();
    /// source.add_generated_rows(
    ///     StreamDescriptor::new("Number").primary_key(["n"]),
    ///     10,
    ///     |i| Record::from_json(serde_json::json!({ "n": i })).unwrap(),
    ///     vec![Column::new("n", ColumnKind::Integer)],
    ///     |i, rows| rows.push_row([Some(i.to_string().as_str())]).unwrap(),
    /// );
    /// assert_eq!(source.len("Number"), 10);
    /// ```
    pub fn add_generated_rows(
        &self,
        descriptor: StreamDescriptor,
        count: u64,
        make: impl Fn(u64) -> Record + Send + Sync + 'static,
        columns: Vec<Column>,
        push: impl Fn(u64, &mut RowBatch) + Send + Sync + 'static,
    ) {
        let rows = RowGenerator {
            columns: columns.into(),
            push: Arc::new(push),
        };
        self.insert_generated(descriptor, count, Arc::new(make), Some(rows));
    }

    fn insert_generated(
        &self,
        descriptor: StreamDescriptor,
        count: u64,
        make: Generator,
        rows: Option<RowGenerator>,
    ) {
        self.lock().insert(
            descriptor.name.clone(),
            MemStream {
                descriptor,
                data: Data::Generated { count, make, rows },
            },
        );
    }

    /// Insert or replace (by primary key) a record of a stored stream.
    ///
    /// # Panics
    /// If the stream does not exist or is generated: a test set-up mistake.
    pub fn put(&self, stream: &str, record: Record) {
        let mut streams = self.lock();
        let s = streams
            .get_mut(stream)
            .unwrap_or_else(|| panic!("MemorySource has no stream {stream}"));
        let key = s.descriptor.primary_key.clone();
        let Data::Stored(records) = &mut s.data else {
            panic!("stream {stream} is generated; records cannot be put into it")
        };
        let k = record.key(&key);
        match records.iter_mut().find(|r| k.is_some() && r.key(&key) == k) {
            Some(existing) => *existing = record,
            None => records.push(record),
        }
    }

    /// Delete the stored record with key text `key` as a platform does: it stays, marked
    /// ([`DELETED`](crate::DELETED)), its cursor field set to `at`, so that an
    /// incremental read after it reports a tombstone ([`SourceMessage::Deletes`]) and a
    /// full read leaves it out. Returns whether the record was there.
    ///
    /// ```
    /// use moodbridge_core::testing::MemorySource;
    /// use moodbridge_core::{Record, StreamDescriptor};
    /// let source = MemorySource::new();
    /// source.add_stream(StreamDescriptor::new("Case").primary_key(["Id"]).cursor("At"));
    /// source.put("Case", Record::from_json(serde_json::json!({"Id": "500A", "At": "1"})).unwrap());
    /// assert!(source.delete("Case", "500A", "2".into()));
    /// assert_eq!(source.len("Case"), 0);
    /// ```
    ///
    /// # Panics
    /// If the stream does not exist or is generated: a test set-up mistake.
    pub fn delete(&self, stream: &str, key: &str, at: Value) -> bool {
        let mut streams = self.lock();
        let s = streams
            .get_mut(stream)
            .unwrap_or_else(|| panic!("MemorySource has no stream {stream}"));
        let primary = s.descriptor.primary_key.clone();
        let cursor = s.descriptor.cursor_field.clone();
        let Data::Stored(records) = &mut s.data else {
            panic!("stream {stream} is generated; its records cannot be deleted")
        };
        match records
            .iter_mut()
            .find(|r| r.key(&primary).is_some_and(|k| k.to_string() == key))
        {
            Some(record) => {
                record.set(crate::DELETED, Value::Bool(true));
                record.set(crate::DELETED_AT, at.clone());
                if let Some(c) = cursor {
                    record.set(c, at);
                }
                true
            }
            None => false,
        }
    }

    /// Live records in the stream.
    pub fn len(&self, stream: &str) -> usize {
        match self.lock().get(stream).map(|s| &s.data) {
            Some(Data::Stored(r)) => r.iter().filter(|r| !is_deleted(r)).count(),
            Some(Data::Generated { count, .. }) => usize::try_from(*count).unwrap_or(usize::MAX),
            None => 0,
        }
    }

    /// `true` when the stream has no records.
    pub fn is_empty(&self, stream: &str) -> bool {
        self.len(stream) == 0
    }

    /// A copy of a stored stream's records (empty for a generated one).
    pub fn records(&self, stream: &str) -> Vec<Record> {
        match self.lock().get(stream).map(|s| &s.data) {
            Some(Data::Stored(r)) => r.clone(),
            _ => Vec::new(),
        }
    }

    /// Inject `faults` into every later call.
    pub fn inject(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = Some(FaultGen::new(faults));
    }

    /// Errors injected so far.
    pub fn injected(&self) -> u64 {
        injected(&self.faults)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MemStream>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fault(&self, what: &str) -> (Duration, Option<Error>) {
        match &mut *self.faults.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(gen_) => gen_.next(what),
            None => (Duration::ZERO, None),
        }
    }
}

/// Where a read resumes: after (cursor, id), or after a position for streams without a
/// cursor.
fn position_after(state: &Value) -> (Option<Value>, Option<String>, u64) {
    (
        state.get("cursor").cloned(),
        state.get("id").and_then(Value::as_str).map(str::to_owned),
        state.get("offset").and_then(Value::as_u64).unwrap_or(0),
    )
}

/// Whether a stored record of a [`MemorySource`] was deleted.
fn is_deleted(record: &Record) -> bool {
    record.get(crate::DELETED) == Some(&Value::Bool(true))
}

/// Order of JSON values as cursors: numbers numerically, strings lexically (RFC 3339
/// times with a fixed format sort correctly as text), null first.
fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

struct ReadPlan {
    stream: String,
    /// Whether deleted records are reported (incremental) or left out (full).
    incremental: bool,
    cursor: Option<String>,
    key: Vec<String>,
    batch: usize,
    records: ReadData,
}

enum ReadData {
    Stored(std::vec::IntoIter<Record>),
    Generated {
        next: u64,
        count: u64,
        make: Generator,
        rows: Option<RowGenerator>,
    },
}

/// A batch read: records, or rows with the last one's record (for the checkpoint).
enum ReadBatch {
    Records(Vec<Record>),
    Rows(RowBatch, Record),
}

impl ReadPlan {
    /// The next batch; `None` at the end.
    fn next_batch(&mut self) -> Option<ReadBatch> {
        match &mut self.records {
            ReadData::Stored(it) => {
                let records: Vec<Record> = it.by_ref().take(self.batch).collect();
                (!records.is_empty()).then_some(ReadBatch::Records(records))
            }
            ReadData::Generated {
                next,
                count,
                make,
                rows,
            } => {
                let end = (*next + self.batch as u64).min(*count);
                if end == *next {
                    return None;
                }
                let range = *next..end;
                *next = end;
                Some(match rows {
                    None => ReadBatch::Records(range.map(|i| make(i)).collect()),
                    Some(generator) => {
                        let mut batch = RowBatch::with_capacity(
                            &self.stream,
                            generator.columns.clone(),
                            (end - range.start) as usize,
                            (end - range.start) as usize * generator.columns.len() * 16,
                        );
                        for i in range {
                            (generator.push)(i, &mut batch);
                        }
                        ReadBatch::Rows(batch, make(end - 1))
                    }
                })
            }
        }
    }

    /// A deleted record's tombstone: its key fields and time of deletion.
    fn tombstone(&self, record: &Record) -> Record {
        let mut t = Record::new();
        for k in &self.key {
            t.set(k, record.get(k).cloned().unwrap_or_default());
        }
        t.set(
            crate::DELETED_AT,
            record.get(crate::DELETED_AT).cloned().unwrap_or_default(),
        );
        t
    }

    fn checkpoint_after(&self, last: &Record, offset: u64) -> Checkpoint {
        let state = match &self.cursor {
            Some(c) => json!({
                "cursor": last.get(c).cloned().unwrap_or(Value::Null),
                "id": key_of(last, &self.key),
            }),
            None => json!({ "offset": offset }),
        };
        Checkpoint::new(&self.stream, state)
    }
}

#[async_trait]
impl SyncSource for MemorySource {
    async fn discover(&self) -> Result<Catalog> {
        let (latency, err) = self.fault("discover");
        pause(latency).await;
        if let Some(e) = err {
            return Err(e);
        }
        Ok(Catalog::new(
            self.lock().values().map(|s| s.descriptor.clone()).collect(),
        ))
    }

    async fn count_hint(&self, request: &ReadRequest) -> Result<Option<u64>> {
        Ok(match request.checkpoint {
            None => Some(self.len(&request.stream) as u64),
            Some(_) => None,
        })
    }

    async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
        let (latency, err) = self.fault("read");
        pause(latency).await;
        if let Some(e) = err {
            return Err(e);
        }
        let (plan, start_offset) = {
            let streams = self.lock();
            let s = streams.get(&request.stream).ok_or_else(|| {
                Error::not_found(format!("MemorySource has no stream {}", request.stream))
            })?;
            request.check_against(&s.descriptor)?;
            let key = s.descriptor.primary_key.clone();
            let cursor = s.descriptor.cursor_field.clone();
            let (after_cursor, after_id, after_offset) = request
                .checkpoint
                .as_ref()
                .map(|c| position_after(&c.state))
                .unwrap_or((None, None, 0));
            let after = |r: &Record| -> bool {
                match (&cursor, &after_cursor) {
                    (Some(c), Some(ac)) => {
                        let v = r.get(c).unwrap_or(&Value::Null);
                        match cmp_values(v, ac) {
                            Ordering::Greater => true,
                            Ordering::Less => false,
                            Ordering::Equal => after_id
                                .as_deref()
                                .is_none_or(|id| key_of(r, &key).as_str() > id),
                        }
                    }
                    _ => true,
                }
            };
            let (records, offset) = match &s.data {
                Data::Stored(all) => {
                    let mut sorted: Vec<Record> = all.clone();
                    if let Some(c) = &cursor {
                        sorted.sort_by(|a, b| {
                            cmp_values(
                                a.get(c).unwrap_or(&Value::Null),
                                b.get(c).unwrap_or(&Value::Null),
                            )
                            .then_with(|| key_of(a, &key).cmp(&key_of(b, &key)))
                        });
                    }
                    let skip = if cursor.is_some() {
                        0
                    } else {
                        after_offset as usize
                    };
                    let rest: Vec<Record> =
                        sorted.into_iter().skip(skip).filter(|r| after(r)).collect();
                    (ReadData::Stored(rest.into_iter()), after_offset)
                }
                Data::Generated { count, make, rows } => {
                    // Generated records are in (cursor, id) order by index: binary search.
                    let start = if cursor.is_some() && after_cursor.is_some() {
                        let (mut lo, mut hi) = (0u64, *count);
                        while lo < hi {
                            let mid = lo + (hi - lo) / 2;
                            if after(&make(mid)) {
                                hi = mid;
                            } else {
                                lo = mid + 1;
                            }
                        }
                        lo
                    } else {
                        after_offset.min(*count)
                    };
                    (
                        ReadData::Generated {
                            next: start,
                            count: *count,
                            make: make.clone(),
                            rows: rows.clone(),
                        },
                        start,
                    )
                }
            };
            (
                ReadPlan {
                    stream: request.stream.clone(),
                    incremental: request.mode == crate::SyncMode::Incremental,
                    cursor,
                    key,
                    batch: request.batch_size,
                    records,
                },
                offset,
            )
        };
        let source = self.clone();
        let stream = futures::stream::unfold(
            (plan, start_offset, VecDeque::<SourceMessage>::new()),
            move |(mut plan, offset, mut pending)| {
                let source = source.clone();
                async move {
                    if let Some(message) = pending.pop_front() {
                        return Some((Ok(message), (plan, offset, pending)));
                    }
                    let (latency, err) = source.fault("page");
                    pause(latency).await;
                    if let Some(e) = err {
                        return Some((Err(e), (plan, offset, pending)));
                    }
                    let records = match plan.next_batch()? {
                        ReadBatch::Records(records) => records,
                        ReadBatch::Rows(rows, last) => {
                            let offset = offset + rows.len() as u64;
                            let cp = plan.checkpoint_after(&last, offset);
                            pending.push_back(SourceMessage::Checkpoint(cp));
                            return Some((Ok(SourceMessage::Rows(rows)), (plan, offset, pending)));
                        }
                    };
                    let last = records.last()?.clone();
                    let offset = offset + records.len() as u64;
                    let cp = plan.checkpoint_after(&last, offset);
                    let (gone, live): (Vec<Record>, Vec<Record>) =
                        records.into_iter().partition(is_deleted);
                    if !live.is_empty() {
                        pending.push_back(SourceMessage::Records(RecordBatch::new(
                            &plan.stream,
                            live,
                        )));
                    }
                    if plan.incremental && !gone.is_empty() {
                        let tombstones = gone.iter().map(|r| plan.tombstone(r)).collect();
                        pending.push_back(SourceMessage::Deletes(RecordBatch::new(
                            &plan.stream,
                            tombstones,
                        )));
                    }
                    pending.push_back(SourceMessage::Checkpoint(cp));
                    let first = pending.pop_front()?;
                    Some((Ok(first), (plan, offset, pending)))
                }
            },
        );
        // A broken stream ends after its error (the engine reopens it).
        let mut failed = false;
        Ok(stream
            .take_while(move |m| {
                let go = !failed;
                failed = m.is_err();
                futures::future::ready(go)
            })
            .boxed())
    }
}

type Rejector = Arc<dyn Fn(&Record) -> Option<String> + Send + Sync>;

#[derive(Default)]
struct SinkState {
    tables: HashMap<String, BTreeMap<String, Record>>,
    /// Each stream's primary key, from `begin_stream`: appends keep records by it.
    keys: HashMap<String, Vec<String>>,
    staged: HashMap<String, BTreeMap<String, Record>>,
    appended: u64,
    writes: u64,
}

/// An in-memory [`SyncSink`]: upserts by key (reporting created / updated / unchanged
/// and the before-image), appends, stages an overwrite until `commit_stream`, deletes.
/// A rejector makes it refuse chosen records, for dead-letter tests.
#[derive(Clone, Default)]
pub struct MemorySink {
    state: Arc<Mutex<SinkState>>,
    reject: Arc<Mutex<Option<Rejector>>>,
    faults: Arc<Mutex<Option<FaultGen>>>,
}

impl std::fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySink").finish_non_exhaustive()
    }
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuse records for which `reject` returns a reason (`None` accepts everything).
    pub fn reject_when(&self, reject: Option<Rejector>) {
        *self.reject.lock().unwrap_or_else(PoisonError::into_inner) = reject;
    }

    /// Inject `faults` into every later write.
    pub fn inject(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = Some(FaultGen::new(faults));
    }

    /// Errors injected so far.
    pub fn injected(&self) -> u64 {
        injected(&self.faults)
    }

    /// Records in `stream`.
    pub fn len(&self, stream: &str) -> usize {
        self.lock().tables.get(stream).map_or(0, BTreeMap::len)
    }

    /// `true` when `stream` holds no records.
    pub fn is_empty(&self, stream: &str) -> bool {
        self.len(stream) == 0
    }

    /// The record of `stream` with key text `key`.
    pub fn get(&self, stream: &str, key: &str) -> Option<Record> {
        self.lock().tables.get(stream)?.get(key).cloned()
    }

    /// `stream`'s records by key text.
    pub fn snapshot(&self, stream: &str) -> BTreeMap<String, Record> {
        self.lock().tables.get(stream).cloned().unwrap_or_default()
    }

    /// Calls to `write` that reached the sink (faults included).
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl SyncSink for MemorySink {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        let mut s = self.lock();
        s.tables.entry(stream.name.clone()).or_default();
        s.keys
            .insert(stream.name.clone(), stream.primary_key.clone());
        if *mode == WriteMode::Overwrite {
            s.staged.insert(stream.name.clone(), BTreeMap::new());
        }
        Ok(())
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        let (latency, err) = match &mut *self.faults.lock().unwrap_or_else(PoisonError::into_inner)
        {
            Some(g) => g.next("write"),
            None => (Duration::ZERO, None),
        };
        pause(latency).await;
        self.lock().writes += 1;
        if let Some(e) = err {
            return Err(e);
        }
        let reject = self
            .reject
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut guard = self.lock();
        let s = &mut *guard;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (index, record) in batch.records.iter().enumerate() {
            if let Some(reason) = reject.as_ref().and_then(|r| r(record)) {
                outcomes.push(RecordOutcome::failed(
                    index,
                    RecordFailure::new(FailureKind::InvalidInput, reason),
                ));
                continue;
            }
            let outcome = match mode {
                WriteMode::Upsert { key } => {
                    let Some(k) = record.key(key) else {
                        outcomes.push(RecordOutcome::failed(
                            index,
                            RecordFailure::new(
                                FailureKind::InvalidInput,
                                format!("the record has no value for key {}", key.join(", ")),
                            ),
                        ));
                        continue;
                    };
                    let table = s.tables.entry(batch.stream.clone()).or_default();
                    match table.insert(k.to_string(), record.clone()) {
                        None => RecordOutcome::ok(index, WriteAction::Created),
                        Some(old) if old == *record => {
                            RecordOutcome::ok(index, WriteAction::Unchanged).with_before(old)
                        }
                        Some(old) => {
                            RecordOutcome::ok(index, WriteAction::Updated).with_before(old)
                        }
                    }
                    .with_key(k)
                }
                WriteMode::Append => {
                    // A keyed stream holds one record per key, as a table with a primary
                    // key does; a stream without one keeps every record.
                    let key = s.keys.get(&batch.stream).filter(|k| !k.is_empty());
                    let k = match key.map(|k| record.key(k)) {
                        Some(Some(k)) => k.to_string(),
                        Some(None) => {
                            outcomes.push(RecordOutcome::failed(
                                index,
                                RecordFailure::new(
                                    FailureKind::InvalidInput,
                                    "the record has no value for the stream's key",
                                ),
                            ));
                            continue;
                        }
                        None => {
                            s.appended += 1;
                            format!("{:020}", s.appended)
                        }
                    };
                    match s.tables.entry(batch.stream.clone()).or_default().entry(k) {
                        std::collections::btree_map::Entry::Occupied(taken) => {
                            RecordOutcome::failed(
                                index,
                                RecordFailure::new(
                                    FailureKind::Conflict,
                                    format!("a record with key {} already exists", taken.key()),
                                ),
                            )
                        }
                        std::collections::btree_map::Entry::Vacant(free) => {
                            free.insert(record.clone());
                            RecordOutcome::ok(index, WriteAction::Created)
                        }
                    }
                }
                WriteMode::Overwrite => {
                    s.appended += 1;
                    let k = key_of(record, &[]);
                    s.staged
                        .entry(batch.stream.clone())
                        .or_default()
                        .insert(k, record.clone());
                    RecordOutcome::ok(index, WriteAction::Created)
                }
            };
            outcomes.push(outcome);
        }
        Ok(WriteReport::new(outcomes))
    }

    async fn commit_stream(&self, stream: &str, mode: &WriteMode) -> Result<()> {
        if *mode == WriteMode::Overwrite {
            let mut s = self.lock();
            let staged = s.staged.remove(stream).unwrap_or_default();
            s.tables.insert(stream.to_owned(), staged);
        }
        Ok(())
    }

    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        let mut s = self.lock();
        let table = s.tables.entry(batch.stream.clone()).or_default();
        let outcomes = batch
            .records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                match record
                    .key(key)
                    .and_then(|k| table.remove(&k.to_string()).map(|old| (k, old)))
                {
                    Some((k, old)) => RecordOutcome::ok(index, WriteAction::Deleted)
                        .with_key(k)
                        .with_before(old),
                    None => RecordOutcome::failed(
                        index,
                        RecordFailure::new(FailureKind::NotFound, "no such record"),
                    ),
                }
            })
            .collect();
        Ok(WriteReport::new(outcomes))
    }

    async fn soft_delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        let mut s = self.lock();
        let table = s.tables.entry(batch.stream.clone()).or_default();
        let now = stamp(SystemTime::now());
        let outcomes = batch
            .records
            .iter()
            .enumerate()
            .map(|(index, tombstone)| {
                let Some(k) = tombstone.key(key) else {
                    return RecordOutcome::failed(
                        index,
                        RecordFailure::new(
                            FailureKind::InvalidInput,
                            "the tombstone lacks its key",
                        ),
                    );
                };
                let Some(held) = table.get_mut(&k.to_string()) else {
                    return RecordOutcome::failed(
                        index,
                        RecordFailure::new(FailureKind::NotFound, "no such record"),
                    );
                };
                if held.get(crate::DELETED) == Some(&Value::Bool(true)) {
                    return RecordOutcome::ok(index, WriteAction::Unchanged).with_key(k);
                }
                let before = held.clone();
                let at = tombstone
                    .get(crate::DELETED_AT)
                    .filter(|v| !v.is_null())
                    .cloned()
                    .unwrap_or_else(|| now.clone().into());
                held.set(crate::DELETED, Value::Bool(true));
                held.set(crate::DELETED_AT, at);
                RecordOutcome::ok(index, WriteAction::Deleted)
                    .with_key(k)
                    .with_before(before)
            })
            .collect();
        Ok(WriteReport::new(outcomes))
    }
}

/// A system that is both a source and a sink, like a platform: stored streams read
/// incrementally by their cursor, written by upsert (fields merged into the existing
/// record), every write stamping the cursor field from a logical clock the way a
/// platform maintains its own modification stamps. For bidirectional-sync tests and
/// examples; two systems can share one clock ([`MemorySystem::sharing_clock_with`]) so
/// their stamps compare.
///
/// ```
/// use moodbridge_core::testing::MemorySystem;
/// use moodbridge_core::{Record, StreamDescriptor};
///
/// let crm = MemorySystem::new();
/// crm.add_stream(StreamDescriptor::new("Account").primary_key(["Id"]).cursor("SystemModstamp"));
/// crm.edit("Account", Record::from_json(serde_json::json!({"Id": "001", "Name": "Acme"})).unwrap());
/// let stored = crm.get("Account", "001").unwrap();
/// assert!(stored.get("SystemModstamp").is_some(), "stamped on write");
/// ```
#[derive(Clone, Default)]
pub struct MemorySystem {
    store: MemorySource,
    clock: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for MemorySystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySystem").finish_non_exhaustive()
    }
}

impl MemorySystem {
    /// An empty system with its own clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty system whose stamps come from `other`'s clock.
    pub fn sharing_clock_with(other: &MemorySystem) -> Self {
        MemorySystem {
            store: MemorySource::new(),
            clock: other.clock.clone(),
        }
    }

    /// Add (or replace) an empty stream; its cursor field is stamped on every write.
    pub fn add_stream(&self, descriptor: StreamDescriptor) {
        self.store.add_stream(descriptor);
    }

    /// A person's change: merge `record`'s fields into the stored record with its key
    /// (or add it), stamping the cursor.
    pub fn edit(&self, stream: &str, record: Record) {
        self.upsert(stream, record);
    }

    /// The record of `stream` whose primary key text is `key`.
    pub fn get(&self, stream: &str, key: &str) -> Option<Record> {
        let pk = self.descriptor(stream)?.primary_key;
        self.store
            .records(stream)
            .into_iter()
            .find(|r| r.key(&pk).is_some_and(|k| k.to_string() == key))
    }

    /// Every record of `stream`.
    pub fn records(&self, stream: &str) -> Vec<Record> {
        self.store.records(stream)
    }

    fn descriptor(&self, stream: &str) -> Option<StreamDescriptor> {
        self.store.lock().get(stream).map(|s| s.descriptor.clone())
    }

    fn stamp(&self) -> String {
        let n = self.clock.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        stamp(UNIX_EPOCH + Duration::from_secs(1_763_600_000) + Duration::from_millis(n))
    }

    /// Upsert by primary key; `(action, before)`.
    fn upsert(&self, stream: &str, record: Record) -> Option<(WriteAction, Option<Record>)> {
        let d = self.descriptor(stream)?;
        let key = record.key(&d.primary_key)?;
        let before = self.get(stream, &key.to_string());
        let mut merged = before.clone().unwrap_or_default();
        for (k, v) in record.fields() {
            merged.set(k.clone(), v.clone());
        }
        if before.as_ref() == Some(&merged) {
            return Some((WriteAction::Unchanged, before));
        }
        if let Some(c) = &d.cursor_field {
            merged.set(c.clone(), Value::String(self.stamp()));
        }
        self.store.put(stream, merged);
        let action = if before.is_some() {
            WriteAction::Updated
        } else {
            WriteAction::Created
        };
        Some((action, before))
    }
}

#[async_trait]
impl SyncSource for MemorySystem {
    async fn discover(&self) -> Result<Catalog> {
        self.store.discover().await
    }

    async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
        self.store.read(request).await
    }
}

#[async_trait]
impl SyncSink for MemorySystem {
    async fn write(&self, batch: &RecordBatch, _mode: &WriteMode) -> Result<WriteReport> {
        Ok(WriteReport::new(
            batch
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| match self.upsert(&batch.stream, r.clone()) {
                    Some((action, Some(before))) => {
                        RecordOutcome::ok(i, action).with_before(before)
                    }
                    Some((action, None)) => RecordOutcome::ok(i, action),
                    None => RecordOutcome::failed(
                        i,
                        RecordFailure::new(
                            FailureKind::InvalidInput,
                            "no such stream, or the record has no key",
                        ),
                    ),
                })
                .collect(),
        ))
    }
}

/// Wait `d` on the tokio clock (the doubles' injected latency).
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}
