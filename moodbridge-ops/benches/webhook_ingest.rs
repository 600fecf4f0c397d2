//! Signed webhooks into the durable event log over loopback: many connections at once,
//! each request acknowledged only after its event is committed (SQLite, WAL,
//! `synchronous = FULL`; concurrent requests group-committed by the `EventWriter`).
//! Prints events acknowledged per second and the acknowledgement latency percentiles.
//!
//! Run: `cargo bench -p moodbridge-ops --bench webhook_ingest` (part of
//! `./scripts/bench.sh`); `-- <connections> <events>` (default 1000 and 200,000).
//! Without cargo bench's `--bench` flag (as under `cargo test --benches`) it makes a
//! short smoke run. The load generator runs in the same process, on the same two cores,
//! as the receiver. Results are recorded in docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench binary")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moodbridge_core::state::{EventLog, EventWriter, SqliteStateStore};
use moodbridge_ops::webhooks::{WebhookReceiver, WebhookSource};
use secrecy::SecretString;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (connections, total) = match (smoke, numbers.as_slice()) {
        (true, _) => (20, 500),
        (false, [c, n, ..]) => (*c, *n),
        (false, _) => (1_000, 200_000),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(
            SqliteStateStore::open(&dir.path().join("state.db"))
                .await
                .unwrap(),
        );
        let app = WebhookReceiver::new(EventWriter::spawn(log.clone(), 1_000))
            .source(
                WebhookSource::signed("load", [SecretString::from(SECRET)])
                    .unwrap()
                    .partition_by("/data/Id"),
            )
            .router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks/load", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections as usize)
            .build()
            .unwrap();
        let next = Arc::new(AtomicU64::new(0));
        let signer = Arc::new(standardwebhooks::Webhook::new(SECRET).unwrap());
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (client, next, signer, url) = (client.clone(), next.clone(), signer.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let id = format!("msg_{i}");
                    let body = format!(
                        r#"{{"type":"case.updated","timestamp":"2026-12-06T10:00:00Z","data":{{"Id":"500{:012}","Status":"Working"}}}}"#,
                        i % 5_000
                    );
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
                    let signature = signer.sign(&id, now, body.as_bytes()).unwrap();
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("webhook-id", &id)
                        .header("webhook-timestamp", now.to_string())
                        .header("webhook-signature", signature)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    let _ = response.bytes().await.unwrap();
                    latencies.push(sent.elapsed());
                }
            }));
        }
        let mut latencies: Vec<Duration> = Vec::with_capacity(total as usize);
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(log.last_sequence().await.unwrap(), total as i64, "every event stored once");
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "webhook_ingest: {total} signed webhooks over {connections} connections in {secs:.2} s = {:.0} events/s acknowledged (fsync durable); ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            total as f64 / secs,
            at(0.50).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
        );
        server.abort();
    });
}
