//! Bulk API 2.0 benchmarks against the sandbox in its own process:
//! 1. N Accounts (default 1,000,000) from the sandbox into a SQLite table through the sync
//!    engine (batches of 2,000, the engine's default) — `SalesforceSource` above its bulk
//!    threshold reads a Bulk 2.0 query job page by page — records/s and the client's peak
//!    RSS;
//!    (and, before it, the bulk query stream alone, without the engine);
//! 2. a Bulk 2.0 ingest of N new Accounts (spooled CSV, parallel jobs, per-record
//!    outcomes) — records/s and the client's peak RSS (reset between phases).
//!
//! Run: `cargo bench -p connector-salesforce --features sandbox --bench bulk_sync`
//! (records: `-- 1000000`; `MALLOC_ARENA_MAX=1` in the environment limits glibc to one
//! arena, see docs/performance.md). Without cargo bench's `--bench` flag it makes a smoke
//! run.
//! Results are in docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench binary")]

use std::time::Instant;

use connector_salesforce::bulk::{IngestOperation, IngestOptions, PollOptions};
use connector_salesforce::sync::SalesforceSource;
use moodbridge_core::engine::{Pipeline, SqliteTableSink, SyncEngine};
use moodbridge_core::state::SqliteStateStore;
use serde_json::json;

mod common;
use common::Server;
use moodbridge_core::testing::{peak_rss_mib, reset_peak_rss};

fn main() {
    let (_smoke, records) = common::args(1_000_000, 3_000);
    let server = Server::start(records, 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(rt.spawn(async move {
        let sf = server.client("salesforce:bench").await;
        let poll = PollOptions {
            initial: std::time::Duration::from_millis(50),
            ..PollOptions::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let state = std::sync::Arc::new(
            SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap(),
        );
        let warehouse = SqliteTableSink::open(&dir.path().join("warehouse.db"))
            .await
            .unwrap();
        let source = SalesforceSource::new(sf.clone(), ["Account"]).poll(poll.clone());
        let pipeline = Pipeline::from_toml(
            "name = \"bench\"\n[[streams]]\nname = \"Account\"\nmode = \"full_refresh\"\nbatch_size = 2000\n",
        )
        .unwrap();
        let engine = SyncEngine::new(state);
        // The source side alone: the Bulk 2.0 query job and its pages, parsed and typed.
        {
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
        reset_peak_rss();
        let start = Instant::now();
        let report = engine.run(&pipeline, &source, &warehouse).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(report.counts.written, records);
        assert_eq!(warehouse.count("Account").await.unwrap(), records);
        println!(
            "bulk_query_to_sqlite: {records} records in {secs:.2} s = {:.0} records/s; client peak RSS {:.1} MiB",
            records as f64 / secs,
            peak_rss_mib()
        );

        reset_peak_rss();
        let rows = futures::stream::iter((0..records).map(|i| {
            json!({"Name": format!("Bench Firm {i}"), "Industry": "Legal", "BillingCity": "Chicago", "AnnualRevenue": i % 1_000_000})
        }));
        let options = IngestOptions { poll, ..IngestOptions::default() };
        let start = Instant::now();
        let ingest = sf
            .bulk_ingest("Account", IngestOperation::Insert, rows, &options)
            .await
            .unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(ingest.succeeded, records);
        println!(
            "bulk_ingest: {records} records in {secs:.2} s = {:.0} records/s in {} job(s); client peak RSS {:.1} MiB",
            records as f64 / secs,
            ingest.jobs.len(),
            peak_rss_mib()
        );
        drop(server);
    }))
    .unwrap();
}
