//! What the AWS benches share: the message they move, the drain of an SQS queue by our
//! client, boto3 run in moto's venv, the medians and the table.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use connector_aws::sdk::AwsCredentials;
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};

/// Concurrent workers per phase (tokio tasks for us, threads for boto3).
pub const WORKERS: usize = 8;

/// One phase's figures.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub send_per_sec: f64,
    pub receive_per_sec: f64,
    pub cpu_per_1000: f64,
}

/// Message `i`: 1 KiB of JSON.
pub fn body(i: usize) -> String {
    let pad = "x".repeat(1024 - 40);
    format!(r#"{{"Id":"500A{i:08}","Status":"Working","pad":"{pad}"}}"#)
}

/// Messages `0..n` with two attributes, in batches of 10.
pub fn batches(n: usize) -> Vec<Vec<OutgoingMessage>> {
    (0..n)
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
        .collect()
}

/// The keys moto accepts.
pub fn keys() -> AwsCredentials {
    AwsCredentials::Static {
        access_key_id: "test".into(),
        secret_access_key: "test".to_owned().into(),
        session_token: None,
    }
}

/// Receive (10 at a time) and acknowledge (in batches) until `n` distinct messages came,
/// with [`WORKERS`] tasks; the time it took. Delivery is at least once: a message may
/// come twice, so what counts is the distinct bodies.
pub async fn drain(queue: Arc<dyn MessageQueue>, n: usize, phase: &str) -> Duration {
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
                        // Under load a message whose visibility ran out is delivered to
                        // another worker, and the first receipt goes stale: the message
                        // is counted once by its body either way.
                        if let Err(e) = outcome {
                            assert_eq!(e.kind(), moodbridge_core::ErrorKind::InvalidInput, "{e}");
                        }
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
        println!("({phase}: {duplicates} message(s) delivered twice, as at-least-once allows)");
    }
    drained
}

/// The end of a queue phase's boto3 script: drain the SQS queue at `url` (client `sqs`)
/// of `n` messages with `workers` threads, then print the figures. The script before it
/// defines those, and `sent` (seconds) and `cpu0` (`getrusage` at the start).
const BOTO3_DRAIN: &str = r#"
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

/// Run a boto3 queue phase: `script` sends, [`BOTO3_DRAIN`] receives and acknowledges.
pub fn boto3_queue(script: &str, args: &[&str], n: usize) -> Figures {
    boto3(&format!("{script}{BOTO3_DRAIN}"), args, n)
}

/// Run a boto3 phase (`script` prints `{"sent", "drained", "cpu"}` in seconds) with
/// `args`, for `n` messages.
pub fn boto3(script: &str, args: &[&str], n: usize) -> Figures {
    let out = Command::new(moodbridge_core::testing::venv_python())
        .arg("-c")
        .arg(script)
        .args(args)
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

/// The message count (an argument, else `bench` under `cargo bench` and `smoke`
/// without it) and the rounds (`MOODBRIDGE_BENCH_ROUNDS`, 3 under `cargo bench`, else 1).
pub fn size(bench_default: usize, smoke: usize) -> (usize, usize) {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { bench_default } else { smoke });
    let rounds = if bench {
        std::env::var("MOODBRIDGE_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    } else {
        1
    };
    (n, rounds)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Print the medians of each client's rounds under `title`; `sent` names the first
/// column's operation.
pub fn report(title: &str, sent: &str, results: &[(&str, Vec<Figures>)]) {
    report_with(
        title,
        [sent, "received+acked msg/s", "client CPU s/1000"],
        results,
    );
}

/// Print the medians of each client's rounds under `title`, with these column names.
pub fn report_with(title: &str, columns: [&str; 3], results: &[(&str, Vec<Figures>)]) {
    println!("{title}");
    println!(
        "{:<22} {:>16} {:>22} {:>20}",
        "client", columns[0], columns[1], columns[2]
    );
    for (name, figures) in results {
        println!(
            "{:<22} {:>16.0} {:>22.0} {:>20.3}",
            name,
            median(figures.iter().map(|f| f.send_per_sec).collect()),
            median(figures.iter().map(|f| f.receive_per_sec).collect()),
            median(figures.iter().map(|f| f.cpu_per_1000).collect()),
        );
    }
}
