//! The body of the `bulk_sync` benches (system allocator and mimalloc). Phases, each
//! printing one line (`MOODBRIDGE_BENCH_PHASES`, a comma list, runs some only, e.g. under
//! a profiler; default all):
//! - `stream`: the Bulk 2.0 query job and its pages alone, parsed and typed (6 fields);
//! - `engine`: N Accounts (every field) from the sandbox into a SQLite table through the
//!   sync engine with the pipeline's defaults (the compact audit: each create's key and
//!   digest): `SalesforceSource` above its bulk threshold reads a Bulk 2.0 query job page
//!   by page; records/s, the wait for the job (until the first batch is written) and the
//!   rate after it, the client's CPU seconds and peak RSS;
//! - `engine-fullaudit`: the same into a fresh table with `audit = "full"` (every
//!   after-image kept whole);
//! - `engine-noaudit`: the same with `audit = "off"` (a load that needs no rollback);
//! - `ingest`: a Bulk 2.0 ingest of N new Accounts (spooled CSV, parallel jobs, each
//!   record's outcome handed over as the results are read: `bulk_ingest_each`); records/s,
//!   client CPU and peak RSS;
//! - `floor`: what SQLite alone takes to store N rows of the `engine` phase's shape (the
//!   17 Account columns, text, primary key `Id`, WAL, `synchronous = FULL`) through one
//!   prepared statement, 2,000 rows per transaction, with no engine, no parsing and no
//!   sandbox: the bound below which the table sink cannot go on this machine (only the
//!   inserts and commits are timed, not making the rows);
//! - `ceiling`: the least any client could do for the `engine` phase's work: the same Bulk
//!   2.0 query job (every field) and its pages fetched over plain HTTP (one page ahead),
//!   each row kept as CSV bytes (no JSON, no engine), a writer thread inserting them into
//!   the `floor` table (one prepared statement, 2,000 rows a transaction, empty → NULL),
//!   timed from the job's creation to the last commit, with the sandbox serving pages on
//!   the same cores: what a client could reach here, against which the `engine` phase is
//!   measured.

use std::sync::Arc;
use std::time::Instant;

use connector_salesforce::bulk::{IngestOperation, IngestOptions, PollOptions};
use connector_salesforce::client::SalesforceClient;
use connector_salesforce::sync::SalesforceSource;
use connector_sqlite::SqliteTableSink;
use moodbridge_core::engine::{Pipeline, ProgressEvent, SyncEngine};
use moodbridge_core::state::{ChainStatus, SqliteStateStore, StateStore};
use moodbridge_core::testing::{peak_rss_mib, reset_peak_rss};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::common::{self, Server};

/// Run the benches; `allocator` names the global allocator in the output.
pub fn main(allocator: &str) {
    let (_smoke, records) = common::args(1_000_000, 3_000);
    let server = Server::start(records, 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let allocator = allocator.to_owned();
    rt.block_on(rt.spawn(async move {
        let sf = server.client("salesforce:bench").await;
        // The sandbox is local: poll often, so the job wait is the job's, not the back-off's.
        let poll = PollOptions {
            initial: std::time::Duration::from_millis(50),
            max: std::time::Duration::from_millis(250),
            ..PollOptions::default()
        };
        let phases = std::env::var("MOODBRIDGE_BENCH_PHASES").unwrap_or_else(|_| {
            "stream,engine,engine-fullaudit,engine-noaudit,ceiling,ingest,floor".to_owned()
        });
        let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);
        let dir = tempfile::tempdir().unwrap();
        if phase("stream") {
            stream(&sf, &poll).await;
        }
        for (name, audit) in [
            ("engine", "compact"),
            ("engine-fullaudit", "full"),
            ("engine-noaudit", "off"),
        ] {
            if phase(name) {
                eprintln!("{name} phase starts");
                engine(
                    &sf,
                    &poll,
                    &dir.path().join(name),
                    audit,
                    records,
                    &allocator,
                )
                .await;
            }
        }
        // Before `ingest`, which adds Accounts: every phase up to here reads the seeded N.
        if phase("ceiling") {
            ceiling(&server, &dir.path().join("ceiling.db"), records).await;
        }
        if phase("ingest") {
            ingest(&sf, poll, records, &allocator).await;
        }
        if phase("floor") {
            floor(&dir.path().join("floor.db"), records);
        }
        drop(server);
    }))
    .unwrap();
}

/// The source side alone: the Bulk 2.0 query job and its pages, parsed and typed.
async fn stream(sf: &SalesforceClient, poll: &PollOptions) {
    use futures::TryStreamExt;
    let start = Instant::now();
    let mut n = 0u64;
    let mut pages = std::pin::pin!(sf.bulk_query(
        "SELECT Id, Name, Industry, BillingCity, AnnualRevenue, SystemModstamp FROM Account",
        connector_salesforce::bulk::BulkQueryOptions {
            max_records: Some(connector_salesforce::sync::DEFAULT_BULK_PAGE),
            poll: poll.clone(),
            ..Default::default()
        },
    ));
    while let Some(r) = pages.try_next().await.unwrap() {
        std::hint::black_box(r);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "bulk_query_stream: {n} records in {secs:.2} s = {:.0} records/s (job + pages, no engine)",
        n as f64 / secs
    );
}

/// Sandbox → engine → a SQLite table (WAL, `synchronous = FULL`) in `dir`.
async fn engine(
    sf: &SalesforceClient,
    poll: &PollOptions,
    dir: &std::path::Path,
    audit: &str,
    records: u64,
    allocator: &str,
) {
    std::fs::create_dir_all(dir).unwrap();
    let state = Arc::new(SqliteStateStore::open(&dir.join("state.db")).await.unwrap());
    let warehouse = SqliteTableSink::open(&dir.join("warehouse.db"))
        .await
        .unwrap();
    let source = SalesforceSource::new(sf.clone(), ["Account"]).poll(poll.clone());
    let pipeline = Pipeline::from_toml(&format!(
        "name = \"bench\"\naudit = \"{audit}\"\n[[streams]]\nname = \"Account\"\nmode = \"full_refresh\"\nbatch_size = 2000\n",
    ))
    .unwrap();
    let engine = SyncEngine::new(state.clone());
    reset_peak_rss();
    // When the first batch is written: the wait for the query job, before any page.
    let mut events = engine.subscribe();
    let first = tokio::spawn(async move {
        let start = Instant::now();
        loop {
            match events.recv().await {
                Ok(ProgressEvent::Batch { .. }) => return Some(start.elapsed().as_secs_f64()),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let start = Instant::now();
    let cpu = common::cpu_seconds_of(std::process::id());
    let report = engine.run(&pipeline, &source, &warehouse).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu = common::cpu_seconds_of(std::process::id()) - cpu;
    let rss = peak_rss_mib();
    assert_eq!(report.counts.written, records);
    assert_eq!(warehouse.count("Account").await.unwrap(), records);
    // Every write is in the audit chain (a fresh store per phase), and the chain holds.
    match state.verify_audit().await.unwrap() {
        ChainStatus::Intact { entries } => {
            assert_eq!(entries, if audit == "off" { 0 } else { records });
        }
        broken => panic!("the audit chain is broken: {broken:?}"),
    }
    let first = first.await.unwrap().unwrap_or(0.0);
    println!(
        "bulk_query_to_sqlite (audit {audit}, {allocator}): {records} records in {secs:.2} s = {:.0} records/s; job wait {first:.2} s, then {:.0} records/s; client CPU {cpu:.2} s; client peak RSS {rss:.1} MiB",
        records as f64 / secs,
        records as f64 / (secs - first),
    );
}

/// A Bulk 2.0 ingest of `records` new Accounts.
async fn ingest(sf: &SalesforceClient, poll: PollOptions, records: u64, allocator: &str) {
    reset_peak_rss();
    let rows = futures::stream::iter((0..records).map(|i| {
        json!({"Name": format!("Bench Firm {i}"), "Industry": "Legal", "BillingCity": "Chicago", "AnnualRevenue": i % 1_000_000})
    }));
    let options = IngestOptions {
        poll,
        ..IngestOptions::default()
    };
    let start = Instant::now();
    let cpu = common::cpu_seconds_of(std::process::id());
    // Each outcome is handed over as the results are read; the bench keeps a count.
    let mut handed = 0u64;
    let ingest = sf
        .bulk_ingest_each("Account", IngestOperation::Insert, rows, &options, |o| {
            std::hint::black_box(o);
            handed += 1;
        })
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu = common::cpu_seconds_of(std::process::id()) - cpu;
    assert_eq!(ingest.succeeded, records);
    assert_eq!(handed, records);
    println!(
        "bulk_ingest_each ({allocator}): {records} records in {secs:.2} s = {:.0} records/s in {} job(s); client CPU {cpu:.2} s; client peak RSS {:.1} MiB",
        records as f64 / secs,
        ingest.jobs.len(),
        peak_rss_mib()
    );
}

/// SQLite alone: `records` Account-shaped rows through one prepared statement.
/// The 17 Account columns of the `engine` phase (its all-field read), in describe order.
const COLUMNS: [&str; 17] = [
    "Id",
    "IsDeleted",
    "CreatedDate",
    "LastModifiedDate",
    "SystemModstamp",
    "Name",
    "Type",
    "Industry",
    "BillingCity",
    "BillingState",
    "BillingCountry",
    "Phone",
    "Website",
    "AnnualRevenue",
    "NumberOfEmployees",
    "Description",
    "External_Id__c",
];

/// The `floor` and `ceiling` table in a fresh database at `path` (WAL, `synchronous =
/// FULL`), and its insert statement.
fn floor_table(path: &std::path::Path) -> (rusqlite::Connection, String) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .unwrap();
    let columns = COLUMNS.map(|c| format!("\"{c}\""));
    conn.execute_batch(&format!(
        "CREATE TABLE accounts ({}, PRIMARY KEY (\"Id\"))",
        columns.join(", ")
    ))
    .unwrap();
    let insert = format!(
        "INSERT INTO accounts ({}) VALUES ({}) ON CONFLICT DO NOTHING",
        columns.join(", "),
        vec!["?"; COLUMNS.len()].join(", ")
    );
    (conn, insert)
}

fn floor(path: &std::path::Path, records: u64) {
    let (mut conn, insert) = floor_table(path);
    let stamp = "2026-11-22T10:00:00.000Z";
    let mut timed = std::time::Duration::ZERO;
    let mut next = 0u64;
    while next < records {
        let rows: Vec<[String; 17]> = (next..records.min(next + 2_000))
            .map(|i| {
                [
                    format!("001{i:015}"),
                    "false".into(),
                    stamp.into(),
                    stamp.into(),
                    stamp.into(),
                    format!("Bench Firm {i}"),
                    "Customer".into(),
                    "Legal".into(),
                    "Chicago".into(),
                    "IL".into(),
                    "USA".into(),
                    "(312) 555-0100".into(),
                    "https://example.com".into(),
                    (i % 1_000_000).to_string(),
                    (i % 1_000).to_string(),
                    "A firm of the bench".into(),
                    String::new(),
                ]
            })
            .collect();
        next += rows.len() as u64;
        let start = Instant::now();
        let tx = conn.transaction().unwrap();
        {
            let mut statement = tx.prepare_cached(&insert).unwrap();
            for row in &rows {
                statement.execute(rusqlite::params_from_iter(row)).unwrap();
            }
        }
        tx.commit().unwrap();
        timed += start.elapsed();
    }
    let secs = timed.as_secs_f64();
    println!(
        "sqlite_floor: {records} rows in {secs:.2} s = {:.0} rows/s ({:.2} us a row; SQLite alone, no engine)",
        records as f64 / secs,
        secs * 1e6 / records as f64
    );
}

/// Sandbox → plain HTTP pages → CSV rows → one SQLite writer thread (see the module docs).
async fn ceiling(server: &Server, path: &std::path::Path, records: u64) {
    let (conn, insert) = floor_table(path);
    let (to_writer, batches) = std::sync::mpsc::sync_channel::<Vec<csv::ByteRecord>>(2);
    let writer = std::thread::spawn(move || {
        let mut conn = conn;
        let mut written = 0u64;
        for batch in batches {
            let tx = conn.transaction().unwrap();
            {
                let mut statement = tx.prepare_cached(&insert).unwrap();
                for row in &batch {
                    for (i, cell) in row.iter().enumerate() {
                        let text = std::str::from_utf8(cell).unwrap();
                        let value = (!text.is_empty()).then_some(text);
                        statement.raw_bind_parameter(i + 1, value).unwrap();
                    }
                    statement.raw_execute().unwrap();
                    written += 1;
                }
            }
            tx.commit().unwrap();
        }
        written
    });
    let http = reqwest::Client::new();
    let jobs = format!("{}/services/data/v62.0/jobs/query", server.url);
    let start = Instant::now();
    let answer = |request: reqwest::RequestBuilder| async move {
        let reply = request.bearer_auth(&server.token).send().await.unwrap();
        reply.json::<serde_json::Value>().await.unwrap()
    };
    let created = answer(http.post(&jobs).json(&json!({
        "operation": "query",
        "query": format!("SELECT {} FROM Account", COLUMNS.join(", ")),
        "contentType": "CSV",
    })))
    .await;
    let job = format!("{jobs}/{}", created["id"].as_str().unwrap());
    loop {
        let info = answer(http.get(&job)).await;
        if info["state"] == "JobComplete" {
            break;
        }
        assert!(
            info["state"] == "UploadComplete" || info["state"] == "InProgress",
            "{info}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // One page: its rows (header checked) and the next page's locator.
    let page = |locator: Option<String>| {
        let (http, token) = (http.clone(), server.token.clone());
        let mut url = format!(
            "{job}/results?maxRecords={}",
            connector_salesforce::sync::DEFAULT_BULK_PAGE
        );
        if let Some(l) = locator {
            url.push_str(&format!("&locator={l}"));
        }
        tokio::spawn(async move {
            let answer = http.get(url).bearer_auth(token).send().await.unwrap();
            let next = answer
                .headers()
                .get("Sforce-Locator")
                .and_then(|l| l.to_str().ok())
                .filter(|l| *l != "null")
                .map(str::to_owned);
            let body = answer.bytes().await.unwrap();
            let mut reader = csv::Reader::from_reader(&body[..]);
            assert_eq!(
                reader.byte_headers().unwrap(),
                &csv::ByteRecord::from(COLUMNS.to_vec())
            );
            let rows: Vec<csv::ByteRecord> = reader.byte_records().map(Result::unwrap).collect();
            (rows, next)
        })
    };
    let mut next = Some(page(None));
    while let Some(fetching) = next.take() {
        let (rows, locator) = fetching.await.unwrap();
        next = locator.map(|l| page(Some(l)));
        let mut rows = rows.into_iter();
        loop {
            let batch: Vec<csv::ByteRecord> = rows.by_ref().take(2_000).collect();
            if batch.is_empty() {
                break;
            }
            to_writer.send(batch).unwrap();
        }
    }
    drop(to_writer);
    let written = tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(written, records);
    println!(
        "bulk_query_ceiling: {written} records in {secs:.2} s = {:.0} records/s (job, pages over plain HTTP, CSV rows into one SQLite writer; no JSON, no engine)",
        written as f64 / secs
    );
}
