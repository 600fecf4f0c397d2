//! Salesforce client benchmarks against the local sandbox, run as a separate process
//! (so its memory is not the client's):
//! 1. streaming a query of N Accounts (default 1,000,000) page by page: records/s and the
//!    client process's peak RSS (`VmHWM`);
//! 2. per-call overhead: `SalesforceClient::limits()` (policy, token manager, allow-list,
//!    error mapping, `Sforce-Limit-Info` parsing) against a raw `reqwest` GET of the same
//!    endpoint with the same connection pool settings, sequential calls, medians.
//!
//! Run: `cargo bench -p connector-salesforce --features sandbox --bench query_stream`
//! (records: `-- 1000000`). Without cargo bench's `--bench` flag (as under `cargo test
//! --benches`) it makes a short smoke run. Results are in docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench binary")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_salesforce::client::SalesforceClient;
use connector_salesforce::instance::InstanceAllowList;
use futures::TryStreamExt;
use moodbridge_auth::oauth::TokenSet;
use moodbridge_auth::token_manager::{TokenManager, TokenSource};
use secrecy::SecretString;

struct Fixed(String, String);

#[async_trait::async_trait]
impl TokenSource for Fixed {
    async fn fetch(&self, _: Option<&TokenSet>) -> moodbridge_core::Result<TokenSet> {
        let mut t = TokenSet::bearer(
            SecretString::from(self.0.clone()),
            Some(Duration::from_secs(86_400)),
        );
        t.instance_url = Some(self.1.clone());
        Ok(t)
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let records: u64 = args
        .iter()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(if smoke { 2_000 } else { 1_000_000 });
    let calls = if smoke { 50 } else { 2_000 };

    // The sandbox in its own process: the example binary built next to this bench.
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("examples")
        .join("sandbox");
    let mut server = Command::new(&dir)
        .args([records.to_string(), "0".into()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {} (build it with --example sandbox --features sandbox): {e}",
                dir.display()
            )
        });
    let mut first = String::new();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    // Keep reading what the server prints, so it never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let mut parts = first.split_whitespace();
    let url = parts
        .next()
        .unwrap()
        .trim_start_matches("SANDBOX_URL=")
        .to_owned();
    let token = parts
        .next()
        .unwrap()
        .trim_start_matches("TOKEN=")
        .to_owned();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tokens = TokenManager::new();
        tokens.register("sandbox", "bench", Arc::new(Fixed(token.clone(), url.clone())));
        let sf = SalesforceClient::builder("salesforce:bench", tokens, "sandbox", "bench")
            .allow_instances(InstanceAllowList::default().with_loopback())
            .connect()
            .await
            .unwrap();

        let rss_before = peak_rss_mib();
        let start = Instant::now();
        let mut n = 0u64;
        let mut stream = Box::pin(sf.query("SELECT Id, Name, Industry, BillingCity, AnnualRevenue, SystemModstamp FROM Account"));
        while let Some(record) = stream.try_next().await.unwrap() {
            std::hint::black_box(&record);
            n += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(n, records);
        println!(
            "query_stream: {n} records in {secs:.2} s = {:.0} records/s; client peak RSS {:.1} MiB (before the query {:.1} MiB)",
            n as f64 / secs,
            peak_rss_mib(),
            rss_before
        );

        // Per-call overhead.
        let raw = moodbridge_auth::http::client().unwrap();
        let limits_url = format!("{url}/services/data/v{}/limits", sf.api_version());
        for _ in 0..20 {
            sf.limits().await.unwrap();
            raw.get(&limits_url).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
        }
        let (mut sdk, mut bare) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
        for _ in 0..calls {
            let t = Instant::now();
            std::hint::black_box(sf.limits().await.unwrap());
            sdk.push(t.elapsed().as_nanos());
            let t = Instant::now();
            let body = raw.get(&limits_url).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
            bare.push(t.elapsed().as_nanos());
        }
        let (s, b) = (median(sdk), median(bare));
        println!(
            "call_overhead: {calls} calls each, median SDK {:.1} µs vs raw reqwest {:.1} µs: {:+.1} %",
            s as f64 / 1e3,
            b as f64 / 1e3,
            (s as f64 / b as f64 - 1.0) * 100.0
        );
    });
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();
}
