//! Azure Queue storage send + receive + acknowledge throughput against Azurite (the local
//! Queue service the tests use), side by side in the same run with Microsoft's Python
//! client `azure-storage-queue` on the same server: N messages of 1 KiB (ours with two
//! attributes, in the message text) are sent, one request each, 8 at a time; then
//! received 32 at a time and deleted one by one, by 8 workers each (tasks for us,
//! threads for Python), on a fresh queue per phase.
//!
//! Reported per phase: messages a second sent, and received + acknowledged; the
//! client's CPU seconds per 1,000 messages (ours: this process's; Python's: its
//! interpreter's, from `getrusage`). Phases run interleaved for `MOODBRIDGE_BENCH_ROUNDS`
//! rounds (3); the median is printed.
//!
//! Python is the venv scripts/test.sh installs (`MOODBRIDGE_MOTO_SERVER`'s directory,
//! else `~/.cache/moodbridge/venv`). Run: `cargo bench -p connector-azure --features
//! queue --bench queue_throughput` (`-- 5000` for 5,000 messages; default 2,000).
//! Without cargo bench's `--bench` flag it makes a 200-message smoke run of both
//! clients. Results: docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_azure::auth::{DEV_ACCOUNT, DEV_ACCOUNT_KEY};
use connector_azure::queue::AzureQueue;
use connector_azure::storage::AzureCredentials;
use futures::StreamExt;
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
use moodbridge_core::testing::cpu_seconds_of;

use common::{Figures, body};

const WORKERS: usize = 8;

async fn ours(endpoint: &str, queue: &str, n: usize) -> Figures {
    let queue = Arc::new(
        AzureQueue::builder(queue)
            .endpoint(endpoint)
            .credentials(AzureCredentials::SharedKey(support::Azurite::key()))
            .max_poll_interval(Duration::from_millis(200))
            .create()
            .await
            .unwrap(),
    );
    let cpu = cpu_seconds_of(std::process::id());
    let started = Instant::now();
    let messages: Vec<OutgoingMessage> = (0..n)
        .map(|i| {
            OutgoingMessage::new(body(i))
                .attribute("type", "case.updated")
                .attribute("event-id", format!("evt-{i}"))
        })
        .collect();
    // `send_batch` sends 8 at a time itself.
    for chunk in messages.chunks(64) {
        for outcome in queue.send_batch(chunk).await.unwrap() {
            outcome.unwrap();
        }
    }
    let sent = started.elapsed();
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (queue, seen) = (queue.clone(), seen.clone());
            tokio::spawn(async move {
                while seen.lock().unwrap().len() < n {
                    let got = queue
                        .receive(&ReceiveOptions::new(32).wait(Duration::from_millis(500)))
                        .await
                        .unwrap();
                    if got.is_empty() {
                        continue;
                    }
                    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
                    futures::stream::iter(receipts)
                        .for_each(|r| {
                            let queue = queue.clone();
                            async move { queue.ack(&r).await.unwrap() }
                        })
                        .await;
                    let mut seen = seen.lock().unwrap();
                    for m in &got {
                        seen.insert(m.body.clone());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let drained = started.elapsed();
    assert_eq!(seen.lock().unwrap().len(), n, "every message received");
    Figures {
        send_per_sec: n as f64 / sent.as_secs_f64(),
        receive_per_sec: n as f64 / drained.as_secs_f64(),
        cpu_per_1000: (cpu_seconds_of(std::process::id()) - cpu) * 1000.0 / n as f64,
    }
}

const PYTHON: &str = r#"
import json, resource, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from azure.storage.queue import QueueClient
conn, name, n, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
queue = QueueClient.from_connection_string(conn, name)
queue.create_queue()
pad = "x" * (1024 - 40)
def body(i):
    return '{"Id":"500A%08d","Status":"Working","pad":"%s"}' % (i, pad)
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.monotonic()
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(lambda i: queue.send_message(body(i)), range(n)))
sent = time.monotonic() - t
seen = set()
lock = threading.Lock()
def drain():
    while True:
        with lock:
            if len(seen) >= n:
                return
        got = list(queue.receive_messages(messages_per_page=32, max_messages=32))
        if not got:
            time.sleep(0.2)
            continue
        for m in got:
            queue.delete_message(m)
        with lock:
            seen.update(m.content for m in got)
t = time.monotonic()
threads = [threading.Thread(target=drain) for _ in range(workers)]
for th in threads: th.start()
for th in threads: th.join()
drained = time.monotonic() - t
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
assert len(seen) == n, len(seen)
print(json.dumps({"sent": sent, "drained": drained, "cpu": cpu}))
"#;

fn microsoft(endpoint: &str, queue: &str, n: usize) -> Figures {
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};QueueEndpoint={endpoint}"
    );
    common::python_phase(
        PYTHON,
        &[&conn, queue, &n.to_string(), &WORKERS.to_string()],
        n,
        "azure-storage-queue",
    )
}

fn main() {
    let (n, rounds) = common::size(2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let azurite = support::Azurite::start_queue();
    let mut results: Vec<(&str, Vec<Figures>)> = vec![
        ("moodbridge AzureQueue", Vec::new()),
        ("azure-storage-queue", Vec::new()),
    ];
    for round in 0..rounds {
        let f = runtime.block_on(ours(&azurite.endpoint, &format!("ours-{round}"), n));
        results[0].1.push(f);
        let f = microsoft(&azurite.endpoint, &format!("python-{round}"), n);
        results[1].1.push(f);
    }
    common::report(
        &format!(
            "Azure Queue on Azurite, {n} messages of 1 KiB, {WORKERS} workers, median of {rounds} round(s)"
        ),
        "received+acked msg/s",
        &results,
    );
}
