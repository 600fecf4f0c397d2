//! Downloads of a 1 GiB object (default) from a fast local S3 server, `s3s-fs` (the Rust
//! S3 server of the `s3s` project, serving a directory), side by side in the same run:
//! `S3ObjectStore::get` at its defaults (adaptive parallel ranges, 24 MiB buffer), with
//! ranges fixed at 4 in flight, as one stream, and `aws s3 cp` at aws-cli's defaults
//! (10 requests in flight, 8 MiB parts). Every client writes the object to a file on the
//! same disk, which is then compared with the original byte for byte.
//!
//! Each transfer runs in a child process of its own: its peak RSS (VmHWM) and CPU seconds
//! are its own, start-up included (aws-cli's are read by the Python wrapper that starts
//! it, from `getrusage(RUSAGE_CHILDREN)`). Phases run interleaved for
//! `MOODBRIDGE_BENCH_ROUNDS` rounds (3; 1 in the smoke run); the median is printed.
//!
//! Needs `s3s-fs` (`MOODBRIDGE_S3S_FS`, else `~/.cache/moodbridge/tools/bin/s3s-fs`) and
//! aws-cli (`MOODBRIDGE_AWS_CLI`, else `aws` on the PATH); `scripts/bench.sh` installs
//! both. Run: `cargo bench -p connector-aws --bench s3_download` (`-- 256` for 256 MiB).
//! Without cargo bench's `--bench` flag it makes a 16 MiB smoke run of our phases against
//! moto (what the test run has installed), without aws-cli. Results: docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use moodbridge_core::storage::{GetOptions, ObjectKey, ObjectStore, ObjectStoreExt, PutOptions};
use moodbridge_core::testing::{cpu_seconds_of, pattern_stream, peak_rss_mib};
use secrecy::SecretString;
use tokio::io::AsyncWriteExt;

const KEY_ID: &str = "AKIDMOODBRIDGEBENCH";
const SECRET: &str = "bench-secret-for-s3s-fs";
const BUCKET: &str = "bench";
const KEY: &str = "bench/object.bin";

const PHASES: [(&str, &str); 4] = [
    (
        "ours",
        "moodbridge get, defaults (ranges adapt 4 -> 16, 24 MiB buffer)",
    ),
    ("ours-4", "moodbridge get, 4 ranges in flight (fixed)"),
    (
        "ours-stream",
        "moodbridge get, parallel_downloads(false): one stream",
    ),
    (
        "aws-cli",
        "aws s3 cp, aws-cli defaults (10 in flight, 8 MiB)",
    ),
];

/// The `s3s-fs` server, stopped on drop.
struct S3sFs {
    child: Child,
    endpoint: String,
}

impl S3sFs {
    fn start(root: &Path) -> S3sFs {
        let home = std::env::var("HOME").unwrap_or_default();
        let binary = std::env::var("MOODBRIDGE_S3S_FS")
            .unwrap_or_else(|_| format!("{home}/.cache/moodbridge/tools/bin/s3s-fs"));
        let port = support::free_port();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY_ID, "--secret-key", SECRET])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {binary}: {e} (scripts/bench.sh installs it; or set MOODBRIDGE_S3S_FS)"
                )
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        S3sFs {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn store_builder(endpoint: &str) -> connector_aws::s3::S3Builder {
    connector_aws::s3::S3ObjectStore::builder(BUCKET)
        .endpoint(endpoint)
        .path_style(true)
        .region("us-east-1")
        .static_credentials(KEY_ID, SecretString::from(SECRET.to_owned()))
}

/// One of our downloads, in this (child) process, into `out`.
async fn our_phase(name: &str, endpoint: &str, out: &Path) -> u64 {
    let builder = store_builder(endpoint);
    let store = match name {
        "ours" => builder,
        "ours-4" => builder.download_concurrency(4),
        "ours-stream" => builder.parallel_downloads(false),
        other => panic!("unknown phase {other}"),
    }
    .build()
    .await
    .unwrap();
    let mut body = store
        .get(&ObjectKey::new(KEY).unwrap(), GetOptions::new())
        .await
        .unwrap()
        .body;
    let mut file = tokio::fs::File::create(out).await.unwrap();
    let mut n = 0u64;
    while let Some(chunk) = body.try_next().await.unwrap() {
        n += chunk.len() as u64;
        file.write_all(&chunk).await.unwrap();
    }
    file.flush().await.unwrap();
    n
}

/// aws-cli at its defaults, started by a Python wrapper that reports its CPU and peak RSS.
fn aws_cli(endpoint: &str, out: &Path) -> (f64, f64, f64) {
    let aws = std::env::var("MOODBRIDGE_AWS_CLI").unwrap_or_else(|_| "aws".to_owned());
    let python = std::env::var("MOODBRIDGE_BENCH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let config = tempfile::NamedTempFile::new().unwrap();
    let script = "import resource, subprocess, sys, time\n\
        t = time.monotonic()\n\
        subprocess.run(sys.argv[1:], check=True)\n\
        secs = time.monotonic() - t\n\
        r = resource.getrusage(resource.RUSAGE_CHILDREN)\n\
        print(secs, r.ru_utime + r.ru_stime, r.ru_maxrss / 1024)\n";
    let output = Command::new(python)
        .args(["-c", script, &aws, "--endpoint-url", endpoint])
        .args(["s3", "cp", "--no-progress", "--only-show-errors"])
        .arg(format!("s3://{BUCKET}/{KEY}"))
        .arg(out)
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        // No profile of this machine's: aws-cli's own defaults.
        .env("AWS_CONFIG_FILE", config.path())
        .env("AWS_SHARED_CREDENTIALS_FILE", config.path())
        .output()
        .unwrap_or_else(|e| panic!("start the Python wrapper of {aws}: {e}"));
    read_run("aws-cli", output)
}

/// A child's result line: seconds, CPU seconds, peak RSS MiB.
fn read_run(what: &str, output: std::process::Output) -> Run {
    let f = moodbridge_core::testing::child_figures(what, output);
    (f[0], f[1], f[2])
}

/// Whether two files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        let mut m = 0;
        while m < n {
            let k = b.read(&mut y[m..n]).unwrap();
            if k == 0 {
                return false;
            }
            m += k;
        }
        if x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
    }
}

/// One result: seconds, CPU seconds, peak RSS MiB.
type Run = (f64, f64, f64);

fn run_phase(exe: &Path, name: &str, endpoint: &str, out: &Path) -> Run {
    if name == "aws-cli" {
        return aws_cli(endpoint, out);
    }
    let output = Command::new(exe)
        .args(["--phase", name, endpoint, out.to_str().unwrap()])
        .output()
        .unwrap();
    read_run(name, output)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let (name, endpoint, out) = (&args[i + 1], &args[i + 2], PathBuf::from(&args[i + 3]));
        let start = Instant::now();
        rt.block_on(our_phase(name, endpoint, &out));
        println!(
            "{} {} {}",
            start.elapsed().as_secs_f64(),
            cpu_seconds_of(std::process::id()),
            peak_rss_mib()
        );
        return;
    }
    let smoke = !args.iter().any(|a| a == "--bench");
    let mib: u64 = args
        .iter()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(if smoke { 16 } else { 1024 });
    let size = mib << 20;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3s-root");
    std::fs::create_dir_all(&root).unwrap();
    // The smoke run (part of the test run) uses the moto the tests install.
    let (_s3s, _moto, endpoint, server_name) = if smoke {
        let moto = support::Moto::start();
        let endpoint = moto.endpoint.clone();
        (None, Some(moto), endpoint, "moto (smoke run)")
    } else {
        let server = S3sFs::start(&root);
        let endpoint = server.endpoint.clone();
        (Some(server), None, endpoint, "s3s-fs 0.14.1")
    };
    let original = dir.path().join("object.bin");
    rt.block_on(async {
        let store = store_builder(&endpoint).build().await.unwrap();
        store.create_bucket().await.unwrap();
        let mut file = tokio::fs::File::create(&original).await.unwrap();
        let mut body = pattern_stream(size, 11, 1 << 20);
        while let Some(chunk) = body.try_next().await.unwrap() {
            file.write_all(&chunk).await.unwrap();
        }
        file.sync_all().await.unwrap();
        let file = tokio::fs::File::open(&original).await.unwrap();
        store
            .put_reader(
                &ObjectKey::new(KEY).unwrap(),
                file,
                PutOptions::new().size(size),
            )
            .await
            .unwrap();
    });
    let rounds: usize = std::env::var("MOODBRIDGE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if smoke { 1 } else { 3 });
    println!(
        "s3_download: {mib} MiB object on {server_name} at {endpoint}; each line a child process writing a file; {rounds} rounds, phases interleaved; median (min-max)",
    );
    let phases: Vec<(&str, &str)> = PHASES
        .into_iter()
        .filter(|(name, _)| !(smoke && *name == "aws-cli"))
        .collect();
    let exe = std::env::current_exe().unwrap();
    let out = dir.path().join("download.bin");
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); phases.len()];
    for _ in 0..rounds {
        for (i, (name, _)) in phases.iter().enumerate() {
            let _ = std::fs::remove_file(&out);
            results[i].push(run_phase(&exe, name, &endpoint, &out));
            assert!(
                same_bytes(&original, &out),
                "{name}: the downloaded file differs from the original"
            );
        }
    }
    for ((_, label), runs) in phases.iter().zip(results) {
        let mut rates: Vec<f64> = runs.iter().map(|r| mib as f64 / r.0).collect();
        let mut cpu: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let rss = runs.iter().map(|r| r.2).fold(0.0, f64::max);
        let rate = median(&mut rates);
        println!(
            "{label}: {rate:.1} MiB/s ({:.1}-{:.1}), CPU {:.2} s, peak RSS {rss:.1} MiB (highest)",
            rates[0],
            rates[rates.len() - 1],
            median(&mut cpu),
        );
    }
}
