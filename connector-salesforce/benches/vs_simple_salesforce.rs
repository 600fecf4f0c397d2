//! Side by side with the Python client most Salesforce integrations use
//! (`simple-salesforce`), against the same sandbox over https in the same run: N
//! Accounts read by REST paging, by a Bulk API 2.0 query job as records (theirs: each
//! page through `csv.DictReader`), and — ours — as column-shaped rows against theirs as
//! raw page text and as files. Every path runs in a process of its own
//! (ours: this bench started again with `--child`; theirs:
//! `scripts/bench_simple_salesforce.py` in the bench venv), so each reports its own
//! records/s (the path alone), CPU seconds and peak RSS (the whole process, start-up
//! included). The sandbox serves both from the same two cores: records/s is bounded by
//! it; the client CPU is the figure that shows the client.
//!
//! `cargo bench -p connector-salesforce --bench vs_simple_salesforce [-- N]` (default
//! 1,000,000; `./scripts/bench.sh` installs the venv). The Python side runs when
//! `MOODBRIDGE_BENCH_PYTHON` (default `~/.cache/moodbridge/bench-venv/bin/python`)
//! exists; without it (as under `cargo test --benches`) only ours runs.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a bench: a panic is the failure report, stdout the result"
)]

mod common;

use std::process::Command;
use std::time::Instant;

use connector_salesforce::bulk::{BulkQueryOptions, PollOptions};
use futures::TryStreamExt;

/// What every path reads.
const SOQL: &str =
    "SELECT Id, Name, Industry, BillingCity, AnnualRevenue, SystemModstamp FROM Account";
/// Records per Bulk API 2.0 result page, for both clients.
const PAGE: u64 = 50_000;
/// The API version both clients use.
const VERSION: &str = "62.0";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        return child(&args[at + 1..]);
    }
    let (smoke, records) = common::args(1_000_000, 3_000);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("sandbox-ca.pem");
    let server = common::Server::start_tls(records, 0, &ca);
    let python = std::env::var("MOODBRIDGE_BENCH_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/moodbridge/bench-venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/bench_simple_salesforce.py");
    let theirs = std::path::Path::new(&python).exists();
    if !theirs {
        eprintln!(
            "{python} not found: simple-salesforce's side is skipped (./scripts/bench.sh installs it)"
        );
    }
    let exe = std::env::current_exe().unwrap();
    for (ours, their) in [
        ("rest", "rest"),
        ("bulk-records", "bulk2-records"),
        ("bulk-rows", "bulk2-query"),
        ("bulk-rows", "bulk2-download"),
    ] {
        let mut ours_cmd = Command::new(&exe);
        ours_cmd
            .args(["--child", ours, &server.url, &server.token])
            .arg(&ca);
        let ours_run = run(ours_cmd, records);
        let mut line = format!("vs_simple_salesforce {records}: ours {ours:<12} {ours_run}");
        if theirs && !smoke {
            let mut cmd = Command::new(&python);
            cmd.arg(&script)
                .args([their, &server.url, &server.token, VERSION, SOQL])
                .arg(PAGE.to_string())
                .env("REQUESTS_CA_BUNDLE", &ca);
            let their_run = run(cmd, records);
            line.push_str(&format!(
                " | theirs {their:<15} {their_run} | CPU ratio ours/theirs {:.2}, RSS ratio {:.2}",
                ours_run.cpu / their_run.cpu,
                ours_run.rss_mib / their_run.rss_mib
            ));
        }
        println!("{line}");
    }
    drop(server);
}

/// One path's figures, as its process printed them.
struct Figures {
    records_per_s: f64,
    cpu: f64,
    rss_mib: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9.0} records/s, CPU {:>6.2} s, peak RSS {:>6.1} MiB",
            self.records_per_s, self.cpu, self.rss_mib
        )
    }
}

/// Run one path's process and read its line: `records=N secs=S cpu_s=C peak_rss_kib=K`.
fn run(mut cmd: Command, expected: u64) -> Figures {
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |key: &str| -> f64 {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text:?}"))
    };
    assert_eq!(
        value("records") as u64,
        expected,
        "{cmd:?} read every record"
    );
    Figures {
        records_per_s: value("records") / value("secs"),
        cpu: value("cpu_s"),
        rss_mib: value("peak_rss_kib") / 1024.0,
    }
}

/// One of our paths, in a process of its own: `PATH URL TOKEN CA`.
fn child(args: &[String]) {
    let [path, url, token, ca] = args else {
        panic!("usage: --child PATH URL TOKEN CA");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (records, secs) = rt.block_on(async {
        let pem = std::fs::read(ca).unwrap();
        let sf = connector_salesforce::client::SalesforceClient::builder(
            "salesforce:bench",
            common::Fixed::manager(token, url),
            "sandbox",
            "bench",
        )
        .allow_instances(
            connector_salesforce::instance::InstanceAllowList::default().with_loopback(),
        )
        .trust_ca_pem(&pem)
        .unwrap()
        .api_version(connector_salesforce::client::ApiVersion::Pinned(
            VERSION.to_owned(),
        ))
        .connect()
        .await
        .unwrap();
        let options = BulkQueryOptions {
            max_records: Some(PAGE),
            poll: PollOptions {
                initial: std::time::Duration::from_millis(200),
                ..PollOptions::default()
            },
            ..Default::default()
        };
        let start = Instant::now();
        let mut n = 0u64;
        match path.as_str() {
            "rest" => {
                let mut rows = std::pin::pin!(sf.query(SOQL));
                while let Some(r) = rows.try_next().await.unwrap() {
                    std::hint::black_box(r);
                    n += 1;
                }
            }
            "bulk-records" => {
                let mut rows = std::pin::pin!(sf.bulk_query(SOQL, options));
                while let Some(r) = rows.try_next().await.unwrap() {
                    std::hint::black_box(r);
                    n += 1;
                }
            }
            "bulk-rows" => {
                let mut pages = std::pin::pin!(sf.bulk_query_rows(SOQL, options));
                while let Some(rows) = pages.try_next().await.unwrap() {
                    n += rows.len() as u64;
                    std::hint::black_box(rows);
                }
            }
            other => panic!("unknown path {other}"),
        }
        (n, start.elapsed().as_secs_f64())
    });
    println!(
        "records={records} secs={secs:.3} cpu_s={:.3} peak_rss_kib={:.0}",
        common::cpu_seconds_of(std::process::id()),
        moodbridge_core::testing::peak_rss_mib() * 1024.0
    );
}
