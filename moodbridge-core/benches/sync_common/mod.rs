//! The sync throughput bench, shared by `sync_throughput` (system allocator) and
//! `sync_throughput_mimalloc`.
//!
//! Sync throughput: 1,000,000 Salesforce-shaped Accounts (20 fields, ~600 bytes as JSON)
//! from the in-memory source through mapping, sanitising and validation into the SQLite
//! table sink, with a checkpoint committed (after the sink's flush) every batch of 2,000.
//! Prints records per second and the process's peak RSS.
//!
//! Run: `cargo bench -p moodbridge-core --bench sync_throughput` (part of
//! `./scripts/bench.sh`); `--bench sync_throughput_mimalloc` runs the same with mimalloc
//! as the global allocator. `-- audit` also keeps every write in the audit log;
//! `-- rows` has the source yield its records as rows (column-shaped, as a source whose
//! results come as a table does), which the engine maps, sanitises and validates as rows;
//! `-- breakdown` first times the source alone and the source plus the transform. Without
//! cargo bench's `--bench` flag (as under `cargo test --benches`) it makes a short smoke
//! run. Results are recorded in docs/performance.md.

use std::sync::Arc;
use std::time::Instant;

use connector_sqlite::SqliteTableSink;
use moodbridge_core::engine::{Pipeline, SyncEngine};
use moodbridge_core::state::SqliteStateStore;
use moodbridge_core::testing::MemorySource;

const PIPELINE: &str = r#"
name = "bench"
[[streams]]
name = "Account"
target = "accounts"
batch_size = 2000
mapping = [
  { op = "rename", from = "BillingPostalCode", to = "postal_code" },
  { op = "cast", field = "NumberOfEmployees", to = "integer" },
  { op = "constant", field = "source", value = "salesforce" },
  { op = "drop", field = "IsDeleted" },
]
sanitize = { trim = true, strip_control = true }
validate = [
  { rule = "required", field = "Name" },
  { rule = "length", field = "Name", max = 255 },
  { rule = "pattern", field = "Website", regex = "^https://" },
  { rule = "enum", field = "Rating", values = ["Hot", "Warm", "Cold"] },
  { rule = "range", field = "AnnualRevenue", min = 0 },
]
"#;

/// Where the time goes: the source alone, and the source plus the transform.
#[allow(clippy::unwrap_used, reason = "bench binary")]
async fn breakdown(source: &MemorySource, pipeline: &Pipeline, records: u64) {
    use futures::StreamExt;
    use moodbridge_core::{ReadRequest, SourceMessage, SyncMode, SyncSource};
    let rate = |start: Instant| records as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut stream = source
        .read(ReadRequest::new("Account", SyncMode::FullRefresh).batch_size(2_000))
        .await
        .unwrap();
    while let Some(m) = stream.next().await {
        std::hint::black_box(m.unwrap());
    }
    println!("breakdown: source alone {:.0} records/s", rate(start));
    let start = Instant::now();
    let mut stream = source
        .read(ReadRequest::new("Account", SyncMode::FullRefresh).batch_size(2_000))
        .await
        .unwrap();
    while let Some(m) = stream.next().await {
        match m.unwrap() {
            SourceMessage::Records(batch) => {
                for r in batch.records {
                    let original = r.clone();
                    let _ = std::hint::black_box((original, pipeline.transform("Account", r)));
                }
            }
            // The row path runs inside the engine only: here, the rows as records.
            SourceMessage::Rows(rows) => {
                for r in rows.to_records().records {
                    let original = r.clone();
                    let _ = std::hint::black_box((original, pipeline.transform("Account", r)));
                }
            }
            _ => {}
        }
    }
    println!(
        "breakdown: source + keep original + transform {:.0} records/s",
        rate(start)
    );
}

#[allow(clippy::unwrap_used, clippy::expect_used, reason = "bench binary")]
pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let audit = args.iter().any(|a| a == "audit");
    let rows = args.iter().any(|a| a == "rows");
    let records: u64 = if smoke { 10_000 } else { 1_000_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap());
        let sink = SqliteTableSink::open(&dir.path().join("warehouse.db")).await.unwrap();
        let source = if rows {
            MemorySource::account_rows(records)
        } else {
            MemorySource::accounts(records)
        };
        let text = if audit {
            PIPELINE.to_owned()
        } else {
            PIPELINE.replacen("name = \"bench\"", "name = \"bench\"\naudit = false", 1)
        };
        let pipeline = Pipeline::from_toml(&text).unwrap();
        if args.iter().any(|a| a == "breakdown") {
            breakdown(&source, &pipeline, records).await;
        }
        let engine = SyncEngine::new(state);
        let start = Instant::now();
        let report = engine.run(&pipeline, &source, &sink).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(report.counts.written, records);
        assert_eq!(sink.count("accounts").await.unwrap(), records);
        println!(
            "sync_throughput: {records} {}, audit {}: {secs:.2} s, {:.0} records/s, peak RSS {:.1} MiB",
            if rows { "rows" } else { "records" },
            if audit { "on" } else { "off" },
            records as f64 / secs,
            moodbridge_core::testing::peak_rss_mib()
        );
    });
}
