//! Bulk API 2.0 in the sandbox, after Salesforce's reference: ingest jobs (create, one CSV
//! upload, `UploadComplete`, processing in the background in chunks of 10,000 records,
//! successful / failed / unprocessed results as CSV, abort, delete) and query jobs
//! (create, background evaluation, result pages with `Sforce-Locator` /
//! `Sforce-NumberOfRecords`, `null` locator on the last page).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query as UrlQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::org::{Fields, ObjectDef, Org, sf_datetime};
use crate::reply::{Failure, Reply};
use crate::state::Core;
use crate::{eval, soql};

/// Records processed under one hold of the org lock (Salesforce's internal batch size).
const CHUNK: usize = 10_000;
/// Largest upload accepted: 150 MB (Salesforce's limit, counted after base64 there; the
/// sandbox takes the raw size, so it is more lenient by the encoding's third).
pub(crate) const MAX_UPLOAD: usize = 150 * 1024 * 1024;

/// A job's state, as Salesforce spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }

    fn finished(self) -> bool {
        matches!(
            self,
            JobState::JobComplete | JobState::Failed | JobState::Aborted
        )
    }
}

/// What an ingest job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Insert,
    Update,
    Upsert,
    Delete,
    HardDelete,
}

impl Operation {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "insert" => Operation::Insert,
            "update" => Operation::Update,
            "upsert" => Operation::Upsert,
            "delete" => Operation::Delete,
            "hardDelete" => Operation::HardDelete,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Upsert => "upsert",
            Operation::Delete => "delete",
            Operation::HardDelete => "hardDelete",
        }
    }
}

fn delimiter(name: &str) -> Option<u8> {
    Some(match name {
        "COMMA" => b',',
        "TAB" => b'\t',
        "SEMICOLON" => b';',
        "PIPE" => b'|',
        "CARET" => b'^',
        "BACKQUOTE" => b'`',
        _ => return None,
    })
}

/// The settings every job has.
#[derive(Debug, Clone)]
struct Common {
    id: String,
    object: String,
    created: String,
    modstamp: String,
    state: JobState,
    api_version: String,
    line_ending: String,
    column_delimiter: String,
    processed: u64,
    error_message: Option<String>,
    started: Option<std::time::Instant>,
    took_ms: u64,
}

impl Common {
    fn new(id: String, object: String, version: &str, line_ending: String, delim: String) -> Self {
        let now = sf_datetime(SystemTime::now());
        Common {
            id,
            object,
            created: now.clone(),
            modstamp: now,
            state: JobState::Open,
            api_version: version.to_owned(),
            line_ending,
            column_delimiter: delim,
            processed: 0,
            error_message: None,
            started: None,
            took_ms: 0,
        }
    }

    fn set_state(&mut self, state: JobState) {
        self.state = state;
        self.modstamp = sf_datetime(SystemTime::now());
        match state {
            JobState::InProgress => self.started = Some(std::time::Instant::now()),
            s if s.finished() => {
                self.took_ms = self.started.map_or(0, |t| {
                    t.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
                });
            }
            _ => {}
        }
    }

    fn delim(&self) -> u8 {
        delimiter(&self.column_delimiter).unwrap_or(b',')
    }

    fn terminator(&self) -> csv::Terminator {
        if self.line_ending == "CRLF" {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        }
    }
}

/// An ingest job and its results.
pub(crate) struct IngestJob {
    common: Common,
    operation: Operation,
    external_id: Option<String>,
    data: Option<Bytes>,
    failed: u64,
    successful_csv: Vec<u8>,
    failed_csv: Vec<u8>,
    unprocessed_csv: Vec<u8>,
    abort: bool,
}

/// A query job and its result rows (CSV lines, without the header).
pub(crate) struct QueryJob {
    common: Common,
    operation: &'static str,
    /// The job's SOQL as the client sent it.
    soql: String,
    header: Vec<String>,
    rows: Arc<Results>,
}

/// Result rows rendered as CSV in the job's dialect (a part of [`Results`]): a page is
/// the header and slices of parts' `body`.
pub(crate) struct Rendered {
    body: Vec<u8>,
    /// Where each row ends in `body`.
    ends: Vec<usize>,
}

impl Rendered {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Rows `start..end` (in range), as CSV bytes.
    fn slice(&self, start: usize, end: usize) -> &[u8] {
        let from = if start == 0 { 0 } else { self.ends[start - 1] };
        let to = if end == 0 { 0 } else { self.ends[end - 1] };
        &self.body[from..to]
    }
}

/// A query job's results as they are rendered: the job is `JobComplete` once its rows are
/// chosen and ordered, and their CSV is rendered behind it in parts (in row order, on the
/// cores, the org read-locked throughout — other reads go on, writes wait — so the
/// results are the org as it was when the job ran). A page waits for the parts it spans.
pub(crate) struct Results {
    /// How many rows.
    rows: usize,
    /// Rows per part (the last may hold fewer).
    part_rows: usize,
    parts: Mutex<Parts>,
    /// Bumped whenever a part is rendered or rendering fails.
    progress: tokio::sync::watch::Sender<u64>,
}

struct Parts {
    rendered: Vec<Option<Arc<Rendered>>>,
    failed: Option<String>,
}

impl Results {
    /// Results of `rows` rows, none rendered yet, in parts of `part_rows`.
    fn new(rows: usize, part_rows: usize) -> Self {
        let part_rows = part_rows.max(1);
        Results {
            rows,
            part_rows,
            parts: Mutex::new(Parts {
                rendered: vec![None; rows.div_ceil(part_rows)],
                failed: None,
            }),
            progress: tokio::sync::watch::Sender::new(0),
        }
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Part `index` is rendered.
    fn put(&self, index: usize, part: Rendered) {
        if let Some(slot) = self.parts().rendered.get_mut(index) {
            *slot = Some(Arc::new(part));
        }
        self.progress.send_modify(|n| *n += 1);
    }

    /// Rendering stopped: pages not yet served fail with `reason`.
    fn fail(&self, reason: String) {
        self.parts().failed = Some(reason);
        self.progress.send_modify(|n| *n += 1);
    }

    /// Rows `start..end` (in range) as CSV bytes, once rendered.
    async fn slice(&self, start: usize, end: usize) -> Result<Vec<u8>, String> {
        if start >= end {
            return Ok(Vec::new());
        }
        let (first, last) = (start / self.part_rows, (end - 1) / self.part_rows);
        let mut progress = self.progress.subscribe();
        let parts = loop {
            {
                let parts = self.parts();
                if let Some(reason) = &parts.failed {
                    return Err(reason.clone());
                }
                let ready: Option<Vec<Arc<Rendered>>> =
                    parts.rendered[first..=last].iter().cloned().collect();
                if let Some(ready) = ready {
                    break ready;
                }
            }
            if progress.changed().await.is_err() {
                return Err("the results are no longer being rendered".into());
            }
        };
        let mut out = Vec::new();
        for (k, part) in (first..=last).zip(parts) {
            let base = k * self.part_rows;
            let from = start.max(base) - base;
            let to = end.min(base + part.len()) - base;
            out.extend_from_slice(part.slice(from, to));
        }
        Ok(out)
    }
}

/// Bulk API 2.0's state: the shared core and the jobs.
pub(crate) struct Bulk {
    core: Arc<Core>,
    jobs: Mutex<Jobs>,
}

crate::state::deref_to_core!(Bulk);

/// Every Bulk API 2.0 job of the sandbox.
#[derive(Default)]
pub(crate) struct Jobs {
    ingest: HashMap<String, IngestJob>,
    query: HashMap<String, QueryJob>,
}

impl Bulk {
    /// Bulk API 2.0 over the shared core, with no job yet.
    pub(crate) fn new(core: Arc<Core>) -> Arc<Self> {
        Arc::new(Bulk {
            core,
            jobs: Mutex::new(Jobs::default()),
        })
    }

    /// The `/jobs/ingest` and `/jobs/query` routes (to nest under
    /// `/services/data/{version}`).
    pub(crate) fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/jobs/ingest", post(create_ingest).get(list_ingest))
            .route(
                "/jobs/ingest/{id}",
                get(get_ingest).patch(patch_ingest).delete(delete_job),
            )
            .route(
                "/jobs/ingest/{id}/batches",
                put(upload).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
            )
            .route("/jobs/ingest/{id}/{which}", get(ingest_results))
            .route("/jobs/query", post(create_query).get(list_query))
            .route(
                "/jobs/query/{id}",
                get(get_query).patch(patch_query).delete(delete_job),
            )
            .route("/jobs/query/{id}/results", get(query_results))
            .with_state(self.clone())
    }

    /// Every job's `(id, state)`.
    pub(crate) fn bulk_jobs(&self) -> Vec<(String, String)> {
        let all = jobs(self);
        let mut out: Vec<(String, String)> = all
            .ingest
            .values()
            .map(|j| &j.common)
            .chain(all.query.values().map(|j| &j.common))
            .map(|c| (c.id.clone(), c.state.as_str().to_owned()))
            .collect();
        out.sort();
        out
    }

    /// The SOQL of every Bulk API 2.0 query job, oldest first.
    pub(crate) fn bulk_queries(&self) -> Vec<String> {
        let all = jobs(self);
        let mut out: Vec<(&String, &String)> = all
            .query
            .values()
            .map(|j| (&j.common.id, &j.soql))
            .collect();
        // Job ids are numbered in creation order, zero-padded.
        out.sort();
        out.into_iter().map(|(_, soql)| soql.clone()).collect()
    }
}

fn bulk_error(code: &str, message: impl Into<String>) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, ApiError::new(code, message))
}

fn not_found_job() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        ApiError::new("NOT_FOUND", "The requested resource does not exist"),
    )
}

fn jobs(s: &Bulk) -> std::sync::MutexGuard<'_, Jobs> {
    s.jobs.lock().unwrap_or_else(PoisonError::into_inner)
}

fn version(p: &HashMap<String, String>) -> String {
    p.get("version")
        .map(|v| v.trim_start_matches('v').to_owned())
        .unwrap_or_default()
}

fn ingest_info(j: &IngestJob, detail: bool) -> Value {
    let c = &j.common;
    let mut v = json!({
        "id": c.id, "operation": j.operation.as_str(), "object": c.object,
        "createdById": "0058d000000001AAAA", "createdDate": c.created, "systemModstamp": c.modstamp,
        "state": c.state.as_str(), "externalIdFieldName": j.external_id,
        "concurrencyMode": "Parallel", "contentType": "CSV",
        "apiVersion": c.api_version.parse::<f64>().unwrap_or(0.0), "jobType": "V2Ingest",
        "contentUrl": format!("services/data/v{}/jobs/ingest/{}/batches", c.api_version, c.id),
        "lineEnding": c.line_ending, "columnDelimiter": c.column_delimiter,
    });
    if detail {
        v["retries"] = json!(0);
        v["numberRecordsProcessed"] = json!(c.processed);
        v["numberRecordsFailed"] = json!(j.failed);
        v["totalProcessingTime"] = json!(c.took_ms);
        v["apiActiveProcessingTime"] = json!(c.took_ms);
        v["apexProcessingTime"] = json!(0);
        if let Some(m) = &c.error_message {
            v["errorMessage"] = json!(m);
        }
    }
    v
}

fn query_info(j: &QueryJob, detail: bool) -> Value {
    let c = &j.common;
    let mut v = json!({
        "id": c.id, "operation": j.operation, "object": c.object,
        "createdById": "0058d000000001AAAA", "createdDate": c.created, "systemModstamp": c.modstamp,
        "state": c.state.as_str(), "concurrencyMode": "Parallel", "contentType": "CSV",
        "apiVersion": c.api_version.parse::<f64>().unwrap_or(0.0), "jobType": "V2Query",
        "lineEnding": c.line_ending, "columnDelimiter": c.column_delimiter,
    });
    if detail {
        v["numberRecordsProcessed"] = json!(c.processed);
        v["retries"] = json!(0);
        v["totalProcessingTime"] = json!(c.took_ms);
        if let Some(m) = &c.error_message {
            v["errorMessage"] = json!(m);
        }
    }
    v
}

fn json_reply(status: StatusCode, body: &Value) -> Response {
    (status, axum::Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateIngest {
    object: Option<String>,
    operation: Option<String>,
    external_id_field_name: Option<String>,
    content_type: Option<String>,
    line_ending: Option<String>,
    column_delimiter: Option<String>,
}

/// `POST /jobs/ingest`.
async fn create_ingest(
    State(s): State<Arc<Bulk>>,
    Path(p): Path<HashMap<String, String>>,
    axum::Json(req): axum::Json<CreateIngest>,
) -> Reply {
    let operation = req
        .operation
        .as_deref()
        .and_then(Operation::parse)
        .ok_or_else(|| {
            bulk_error(
                "INVALIDJOB",
                format!(
                    "InvalidJob : Invalid operation: {}",
                    req.operation.as_deref().unwrap_or("(none)")
                ),
            )
        })?;
    let object = req.object.unwrap_or_default();
    let def = s.org().object(&object).cloned().ok_or_else(|| {
        bulk_error(
            "INVALIDJOB",
            format!("InvalidJob : Invalid object: {object}"),
        )
    })?;
    if req.content_type.as_deref().is_some_and(|c| c != "CSV") {
        return Err(bulk_error(
            "INVALIDJOB",
            "InvalidJob : Bulk API 2.0 takes CSV only",
        ));
    }
    let line_ending = req.line_ending.unwrap_or_else(|| "LF".into());
    if line_ending != "LF" && line_ending != "CRLF" {
        return Err(bulk_error(
            "INVALIDJOB",
            format!("InvalidJob : Invalid lineEnding: {line_ending}"),
        ));
    }
    let delim = req.column_delimiter.unwrap_or_else(|| "COMMA".into());
    if delimiter(&delim).is_none() {
        return Err(bulk_error(
            "INVALIDJOB",
            format!("InvalidJob : Invalid columnDelimiter: {delim}"),
        ));
    }
    let external_id = match operation {
        Operation::Upsert => {
            let name = req.external_id_field_name.unwrap_or_default();
            let field = def
                .field(&name)
                .filter(|f| f.external_id || f.name == "Id")
                .ok_or_else(|| {
                    bulk_error(
                        "INVALIDJOB",
                        format!(
                            "InvalidJob : Field name provided, {name} is not an External ID or indexed field for {}",
                            def.name
                        ),
                    )
                })?;
            Some(field.name.clone())
        }
        _ => None,
    };
    let id = format!("7508d{:010}", s.next_number());
    let job = IngestJob {
        common: Common::new(
            id.clone(),
            def.name.clone(),
            &version(&p),
            line_ending,
            delim,
        ),
        operation,
        external_id,
        data: None,
        failed: 0,
        successful_csv: Vec::new(),
        failed_csv: Vec::new(),
        unprocessed_csv: Vec::new(),
        abort: false,
    };
    let info = ingest_info(&job, false);
    jobs(&s).ingest.insert(id, job);
    Ok(json_reply(StatusCode::OK, &info))
}

/// `PUT /jobs/ingest/{id}/batches`: the job's one upload.
async fn upload(
    State(s): State<Arc<Bulk>>,
    Path(p): Path<HashMap<String, String>>,
    body: Bytes,
) -> Reply {
    let id = p.get("id").cloned().unwrap_or_default();
    let mut all = jobs(&s);
    let job = all.ingest.get_mut(&id).ok_or_else(not_found_job)?;
    if job.common.state != JobState::Open {
        return Err(bulk_error(
            "INVALIDJOBSTATE",
            format!(
                "Job with id {id} is in state {}; data can be uploaded only to an Open job",
                job.common.state.as_str()
            ),
        ));
    }
    if job.data.is_some() {
        return Err(bulk_error(
            "BULK_API_ERROR",
            format!(
                "Found multiple contents for job: <{id}>, please 'Close' / 'Abort' / 'Delete' the current Job then create a new Job and make sure you only do 'PUT' once on a given Job."
            ),
        ));
    }
    job.data = Some(body);
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Deserialize)]
pub(crate) struct StateChange {
    state: String,
}

/// `PATCH /jobs/ingest/{id}`: `UploadComplete` (processing starts) or `Aborted`.
async fn patch_ingest(
    State(s): State<Arc<Bulk>>,
    Path(p): Path<HashMap<String, String>>,
    axum::Json(change): axum::Json<StateChange>,
) -> Reply {
    let id = p.get("id").cloned().unwrap_or_default();
    let info = {
        let mut all = jobs(&s);
        let job = all.ingest.get_mut(&id).ok_or_else(not_found_job)?;
        let from = job.common.state;
        match (change.state.as_str(), from) {
            ("UploadComplete", JobState::Open) => {
                if job.data.is_none() {
                    // Salesforce fails a job closed without data.
                    job.common.error_message = Some("InvalidBatch : No data was uploaded".into());
                    job.common.set_state(JobState::Failed);
                } else {
                    job.common.set_state(JobState::UploadComplete);
                    let shared = s.clone();
                    let id = id.clone();
                    tokio::spawn(async move { process_ingest(shared, id).await });
                }
            }
            ("Aborted", JobState::Open | JobState::UploadComplete | JobState::InProgress) => {
                job.abort = true;
                job.common.set_state(JobState::Aborted);
            }
            (to, from) => {
                return Err(bulk_error(
                    "INVALIDJOBSTATE",
                    format!(
                        "Cannot change the state of job {id} from {} to {to}",
                        from.as_str()
                    ),
                ));
            }
        }
        ingest_info(job, false)
    };
    Ok(json_reply(StatusCode::OK, &info))
}

/// `GET /jobs/ingest/{id}`.
async fn get_ingest(State(s): State<Arc<Bulk>>, Path(p): Path<HashMap<String, String>>) -> Reply {
    let all = jobs(&s);
    let job = all
        .ingest
        .get(p.get("id").map_or("", String::as_str))
        .ok_or_else(not_found_job)?;
    Ok(json_reply(StatusCode::OK, &ingest_info(job, true)))
}

/// `GET /jobs/ingest`: every ingest job.
async fn list_ingest(State(s): State<Arc<Bulk>>) -> Reply {
    let all = jobs(&s);
    let records: Vec<Value> = all.ingest.values().map(|j| ingest_info(j, false)).collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({"done": true, "records": records, "nextRecordsUrl": null}),
    ))
}

/// `DELETE /jobs/ingest/{id}` and `DELETE /jobs/query/{id}`: only a closed job.
async fn delete_job(State(s): State<Arc<Bulk>>, Path(p): Path<HashMap<String, String>>) -> Reply {
    let id = p.get("id").cloned().unwrap_or_default();
    let mut all = jobs(&s);
    let state = all
        .ingest
        .get(&id)
        .map(|j| j.common.state)
        .or_else(|| all.query.get(&id).map(|j| j.common.state))
        .ok_or_else(not_found_job)?;
    if matches!(state, JobState::Open | JobState::InProgress) {
        return Err(bulk_error(
            "INVALIDJOBSTATE",
            format!(
                "Job {id} is {}; only a closed, completed, aborted or failed job can be deleted",
                state.as_str()
            ),
        ));
    }
    all.ingest.remove(&id);
    all.query.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /jobs/ingest/{id}/{successfulResults|failedResults|unprocessedrecords}` (the
/// name is matched ignoring case: jsforce writes `unprocessedrecords`, the documentation
/// `unprocessedRecords`).
async fn ingest_results(
    State(s): State<Arc<Bulk>>,
    Path(p): Path<HashMap<String, String>>,
) -> Reply {
    let id = p.get("id").cloned().unwrap_or_default();
    let which = p
        .get("which")
        .map(|w| w.to_ascii_lowercase())
        .unwrap_or_default();
    let all = jobs(&s);
    let job = all.ingest.get(&id).ok_or_else(not_found_job)?;
    if !job.common.state.finished() {
        return Err(bulk_error(
            "INVALIDJOBSTATE",
            format!(
                "Job {id} is not finished yet: {}",
                job.common.state.as_str()
            ),
        ));
    }
    let body = match which.as_str() {
        "successfulresults" => job.successful_csv.clone(),
        "failedresults" => job.failed_csv.clone(),
        "unprocessedrecords" => job.unprocessed_csv.clone(),
        _ => return Err(not_found_job()),
    };
    Ok(csv_response(body, None, None))
}

fn csv_response(body: Vec<u8>, locator: Option<&str>, count: Option<usize>) -> Response {
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, "text/csv")], body).into_response();
    if let Some(l) = locator
        && let Ok(v) = HeaderValue::from_str(l)
    {
        r.headers_mut().insert("sforce-locator", v);
    }
    if let Some(n) = count
        && let Ok(v) = HeaderValue::from_str(&n.to_string())
    {
        r.headers_mut().insert("sforce-numberofrecords", v);
    }
    r
}

/// A CSV value into the field's JSON type: empty = leave as is (`None`), `#N/A` = null.
fn convert(def: &ObjectDef, column: &str, text: &str) -> Result<Option<Value>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    if text == "#N/A" {
        return Ok(Some(Value::Null));
    }
    let field_type = def
        .field(column)
        .map_or("string", |f| f.field_type.as_str());
    let bad = || ApiError {
        message: format!("{column}: value not of required type: {text}"),
        error_code: "INVALID_TYPE_ON_FIELD_IN_RECORD".into(),
        fields: vec![column.to_owned()],
    };
    Ok(Some(match field_type {
        "boolean" => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => return Err(bad()),
        },
        "int" => Value::from(text.trim().parse::<i64>().map_err(|_| bad())?),
        "double" | "currency" | "percent" => {
            let n = text.trim().parse::<f64>().map_err(|_| bad())?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(bad)?
        }
        _ => Value::String(text.to_owned()),
    }))
}

/// `REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --`
fn sf_error(e: &ApiError) -> String {
    format!("{}:{}:{} --", e.error_code, e.message, e.fields.join(","))
}

fn writer(common: &Common) -> csv::Writer<Vec<u8>> {
    writer_into(common, Vec::new())
}

/// A CSV writer in the job's dialect appending to `body`.
fn writer_into(common: &Common, body: Vec<u8>) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .delimiter(common.delim())
        .terminator(common.terminator())
        .from_writer(body)
}

/// Process an ingest job in the background, a chunk of records per hold of the org lock.
async fn process_ingest(s: Arc<Bulk>, id: String) {
    let delay = s.config.bulk_processing_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (common, operation, external_id, data) = {
        let mut all = jobs(&s);
        let Some(job) = all.ingest.get_mut(&id) else {
            return;
        };
        if job.common.state != JobState::UploadComplete {
            return;
        }
        job.common.set_state(JobState::InProgress);
        (
            job.common.clone(),
            job.operation,
            job.external_id.clone(),
            job.data.clone().unwrap_or_default(),
        )
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(common.delim())
        .has_headers(true)
        .from_reader(data.as_ref());
    let def = s.org().object(&common.object).cloned();
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_owned).collect(),
        Err(e) => {
            return fail_job(
                &s,
                &id,
                &format!("InvalidBatch : Failed to parse CSV header: {e}"),
            );
        }
    };
    let Some(def) = def else {
        return fail_job(&s, &id, "InvalidBatch : the object no longer exists");
    };
    // Column checks, as Salesforce does them before any record is processed.
    for column in &header {
        if def.field(column).is_none() {
            return fail_job(
                &s,
                &id,
                &format!("InvalidBatch : Field name not found : {column}"),
            );
        }
    }
    let needs_id = matches!(
        operation,
        Operation::Update | Operation::Delete | Operation::HardDelete
    );
    if needs_id && !header.iter().any(|c| c.eq_ignore_ascii_case("Id")) {
        return fail_job(&s, &id, "InvalidBatch : Field name not found : Id");
    }
    if let Some(key) = &external_id
        && !header.iter().any(|c| c.eq_ignore_ascii_case(key))
    {
        return fail_job(
            &s,
            &id,
            &format!("InvalidBatch : Field name not found : {key}"),
        );
    }
    let mut ok = writer(&common);
    let mut failed = writer(&common);
    let mut unprocessed = writer(&common);
    let _ = ok.write_record(
        ["sf__Id", "sf__Created"]
            .iter()
            .copied()
            .chain(header.iter().map(String::as_str)),
    );
    let _ = failed.write_record(
        ["sf__Id", "sf__Error"]
            .iter()
            .copied()
            .chain(header.iter().map(String::as_str)),
    );
    let _ = unprocessed.write_record(&header);
    let (mut processed, mut failures) = (0u64, 0u64);
    let mut records = reader.into_records();
    let mut aborted = false;
    loop {
        let chunk: Vec<Result<csv::StringRecord, csv::Error>> =
            records.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        if !aborted {
            aborted = jobs(&s).ingest.get(&id).is_none_or(|j| j.abort);
        }
        if aborted {
            for row in chunk.into_iter().flatten() {
                let _ = unprocessed.write_record(&row);
            }
            continue;
        }
        {
            let mut org = s.org_mut();
            for row in chunk {
                let row = match row {
                    Ok(r) => r,
                    Err(e) => {
                        failures += 1;
                        processed += 1;
                        let _ = failed
                            .write_record(["", &format!("INVALID_FIELD:bad CSV row: {e}: --")]);
                        continue;
                    }
                };
                let outcome = apply(
                    &mut org,
                    &def,
                    operation,
                    external_id.as_deref(),
                    &header,
                    &row,
                );
                processed += 1;
                match outcome {
                    Ok((record_id, created)) => {
                        let created = if created { "true" } else { "false" };
                        let _ = ok.write_record(
                            [record_id.as_str(), created].into_iter().chain(row.iter()),
                        );
                    }
                    Err((record_id, e)) => {
                        failures += 1;
                        let message = sf_error(&e);
                        let _ = failed.write_record(
                            [record_id.as_str(), message.as_str()]
                                .into_iter()
                                .chain(row.iter()),
                        );
                    }
                }
            }
        }
        // Let the world in between chunks (polls, aborts, other jobs).
        tokio::task::yield_now().await;
    }
    let mut all = jobs(&s);
    if let Some(job) = all.ingest.get_mut(&id) {
        job.common.processed = processed;
        job.failed = failures;
        job.successful_csv = ok.into_inner().unwrap_or_default();
        job.failed_csv = failed.into_inner().unwrap_or_default();
        job.unprocessed_csv = unprocessed.into_inner().unwrap_or_default();
        if job.common.state == JobState::InProgress {
            job.common.set_state(JobState::JobComplete);
        } else {
            job.common.set_state(job.common.state);
        }
    }
}

/// One record of an ingest job: `(id, created)`, or `(id or "", error)`.
fn apply(
    org: &mut super::org::Org,
    def: &ObjectDef,
    operation: Operation,
    external_id: Option<&str>,
    header: &[String],
    row: &csv::StringRecord,
) -> Result<(String, bool), (String, ApiError)> {
    let mut fields = Fields::new();
    let mut record_id = String::new();
    let mut key_value = None;
    for (column, text) in header.iter().zip(row.iter()) {
        let name = def
            .field(column)
            .map_or(column.as_str(), |f| f.name.as_str());
        if name == "Id" {
            record_id = text.to_owned();
            continue;
        }
        if external_id.is_some_and(|k| k == name) {
            key_value = Some(text.to_owned());
            continue;
        }
        match convert(def, name, text) {
            Ok(Some(v)) => {
                fields.insert(name.to_owned(), v);
            }
            Ok(None) => {}
            Err(e) => return Err((record_id, e)),
        }
    }
    let object = def.name.as_str();
    let missing_id = || ApiError::new("MISSING_ARGUMENT", "Id not specified in an update call");
    match operation {
        Operation::Insert => org
            .create(object, &fields)
            .map(|id| (id, true))
            .map_err(|e| (String::new(), e)),
        Operation::Update if record_id.is_empty() => Err((record_id, missing_id())),
        Operation::Update => org
            .update(object, &record_id, &fields)
            .map(|()| (super::org::normalize_id(&record_id), false))
            .map_err(|e| (record_id.clone(), e)),
        Operation::Upsert => {
            let key = external_id.unwrap_or("Id");
            let value = if key == "Id" {
                record_id.clone()
            } else {
                key_value.unwrap_or_default()
            };
            if value.is_empty() {
                return Err((
                    String::new(),
                    ApiError {
                        message: format!("{key} not specified"),
                        error_code: "MISSING_ARGUMENT".into(),
                        fields: vec![key.to_owned()],
                    },
                ));
            }
            org.upsert(object, key, &value, &fields)
                .map_err(|e| (String::new(), e))
        }
        Operation::Delete | Operation::HardDelete if record_id.is_empty() => {
            Err((record_id, missing_id()))
        }
        Operation::Delete => org
            .delete(object, &record_id)
            .map(|()| (super::org::normalize_id(&record_id), false))
            .map_err(|e| (record_id.clone(), e)),
        Operation::HardDelete => org
            .hard_delete(object, &record_id)
            .map(|()| (super::org::normalize_id(&record_id), false))
            .map_err(|e| (record_id.clone(), e)),
    }
}

fn fail_job(s: &Bulk, id: &str, message: &str) {
    let mut all = jobs(s);
    if let Some(job) = all.ingest.get_mut(id) {
        // Every record is unprocessed when the job fails before processing.
        let mut unprocessed = writer(&job.common);
        if let Some(data) = &job.data {
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(job.common.delim())
                .has_headers(false)
                .from_reader(data.as_ref());
            for row in reader.records().flatten() {
                let _ = unprocessed.write_record(&row);
            }
        }
        job.unprocessed_csv = unprocessed.into_inner().unwrap_or_default();
        job.common.error_message = Some(message.to_owned());
        job.common.set_state(JobState::Failed);
    }
    if let Some(job) = all.query.get_mut(id) {
        job.common.error_message = Some(message.to_owned());
        job.common.set_state(JobState::Failed);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateQuery {
    operation: Option<String>,
    query: Option<String>,
    content_type: Option<String>,
    line_ending: Option<String>,
    column_delimiter: Option<String>,
}

/// `POST /jobs/query`: the query is checked now and run in the background.
async fn create_query(
    State(s): State<Arc<Bulk>>,
    Path(p): Path<HashMap<String, String>>,
    axum::Json(req): axum::Json<CreateQuery>,
) -> Reply {
    let operation = match req.operation.as_deref() {
        Some("query") => "query",
        Some("queryAll") => "queryAll",
        other => {
            return Err(bulk_error(
                "INVALIDJOB",
                format!(
                    "InvalidJob : Invalid operation: {}",
                    other.unwrap_or("(none)")
                ),
            ));
        }
    };
    if req.content_type.as_deref().is_some_and(|c| c != "CSV") {
        return Err(bulk_error(
            "INVALIDJOB",
            "InvalidJob : Bulk API 2.0 takes CSV only",
        ));
    }
    let text = req.query.unwrap_or_default();
    let parsed = soql::parse(&text)
        .map_err(|e| Failure::bad(ApiError::new("MALFORMED_QUERY", e.to_string())))?;
    if parsed.offset.is_some() {
        return Err(bulk_error(
            "FeatureNotEnabled",
            "OFFSET clause is not supported in Bulk API 2.0 query",
        ));
    }
    let v = version(&p);
    // Field errors are reported now, as Salesforce validates the query at creation.
    {
        let org = s.org();
        let mut probe = parsed.clone();
        probe.limit = Some(0);
        eval::select(&org, &probe).map_err(Failure::bad)?;
    }
    let line_ending = req.line_ending.unwrap_or_else(|| "LF".into());
    let delim = req.column_delimiter.unwrap_or_else(|| "COMMA".into());
    if delimiter(&delim).is_none() {
        return Err(bulk_error(
            "INVALIDJOB",
            format!("InvalidJob : Invalid columnDelimiter: {delim}"),
        ));
    }
    let id = format!("7508d{:010}", s.next_number());
    let mut common = Common::new(id.clone(), parsed.object.clone(), &v, line_ending, delim);
    common.set_state(JobState::UploadComplete);
    let job = QueryJob {
        common,
        operation,
        soql: text,
        header: parsed.fields.clone(),
        rows: Arc::new(Results::new(0, 1)),
    };
    let info = query_info(&job, false);
    jobs(&s).query.insert(id.clone(), job);
    let shared = s.clone();
    tokio::spawn(async move { process_query(shared, id, parsed).await });
    Ok(json_reply(StatusCode::OK, &info))
}

async fn process_query(s: Arc<Bulk>, id: String, mut parsed: soql::Query) {
    let delay = s.config.bulk_processing_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    {
        let mut all = jobs(&s);
        match all.query.get_mut(&id) {
            Some(j) if j.common.state == JobState::UploadComplete => {
                j.common.set_state(JobState::InProgress);
                parsed.all_rows |= j.operation == "queryAll";
            }
            _ => return,
        }
    }
    let shared = s.clone();
    let Some(common) = jobs(&s).query.get(&id).map(|j| j.common.clone()) else {
        return;
    };
    let job_id = id.clone();
    let result = tokio::task::spawn_blocking(move || {
        let org = shared.org();
        let (def, records) = eval::select(&org, &parsed)?;
        let results = Arc::new(Results::new(records.len(), RESULT_PART));
        {
            let mut all = jobs(&shared);
            match all.query.get_mut(&job_id) {
                Some(job) if job.common.state == JobState::InProgress => {
                    job.common.processed = records.len() as u64;
                    job.rows = results.clone();
                    job.common.set_state(JobState::JobComplete);
                }
                // Aborted or deleted meanwhile: nothing to render.
                _ => return Ok::<(), ApiError>(()),
            }
        }
        render_in_parts(
            &org,
            &def,
            &parsed.fields,
            &common,
            &records,
            &results,
            eval::worker_threads(),
        );
        Ok(())
    })
    .await;
    let failure = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => format!("{}: {}", e.error_code, e.message),
        Err(e) => format!("internal error: {e}"),
    };
    let mut all = jobs(&s);
    if let Some(job) = all.query.get_mut(&id)
        && job.common.state == JobState::InProgress
    {
        job.common.error_message = Some(failure);
        job.common.set_state(JobState::Failed);
    }
}

/// Rows per rendered part of a query job's results.
const RESULT_PART: usize = 10_000;

/// [`render`] of `results`' parts, in row order, on up to `threads` threads (thread `t`
/// renders parts `t`, `t + threads`, …: the first pages are ready first). A part that
/// panics fails the pages not yet served (never a page with rows missing).
fn render_in_parts(
    org: &Org,
    def: &ObjectDef,
    fields: &[String],
    common: &Common,
    records: &[&Fields],
    results: &Results,
    threads: usize,
) {
    let parts = records.len().div_ceil(results.part_rows);
    let threads = threads.clamp(1, parts.max(1));
    let panicked = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    for k in (t..parts).step_by(threads) {
                        let start = k * results.part_rows;
                        let end = (start + results.part_rows).min(records.len());
                        results.put(k, render(org, def, fields, common, &records[start..end]));
                    }
                })
            })
            .collect();
        handles.into_iter().any(|h| h.join().is_err())
    });
    if panicked {
        results.fail("internal error: rendering the results failed".into());
    }
}

/// Rows of a query job rendered as CSV in the job's dialect.
fn render(
    org: &Org,
    def: &ObjectDef,
    fields: &[String],
    common: &Common,
    records: &[&Fields],
) -> Rendered {
    let mut reader = eval::RowReader::new(eval::Column::plan(def, fields));
    let mut w = writer(common);
    let mut ends = Vec::with_capacity(records.len());
    let mut cell = String::new();
    let mut values = Vec::with_capacity(fields.len());
    for (n, r) in records.iter().enumerate() {
        values.clear();
        reader.read(org, def, r, &mut values);
        for value in &values {
            let _ = match &**value {
                Value::String(text) => w.write_field(text),
                other => {
                    cell.clear();
                    write_cell(&mut cell, other);
                    w.write_field(&cell)
                }
            };
        }
        let _ = w.write_record(None::<&[u8]>);
        let _ = w.flush();
        ends.push(w.get_ref().len());
        // Room for the whole body at the size of the rows so far: one allocation
        // instead of a copy at every doubling.
        if n == 1023 {
            w = match w.into_inner() {
                Ok(mut body) => {
                    body.reserve(body.len() / 1024 * (records.len() + records.len() / 8));
                    writer_into(common, body)
                }
                Err(e) => e.into_inner(),
            };
        }
    }
    Rendered {
        body: w.into_inner().unwrap_or_default(),
        ends,
    }
}

/// The CSV text of a value, appended to `out`: nothing for null.
fn write_cell(out: &mut String, v: &Value) {
    use std::fmt::Write as _;
    match v {
        Value::Null => {}
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// `GET /jobs/query/{id}`.
async fn get_query(State(s): State<Arc<Bulk>>, Path(p): Path<HashMap<String, String>>) -> Reply {
    let all = jobs(&s);
    let job = all
        .query
        .get(p.get("id").map_or("", String::as_str))
        .ok_or_else(not_found_job)?;
    Ok(json_reply(StatusCode::OK, &query_info(job, true)))
}

/// `GET /jobs/query`: every query job.
async fn list_query(State(s): State<Arc<Bulk>>) -> Reply {
    let all = jobs(&s);
    let records: Vec<Value> = all.query.values().map(|j| query_info(j, false)).collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({"done": true, "records": records, "nextRecordsUrl": null}),
    ))
}

/// `PATCH /jobs/query/{id}`: `Aborted`.
async fn patch_query(
    State(s): State<Arc<Bulk>>,
    Path(p): Path<HashMap<String, String>>,
    axum::Json(change): axum::Json<StateChange>,
) -> Reply {
    let id = p.get("id").cloned().unwrap_or_default();
    let mut all = jobs(&s);
    let job = all.query.get_mut(&id).ok_or_else(not_found_job)?;
    match (change.state.as_str(), job.common.state) {
        ("Aborted", JobState::UploadComplete | JobState::InProgress) => {
            job.common.set_state(JobState::Aborted);
            Ok(json_reply(StatusCode::OK, &query_info(job, false)))
        }
        (to, from) => Err(bulk_error(
            "INVALIDJOBSTATE",
            format!(
                "Cannot change the state of job {id} from {} to {to}",
                from.as_str()
            ),
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResultsParams {
    locator: Option<String>,
    max_records: Option<usize>,
}

/// `GET /jobs/query/{id}/results?locator=&maxRecords=`: one page of CSV.
async fn query_results(
    State(s): State<Arc<Bulk>>,
    Path(p): Path<HashMap<String, String>>,
    UrlQuery(params): UrlQuery<ResultsParams>,
) -> Reply {
    let id = p.get("id").cloned().unwrap_or_default();
    let (common, header, rows) = {
        let all = jobs(&s);
        let job = all.query.get(&id).ok_or_else(not_found_job)?;
        if job.common.state != JobState::JobComplete {
            return Err(bulk_error(
                "INVALIDJOBSTATE",
                format!(
                    "Job {id} is {}; results are available once it is JobComplete",
                    job.common.state.as_str()
                ),
            ));
        }
        (job.common.clone(), job.header.clone(), job.rows.clone())
    };
    let start = match params.locator.as_deref().filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(l.trim_end_matches('='))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|n| *n <= rows.rows)
            .ok_or_else(|| bulk_error("INVALIDLOCATOR", format!("Invalid locator: {l}")))?,
    };
    let size = params
        .max_records
        .filter(|n| *n > 0)
        .unwrap_or(s.config.bulk_query_page_size)
        .max(1);
    let end = (start + size).min(rows.rows);
    let page = rows.slice(start, end).await.map_err(|reason| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            vec![ApiError::new("UNKNOWN_EXCEPTION", reason)],
        )
    })?;
    let mut w = writer(&common);
    let _ = w.write_record(&header);
    let mut body = w.into_inner().unwrap_or_default();
    body.extend_from_slice(&page);
    let locator = if end < rows.rows {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(end.to_string())
    } else {
        "null".to_owned()
    };
    Ok(csv_response(body, Some(&locator), Some(end - start)))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use super::*;
    use crate::org::{FieldDef, ObjectDef};

    #[test]
    fn csv_text_becomes_the_field_type_and_na_is_null() {
        let def = ObjectDef::new(
            "Thing__c",
            "a01",
            vec![
                FieldDef::new("Flag__c", "boolean"),
                FieldDef::new("Count__c", "int"),
                FieldDef::new("Amount__c", "currency"),
                FieldDef::new("Note__c", "string"),
            ],
        );
        assert_eq!(convert(&def, "Flag__c", "TRUE").unwrap(), Some(json!(true)));
        assert_eq!(convert(&def, "Count__c", "42").unwrap(), Some(json!(42)));
        assert_eq!(convert(&def, "Amount__c", "1.5").unwrap(), Some(json!(1.5)));
        assert_eq!(convert(&def, "Note__c", "").unwrap(), None);
        assert_eq!(convert(&def, "Note__c", "#N/A").unwrap(), Some(Value::Null));
        let e = convert(&def, "Count__c", "many").unwrap_err();
        assert_eq!(e.error_code, "INVALID_TYPE_ON_FIELD_IN_RECORD");
    }

    /// The cells of every row `soql` selects, as the query job renders them.
    fn cells(org: &crate::org::Org, soql: &str) -> Vec<Vec<String>> {
        let q = crate::soql::parse(soql).unwrap();
        let (def, rows) = eval::select(org, &q).unwrap();
        let mut reader = eval::RowReader::new(eval::Column::plan(&def, &q.fields));
        rows.into_iter()
            .map(|r| {
                let mut values = Vec::new();
                reader.read(org, &def, r, &mut values);
                values
                    .iter()
                    .map(|v| {
                        let mut text = String::new();
                        write_cell(&mut text, v);
                        text
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_result_rendered_in_parts_is_the_result_rendered_whole() {
        use crate::org::{Org, standard_objects};
        let mut org = Org::new(standard_objects());
        org.seed(41, 0, 0);
        let q = crate::soql::parse(
            "SELECT Id, Name, AnnualRevenue, BillingCity FROM Account ORDER BY Name",
        )
        .unwrap();
        let (def, rows) = eval::select(&org, &q).unwrap();
        let common = Common::new(
            "750x".into(),
            "Account".into(),
            "62.0",
            "CRLF".into(),
            "SEMICOLON".into(),
        );
        let whole = render(&org, &def, &q.fields, &common, &rows);
        assert_eq!(whole.len(), 41);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (part, threads) in [(7, 3), (10, 4), (41, 2), (100, 4), (1, 1)] {
            let results = Results::new(rows.len(), part);
            render_in_parts(&org, &def, &q.fields, &common, &rows, &results, threads);
            // Pages within a part, across parts, the whole, and empty.
            for (start, end) in [
                (0, 41),
                (0, 5),
                (3, 17),
                (7, 14),
                (40, 41),
                (41, 41),
                (12, 12),
            ] {
                let page = rt.block_on(results.slice(start, end)).unwrap();
                assert_eq!(
                    page,
                    whole.slice(start, end),
                    "rows {start}..{end}, parts of {part} on {threads} threads"
                );
            }
        }
        // Page slices still fall on row boundaries.
        let page = String::from_utf8(whole.slice(10, 20).to_vec()).unwrap();
        assert_eq!(page.matches("\r\n").count(), 10);
    }

    /// A page waits for the parts it spans, whatever order they are rendered in; when
    /// rendering fails, a waiting page fails with the reason.
    #[test]
    fn a_page_waits_for_its_parts_and_fails_when_rendering_does() {
        let part = |rows: std::ops::Range<usize>| {
            let mut body = Vec::new();
            let mut ends = Vec::new();
            for r in rows {
                body.extend_from_slice(format!("row{r}\n").as_bytes());
                ends.push(body.len());
            }
            Rendered { body, ends }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let results = Results::new(25, 10);
            let mut page = std::pin::pin!(results.slice(8, 23));
            // Parts 2 and 1 rendered: the page still waits for part 0.
            assert!(futures::poll!(page.as_mut()).is_pending());
            results.put(2, part(20..25));
            assert!(futures::poll!(page.as_mut()).is_pending());
            results.put(1, part(10..20));
            assert!(futures::poll!(page.as_mut()).is_pending());
            results.put(0, part(0..10));
            let expected: String = (8..23).map(|r| format!("row{r}\n")).collect();
            assert_eq!(String::from_utf8(page.await.unwrap()).unwrap(), expected);

            let results = Results::new(25, 10);
            results.put(0, part(0..10));
            let mut page = std::pin::pin!(results.slice(5, 15));
            assert!(futures::poll!(page.as_mut()).is_pending());
            results.fail("rendering broke".into());
            assert_eq!(page.await, Err("rendering broke".to_owned()));
            // Rows already rendered are not served once rendering failed either.
            assert!(results.slice(0, 5).await.is_err());
        });
    }

    #[test]
    fn order_by_id_sorts_either_way() {
        use crate::org::{Org, standard_objects};
        let mut org = Org::new(standard_objects());
        org.seed(40, 0, 0);
        let ids = |soql: &str| -> Vec<String> {
            cells(&org, soql)
                .into_iter()
                .map(|mut r| r.remove(0))
                .collect()
        };
        // Text sorts case-insensitively, as in Salesforce.
        let ascending = ids("SELECT Id FROM Account ORDER BY id");
        let mut sorted = ascending.clone();
        sorted.sort_by_key(|id| id.to_lowercase());
        assert_eq!(ascending.len(), 40);
        assert_eq!(ascending, sorted);
        let mut descending = ids("SELECT Id FROM Account ORDER BY Id DESC");
        descending.reverse();
        assert_eq!(descending, ascending);
        let by_name = ids("SELECT Id FROM Account ORDER BY Name DESC, Id");
        assert_eq!(by_name.len(), 40);
    }

    #[test]
    fn cells_reach_into_parent_records_by_any_case() {
        use crate::org::{Org, standard_objects};
        let mut org = Org::new(standard_objects());
        let obj = |v: Value| v.as_object().unwrap().clone();
        let acme = org
            .create(
                "Account",
                &obj(json!({"Name": "Acme", "NumberOfEmployees": 3})),
            )
            .unwrap();
        org.create(
            "Contact",
            &obj(json!({"LastName": "Ann", "AccountId": acme})),
        )
        .unwrap();
        org.create("Contact", &obj(json!({"LastName": "Bo"})))
            .unwrap();
        let rows = cells(
            &org,
            "SELECT lastname, account.name, Account.BillingCity, Account.NumberOfEmployees FROM Contact ORDER BY LastName",
        );
        assert_eq!(
            rows,
            vec![
                vec!["Ann".to_owned(), "Acme".into(), String::new(), "3".into()],
                vec!["Bo".to_owned(), String::new(), String::new(), String::new()],
            ]
        );
    }
}
