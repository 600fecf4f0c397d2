//! SQS send + receive + acknowledge throughput against moto (the local SQS the tests
//! use), side by side in the same run with boto3 — AWS's own Python SDK, the client
//! Python services use — on the same server: N messages of 1 KiB with two attributes
//! are sent in batches of 10, then received 10 at a time and deleted in batches, by 8
//! workers each (tasks for us, threads for boto3), on a fresh queue per phase.
//!
//! Reported per phase: messages a second sent, and received + acknowledged; the
//! client's CPU seconds per 1,000 messages (ours: this process's; boto3's: its
//! interpreter's, from `getrusage`). moto answers every request, so wall time is
//! mostly the server's; CPU time is the client's own cost. Phases run interleaved for
//! `MOODBRIDGE_BENCH_ROUNDS` rounds (3); the median is printed.
//!
//! boto3 is the one moto's venv has (`MOODBRIDGE_MOTO_SERVER`'s directory, else
//! `~/.cache/moodbridge/venv`). Run: `cargo bench -p connector-aws --features sqs --bench
//! sqs_throughput` (`-- 5000` for 5,000 messages; default 1,000: moto slows down as a
//! queue grows, and at 5,000 a round takes minutes). Without cargo
//! bench's `--bench` flag it makes a 200-message smoke run of both clients. Results:
//! docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use connector_aws::sdk::AwsCredentials;
use connector_aws::sqs::SqsQueue;
use futures::StreamExt;
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
use moodbridge_core::testing::cpu_seconds_of;

const WORKERS: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Figures {
    send_per_sec: f64,
    receive_per_sec: f64,
    cpu_per_1000: f64,
}

fn body(i: usize) -> String {
    let pad = "x".repeat(1024 - 40);
    format!(r#"{{"Id":"500A{i:08}","Status":"Working","pad":"{pad}"}}"#)
}

async fn ours(endpoint: &str, queue: &str, n: usize) -> Figures {
    let queue = Arc::new(
        SqsQueue::builder(queue)
            .region("us-east-1")
            .endpoint(endpoint)
            .credentials(AwsCredentials::Static {
                access_key_id: "test".into(),
                secret_access_key: "test".to_owned().into(),
                session_token: None,
            })
            .create(None)
            .await
            .unwrap(),
    );
    let cpu = cpu_seconds_of(std::process::id());
    let started = Instant::now();
    let batches: Vec<Vec<OutgoingMessage>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|c| {
            c.iter()
                .map(|&i| {
                    OutgoingMessage::new(body(i))
                        .attribute("type", "case.updated")
                        .attribute("event-id", format!("evt-{i}"))
                })
                .collect()
        })
        .collect();
    futures::stream::iter(batches)
        .map(|batch| {
            let queue = queue.clone();
            async move {
                for outcome in queue.send_batch(&batch).await.unwrap() {
                    outcome.unwrap();
                }
            }
        })
        .buffer_unordered(WORKERS)
        .collect::<Vec<()>>()
        .await;
    let sent = started.elapsed();
    // Delivery is at least once: a message may come twice (moto, like SQS, can hand
    // one out again), so what counts is the distinct messages received.
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let duplicates = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (queue, seen, duplicates) = (queue.clone(), seen.clone(), duplicates.clone());
            tokio::spawn(async move {
                while seen.lock().unwrap().len() < n {
                    let got = queue
                        .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(1)))
                        .await
                        .unwrap();
                    if got.is_empty() {
                        continue;
                    }
                    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
                    for outcome in queue.ack_batch(&receipts).await.unwrap() {
                        outcome.unwrap();
                    }
                    let mut seen = seen.lock().unwrap();
                    for m in &got {
                        if !seen.insert(m.body.clone()) {
                            duplicates.fetch_add(1, Ordering::SeqCst);
                        }
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
    let duplicates = duplicates.load(Ordering::SeqCst);
    if duplicates > 0 {
        println!(
            "(moodbridge phase: {duplicates} message(s) delivered twice, as at-least-once allows)"
        );
    }
    Figures {
        send_per_sec: n as f64 / sent.as_secs_f64(),
        receive_per_sec: n as f64 / drained.as_secs_f64(),
        cpu_per_1000: (cpu_seconds_of(std::process::id()) - cpu) * 1000.0 / n as f64,
    }
}

const BOTO3: &str = r#"
import json, resource, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
import boto3
endpoint, name, n, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
url = sqs.create_queue(QueueName=name)["QueueUrl"]
pad = "x" * (1024 - 40)
def body(i):
    return '{"Id":"500A%08d","Status":"Working","pad":"%s"}' % (i, pad)
def send(start):
    entries = [{"Id": str(k), "MessageBody": body(i),
                "MessageAttributes": {
                    "type": {"DataType": "String", "StringValue": "case.updated"},
                    "event-id": {"DataType": "String", "StringValue": "evt-%d" % i}}}
               for k, i in enumerate(range(start, min(start + 10, n)))]
    out = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert not out.get("Failed"), out.get("Failed")
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.monotonic()
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(send, range(0, n, 10)))
sent = time.monotonic() - t
seen = set()
lock = threading.Lock()
def drain():
    while True:
        with lock:
            if len(seen) >= n:
                return
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  MessageAttributeNames=["All"],
                                  MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not got:
            continue
        out = sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(got)])
        assert not out.get("Failed"), out.get("Failed")
        with lock:
            seen.update(m["Body"] for m in got)
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

fn python() -> String {
    if let Ok(moto) = std::env::var("MOODBRIDGE_MOTO_SERVER") {
        return std::path::Path::new(&moto)
            .with_file_name("python")
            .display()
            .to_string();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    format!("{home}/.cache/moodbridge/venv/bin/python")
}

fn boto3(endpoint: &str, queue: &str, n: usize) -> Figures {
    let out = Command::new(python())
        .args([
            "-c",
            BOTO3,
            endpoint,
            queue,
            &n.to_string(),
            &WORKERS.to_string(),
        ])
        .output()
        .expect("python with boto3 (moto's venv)");
    assert!(
        out.status.success(),
        "boto3 phase failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Figures {
        send_per_sec: n as f64 / v["sent"].as_f64().unwrap(),
        receive_per_sec: n as f64 / v["drained"].as_f64().unwrap(),
        cpu_per_1000: v["cpu"].as_f64().unwrap() * 1000.0 / n as f64,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 1_000 } else { 200 });
    let rounds: usize = if bench {
        std::env::var("MOODBRIDGE_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    } else {
        1
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let moto = support::Moto::start();
    let mut results: Vec<(&str, Vec<Figures>)> =
        vec![("moodbridge SqsQueue", Vec::new()), ("boto3", Vec::new())];
    for round in 0..rounds {
        let f = runtime.block_on(ours(&moto.endpoint, &format!("ours-{round}"), n));
        results[0].1.push(f);
        let f = boto3(&moto.endpoint, &format!("boto3-{round}"), n);
        results[1].1.push(f);
    }
    println!("SQS on moto, {n} messages of 1 KiB, {WORKERS} workers, median of {rounds} round(s)");
    println!(
        "{:<22} {:>14} {:>22} {:>20}",
        "client", "sent msg/s", "received+acked msg/s", "client CPU s/1000"
    );
    for (name, figures) in &results {
        println!(
            "{:<22} {:>14.0} {:>22.0} {:>20.3}",
            name,
            median(figures.iter().map(|f| f.send_per_sec).collect()),
            median(figures.iter().map(|f| f.receive_per_sec).collect()),
            median(figures.iter().map(|f| f.cpu_per_1000).collect()),
        );
    }
}
