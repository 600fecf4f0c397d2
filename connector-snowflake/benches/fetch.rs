//! Fetching a large result: N rows of the sandbox's Salesforce-shaped `ACCOUNTS` table
//! (six columns: id, name, exact amount, flag, nanosecond timestamp, nullable note),
//! served by the Snowflake sandbox as Snowflake serves it (1,000 rows inline, the rest in
//! gzip Arrow chunks of 50,000 rows), read side by side in the same run by:
//!
//! - ours: `SnowflakeClient::stream`, every batch read (Arrow columns, no conversion per
//!   value), chunks fetched 4 ahead;
//! - ours as the engine's rows: the same stream turned into `RowBatch`es
//!   (`ResultStream::into_rows`: every cell made text, as the sync engine takes them);
//! - Snowflake's Python connector 4.x (`fetchall`: a tuple of Python objects per row)
//!   and 5.x (its Rust core, same call) when its venv is there.
//!
//! Each client runs in a process of its own, the sandbox in another, so each client's
//! figures are its own: rows a second (wall time from the statement to the last row),
//! CPU seconds per million rows, and peak resident memory. Rounds interleave clients for
//! `MOODBRIDGE_BENCH_ROUNDS` rounds (3); the median is printed. The sandbox's time to
//! encode and gzip the chunks is in every client's wall time alike.
//!
//! Run: `cargo bench -p connector-snowflake --bench fetch` (`-- 200000` for 200,000
//! rows; default 1,000,000). Without cargo bench's `--bench` flag it makes a 20,000-row
//! smoke run. Results: docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use connector_snowflake::{SnowflakeClient, SnowflakeConfig};
use futures::TryStreamExt as _;
use secrecy::SecretString;
use snowflake_sandbox::{Sandbox, SandboxConfig, Table, User};

const ROLE: &str = "MOODBRIDGE_BENCH_SNOWFLAKE_ROLE";
const PASSWORD: &str = "bench-password-1";

const PYTHON: &str = r#"
import resource, sys, time
import snowflake.connector
port, rows = int(sys.argv[1]), int(sys.argv[2])
conn = snowflake.connector.connect(user="LOADER", password=sys.argv[3], account="BENCH",
    host="127.0.0.1", port=port, protocol="http", database="SANDBOX", schema="PUBLIC")
cur = conn.cursor()
started = time.perf_counter()
cpu = time.process_time()
cur.execute("select * from ACCOUNTS")
count = 0
for row in cur:
    count += 1
elapsed = time.perf_counter() - started
cpu = time.process_time() - cpu
assert count == rows, count
conn.close()
print(elapsed, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The sandbox, in this binary run as a child: prints its URL, serves until stdin closes.
fn sandbox_child(rows: usize) {
    let runtime = runtime();
    runtime.block_on(async {
        let sandbox = Sandbox::start(
            SandboxConfig::new("BENCH")
                .user(User::new("LOADER").password(PASSWORD))
                .table(Table::accounts("ACCOUNTS", rows))
                .chunk_rows(1000, 50_000),
        )
        .await
        .unwrap();
        println!("{}", sandbox.url());
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        sandbox.stop().await;
    });
}

/// Ours, in this binary run as a child (Arrow batches, or the engine's rows with
/// `as_rows`): prints seconds, CPU seconds, peak RSS MiB.
fn ours_child(url: &str, rows: usize, as_rows: bool) {
    let runtime = runtime();
    runtime.block_on(async {
        let client = SnowflakeClient::login(
            SnowflakeConfig::new("BENCH", "LOADER", SecretString::from(PASSWORD))
                .url(url)
                .database("SANDBOX")
                .schema("PUBLIC"),
        )
        .await
        .unwrap();
        let cpu = moodbridge_core::testing::cpu_seconds_of(std::process::id());
        let started = Instant::now();
        let mut stream = client.stream("select * from ACCOUNTS", &[]).await.unwrap();
        let mut count = 0;
        if as_rows {
            let mut engine_rows = std::pin::pin!(stream.into_rows("Account"));
            while let Some(batch) = engine_rows.try_next().await.unwrap() {
                count += batch.len();
            }
        } else {
            while let Some(batch) = stream.try_next().await.unwrap() {
                count += batch.num_rows();
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = moodbridge_core::testing::cpu_seconds_of(std::process::id()) - cpu;
        assert_eq!(count, rows);
        client.logout().await.unwrap();
        println!(
            "{elapsed} {cpu} {}",
            moodbridge_core::testing::peak_rss_mib()
        );
    });
}

struct SandboxProcess {
    child: Child,
    url: String,
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sandbox(rows: usize) -> SandboxProcess {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "sandbox")
        .arg(rows.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    SandboxProcess {
        child,
        url: url.trim().to_owned(),
    }
}

fn python5() -> std::path::PathBuf {
    std::env::var_os("MOODBRIDGE_SNOWFLAKE5_PYTHON").map_or_else(
        || {
            let home = std::env::var("HOME").unwrap_or_default();
            std::path::PathBuf::from(format!(
                "{home}/.cache/moodbridge/venv-snowflake5/bin/python"
            ))
        },
        std::path::PathBuf::from,
    )
}

fn main() {
    let (bench, rows) = common::size(1_000_000, 20_000);
    match std::env::var(ROLE).as_deref() {
        Ok("sandbox") => return sandbox_child(rows),
        Ok(mode @ ("ours" | "ours-rows")) => {
            let url = std::env::args().nth(1).unwrap();
            return ours_child(&url, rows, mode == "ours-rows");
        }
        _ => {}
    }
    let rounds = common::rounds(bench);
    let sandbox = start_sandbox(rows);
    let port = sandbox.url.rsplit(':').next().unwrap().to_owned();
    let mut clients: Vec<(&str, Command)> = Vec::new();
    let mut ours = Command::new(std::env::current_exe().unwrap());
    ours.env(ROLE, "ours")
        .arg(&sandbox.url)
        .arg(rows.to_string());
    clients.push(("ours (Arrow batches)", ours));
    let mut ours_rows = Command::new(std::env::current_exe().unwrap());
    ours_rows
        .env(ROLE, "ours-rows")
        .arg(&sandbox.url)
        .arg(rows.to_string());
    clients.push(("ours (engine rows)", ours_rows));
    let mut python4 = Command::new(moodbridge_core::testing::venv_python());
    python4
        .arg("-c")
        .arg(PYTHON)
        .args([&port, &rows.to_string(), PASSWORD]);
    clients.push(("python connector 4.8.1", python4));
    let five = python5();
    if five.exists() {
        let mut python5 = Command::new(&five);
        python5
            .arg("-c")
            .arg(PYTHON)
            .args([&port, &rows.to_string(), PASSWORD]);
        clients.push(("python connector 5.2.0", python5));
    } else {
        eprintln!(
            "{} is missing: the 5.x side is skipped (./scripts/test.sh installs it)",
            five.display()
        );
    }
    let mut figures: Vec<Vec<Vec<f64>>> = vec![Vec::new(); clients.len()];
    for _ in 0..rounds {
        for (i, (name, command)) in clients.iter_mut().enumerate() {
            let out = command.output().unwrap();
            figures[i].push(moodbridge_core::testing::child_figures(name, out));
        }
    }
    println!("fetch {rows} rows (6 columns) from the Snowflake sandbox, median of {rounds}");
    println!(
        "{:<26} {:>12} {:>18} {:>14}",
        "client", "rows/s", "CPU s/1M rows", "peak RSS MiB"
    );
    for ((name, _), runs) in clients.iter().zip(&figures) {
        let seconds = common::median(runs.iter().map(|f| f[0]).collect());
        let cpu = common::median(runs.iter().map(|f| f[1]).collect());
        let rss = common::median(runs.iter().map(|f| f[2]).collect());
        println!(
            "{:<26} {:>12.0} {:>18.2} {:>14.0}",
            name,
            rows as f64 / seconds,
            cpu * 1_000_000.0 / rows as f64,
            rss
        );
    }
}
