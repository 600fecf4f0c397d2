//! Azure Service Bus send + receive + complete throughput against the Service Bus sandbox
//! (azure-sandbox, in a child process of its own so its CPU is not counted as a
//! client's), side by side in the same run with Microsoft's Python client
//! `azure-servicebus` on the same namespace: N messages of 1 KiB (with two application
//! properties) are sent in batches of 100; then received 100 at a time and completed,
//! on a fresh queue per phase, by one receiver each.
//!
//! Ours sends a batch as 100 transfers in flight on one link, and completes a received
//! batch with one `update-disposition` request. Python sends a batch as one batched
//! transfer, and completes each message with a disposition it waits on (its default).
//!
//! Reported per phase: messages a second sent, and received + completed; the client's
//! CPU seconds per 1,000 messages (ours: this process's; Python's: its interpreter's,
//! from `getrusage`). Phases run interleaved for `MOODBRIDGE_BENCH_ROUNDS` rounds (3);
//! the median is printed.
//!
//! Run: `cargo bench -p connector-azure --features servicebus --bench
//! servicebus_throughput` (`-- 5000` for 5,000 messages; default 10,000: Microsoft's client spends about a second opening and closing its links, counted in its phases as ours is in ours). Without cargo
//! bench's `--bench` flag it makes a 200-message smoke run of both clients. Results:
//! docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use azure_sandbox::{QueueOptions, ServiceBus, ServiceBusConfig};
use common::{Figures, body};
use connector_azure::servicebus::{ServiceBusConnectionString, ServiceBusQueue};
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
use moodbridge_core::testing::cpu_seconds_of;

const BATCH: usize = 100;
const SANDBOX_ROLE: &str = "MOODBRIDGE_BENCH_SERVICEBUS_SANDBOX";

/// The sandbox, in this binary run as a child: it makes queues `ours-<r>` and
/// `python-<r>` and prints its connection string.
fn sandbox_child(rounds: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = ServiceBus::start(ServiceBusConfig::default())
            .await
            .unwrap();
        for round in 0..rounds {
            for who in ["ours", "python"] {
                bus.create_queue(&format!("{who}-{round}"), QueueOptions::default());
            }
        }
        println!("{}", bus.connection_string());
        // Until the parent closes stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        bus.stop().await;
    });
}

struct Sandbox {
    child: Child,
    connection_string: String,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sandbox(rounds: usize) -> Sandbox {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(SANDBOX_ROLE, rounds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Sandbox {
        child,
        connection_string: line.trim().to_owned(),
    }
}

async fn ours(connection_string: &str, queue: &str, n: usize) -> Figures {
    let queue = ServiceBusQueue::builder(queue)
        .connection_string(ServiceBusConnectionString::parse(connection_string).unwrap())
        .build()
        .unwrap();
    let cpu = cpu_seconds_of(std::process::id());
    let started = Instant::now();
    let messages: Vec<OutgoingMessage> = (0..n)
        .map(|i| {
            OutgoingMessage::new(body(i))
                .attribute("type", "case.updated")
                .attribute("event-id", format!("evt-{i}"))
        })
        .collect();
    for chunk in messages.chunks(BATCH) {
        for outcome in queue.send_batch(chunk).await.unwrap() {
            outcome.unwrap();
        }
    }
    let sent = started.elapsed();
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < n {
        let got = queue
            .receive(&ReceiveOptions::new(BATCH as u32).wait(Duration::from_millis(500)))
            .await
            .unwrap();
        let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
        for outcome in queue.ack_batch(&receipts).await.unwrap() {
            outcome.unwrap();
        }
        seen.extend(got.into_iter().map(|m| m.body));
    }
    let drained = started.elapsed();
    let figures = Figures {
        send_per_sec: n as f64 / sent.as_secs_f64(),
        receive_per_sec: n as f64 / drained.as_secs_f64(),
        cpu_per_1000: (cpu_seconds_of(std::process::id()) - cpu) * 1000.0 / n as f64,
    };
    queue.close().await;
    figures
}

const PYTHON: &str = r#"
import json, resource, sys, time
from azure.servicebus import ServiceBusClient, ServiceBusMessage
conn, name, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pad = "x" * (1024 - 40)
def body(i):
    return '{"Id":"500A%08d","Status":"Working","pad":"%s"}' % (i, pad)
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
with ServiceBusClient.from_connection_string(conn) as client:
    t = time.monotonic()
    with client.get_queue_sender(name) as sender:
        for start in range(0, n, batch):
            b = sender.create_message_batch()
            for i in range(start, min(n, start + batch)):
                b.add_message(ServiceBusMessage(body(i), application_properties={"type": "case.updated", "event-id": "evt-%d" % i}))
            sender.send_messages(b)
    sent = time.monotonic() - t
    seen = set()
    t = time.monotonic()
    with client.get_queue_receiver(name) as receiver:
        while len(seen) < n:
            got = receiver.receive_messages(max_message_count=batch, max_wait_time=0.5)
            for m in got:
                receiver.complete_message(m)
            seen.update(str(m) for m in got)
    drained = time.monotonic() - t
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
print(json.dumps({"sent": sent, "drained": drained, "cpu": cpu}))
"#;

fn microsoft(connection_string: &str, queue: &str, n: usize) -> Figures {
    common::python_phase(
        PYTHON,
        &[connection_string, queue, &n.to_string(), &BATCH.to_string()],
        n,
        "azure-servicebus",
    )
}

fn main() {
    if let Ok(rounds) = std::env::var(SANDBOX_ROLE) {
        sandbox_child(rounds.parse().unwrap());
        return;
    }
    let (n, rounds) = common::size(10_000);
    let sandbox = start_sandbox(rounds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results: Vec<(&str, Vec<Figures>)> = vec![
        ("moodbridge ServiceBusQueue", Vec::new()),
        ("azure-servicebus", Vec::new()),
    ];
    for round in 0..rounds {
        let f = runtime.block_on(ours(
            &sandbox.connection_string,
            &format!("ours-{round}"),
            n,
        ));
        results[0].1.push(f);
        let f = microsoft(&sandbox.connection_string, &format!("python-{round}"), n);
        results[1].1.push(f);
    }
    common::report(
        &format!(
            "Service Bus on the sandbox, {n} messages of 1 KiB, batches of {BATCH}, one receiver, median of {rounds} round(s)"
        ),
        "received+completed msg/s",
        &results,
    );
}
