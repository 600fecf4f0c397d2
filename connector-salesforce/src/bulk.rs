//! Bulk API 2.0: ingest (insert / update / upsert / delete / hardDelete) of record streams
//! of any size, and queries whose results stream page by page.
//!
//! **Ingest.** Records are written as CSV to a spool file on disk — never the whole data
//! set in memory — and a job is sealed whenever the next record would take it over
//! [`IngestOptions::max_job_bytes`] (Salesforce takes at most 150 MB base64, i.e. ~100 MB
//! of CSV, per job). Sealed jobs run in parallel (at most
//! [`IngestOptions::parallel_jobs`]; reading the input waits while they are busy): create,
//! upload (streamed from the spool, retried under the client's policy), `UploadComplete`,
//! poll with backoff, then the successful, failed and unprocessed results are downloaded
//! and matched back to the input records, so every input record gets exactly one
//! [`RecordOutcome`]. Dropping the ingest future aborts the jobs still open or running.
//!
//! ```no_run
//! # async fn run(sf: connector_salesforce::client::SalesforceClient) -> moodbridge_core::Result<()> {
//! use connector_salesforce::bulk::{IngestOperation, IngestOptions};
//! use serde_json::json;
//!
//! let records = futures::stream::iter((0..250_000).map(|i| json!({"Name": format!("Client {i}"), "Docket__c": format!("D-{i}")})));
//! let report = sf
//!     .bulk_ingest("Account", IngestOperation::Upsert { external_id: "Docket__c".into() }, records, &IngestOptions::default())
//!     .await?;
//! println!("{} ok, {} failed", report.succeeded, report.failed);
//! for o in report.outcomes.iter().filter(|o| o.error.is_some()) {
//!     println!("record {}: {}", o.index, o.error.as_deref().unwrap_or_default());
//! }
//! # Ok(()) }
//! ```
//!
//! **Query.** [`SalesforceClient::bulk_query`] creates a query job, polls it, and streams
//! the result pages (`Sforce-Locator`): the next page is fetched and parsed while the
//! current one is consumed (two pages in memory at most, whatever the result's size), records typed
//! by the object's describe (booleans and numbers as JSON), relationship paths
//! (`Account.Name`) nested as the REST API nests them, empty cells as null.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use moodbridge_core::observe::op::salesforce as op;
use moodbridge_core::{Column, ColumnKind, Error, ErrorKind, Result, Row, RowBatch};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::client::{RequestBody, SalesforceClient, check_id, check_name};

/// What an ingest job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOperation {
    /// Create records.
    Insert,
    /// Update records by `Id`.
    Update,
    /// Create or update by an external id field.
    Upsert {
        /// The external id field (or `Id`).
        external_id: String,
    },
    /// Soft-delete records by `Id` (to the recycle bin).
    Delete,
    /// Delete records by `Id` for good (needs the "Bulk API Hard Delete" permission).
    HardDelete,
}

impl IngestOperation {
    fn as_str(&self) -> &'static str {
        match self {
            IngestOperation::Insert => "insert",
            IngestOperation::Update => "update",
            IngestOperation::Upsert { .. } => "upsert",
            IngestOperation::Delete => "delete",
            IngestOperation::HardDelete => "hardDelete",
        }
    }
}

/// How job states are polled.
#[derive(Debug, Clone, PartialEq)]
pub struct PollOptions {
    /// First wait between polls.
    pub initial: Duration,
    /// Longest wait between polls (the wait grows by half each time).
    pub max: Duration,
    /// How long to wait for a job at most. When it passes, the job is *not* failed: the
    /// call returns a `Timeout` error naming the job, which is still running at Salesforce.
    pub timeout: Duration,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Options of [`SalesforceClient::bulk_ingest`].
#[derive(Debug, Clone, PartialEq)]
pub struct IngestOptions {
    /// Largest CSV upload per job (default and most: [`MAX_JOB_BYTES`], 100 MB:
    /// Salesforce's 150 MB limit counts the data after base64 encoding).
    pub max_job_bytes: u64,
    /// Jobs running at once (default 3).
    pub parallel_jobs: usize,
    /// Polling of the jobs' states.
    pub poll: PollOptions,
    /// The CSV columns. `None`: the fields of the first record (`attributes` left out).
    /// A later record with a field outside the columns gets a failed outcome, and is not
    /// sent.
    pub columns: Option<Vec<String>>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_job_bytes: MAX_JOB_BYTES,
            parallel_jobs: 3,
            poll: PollOptions::default(),
            columns: None,
        }
    }
}

/// What became of one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordState {
    /// Salesforce processed it.
    Succeeded,
    /// Salesforce (or the SDK, before sending) refused it; see `error`.
    Failed,
    /// Not processed: its job was aborted or failed as a whole. Safe to send again.
    Unprocessed,
}

/// The outcome of one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    /// Its position in the input (0-based).
    pub index: u64,
    /// What happened.
    pub state: RecordState,
    /// The job it went in (`None` when refused before sending).
    pub job_id: Option<String>,
    /// The record's id (created or affected), when Salesforce gave one.
    pub id: Option<String>,
    /// Whether a record was created (insert, or an upsert that inserted).
    pub created: bool,
    /// Why it failed: Salesforce's `sf__Error` (`CODE:message:fields --`) or the SDK's.
    pub error: Option<String>,
}

/// A Bulk API 2.0 job's information, as `GET /jobs/ingest/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    /// The job id (`750…`).
    pub id: String,
    /// `Open`, `UploadComplete`, `InProgress`, `JobComplete`, `Failed` or `Aborted`.
    pub state: String,
    /// The sObject.
    #[serde(default)]
    pub object: String,
    /// The operation (`insert`, `query`, …).
    #[serde(default)]
    pub operation: String,
    /// Records processed so far (failed ones included).
    #[serde(default)]
    pub number_records_processed: u64,
    /// Records that failed.
    #[serde(default)]
    pub number_records_failed: u64,
    /// Why a job failed as a whole.
    #[serde(default)]
    pub error_message: Option<String>,
}

impl JobInfo {
    /// Whether the job will not change any more.
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "JobComplete" | "Failed" | "Aborted")
    }
}

/// The result of [`SalesforceClient::bulk_ingest`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IngestReport {
    /// Each job's final information.
    pub jobs: Vec<JobInfo>,
    /// One outcome per input record, in input order.
    pub outcomes: Vec<RecordOutcome>,
    /// Records processed by Salesforce.
    pub succeeded: u64,
    /// Records refused (by Salesforce or before sending).
    pub failed: u64,
    /// Records not processed (aborted or failed jobs).
    pub unprocessed: u64,
}

/// Options of [`SalesforceClient::bulk_query`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BulkQueryOptions {
    /// Include deleted and archived records (`queryAll`).
    pub all_rows: bool,
    /// Records per result page (`maxRecords`); `None` lets Salesforce choose.
    pub max_records: Option<u64>,
    /// Polling of the job's state.
    pub poll: PollOptions,
}

/// Where the reading of a Bulk API 2.0 query job stands: the job and the locator of the
/// next result page to read (`""` for the first). Salesforce keeps a job's results for
/// 7 days; [`SalesforceClient::bulk_query_pages`] resumes from here while it does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct BulkQueryResume {
    /// The query job (`750…`).
    pub job_id: String,
    /// The next page's locator (`""` for the first page).
    pub locator: String,
}

/// One result page of a query job and where the read stands after it.
#[derive(Debug)]
pub struct BulkQueryPage {
    /// The page's rows (see [`SalesforceClient::bulk_query_rows`]).
    pub rows: RowBatch,
    /// The job the page came from (a fresh one when a resumed job's results were gone).
    pub job_id: String,
    /// Where to resume after this page; `None` after the last.
    pub next: Option<BulkQueryResume>,
}

/// Characters of one field of an ingest record, at most (Bulk API 2.0's limit).
pub const MAX_FIELD_CHARS: usize = 32_000;
/// Characters of one ingest record, its fields together, at most (Bulk API 2.0's limit).
pub const MAX_RECORD_CHARS: usize = 400_000;
/// Fields of one ingest record, at most (Bulk API 2.0's limit).
pub const MAX_FIELDS_PER_RECORD: usize = 5_000;
/// CSV bytes of one ingest job's upload, at most: Salesforce takes 150 MB after base64
/// encoding, which is 100 MB before it.
pub const MAX_JOB_BYTES: u64 = 100 * 1000 * 1000;

/// A CSV cell for a JSON value: null is `#N/A` (Salesforce's "set to null").
fn cell(value: &Value) -> std::result::Result<String, &'static str> {
    Ok(match value {
        Value::Null => "#N/A".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(_) | Value::Object(_) => return Err("a nested value"),
    })
}

fn csv_writer<W: std::io::Write>(w: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(w)
}

/// A row's CSV bytes (what is uploaded, and what the results echo back).
fn row_bytes<'a>(cells: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut w = csv_writer(Vec::with_capacity(128));
    let _ = w.write_record(cells);
    w.into_inner().unwrap_or_default()
}

/// One job being filled: its spool file and which input rows it holds.
struct Spool {
    file: tempfile::NamedTempFile,
    bytes: u64,
    rows: u64,
    index: RowIndex,
}

impl Spool {
    fn new(header: &[u8]) -> Result<Self> {
        let mut file = tempfile::NamedTempFile::new().map_err(|e| {
            Error::unavailable("cannot create a spool file for the bulk upload")
                .with_hint("check that the temporary directory is writable and has space")
                .with_source(e)
        })?;
        file.write_all(header).map_err(spool_error)?;
        Ok(Spool {
            file,
            bytes: header.len() as u64,
            rows: 0,
            index: RowIndex::default(),
        })
    }

    fn push(&mut self, index: u64, row: &[u8]) -> Result<()> {
        self.file.write_all(row).map_err(spool_error)?;
        self.bytes += row.len() as u64;
        self.rows += 1;
        self.index.push(row, index);
        Ok(())
    }
}

/// Which input record each uploaded row is, for matching the job's results (which come
/// in any order) back to the input: each row's hash and input index, sorted once the job
/// is sealed — 16 bytes and a flag a row, no map entry or queue per row. Identical rows
/// are interchangeable: they are matched in input order.
#[derive(Default)]
struct RowIndex {
    rows: Vec<(u64, u64)>,
    taken: Vec<bool>,
    hasher: std::hash::RandomState,
}

impl RowIndex {
    fn push(&mut self, row: &[u8], index: u64) {
        self.rows.push((self.hasher.hash_one(row), index));
    }

    /// Sort for look-ups; done once, when the job is sealed.
    fn seal(&mut self) {
        self.rows.sort_unstable();
        self.taken = vec![false; self.rows.len()];
    }

    /// The input index of the first row equal to `row` not matched yet.
    fn take(&mut self, row: &[u8]) -> Option<u64> {
        let hash = self.hasher.hash_one(row);
        let start = self.rows.partition_point(|&(h, _)| h < hash);
        let end = self.rows.partition_point(|&(h, _)| h <= hash);
        // Within a run of equal rows the matched ones are a prefix.
        let first = start + self.taken[start..end].partition_point(|&t| t);
        (first < end).then(|| {
            self.taken[first] = true;
            self.rows[first].1
        })
    }

    /// The input indices of the rows never matched.
    fn untaken(&self) -> impl Iterator<Item = u64> + '_ {
        self.rows
            .iter()
            .zip(&self.taken)
            .filter(|(_, taken)| !**taken)
            .map(|((_, index), _)| *index)
    }
}

fn spool_error(e: std::io::Error) -> Error {
    Error::unavailable("cannot write the bulk upload's spool file")
        .with_hint("check that the temporary directory has space")
        .with_source(e)
}

/// Jobs to abort if the ingest is dropped before it finishes.
struct AbortGuard {
    client: SalesforceClient,
    open: Arc<Mutex<HashSet<String>>>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let open: Vec<String> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        if open.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(jobs = ?open, "bulk ingest dropped outside a runtime: its jobs were not aborted");
            return;
        };
        let client = self.client.clone();
        runtime.spawn(async move {
            for id in open {
                match client.bulk_abort(&id).await {
                    Ok(()) => tracing::info!(job = %id, "bulk ingest cancelled: job aborted"),
                    Err(e) => tracing::warn!(job = %id, error = %e, "bulk ingest cancelled: job not aborted"),
                }
            }
        });
    }
}

impl SalesforceClient {
    fn jobs_path(&self, rest: &str) -> String {
        format!("/services/data/v{}/jobs{rest}", self.api_version())
    }

    /// Load `records` into `object` with Bulk API 2.0; see the [module docs](crate::bulk).
    ///
    /// Returns one outcome per input record, in input order, once every job has
    /// finished. A job-level problem (a column Salesforce does not know, a job failed as
    /// a whole) shows as failed or unprocessed outcomes and in [`IngestReport::jobs`], not
    /// as an `Err`; `Err` is for what stopped the ingest itself (the org unreachable after
    /// retries, a poll timeout — with the still-running job's id in the error's context).
    ///
    /// The outcomes are collected in memory (about 100 bytes each); for millions of
    /// records, [`bulk_ingest_each`](Self::bulk_ingest_each) hands each over as it is read
    /// instead.
    pub async fn bulk_ingest<S>(
        &self,
        object: &str,
        operation: IngestOperation,
        records: S,
        options: &IngestOptions,
    ) -> Result<IngestReport>
    where
        S: Stream<Item = Value> + Send,
    {
        let mut outcomes = Vec::new();
        let mut report = self
            .bulk_ingest_each(object, operation, records, options, |o| outcomes.push(o))
            .await?;
        outcomes.sort_by_key(|o| o.index);
        report.outcomes = outcomes;
        Ok(report)
    }

    /// As [`bulk_ingest`](Self::bulk_ingest), handing each record's outcome to
    /// `on_outcome` as its job's results are read — in no particular order, each input
    /// record exactly once — instead of collecting them: memory stays flat however many
    /// records go in (results are downloaded to temporary files and read from there).
    /// The report's `outcomes` is empty; its counts and jobs are filled. On `Err`, the
    /// outcomes already handed over stand.
    ///
    /// ```no_run
    /// # async fn run(sf: connector_salesforce::client::SalesforceClient) -> moodbridge_core::Result<()> {
    /// use connector_salesforce::bulk::{IngestOperation, IngestOptions, RecordState};
    /// use serde_json::json;
    ///
    /// let records = futures::stream::iter((0..2_000_000).map(|i| json!({"Name": format!("Client {i}")})));
    /// let mut failed = Vec::new();
    /// let report = sf
    ///     .bulk_ingest_each("Account", IngestOperation::Insert, records, &IngestOptions::default(), |o| {
    ///         if o.state != RecordState::Succeeded {
    ///             failed.push(o);
    ///         }
    ///     })
    ///     .await?;
    /// assert_eq!(report.failed + report.unprocessed, failed.len() as u64);
    /// # Ok(()) }
    /// ```
    pub async fn bulk_ingest_each<S, F>(
        &self,
        object: &str,
        operation: IngestOperation,
        records: S,
        options: &IngestOptions,
        mut on_outcome: F,
    ) -> Result<IngestReport>
    where
        S: Stream<Item = Value> + Send,
        F: FnMut(RecordOutcome) + Send,
    {
        check_name(object)?;
        if let IngestOperation::Upsert { external_id } = &operation {
            check_name(external_id)?;
        }
        if options.max_job_bytes == 0 || options.max_job_bytes > MAX_JOB_BYTES {
            return Err(Error::invalid_input(format!(
                "IngestOptions::max_job_bytes is {}: an upload takes from 1 byte to {MAX_JOB_BYTES} bytes of CSV (Salesforce's 150 MB after base64 encoding)",
                options.max_job_bytes
            ))
            .with_hint("leave max_job_bytes at its default: larger inputs are split into several jobs"));
        }
        let id_only = matches!(
            operation,
            IngestOperation::Delete | IngestOperation::HardDelete
        );
        let guard = AbortGuard {
            client: self.clone(),
            open: Arc::new(Mutex::new(HashSet::new())),
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(options.parallel_jobs.max(1)));
        let mut running = tokio::task::JoinSet::new();
        let mut jobs = Vec::new();
        let (mut succeeded, mut failed, mut unprocessed) = (0u64, 0u64, 0u64);
        let mut deliver = |o: RecordOutcome| {
            match o.state {
                RecordState::Succeeded => succeeded += 1,
                RecordState::Failed => failed += 1,
                RecordState::Unprocessed => unprocessed += 1,
            }
            on_outcome(o);
        };
        // The jobs hand their outcomes over here; whatever this task awaits, it takes them.
        let (sender, mut outcomes) = tokio::sync::mpsc::channel(OUTCOMES_IN_FLIGHT);
        let mut columns: Option<Vec<String>> = if id_only {
            Some(vec!["Id".to_owned()])
        } else {
            options.columns.clone()
        };
        let mut header = Vec::new();
        let mut spool: Option<Spool> = None;
        let mut index = 0u64;
        let mut records = std::pin::pin!(records);
        let seal =
            |mut spool: Spool, running: &mut tokio::task::JoinSet<Result<JobInfo>>, permit| {
                let client = self.clone();
                let object = object.to_owned();
                let operation = operation.clone();
                let poll = options.poll.clone();
                let open = guard.open.clone();
                let sender = sender.clone();
                spool.index.seal();
                running.spawn(async move {
                    let _permit = permit;
                    client
                        .run_ingest_job(&object, &operation, spool, &poll, &open, sender)
                        .await
                });
            };
        while let Some(record) = delivering(records.next(), &mut outcomes, &mut deliver).await {
            let i = index;
            index += 1;
            let Value::Object(map) = record else {
                deliver(refused(i, "the record is not a JSON object"));
                continue;
            };
            let cols = columns.get_or_insert_with(|| {
                map.keys().filter(|k| *k != "attributes").cloned().collect()
            });
            if header.is_empty() {
                header = row_bytes(cols.iter().map(String::as_str));
            }
            let row = match row_of(&map, cols, id_only) {
                Ok(row) => row,
                Err(reason) => {
                    deliver(refused(i, &reason));
                    continue;
                }
            };
            if let Some(s) = &spool
                && s.rows > 0
                && s.bytes + row.len() as u64 > options.max_job_bytes
            {
                let permit =
                    delivering(permits.clone().acquire_owned(), &mut outcomes, &mut deliver)
                        .await
                        .map_err(|_| Error::internal("the bulk job limiter was closed"))?;
                if let Some(full) = spool.take() {
                    seal(full, &mut running, permit);
                }
            }
            let s = match &mut spool {
                Some(s) => s,
                None => spool.insert(Spool::new(&header)?),
            };
            s.push(i, &row)?;
        }
        if let Some(last) = spool.take().filter(|s| s.rows > 0) {
            let permit = delivering(permits.clone().acquire_owned(), &mut outcomes, &mut deliver)
                .await
                .map_err(|_| Error::internal("the bulk job limiter was closed"))?;
            seal(last, &mut running, permit);
        }
        // Every job runs to its end, even when another failed: its outcomes are then in
        // the error's `completed_jobs` context (fetch them with `bulk_job`).
        let mut first_error: Option<Error> = None;
        while let Some(done) = delivering(running.join_next(), &mut outcomes, &mut deliver).await {
            match done {
                Ok(Ok(info)) => jobs.push(info),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(
                        Error::internal("a bulk ingest job task failed").with_source(e),
                    );
                }
            }
        }
        // Every job is done: what they handed over is all in the channel.
        drop(sender);
        while let Some(o) = outcomes.recv().await {
            deliver(o);
        }
        if let Some(e) = first_error {
            // The guard aborts whatever of ours is still open (created, not yet closed).
            let completed: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            return Err(if completed.is_empty() {
                e
            } else {
                e.with_context("completed_jobs", completed.join(","))
            });
        }
        guard
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(IngestReport {
            jobs,
            outcomes: Vec::new(),
            succeeded,
            failed,
            unprocessed,
        })
    }

    /// One sealed job: create, upload, close, poll, then hand each record's outcome to
    /// `outcomes` as its results file is read.
    async fn run_ingest_job(
        &self,
        object: &str,
        operation: &IngestOperation,
        spool: Spool,
        poll: &PollOptions,
        open: &Mutex<HashSet<String>>,
        outcomes: tokio::sync::mpsc::Sender<RecordOutcome>,
    ) -> Result<JobInfo> {
        let Spool { file, index, .. } = spool;
        let file = file.into_temp_path();
        let mut body = json!({"object": object, "operation": operation.as_str(), "contentType": "CSV", "lineEnding": "LF", "columnDelimiter": "COMMA"});
        if let IngestOperation::Upsert { external_id } = operation {
            body["externalIdFieldName"] = json!(external_id);
        }
        // Retried like a read: a job created twice (its first answer lost) is an empty
        // Open job that Salesforce removes after a day — no record is written twice.
        let created: JobInfo = self
            .call_json(
                op::BULK_CREATE,
                Method::POST,
                &self.jobs_path("/ingest"),
                Some(&body),
                true,
            )
            .await?;
        let id = created.id.clone();
        open.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
        let job_path = self.jobs_path(&format!("/ingest/{id}"));
        let uploaded = self
            .send(
                op::BULK_UPLOAD,
                Method::PUT,
                &format!("{job_path}/batches"),
                RequestBody::CsvFile(&file),
                true,
                None,
            )
            .await;
        match uploaded {
            Ok(_) => {}
            // A retried upload whose first attempt had arrived: the data is there.
            Err(e)
                if e.context_value("error_code") == Some("BULK_API_ERROR")
                    && e.message().contains("multiple contents") => {}
            Err(e) => return Err(e.with_context("job_id", &id)),
        }
        drop(file);
        let _: JobInfo = self
            .call_json(
                op::BULK_CLOSE,
                Method::PATCH,
                &job_path,
                Some(&json!({"state": "UploadComplete"})),
                true,
            )
            .await?;
        let waited = self.wait_for_job(&job_path, &id, poll).await;
        if waited
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Timeout)
        {
            // Still running at Salesforce, and left to run: it is reported, not aborted.
            open.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
        let info = waited?;
        open.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);

        // The three results files, each downloaded to disk as it arrives, then read
        // row by row off the async threads.
        let mut files = Vec::with_capacity(3);
        for (which, state, skip) in [
            ("successfulResults", RecordState::Succeeded, 2),
            ("failedResults", RecordState::Failed, 2),
            ("unprocessedrecords", RecordState::Unprocessed, 0),
        ] {
            let path = tempfile::NamedTempFile::new()
                .map_err(|e| {
                    Error::unavailable("cannot create a spool file for the bulk results")
                        .with_hint("check that the temporary directory is writable and has space")
                        .with_source(e)
                })?
                .into_temp_path();
            self.download(op::BULK_RESULTS, &format!("{job_path}/{which}"), &path)
                .await
                .map_err(|e| e.with_context("job_id", &id))?;
            files.push((which, state, skip, path));
        }
        let job_error = info.error_message.clone();
        let job_id = id.clone();
        tokio::task::spawn_blocking(move || {
            match_results(&job_id, job_error.as_deref(), files, index, &outcomes)
        })
        .await
        .map_err(|e| Error::internal("reading a bulk job's results failed").with_source(e))??;
        Ok(info)
    }

    /// Poll `job_path` with backoff until the job finishes or `poll.timeout` passes.
    async fn wait_for_job(&self, job_path: &str, id: &str, poll: &PollOptions) -> Result<JobInfo> {
        let started = tokio::time::Instant::now();
        let mut wait = poll.initial;
        loop {
            let info: JobInfo = self
                .call_json(op::BULK_POLL, Method::GET, job_path, None, true)
                .await?;
            if info.is_finished() {
                return Ok(info);
            }
            if started.elapsed() + wait > poll.timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "bulk job {id} is still {} after {}s: not failed, still running at Salesforce",
                        info.state,
                        poll.timeout.as_secs()
                    ),
                )
                .with_context("job_id", id)
                .with_hint("check it later with SalesforceClient::bulk_job, or raise PollOptions::timeout"));
            }
            tokio::time::sleep(wait).await;
            wait = (wait + wait / 2).min(poll.max);
        }
    }

    /// An ingest job's current information.
    pub async fn bulk_job(&self, id: &str) -> Result<JobInfo> {
        check_id(id)?;
        self.call_json(
            op::BULK_POLL,
            Method::GET,
            &self.jobs_path(&format!("/ingest/{id}")),
            None,
            true,
        )
        .await
    }

    /// Abort an ingest job (records not yet processed stay unprocessed).
    pub async fn bulk_abort(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let _: JobInfo = self
            .call_json(
                op::BULK_ABORT,
                Method::PATCH,
                &self.jobs_path(&format!("/ingest/{id}")),
                Some(&json!({"state": "Aborted"})),
                true,
            )
            .await?;
        Ok(())
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        method: Method,
        target: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<T> {
        let body = body.map_or(RequestBody::None, RequestBody::Json);
        let reply = self
            .send(op, method, target, body, idempotent, None)
            .await?;
        serde_json::from_slice(&reply.body).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("Salesforce's {op} answer has an unexpected shape: {e}"),
            )
            .with_connector(crate::error::PLATFORM)
        })
    }

    /// Run `soql` as a Bulk API 2.0 query job; records arrive as a stream. While one
    /// result page is consumed, the next is fetched and parsed in the background (at
    /// most two pages in memory), so the wait for Salesforce overlaps the consumer's work.
    /// Dropping the stream cancels the fetch in flight. See the [module docs](crate::bulk).
    pub fn bulk_query(
        &self,
        soql: &str,
        options: BulkQueryOptions,
    ) -> impl Stream<Item = Result<Value>> + Send + 'static {
        self.bulk_query_rows(soql, options)
            .map(|page| {
                page.map(|rows| {
                    // The page stays compact; each record is built as it is taken.
                    futures::stream::iter(
                        (0..rows.len())
                            .map(move |i| Ok(rows.row(i).map_or(Value::Null, row_value))),
                    )
                })
            })
            .try_flatten()
    }

    /// As [`bulk_query`](Self::bulk_query), a result page at a time: each page's rows
    /// share its columns (named as in the CSV header, `Owner.Name` for a parent's field),
    /// typed by describe. Nothing is allocated per record, so this is the way to move a
    /// large result into a table.
    ///
    /// ```no_run
    /// # async fn run(sf: connector_salesforce::client::SalesforceClient) -> moodbridge_core::Result<()> {
    /// use futures::TryStreamExt;
    /// let mut pages = std::pin::pin!(sf.bulk_query_rows("SELECT Id, Name FROM Account", Default::default()));
    /// while let Some(page) = pages.try_next().await? {
    ///     for row in page.rows() {
    ///         println!("{:?}", row.text(0));
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn bulk_query_rows(
        &self,
        soql: &str,
        options: BulkQueryOptions,
    ) -> impl Stream<Item = Result<RowBatch>> + Send + 'static {
        self.bulk_query_pages(soql, options, None)
            .map_ok(|page| page.rows)
    }

    /// As [`bulk_query_rows`](Self::bulk_query_rows), each page with where the read
    /// stands after it, and able to resume: given `resume` (saved from an earlier page's
    /// [`next`](BulkQueryPage::next)), it reads that job's remaining pages instead of
    /// starting a job — unless Salesforce no longer has the job or its results (kept 7
    /// days), or the job failed; then it runs `soql` as a new job. A host that restarts
    /// more often than a large job takes thus still gets to its end.
    ///
    /// ```no_run
    /// # async fn run(sf: connector_salesforce::client::SalesforceClient) -> moodbridge_core::Result<()> {
    /// use futures::TryStreamExt;
    /// use connector_salesforce::bulk::BulkQueryResume;
    /// let saved: Option<BulkQueryResume> = None; // read from the host's state
    /// let soql = "SELECT Id, Name FROM Account";
    /// let mut pages = std::pin::pin!(sf.bulk_query_pages(soql, Default::default(), saved));
    /// while let Some(page) = pages.try_next().await? {
    ///     // … store page.rows, then save page.next durably …
    /// #   let _ = page.next;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn bulk_query_pages(
        &self,
        soql: &str,
        options: BulkQueryOptions,
        resume: Option<BulkQueryResume>,
    ) -> impl Stream<Item = Result<BulkQueryPage>> + Send + 'static {
        let client = self.clone();
        let soql = soql.to_owned();
        let state = match resume {
            Some(resume) => QueryState::Resume {
                soql,
                options,
                resume,
            },
            None => QueryState::Start { soql, options },
        };
        futures::stream::try_unfold(state, move |state| {
            let client = client.clone();
            async move {
                let mut state = state;
                loop {
                    state = match state {
                        QueryState::Start { soql, options } => {
                            client.start_bulk_query(&soql, options).await?
                        }
                        QueryState::Resume {
                            soql,
                            options,
                            resume,
                        } => client.resume_bulk_query(soql, options, resume).await?,
                        QueryState::Pages { pages, next } => {
                            let Some(next) = next else {
                                return Ok(None);
                            };
                            let page = joined(next.await)?;
                            let resume = page.locator.clone().map(|locator| BulkQueryResume {
                                job_id: pages.job_id.clone(),
                                locator,
                            });
                            // The next page is fetched while this one is consumed.
                            let next = page.locator.map(|l| pages.fetch(&client, l));
                            let out = BulkQueryPage {
                                rows: page.rows,
                                job_id: pages.job_id.clone(),
                                next: resume,
                            };
                            return Ok(Some((out, QueryState::Pages { pages, next })));
                        }
                    };
                }
            }
        })
    }

    /// As [`bulk_query`](Self::bulk_query), each record deserialized into `T` (its fields
    /// typed by describe first, so numbers and booleans deserialize as such).
    ///
    /// ```no_run
    /// # async fn run(sf: connector_salesforce::client::SalesforceClient) -> moodbridge_core::Result<()> {
    /// use futures::TryStreamExt;
    /// #[derive(serde::Deserialize)]
    /// #[serde(rename_all = "PascalCase")]
    /// struct Account { id: String, name: String, annual_revenue: Option<f64> }
    /// let accounts: Vec<Account> = sf
    ///     .bulk_query_as("SELECT Id, Name, AnnualRevenue FROM Account", Default::default())
    ///     .try_collect()
    ///     .await?;
    /// # let _ = accounts; Ok(()) }
    /// ```
    pub fn bulk_query_as<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        soql: &str,
        options: BulkQueryOptions,
    ) -> impl Stream<Item = Result<T>> + Send + 'static {
        self.bulk_query(soql, options).map(|r| {
            r.and_then(|v| {
                serde_json::from_value(v).map_err(|e| {
                    Error::invalid_input(format!(
                        "a bulk query record does not match the type: {e}"
                    ))
                })
            })
        })
    }

    async fn start_bulk_query(&self, soql: &str, options: BulkQueryOptions) -> Result<QueryState> {
        let body = json!({
            "operation": if options.all_rows { "queryAll" } else { "query" },
            "query": soql,
            "contentType": "CSV",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        });
        // Retried like a read: a query job created twice only costs the org some work.
        let created: JobInfo = self
            .call_json(
                op::BULK_QUERY,
                Method::POST,
                &self.jobs_path("/query"),
                Some(&body),
                true,
            )
            .await?;
        let job_path = self.jobs_path(&format!("/query/{}", created.id));
        // The describe that types the results' columns goes while the job runs, not after
        // it: one round trip less before the first page.
        let (info, described) = futures::join!(
            self.wait_for_job(&job_path, &created.id, &options.poll),
            self.describe(&created.object)
        );
        let pages = self.result_pages(job_path, info?, described, &options)?;
        let first = pages.fetch(self, String::new());
        Ok(QueryState::Pages {
            pages,
            next: Some(first),
        })
    }

    /// Reads on from `resume` when Salesforce still has that job's results; otherwise
    /// starts `soql` as a new job.
    async fn resume_bulk_query(
        &self,
        soql: String,
        options: BulkQueryOptions,
        resume: BulkQueryResume,
    ) -> Result<QueryState> {
        check_id(&resume.job_id)?;
        let job_path = self.jobs_path(&format!("/query/{}", resume.job_id));
        let fresh = |why: &str| {
            tracing::info!(job_id = %resume.job_id, why, "bulk query not resumable: starting a new job");
        };
        let info = match self
            .wait_for_job(&job_path, &resume.job_id, &options.poll)
            .await
        {
            Ok(info) if info.state == "JobComplete" => info,
            Ok(info) => {
                fresh(&format!("the job ended {}", info.state));
                return self.start_bulk_query(&soql, options).await;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fresh("Salesforce no longer has the job");
                return self.start_bulk_query(&soql, options).await;
            }
            Err(e) => return Err(e),
        };
        let described = self.describe(&info.object).await;
        let pages = self.result_pages(job_path, info, described, &options)?;
        // The first page is read here, so that results Salesforce has dropped (after 7
        // days) still lead to a new job rather than to an error.
        match joined(pages.fetch(self, resume.locator.clone()).await) {
            Ok(page) => {
                tracing::debug!(job_id = %resume.job_id, "bulk query resumed");
                let ready = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                    std::future::ready(Ok(page)),
                ));
                Ok(QueryState::Pages {
                    pages,
                    next: Some(ready),
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fresh("Salesforce no longer has the job's results");
                self.start_bulk_query(&soql, options).await
            }
            Err(e) => Err(e),
        }
    }

    /// The result pages of a finished query job, typed by `described`.
    fn result_pages(
        &self,
        job_path: String,
        info: JobInfo,
        described: Result<Arc<Value>>,
        options: &BulkQueryOptions,
    ) -> Result<Arc<ResultPages>> {
        if info.state != "JobComplete" {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "bulk query job {} ended {}: {}",
                    info.id,
                    info.state,
                    info.error_message.as_deref().unwrap_or("no reason given")
                ),
            )
            .with_context("job_id", &info.id)
            .permanent());
        }
        let types = match described {
            Ok(d) => field_types(&d),
            Err(e) => {
                tracing::debug!(object = %info.object, error = %e, "no describe: bulk query values stay text");
                HashMap::new()
            }
        };
        Ok(Arc::new(ResultPages {
            job_path,
            job_id: info.id.clone(),
            object: info.object.clone(),
            types,
            max_records: options.max_records,
        }))
    }
}

/// The page a fetch task produced.
fn joined(
    joined: std::result::Result<Result<ResultPage>, tokio::task::JoinError>,
) -> Result<ResultPage> {
    joined.map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("fetching a bulk query result page failed: {e}"),
        )
    })?
}

/// Where a query job's result pages are and how their values are typed.
struct ResultPages {
    job_path: String,
    job_id: String,
    /// The queried object (the rows' stream).
    object: String,
    types: HashMap<String, &'static str>,
    max_records: Option<u64>,
}

/// One parsed result page and the locator of the next (`None` after the last).
struct ResultPage {
    rows: RowBatch,
    locator: Option<String>,
}

impl ResultPages {
    /// Fetch and parse the page at `locator` (`""` for the first) in a task of its own,
    /// cancelled when the handle is dropped.
    fn fetch(
        self: &Arc<Self>,
        client: &SalesforceClient,
        locator: String,
    ) -> tokio_util::task::AbortOnDropHandle<Result<ResultPage>> {
        let (pages, client) = (self.clone(), client.clone());
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut target = format!("{}/results", pages.job_path);
            let mut sep = '?';
            if !locator.is_empty() {
                target.push_str(&format!("{sep}locator={locator}"));
                sep = '&';
            }
            if let Some(n) = pages.max_records {
                target.push_str(&format!("{sep}maxRecords={n}"));
            }
            let reply = client
                .send(
                    op::BULK_RESULTS,
                    Method::GET,
                    &target,
                    RequestBody::None,
                    true,
                    None,
                )
                .await?;
            Ok(ResultPage {
                rows: parse_page(&reply.body, &pages.object, &pages.types)?,
                locator: reply.locator.filter(|l| !l.is_empty() && l != "null"),
            })
        }))
    }
}

enum QueryState {
    Start {
        soql: String,
        options: BulkQueryOptions,
    },
    Resume {
        soql: String,
        options: BulkQueryOptions,
        resume: BulkQueryResume,
    },
    Pages {
        pages: Arc<ResultPages>,
        /// The page being fetched; `None` after the last.
        next: Option<tokio_util::task::AbortOnDropHandle<Result<ResultPage>>>,
    },
}

/// Outcomes handed from the jobs to the ingest's caller, at most, before the jobs wait.
const OUTCOMES_IN_FLIGHT: usize = 4_096;

/// Await `work`, handing over the jobs' outcomes as they come meanwhile.
async fn delivering<T>(
    work: impl std::future::Future<Output = T>,
    outcomes: &mut tokio::sync::mpsc::Receiver<RecordOutcome>,
    deliver: &mut impl FnMut(RecordOutcome),
) -> T {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            Some(o) = outcomes.recv() => deliver(o),
            out = &mut work => return out,
        }
    }
}

/// Read a finished job's results files (on a blocking thread), match each row to its
/// input record, and hand each outcome over; every uploaded row gets one, even a row the
/// results did not echo.
fn match_results(
    id: &str,
    job_error: Option<&str>,
    files: Vec<(&'static str, RecordState, usize, tempfile::TempPath)>,
    mut index: RowIndex,
    outcomes: &tokio::sync::mpsc::Sender<RecordOutcome>,
) -> Result<()> {
    let send = |o: RecordOutcome| {
        outcomes
            .blocking_send(o)
            .map_err(|_| Error::internal("the bulk ingest was dropped while its results were read"))
    };
    let mut unmatched = 0u64;
    let mut echo = Vec::with_capacity(256);
    for (which, state, skip, path) in files {
        let file = std::fs::File::open(&path).map_err(|e| {
            Error::unavailable("cannot read a downloaded bulk results file").with_source(e)
        })?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(std::io::BufReader::with_capacity(1 << 16, file));
        let mut row = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut row) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("a bulk {which} file is not CSV: {e}"),
                    ));
                }
            }
            echo.clear();
            {
                let mut w = csv_writer(&mut echo);
                let _ = w.write_record(row.iter().skip(skip));
                let _ = w.flush();
            }
            let Some(input) = index.take(&echo) else {
                unmatched += 1;
                continue;
            };
            let first = row.get(0).filter(|s| !s.is_empty()).map(str::to_owned);
            send(match state {
                RecordState::Succeeded => RecordOutcome {
                    index: input,
                    state: RecordState::Succeeded,
                    job_id: Some(id.to_owned()),
                    id: first,
                    created: row.get(1) == Some("true"),
                    error: None,
                },
                RecordState::Failed => RecordOutcome {
                    index: input,
                    state: RecordState::Failed,
                    job_id: Some(id.to_owned()),
                    id: first,
                    created: false,
                    error: row.get(1).map(str::to_owned),
                },
                RecordState::Unprocessed => RecordOutcome {
                    index: input,
                    state: RecordState::Unprocessed,
                    job_id: Some(id.to_owned()),
                    id: None,
                    created: false,
                    error: job_error.map(str::to_owned),
                },
            })?;
        }
    }
    let mut missing = 0u64;
    for input in index.untaken() {
        missing += 1;
        send(RecordOutcome {
            index: input,
            state: RecordState::Unprocessed,
            job_id: Some(id.to_owned()),
            id: None,
            created: false,
            error: Some(
                "not in the job's results; its state is unknown: check before sending again".into(),
            ),
        })?;
    }
    if missing > 0 || unmatched > 0 {
        tracing::warn!(job = %id, missing, unmatched, "bulk results did not echo every uploaded row");
    }
    Ok(())
}

fn refused(index: u64, reason: &str) -> RecordOutcome {
    RecordOutcome {
        index,
        state: RecordState::Failed,
        job_id: None,
        id: None,
        created: false,
        error: Some(format!("refused before sending: {reason}")),
    }
}

/// The CSV row of `map` under `columns`: missing fields are empty (left unchanged).
fn row_of(
    map: &Map<String, Value>,
    columns: &[String],
    id_only: bool,
) -> std::result::Result<Vec<u8>, String> {
    if !id_only
        && let Some(extra) = map
            .keys()
            .find(|k| *k != "attributes" && !columns.iter().any(|c| c == *k))
    {
        return Err(format!(
            "field {extra:?} is not one of this ingest's columns ({}); set IngestOptions::columns to every field the records use",
            columns.join(", ")
        ));
    }
    if columns.len() > MAX_FIELDS_PER_RECORD {
        return Err(format!(
            "{} fields: Bulk API 2.0 takes at most {MAX_FIELDS_PER_RECORD} per record; split the columns over two ingests",
            columns.len()
        ));
    }
    let mut cells = Vec::with_capacity(columns.len());
    let mut total = 0usize;
    for c in columns {
        let text = match map.get(c) {
            None => String::new(),
            Some(v) => cell(v).map_err(|what| format!("field {c:?} holds {what}"))?,
        };
        let chars = text.chars().count();
        if chars > MAX_FIELD_CHARS {
            return Err(format!(
                "field {c:?} has {chars} characters: Bulk API 2.0 takes at most {MAX_FIELD_CHARS} per field; write this record through the REST API (sObject Collections), which takes a long text field whole"
            ));
        }
        total += chars;
        cells.push(text);
    }
    if total > MAX_RECORD_CHARS {
        return Err(format!(
            "the record has {total} characters: Bulk API 2.0 takes at most {MAX_RECORD_CHARS} per record; write it through the REST API (sObject Collections)"
        ));
    }
    if id_only && cells.first().is_none_or(String::is_empty) {
        return Err("a delete needs the record's Id".into());
    }
    Ok(row_bytes(cells.iter().map(String::as_str)))
}

/// Field name (lowercase) → JSON kind, from a describe.
fn field_types(describe: &Value) -> HashMap<String, &'static str> {
    describe
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let name = f.get("name")?.as_str()?.to_ascii_lowercase();
            let kind = match f.get("type")?.as_str()? {
                "boolean" => "bool",
                "int" => "int",
                "double" | "currency" | "percent" => "number",
                _ => return None,
            };
            Some((name, kind))
        })
        .collect()
}

/// Parse one result page into rows of `object`, typed by `types` (an empty cell is null).
fn parse_page(
    bytes: &[u8],
    object: &str,
    types: &HashMap<String, &'static str>,
) -> Result<RowBatch> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let columns: Vec<Column> = reader
        .headers()
        .map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("a bulk result page has no CSV header: {e}"),
            )
        })?
        .iter()
        .map(|h| {
            let kind = match types.get(&h.to_ascii_lowercase()).copied() {
                Some("bool") => ColumnKind::Boolean,
                Some("int") => ColumnKind::Integer,
                Some("number") => ColumnKind::Number,
                _ => ColumnKind::Text,
            };
            Column::new(h, kind)
        })
        .collect();
    let mut rows = RowBatch::with_capacity(object, columns, 0, bytes.len());
    let mut row = csv::StringRecord::new();
    loop {
        let more = reader.read_record(&mut row).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("a bulk result page is not CSV: {e}"),
            )
        })?;
        if !more {
            break;
        }
        rows.push_row(row.iter().map(|t| (!t.is_empty()).then_some(t)))?;
    }
    Ok(rows)
}

/// A result row as a JSON object; a column through parent relationships
/// (`Owner.Manager.Name`) nests.
fn row_value(row: Row<'_>) -> Value {
    Value::Object(row_map(row))
}

/// A result row's fields, as [`row_value`].
pub(crate) fn row_map(row: Row<'_>) -> Map<String, Value> {
    let columns = row.columns();
    let mut record = Map::with_capacity(columns.len());
    for (column, cell) in columns.iter().zip(row.cells()) {
        let value = cell.to_value();
        if column.name.contains('.') {
            insert_path(&mut record, &column.name, value);
        } else {
            record.insert(column.name.clone(), value);
        }
    }
    record
}

/// `Account.Owner.Name` = v → `{"Account": {"Owner": {"Name": v}}}`.
fn insert_path(record: &mut Map<String, Value>, path: &str, value: Value) {
    let mut segments = path.split('.').peekable();
    let mut at = record;
    while let Some(segment) = segments.next() {
        if segments.peek().is_none() {
            at.insert(segment.to_owned(), value);
            return;
        }
        let slot = at
            .entry(segment.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else { return };
        at = next;
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use super::*;

    /// Results in any order, identical rows, a row never echoed and one never sent: each
    /// uploaded row is matched once, identical ones in input order.
    #[test]
    fn the_row_index_matches_results_in_any_order() {
        let rows: Vec<Vec<u8>> = ["a,1\n", "b,2\n", "a,1\n", "c,3\n", "a,1\n", "d,4\n"]
            .iter()
            .map(|r| r.as_bytes().to_vec())
            .collect();
        let mut index = RowIndex::default();
        for (i, row) in rows.iter().enumerate() {
            index.push(row, i as u64 + 10);
        }
        index.seal();
        assert_eq!(index.take(b"c,3\n"), Some(13));
        assert_eq!(index.take(b"a,1\n"), Some(10));
        assert_eq!(index.take(b"b,2\n"), Some(11));
        assert_eq!(index.take(b"a,1\n"), Some(12));
        assert_eq!(index.take(b"z,9\n"), None, "never sent");
        assert_eq!(index.take(b"a,1\n"), Some(14));
        assert_eq!(index.take(b"a,1\n"), None, "three sent, three matched");
        assert_eq!(
            index.untaken().collect::<Vec<_>>(),
            [15],
            "d was never echoed"
        );
    }

    #[test]
    fn csv_cells_escape_quotes_commas_newlines_and_nulls() {
        let cols: Vec<String> = ["Name", "Note__c", "Flag__c", "Gone__c", "Unset__c"]
            .map(String::from)
            .to_vec();
        let map = json!({"Name": "Ann \"The\" Lawyer, Esq.", "Note__c": "two\nlines — ünïcode", "Flag__c": true, "Gone__c": null})
            .as_object()
            .unwrap()
            .clone();
        let row = String::from_utf8(row_of(&map, &cols, false).unwrap()).unwrap();
        assert_eq!(
            row,
            "\"Ann \"\"The\"\" Lawyer, Esq.\",\"two\nlines — ünïcode\",true,#N/A,\n"
        );
        // Read back by a CSV reader: exactly the values.
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(row.as_bytes());
        let back = r.records().next().unwrap().unwrap();
        assert_eq!(&back[0], "Ann \"The\" Lawyer, Esq.");
        assert_eq!(&back[1], "two\nlines — ünïcode");
        assert_eq!(&back[3], "#N/A");
        assert_eq!(&back[4], "");
    }

    #[test]
    fn a_field_outside_the_columns_or_a_nested_value_is_refused_with_the_fix() {
        let cols = vec!["Name".to_owned()];
        let extra = json!({"Name": "a", "Phone": "1"})
            .as_object()
            .unwrap()
            .clone();
        let e = row_of(&extra, &cols, false).unwrap_err();
        assert!(
            e.contains("\"Phone\"") && e.contains("IngestOptions::columns"),
            "{e}"
        );
        let nested = json!({"Name": {"x": 1}}).as_object().unwrap().clone();
        assert!(
            row_of(&nested, &cols, false)
                .unwrap_err()
                .contains("nested")
        );
    }

    #[test]
    fn result_pages_are_typed_by_describe_and_relationships_nest() {
        let types = field_types(&json!({"fields": [
            {"name": "IsActive__c", "type": "boolean"},
            {"name": "NumberOfEmployees", "type": "int"},
            {"name": "AnnualRevenue", "type": "currency"},
            {"name": "Name", "type": "string"},
        ]}));
        let page = "Id,Name,IsActive__c,NumberOfEmployees,AnnualRevenue,Owner.Name,Owner.Manager.Name\n\
                    001A,\"Acme, Inc.\",true,12,1.5,Ann,\n";
        let rows = parse_page(page.as_bytes(), "Account", &types).unwrap();
        assert_eq!(rows.stream, "Account");
        assert_eq!(
            row_value(rows.row(0).unwrap()),
            json!({"Id": "001A", "Name": "Acme, Inc.", "IsActive__c": true, "NumberOfEmployees": 12,
                   "AnnualRevenue": 1.5, "Owner": {"Name": "Ann", "Manager": {"Name": null}}})
        );
    }

    /// The columns a result page may have, typed as describe types them.
    fn fuzz_types() -> HashMap<String, &'static str> {
        field_types(&json!({"fields": [
            {"name": "IsActive__c", "type": "boolean"},
            {"name": "NumberOfEmployees", "type": "int"},
            {"name": "AnnualRevenue", "type": "currency"},
            {"name": "Rate__c", "type": "double"},
            {"name": "CreatedDate", "type": "datetime"},
            {"name": "Name", "type": "string"},
        ]}))
    }

    /// A CSV cell: empty, quoted, with separators, quotes and newlines, or any text.
    fn fuzz_cell() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just(String::new()),
            Just("true".to_owned()),
            Just("TRUE".to_owned()),
            Just("1e400".to_owned()),
            Just("-9223372036854775809".to_owned()),
            Just("NaN".to_owned()),
            Just("\"a,b\"".to_owned()),
            Just("\"line\nbreak\"".to_owned()),
            Just("\"unterminated".to_owned()),
            Just("\"\"\"".to_owned()),
            ".{0,12}",
        ]
    }

    proptest::proptest! {
        // A fixed seed: the same pages on every run and every machine.
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 512,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x00c5_0a9e),
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// A result page a server sends — any bytes, or CSV with any header (relationship
        /// paths, duplicates, typed columns) and ragged rows of any cells — is parsed or
        /// refused with an error, never a panic; what parses nests into records.
        #[test]
        fn any_result_page_is_parsed_or_refused_without_a_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            header in proptest::collection::vec(proptest::sample::select(vec![
                "Id", "Name", "IsActive__c", "NumberOfEmployees", "AnnualRevenue", "Rate__c",
                "CreatedDate", "Owner.Name", "Owner", "Owner.Manager.Name", ".", "a..b", "",
                "Name",
            ]), 0..6),
            rows in proptest::collection::vec(proptest::collection::vec(fuzz_cell(), 0..7), 0..6),
        ) {
            let types = fuzz_types();
            let _ = parse_page(&bytes, "Account", &types);
            let mut csv = header.join(",");
            for row in &rows {
                csv.push('\n');
                csv.push_str(&row.join(","));
            }
            if let Ok(page) = parse_page(csv.as_bytes(), "Account", &types) {
                for row in page.rows() {
                    let _ = row_value(row);
                }
            }
        }
    }
}
