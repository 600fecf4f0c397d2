//! The body of the `bulk_sync` benches (system allocator and mimalloc). Phases, each
//! printing one line (`MOODBRIDGE_BENCH_PHASES`, a comma list, runs some only, e.g. under
//! a profiler; default all):
//! - `stream`: the Bulk 2.0 query job and its pages alone, parsed and typed (6 fields);
//! - `engine`: N Accounts (every field) from the sandbox into a SQLite table through the
//!   sync engine with the pipeline's defaults (audit on): `SalesforceSource` above its
//!   bulk threshold reads a Bulk 2.0 query job page by page; records/s, the wait for the
//!   job (until the first batch is written) and the rate after it, the client's peak RSS;
//! - `engine-noaudit`: the same into a fresh table with `audit = false` (a warehouse
//!   load that needs no rollback);
//! - `ingest`: a Bulk 2.0 ingest of N new Accounts (spooled CSV, parallel jobs,
//!   per-record outcomes); records/s and peak RSS;
//! - `floor`: what SQLite alone takes to store N rows of the `engine` phase's shape (the
//!   17 Account columns, text, primary key `Id`, WAL, `synchronous = FULL`) through one
//!   prepared statement, 2,000 rows per transaction, with no engine, no parsing and no
//!   sandbox: the bound below which the table sink cannot go on this machine (only the
//!   inserts and commits are timed, not making the rows).

use std::sync::Arc;
use std::time::Instant;

use connector_salesforce::bulk::{IngestOperation, IngestOptions, PollOptions};
use connector_salesforce::client::SalesforceClient;
use connector_salesforce::sync::SalesforceSource;
use moodbridge_core::engine::{Pipeline, ProgressEvent, SqliteTableSink, SyncEngine};
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
        let phases = std::env::var("MOODBRIDGE_BENCH_PHASES")
            .unwrap_or_else(|_| "stream,engine,engine-noaudit,ingest,floor".to_owned());
        let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);
        let dir = tempfile::tempdir().unwrap();
        if phase("stream") {
            stream(&sf, &poll).await;
        }
        for (name, audit) in [("engine", true), ("engine-noaudit", false)] {
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
    audit: bool,
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
        "name = \"bench\"\naudit = {audit}\n[[streams]]\nname = \"Account\"\nmode = \"full_refresh\"\nbatch_size = 2000\n",
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
    let report = engine.run(&pipeline, &source, &warehouse).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss_mib();
    assert_eq!(report.counts.written, records);
    assert_eq!(warehouse.count("Account").await.unwrap(), records);
    // Every write is in the audit chain (a fresh store per phase), and the chain holds.
    match state.verify_audit().await.unwrap() {
        ChainStatus::Intact { entries } => {
            assert_eq!(entries, if audit { records } else { 0 });
        }
        broken => panic!("the audit chain is broken: {broken:?}"),
    }
    let first = first.await.unwrap().unwrap_or(0.0);
    println!(
        "bulk_query_to_sqlite (audit {}, {allocator}): {records} records in {secs:.2} s = {:.0} records/s; job wait {first:.2} s, then {:.0} records/s; client peak RSS {rss:.1} MiB",
        if audit { "on" } else { "off" },
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
    let ingest = sf
        .bulk_ingest("Account", IngestOperation::Insert, rows, &options)
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(ingest.succeeded, records);
    println!(
        "bulk_ingest ({allocator}): {records} records in {secs:.2} s = {:.0} records/s in {} job(s); client peak RSS {:.1} MiB",
        records as f64 / secs,
        ingest.jobs.len(),
        peak_rss_mib()
    );
}

/// SQLite alone: `records` Account-shaped rows through one prepared statement.
fn floor(path: &std::path::Path, records: u64) {
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
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .unwrap();
    let columns = COLUMNS.map(|c| format!("\"{c}\""));
    conn.execute_batch(&format!(
        "CREATE TABLE accounts ({}, PRIMARY KEY (\"Id\"))",
        columns.join(", ")
    ))
    .unwrap();
    let insert = format!(
        "INSERT INTO accounts VALUES ({}) ON CONFLICT DO NOTHING",
        vec!["?"; COLUMNS.len()].join(", ")
    );
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
