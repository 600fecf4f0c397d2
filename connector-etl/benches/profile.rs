//! Profiling N Salesforce-shaped Account records (12 fields: an 18-character id, names,
//! picklists, a float and an integer, a flag, two timestamps, an email, a description)
//! in batches of 10,000, through both paths the engine moves data on: JSON records
//! (`StreamProfile::observe_batch`) and column-shaped rows (`observe_rows`). Prints
//! records a second for each path (making the batches is outside the timing) and the
//! HyperLogLog++ distinct counts against the exact ones (a `HashSet` of every value).
//!
//! Run: `cargo bench -p connector-etl --bench profile` (`-- 200000` for 200,000
//! records; default 1,000,000). Without cargo bench's `--bench` flag it makes a
//! 20,000-record smoke run. Results: docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

use std::collections::HashSet;
use std::time::Instant;

use connector_etl::profile::StreamProfile;
use moodbridge_core::{Column, ColumnKind, Record, RecordBatch, RowBatch};
use serde_json::json;

const BATCH: usize = 10_000;
const FIELDS: [(&str, ColumnKind); 12] = [
    ("Id", ColumnKind::Text),
    ("Name", ColumnKind::Text),
    ("Type", ColumnKind::Text),
    ("Industry", ColumnKind::Text),
    ("AnnualRevenue", ColumnKind::Number),
    ("NumberOfEmployees", ColumnKind::Integer),
    ("BillingCountry", ColumnKind::Text),
    ("IsDeleted", ColumnKind::Boolean),
    ("CreatedDate", ColumnKind::Text),
    ("SystemModstamp", ColumnKind::Text),
    ("Email__c", ColumnKind::Text),
    ("Description", ColumnKind::Text),
];

fn cells(i: usize) -> [String; 12] {
    [
        format!("001R{i:011}AAA"),
        format!("Firm {} LLP", i % 250_000),
        ["Customer", "Partner", "Prospect", "Other"][i % 4].to_owned(),
        ["Legal", "Finance", "Healthcare", "Retail", "Energy"][i % 5].to_owned(),
        format!("{}.5", (i * 7919) % 10_000_000),
        ((i * 31) % 5_000).to_string(),
        ["US", "GB", "DE", "FR", "ES", "IT"][i % 6].to_owned(),
        i.is_multiple_of(97).to_string(),
        format!(
            "2026-{:02}-{:02}T10:{:02}:00.000Z",
            i % 12 + 1,
            i % 28 + 1,
            i % 60
        ),
        format!(
            "2026-12-{:02}T08:{:02}:{:02}.000Z",
            i % 28 + 1,
            i % 60,
            i % 60
        ),
        format!("contact{}@firm{}.example", i, i % 1000),
        "Matter intake and conflict check completed; engagement letter on file.".to_owned(),
    ]
}

fn record(i: usize) -> Record {
    let c = cells(i);
    let mut fields = serde_json::Map::new();
    for (j, (name, kind)) in FIELDS.iter().enumerate() {
        let v = match kind {
            ColumnKind::Text => json!(c[j]),
            ColumnKind::Number => json!(c[j].parse::<f64>().unwrap()),
            ColumnKind::Integer => json!(c[j].parse::<i64>().unwrap()),
            ColumnKind::Boolean => json!(c[j] == "true"),
        };
        fields.insert((*name).to_owned(), v);
    }
    Record::from(fields)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let total: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(if bench { 1_000_000 } else { 20_000 });
    let columns: Vec<Column> = FIELDS.iter().map(|(n, k)| Column::new(*n, *k)).collect();

    let mut records_time = 0.0;
    let mut rows_time = 0.0;
    let mut by_records = StreamProfile::new("Account");
    let mut by_rows = StreamProfile::new("Account");
    let mut exact_names = HashSet::new();
    let mut start = 0;
    while start < total {
        let end = (start + BATCH).min(total);
        let batch = RecordBatch::new("Account", (start..end).map(record).collect());
        let t = Instant::now();
        by_records.observe_batch(&batch);
        records_time += t.elapsed().as_secs_f64();
        let mut rows = RowBatch::new("Account", columns.clone());
        for i in start..end {
            let c = cells(i);
            rows.push_row(c.iter().map(|s| Some(s.as_str()))).unwrap();
            exact_names.insert(c[1].clone());
        }
        let t = Instant::now();
        by_rows.observe_rows(&rows);
        rows_time += t.elapsed().as_secs_f64();
        start = end;
    }
    let ids = by_records.column("Id").unwrap().distinct();
    let names = by_rows.column("Name").unwrap().distinct();
    let exact_ids = total as f64;
    let exact_names = exact_names.len() as f64;
    println!(
        "profile {total} records: records path {:.0}/s, rows path {:.0}/s",
        total as f64 / records_time,
        total as f64 / rows_time
    );
    println!(
        "distinct Id: {ids:.0} estimated, {exact_ids:.0} exact ({:+.2} %); Name: {names:.0} estimated, {exact_names:.0} exact ({:+.2} %)",
        (ids - exact_ids) / exact_ids * 100.0,
        (names - exact_names) / exact_names * 100.0
    );
    assert_eq!(by_records.records(), total as u64);
    assert_eq!(by_rows.records(), total as u64);
}
