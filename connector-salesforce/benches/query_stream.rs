//! Salesforce client benchmarks against the local sandbox, run as a separate process
//! (so its memory is not the client's):
//! 1. streaming a query of N Accounts (default 1,000,000) page by page: records/s and the
//!    client process's peak RSS (`VmHWM`);
//! 2. per-call overhead: `SalesforceClient::limits()` (policy, token manager, allow-list,
//!    error mapping, `Sforce-Limit-Info` parsing) against a raw `reqwest` GET of the same
//!    endpoint with the same client settings: sequential calls in rotating order inside a
//!    runtime task, the median of the paired differences (each SDK call minus the raw call
//!    of the same round), for the default policy and a passthrough one.
//!
//! Run: `cargo bench -p connector-salesforce --bench query_stream`
//! (records: `-- 1000000`; rounds: `MB_BENCH_CALLS=10000`). Without cargo bench's
//! `--bench` flag (as under `cargo test --benches`) it makes a short smoke run. Results are
//! in docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench binary")]

use std::time::Instant;

use connector_salesforce::client::SalesforceClient;
use connector_salesforce::instance::InstanceAllowList;
use futures::TryStreamExt;

mod common;
use common::Server;
use moodbridge_core::testing::peak_rss_mib;

fn median(mut v: Vec<i128>) -> i128 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let (smoke, records) = common::args(1_000_000, 2_000);
    let calls = std::env::var("MB_BENCH_CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(if smoke { 50 } else { 2_000 });
    let server = Server::start(records, 0);
    let (url, token) = (server.url.clone(), server.token.clone());
    let pid = server.pid();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Everything runs in a task on the runtime's workers, as an application's calls do
    // (a `block_on` future lives outside the workers: each wake-up crosses threads).
    rt.block_on(rt.spawn(async move {
        let tokens = common::Fixed::manager(&token, &url);
        let sf = SalesforceClient::builder("salesforce:bench", tokens.clone(), "sandbox", "bench")
            .allow_instances(InstanceAllowList::default().with_loopback())
            .connect()
            .await
            .unwrap();

        let rss_before = peak_rss_mib();
        let sandbox_cpu = common::cpu_seconds_of(pid);
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
        let per_record = |cpu: f64, n: u64| cpu / n as f64 * 1e6;
        let large = per_record(common::cpu_seconds_of(pid) - sandbox_cpu, n);
        // The sandbox's CPU per record, at this size and at a fifth of it: paging is
        // linear when the two are alike (it copied the rest of the result for every page,
        // which doubled the cost per record from 200k to 1M records).
        let small_n = (records / 5).max(1);
        let small_server = tokio::task::spawn_blocking(move || Server::start(small_n, 0))
            .await
            .unwrap();
        let small_sf = small_server.client("salesforce:bench-small").await;
        let before = common::cpu_seconds_of(small_server.pid());
        let mut stream = Box::pin(small_sf.query("SELECT Id, Name, Industry, BillingCity, AnnualRevenue, SystemModstamp FROM Account"));
        let mut m = 0u64;
        while let Some(record) = stream.try_next().await.unwrap() {
            std::hint::black_box(&record);
            m += 1;
        }
        let small = per_record(common::cpu_seconds_of(small_server.pid()) - before, m);
        println!(
            "query_paging: sandbox CPU {large:.2} µs/record for {n} records, {small:.2} µs/record for {m} (ratio {:.2})",
            large / small
        );
        drop(small_server);

        // Per-call overhead: the SDK (default policy), the SDK with a passthrough policy
        // (no retry, no timer), and a raw reqwest GET of the same endpoint with the same
        // client settings; sequential calls in rotating order, each SDK call compared with
        // the raw call of the same round (same moment, same machine load).
        let bare_sf = SalesforceClient::builder("salesforce:bench-bare", tokens.clone(), "sandbox", "bench")
            .allow_instances(InstanceAllowList::default().with_loopback())
            .policy(moodbridge_core::Policy::passthrough("salesforce:bench-bare"))
            .connect()
            .await
            .unwrap();
        let raw = moodbridge_auth::http::client().unwrap();
        let limits_url = format!("{url}/services/data/v{}/limits", sf.api_version());
        let raw_call = || async {
            let t = Instant::now();
            let body = raw.get(&limits_url).bearer_auth(&token).send().await.unwrap().bytes().await.unwrap();
            std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
            t.elapsed().as_nanos() as i128
        };
        let sdk_call = |c: &SalesforceClient| {
            let c = c.clone();
            async move {
                let t = Instant::now();
                std::hint::black_box(c.limits().await.unwrap());
                t.elapsed().as_nanos() as i128
            }
        };
        for _ in 0..20 {
            sdk_call(&sf).await;
            sdk_call(&bare_sf).await;
            raw_call().await;
        }
        let (mut sdk, mut pass, mut bare) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..calls {
            let (mut s, mut p, mut r) = (0, 0, 0);
            for step in 0..3 {
                match (i + step) % 3 {
                    0 => s = sdk_call(&sf).await,
                    1 => p = sdk_call(&bare_sf).await,
                    _ => r = raw_call().await,
                }
            }
            sdk.push(s - r);
            pass.push(p - r);
            bare.push(r);
        }
        let raw_median = median(bare) as f64;
        let report = |name: &str, diffs: Vec<i128>| {
            let d = median(diffs) as f64;
            println!(
                "call_overhead: {name}: median paired difference {:+.1} µs = {:+.1} % of the raw call's median {:.1} µs ({calls} rounds)",
                d / 1e3,
                d / raw_median * 100.0,
                raw_median / 1e3
            );
        };
        report("SDK, default policy", sdk);
        report("SDK, passthrough policy", pass);
    }))
    .unwrap();
    drop(server);
}
