//! Loading N Salesforce-shaped Account records (14 fields: ids, names, picklists, a
//! float and an integer, a flag, two timestamps, a long description) into a fakesnow
//! table, in batches of 20,000 and of 50,000, side by side in the same run:
//!
//! - ours: `SnowflakeSink::write` in append mode — each batch checked, written as a
//!   Snappy Parquet file, `PUT` and `COPY`'d into the table — from JSON records, and
//!   `SnowflakeSink::write_rows` from the engine's column-shaped rows;
//! - Snowflake's Python connector 4.x, the way `write_pandas` loads (without pandas):
//!   each batch's dicts to `pyarrow.Table.from_pylist`, `pyarrow.parquet.write_table`
//!   (Snappy) to a file, `PUT`, `COPY INTO` the table.
//!
//! Each client runs in a process of its own against a fakesnow of its own, and its
//! figures are its own: records a second (wall time of the loading calls only; making
//! each batch's records is outside it), the client's CPU seconds per million records
//! in those calls, and its peak resident memory. fakesnow (DuckDB) does the `COPY` and
//! `INSERT` work in its own process, which is in both clients' wall time alike; the
//! CPU figure is the client's share — what the loader costs the pipeline's host.
//!
//! Run: `cargo bench -p connector-snowflake --bench load` (`-- 200000` for 200,000
//! records; default 1,000,000). Without cargo bench's `--bench` flag it makes a
//! 20,000-record smoke run. Results: docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use connector_snowflake::{SnowflakeClient, SnowflakeConfig, SnowflakeSink};
use moodbridge_core::{
    Column, ColumnKind, FieldDescriptor, FieldType, Record, RecordBatch, RowBatch,
    StreamDescriptor, SyncSink, WriteMode,
};
use secrecy::SecretString;
use serde_json::json;

const ROLE: &str = "MOODBRIDGE_BENCH_SNOWFLAKE_ROLE";
/// Batch sizes compared: memory follows the batch the engine holds.
const BATCHES: [usize; 2] = [20_000, 50_000];

const PYTHON: &str = r#"
import os, resource, sys, tempfile, time
import pyarrow as pa, pyarrow.parquet as pq
import snowflake.connector
port, total, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conn = snowflake.connector.connect(user="LOADER", password="x", account="acme-test",
    host="127.0.0.1", port=port, protocol="http", database="CASES", schema="PUBLIC")
cur = conn.cursor()
cur.execute("create database if not exists CASES")
cur.execute("create schema if not exists CASES.PUBLIC")
cur.execute('create or replace table "Account" ("Id" varchar, "Name" varchar, "Type" varchar, '
    '"Industry" varchar, "AnnualRevenue" float, "NumberOfEmployees" number(38,0), "BillingCity" varchar, '
    '"BillingCountry" varchar, "Phone" varchar, "Website" varchar, "IsDeleted" boolean, '
    '"CreatedDate" timestamp_tz, "LastModifiedDate" timestamp_tz, "Description" varchar)')
cur.execute("create or replace stage PY_LOAD")
def account(i):
    return {"Id": f"001{i:015d}", "Name": f"Account {i:07d}", "Type": ["Customer", "Partner", "Prospect"][i % 3],
        "Industry": ["Legal", "Finance", "Health", "Retail"][i % 4], "AnnualRevenue": (i * 1237) % 10_000_000 / 100,
        "NumberOfEmployees": i % 5000, "BillingCity": ["Oslo", "Lyon", "Austin"][i % 3], "BillingCountry": "NO",
        "Phone": f"+47 {i % 100000000:08d}", "Website": f"https://a{i}.example", "IsDeleted": i % 50 == 0,
        "CreatedDate": f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}T10:{i % 60:02d}:00.000Z",
        "LastModifiedDate": f"2026-11-{i % 28 + 1:02d}T12:00:{i % 60:02d}.000Z",
        "Description": f"Matter intake for account {i}: engagement letter signed, conflicts cleared."}
wall = cpu = 0.0
with tempfile.TemporaryDirectory() as d:
    for start in range(0, total, batch):
        records = [account(i) for i in range(start, min(total, start + batch))]
        t, c = time.perf_counter(), time.process_time()
        path = os.path.join(d, f"accounts_{start}.parquet")
        pq.write_table(pa.Table.from_pylist(records), path, compression="snappy")
        cur.execute(f"PUT 'file://{path}' @PY_LOAD")
        cur.execute(f"COPY INTO \"Account\" FROM @PY_LOAD/accounts_{start}.parquet "
            "FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE PURGE = TRUE")
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
cur.execute('select count(*) from "Account"')
assert cur.fetchone()[0] == total
conn.close()
print(wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"#;

fn account(i: usize) -> Record {
    let types = ["Customer", "Partner", "Prospect"];
    let industries = ["Legal", "Finance", "Health", "Retail"];
    let cities = ["Oslo", "Lyon", "Austin"];
    Record::from_json(json!({
        "Id": format!("001{i:015}"),
        "Name": format!("Account {i:07}"),
        "Type": types[i % 3],
        "Industry": industries[i % 4],
        "AnnualRevenue": ((i * 1237) % 10_000_000) as f64 / 100.0,
        "NumberOfEmployees": i % 5000,
        "BillingCity": cities[i % 3],
        "BillingCountry": "NO",
        "Phone": format!("+47 {:08}", i % 100_000_000),
        "Website": format!("https://a{i}.example"),
        "IsDeleted": i.is_multiple_of(50),
        "CreatedDate": format!("2026-{:02}-{:02}T10:{:02}:00.000Z", i % 12 + 1, i % 28 + 1, i % 60),
        "LastModifiedDate": format!("2026-11-{:02}T12:00:{:02}.000Z", i % 28 + 1, i % 60),
        "Description": format!("Matter intake for account {i}: engagement letter signed, conflicts cleared."),
    }))
    .unwrap()
}

/// The same accounts as the engine's column-shaped rows (each cell text).
fn account_rows(range: std::ops::Range<usize>) -> RowBatch {
    let record = account(0);
    let columns: Vec<Column> = record
        .fields()
        .iter()
        .map(|(name, value)| {
            let kind = match value {
                serde_json::Value::Bool(_) => ColumnKind::Boolean,
                serde_json::Value::Number(n) if n.is_i64() => ColumnKind::Integer,
                serde_json::Value::Number(_) => ColumnKind::Number,
                _ => ColumnKind::Text,
            };
            Column::new(name, kind)
        })
        .collect();
    let mut rows = RowBatch::new("Account", columns);
    for i in range {
        let record = account(i);
        let cells: Vec<String> = record
            .fields()
            .values()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        rows.push_row(cells.iter().map(|c| Some(c.as_str())))
            .unwrap();
    }
    rows
}

fn stream() -> StreamDescriptor {
    let text = |name: &str| FieldDescriptor::new(name, FieldType::String);
    StreamDescriptor::new("Account")
        .field(text("Id").required())
        .field(text("Name"))
        .field(text("Type"))
        .field(text("Industry"))
        .field(FieldDescriptor::new("AnnualRevenue", FieldType::Number))
        .field(FieldDescriptor::new(
            "NumberOfEmployees",
            FieldType::Integer,
        ))
        .field(text("BillingCity"))
        .field(text("BillingCountry"))
        .field(text("Phone"))
        .field(text("Website"))
        .field(FieldDescriptor::new("IsDeleted", FieldType::Boolean))
        .field(FieldDescriptor::new("CreatedDate", FieldType::DateTime))
        .field(FieldDescriptor::new(
            "LastModifiedDate",
            FieldType::DateTime,
        ))
        .field(text("Description"))
        .primary_key(["Id"])
}

/// Ours, in this binary run as a child: prints seconds, CPU seconds, peak RSS MiB.
fn ours_child(url: &str, total: usize, batch_size: usize, as_rows: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = SnowflakeClient::login(
            SnowflakeConfig::new("acme-test", "LOADER", SecretString::from("x"))
                .url(url)
                .database("CASES")
                .schema("PUBLIC"),
        )
        .await
        .unwrap();
        for sql in [
            "create database if not exists CASES",
            "create schema if not exists CASES.PUBLIC",
        ] {
            client.execute(sql, &[]).await.unwrap();
        }
        let sink = SnowflakeSink::new(client.clone());
        sink.begin_stream(&stream(), &WriteMode::Append)
            .await
            .unwrap();
        let (mut wall, mut cpu) = (0.0, 0.0);
        for start in (0..total).step_by(batch_size) {
            let range = start..total.min(start + batch_size);
            let size = range.len();
            let (records, rows) = if as_rows {
                (None, Some(account_rows(range)))
            } else {
                (
                    Some(RecordBatch::new("Account", range.map(account).collect())),
                    None,
                )
            };
            let before = moodbridge_core::testing::cpu_seconds_of(std::process::id());
            let started = Instant::now();
            let report = match (&records, &rows) {
                (Some(batch), _) => sink.write(batch, &WriteMode::Append).await,
                (_, Some(rows)) => sink.write_rows(rows, &WriteMode::Append).await,
                _ => unreachable!("one or the other"),
            }
            .unwrap();
            wall += started.elapsed().as_secs_f64();
            cpu += moodbridge_core::testing::cpu_seconds_of(std::process::id()) - before;
            assert_eq!(report.succeeded(), size);
            drop((records, rows));
        }
        let count = client
            .execute("select count(*) as N from \"Account\"", &[])
            .await
            .unwrap();
        assert_eq!(count.json_rows().unwrap()[0]["N"], total);
        println!("{wall} {cpu} {}", moodbridge_core::testing::peak_rss_mib());
    });
}

/// fakesnow on a free loopback port, killed when dropped.
struct FakeSnow {
    child: Child,
    port: u16,
}

impl Drop for FakeSnow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fakesnow() -> FakeSnow {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(moodbridge_core::testing::venv_python().with_file_name("fakesnow"))
        .args(["-s", "--host", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fakesnow (./scripts/test.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "fakesnow did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    FakeSnow { child, port }
}

fn main() {
    let (bench, total) = common::size(1_000_000, 20_000);
    if let Ok(role @ ("ours" | "ours-rows")) = std::env::var(ROLE).as_deref() {
        let args: Vec<String> = std::env::args().collect();
        return ours_child(
            &args[1],
            total,
            args[3].parse().unwrap(),
            role == "ours-rows",
        );
    }
    let rounds = common::rounds(bench);
    let clients = [
        "ours (SnowflakeSink, records)",
        "ours (SnowflakeSink, engine rows)",
        "python connector 4.8.1 + pyarrow",
    ];
    for batch_size in BATCHES {
        let mut figures: Vec<Vec<Vec<f64>>> = vec![Vec::new(); clients.len()];
        for _ in 0..rounds {
            for (i, name) in clients.iter().enumerate() {
                let server = fakesnow();
                let mut command = if i < 2 {
                    let mut c = Command::new(std::env::current_exe().unwrap());
                    c.env(ROLE, if i == 0 { "ours" } else { "ours-rows" })
                        .arg(format!("http://127.0.0.1:{}", server.port))
                        .arg(total.to_string())
                        .arg(batch_size.to_string());
                    c
                } else {
                    let mut c = Command::new(moodbridge_core::testing::venv_python());
                    c.arg("-c").arg(PYTHON).args([
                        server.port.to_string(),
                        total.to_string(),
                        batch_size.to_string(),
                    ]);
                    c
                };
                let out = command.output().unwrap();
                figures[i].push(moodbridge_core::testing::child_figures(name, out));
            }
        }
        println!(
            "load {total} Salesforce-shaped records (14 fields) into fakesnow in batches of {batch_size}, median of {rounds}"
        );
        println!(
            "{:<34} {:>12} {:>22} {:>14}",
            "client", "records/s", "client CPU s/1M", "peak RSS MiB"
        );
        for (name, runs) in clients.iter().zip(&figures) {
            let seconds = common::median(runs.iter().map(|f| f[0]).collect());
            let cpu = common::median(runs.iter().map(|f| f[1]).collect());
            let rss = common::median(runs.iter().map(|f| f[2]).collect());
            println!(
                "{:<34} {:>12.0} {:>22.2} {:>14.0}",
                name,
                total as f64 / seconds,
                cpu * 1_000_000.0 / total as f64,
                rss
            );
        }
    }
}
