//! Cached token fetch latency under contention: 64 tasks on a 2-worker runtime each ask
//! the token manager for a valid, cached token in a loop; every call is timed and the
//! median, p90, p99 and max are printed.
//!
//! Run: `cargo bench -p moodbridge-auth --bench token_cache`. Without cargo bench's
//! `--bench` flag (as under `cargo test --benches`) it makes a short smoke run. Results
//! are recorded in docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench binary")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moodbridge_auth::oauth::TokenSet;
use moodbridge_auth::token_manager::{TokenManager, TokenSource};
use moodbridge_core::Result;
use secrecy::SecretString;

struct Static;

#[async_trait]
impl TokenSource for Static {
    async fn fetch(&self, _current: Option<&TokenSet>) -> Result<TokenSet> {
        Ok(TokenSet::bearer(
            SecretString::from("cached-token"),
            Some(Duration::from_secs(3600)),
        ))
    }
}

const TASKS: usize = 64;

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let calls_per_task = if smoke { 200 } else { 50_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let manager = TokenManager::new();
    manager.register("bench", "svc", Arc::new(Static));
    let mut latencies: Vec<u32> = rt.block_on(async {
        manager.token("bench", "svc").await.expect("warm-up");
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (m, b) = (manager.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut own = Vec::with_capacity(calls_per_task);
                    b.wait().await;
                    for _ in 0..calls_per_task {
                        let start = Instant::now();
                        let token = m.token("bench", "svc").await.expect("token");
                        own.push(start.elapsed().as_nanos() as u32);
                        std::hint::black_box(token);
                    }
                    own
                })
            })
            .collect();
        let mut all = Vec::with_capacity(TASKS * calls_per_task);
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "token_cache: {} calls by {TASKS} tasks on 2 workers: median {} ns, p90 {} ns, p99 {} ns, max {} ns",
        latencies.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        latencies[latencies.len() - 1]
    );
}
