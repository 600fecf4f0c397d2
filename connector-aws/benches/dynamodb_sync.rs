//! DynamoDB as a sync sink and source against moto, side by side in the same run with
//! boto3 (AWS's own Python SDK) on the same server: N records of about 1 KiB (a key, a
//! title, a status, a number and padding) are upserted into an empty table — ours through
//! `SyncSink::write` in batches of 500 (it reads the stored items first, 100 keys a
//! call, for created / updated / unchanged outcomes and before-images, then writes 25 a
//! call), boto3 through `Table.batch_writer()` (writes only, 25 a call) — then the
//! table is read in full (ours: `SyncSource::read`, pages of 1,000; boto3: `scan`
//! pages of 1,000).
//!
//! Reported per phase: records a second written and read, and the client's CPU seconds
//! per 1,000 records (ours: this process's; boto3's: its interpreter's). moto does the
//! work of DynamoDB in single-threaded Python, so wall time is mostly the server's; CPU
//! is the client's own cost. Median of `MOODBRIDGE_BENCH_ROUNDS` (3) interleaved rounds.
//!
//! Run: `cargo bench -p connector-aws --features dynamodb --bench dynamodb_sync`
//! (`-- 20000` for 20,000 records; default 5,000). Without cargo bench's `--bench` flag
//! it makes a 500-record smoke run. Results: docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use common::{Figures, keys};
use connector_aws::dynamodb::DynamoDb;
use futures::TryStreamExt;
use moodbridge_core::testing::cpu_seconds_of;
use moodbridge_core::{
    FieldDescriptor, FieldType, ReadRequest, Record, RecordBatch, SourceMessage, StreamDescriptor,
    SyncMode, SyncSink, SyncSource, WriteMode,
};

const BATCH: usize = 500;

fn record(i: usize) -> Record {
    let pad = "x".repeat(900);
    Record::from_json(serde_json::json!({
        "Docket": format!("D-{i:08}"),
        "Title": format!("Matter {i}"),
        "Status": "Open",
        "Amount": i as f64 * 1.25,
        "pad": pad,
    }))
    .unwrap()
}

async fn ours(endpoint: &str, prefix: &str, n: usize) -> Figures {
    let db = DynamoDb::builder()
        .region("us-east-1")
        .endpoint(endpoint)
        .credentials(keys())
        .table_prefix(prefix)
        .create_tables(true)
        .build()
        .await
        .unwrap();
    let stream = StreamDescriptor::new("Matter")
        .field(FieldDescriptor::new("Docket", FieldType::String).required())
        .primary_key(["Docket"]);
    let upsert = WriteMode::Upsert {
        key: vec!["Docket".into()],
    };
    db.begin_stream(&stream, &upsert).await.unwrap();
    let cpu = cpu_seconds_of(std::process::id());
    let started = Instant::now();
    for start in (0..n).step_by(BATCH) {
        let records = (start..(start + BATCH).min(n)).map(record).collect();
        let report = db
            .write(&RecordBatch::new("Matter", records), &upsert)
            .await
            .unwrap();
        assert_eq!(report.failures().count(), 0, "{report:?}");
    }
    let written = started.elapsed();
    let started = Instant::now();
    let mut read = 0;
    let mut messages = db
        .read(ReadRequest::new("Matter", SyncMode::FullRefresh).batch_size(1_000))
        .await
        .unwrap();
    while let Some(m) = messages.try_next().await.unwrap() {
        if let SourceMessage::Records(b) = m {
            read += b.len();
        }
    }
    let scanned = started.elapsed();
    assert_eq!(read, n, "every record read back");
    Figures {
        send_per_sec: n as f64 / written.as_secs_f64(),
        receive_per_sec: n as f64 / scanned.as_secs_f64(),
        cpu_per_1000: (cpu_seconds_of(std::process::id()) - cpu) * 1000.0 / n as f64,
    }
}

const BOTO3: &str = r#"
import json, resource, sys, time
from decimal import Decimal
import boto3
endpoint, table_name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = boto3.resource("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                    aws_access_key_id="test", aws_secret_access_key="test")
table = db.create_table(TableName=table_name, BillingMode="PAY_PER_REQUEST",
    KeySchema=[{"AttributeName": "Docket", "KeyType": "HASH"}],
    AttributeDefinitions=[{"AttributeName": "Docket", "AttributeType": "S"}])
table.wait_until_exists()
pad = "x" * 900
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.monotonic()
with table.batch_writer() as writer:
    for i in range(n):
        writer.put_item(Item={"Docket": "D-%08d" % i, "Title": "Matter %d" % i,
                              "Status": "Open", "Amount": Decimal(str(i * 1.25)), "pad": pad})
sent = time.monotonic() - t
t = time.monotonic()
read, start = 0, None
while True:
    kw = {"Limit": 1000, "ConsistentRead": True}
    if start:
        kw["ExclusiveStartKey"] = start
    page = table.scan(**kw)
    read += len(page["Items"])
    start = page.get("LastEvaluatedKey")
    if not start:
        break
drained = time.monotonic() - t
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
assert read == n, read
print(json.dumps({"sent": sent, "drained": drained, "cpu": cpu}))
"#;

fn main() {
    let (n, rounds) = common::size(5_000, 500);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let moto = support::Moto::start();
    let mut results: Vec<(&str, Vec<Figures>)> =
        vec![("moodbridge DynamoDb", Vec::new()), ("boto3", Vec::new())];
    for round in 0..rounds {
        let f = runtime.block_on(ours(&moto.endpoint, &format!("ours{round}-"), n));
        results[0].1.push(f);
        let name = format!("boto3-{round}");
        let f = common::boto3(BOTO3, &[&moto.endpoint, &name, &n.to_string()], n);
        results[1].1.push(f);
    }
    common::report_with(
        &format!("DynamoDB on moto, {n} records of about 1 KiB, median of {rounds} round(s)"),
        ["written rec/s", "read rec/s", "client CPU s/1000"],
        &results,
    );
}
