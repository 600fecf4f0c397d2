//! Signed webhooks into the durable event log over loopback: many connections at once,
//! each request acknowledged only after its event is committed (SQLite, WAL,
//! `synchronous = FULL`; concurrent requests group-committed by the `EventWriter`),
//! while an `EventConsumer` hands every event to a handler. Prints events acknowledged
//! per second, the acknowledgement latency percentiles, and the event-to-handler latency
//! percentiles (from the request's send to the handler's call).
//!
//! Run: `cargo bench -p moodbridge-ops --bench webhook_ingest -- <connections> <events>
//! [<rate>]` (part of `./scripts/bench.sh`; default 1000 connections, 200,000 events).
//! - Without a rate, a **closed loop**: each connection sends its next request when the
//!   last one is answered — the most the receiver takes.
//! - With a rate (events per second over all connections), an **open loop**: each
//!   connection sends on a fixed schedule, and latency is counted from the time a request
//!   was due, not when it went out (a late answer delays the next request and the delay
//!   counts), as `wrk2` measures.
//!
//! Without cargo bench's `--bench` flag (as under `cargo test --benches`) it makes a
//! short smoke run. The load generator (requests signed before the clock starts) runs in
//! the same process, on the same two cores, as the receiver and the consumer. Results
//! are recorded in docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench binary")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moodbridge_core::engine::EventConsumer;
use moodbridge_core::state::{EventLog, EventWriter, SqliteStateStore, StoredEvent};
use moodbridge_ops::webhooks::{WebhookReceiver, WebhookSource};
use secrecy::SecretString;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One signed request, ready to send.
struct Signed {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

fn sign_all(total: u64) -> Vec<Signed> {
    let signer = standardwebhooks::Webhook::new(SECRET).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (0..total)
        .map(|i| {
            let id = format!("msg_{i}");
            let body = format!(
                r#"{{"type":"case.updated","timestamp":"2026-12-06T10:00:00Z","data":{{"Id":"500{:012}","Status":"Working"}}}}"#,
                i % 5_000
            );
            let signature = signer.sign(&id, now, body.as_bytes()).unwrap();
            Signed {
                id,
                timestamp: now.to_string(),
                signature,
                body,
            }
        })
        .collect()
}

/// Send one request and read its answer, which must be a `200`.
async fn send(client: &reqwest::Client, url: &str, r: &Signed) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &r.id)
        .header("webhook-timestamp", &r.timestamp)
        .header("webhook-signature", &r.signature)
        .body(r.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await.unwrap();
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (connections, total, rate) = match (smoke, numbers.as_slice()) {
        (true, _) => (20, 500, None),
        (false, [c, n, r, ..]) => (*c, *n, Some(*r)),
        (false, [c, n]) => (*c, *n, None),
        (false, _) => (1_000, 200_000, None),
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

        // The consumer: every event to a handler that notes when it got it.
        let handled_at: Arc<Mutex<Vec<(i64, Instant)>>> =
            Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
        let consumer = EventConsumer::new("bench", log.clone(), log.clone()).page(1_000);
        let (stop_consumer, stopped) = tokio::sync::oneshot::channel::<()>();
        let consuming = {
            let handled_at = handled_at.clone();
            tokio::spawn(async move {
                let handler = move |event: StoredEvent| {
                    let handled_at = handled_at.clone();
                    async move {
                        handled_at.lock().unwrap().push((event.sequence, Instant::now()));
                        Ok(())
                    }
                };
                consumer
                    .run_until(&handler, Duration::from_millis(5), async {
                        let _ = stopped.await;
                    })
                    .await;
            })
        };

        // `total` measured requests, then one per connection to open it before the clock.
        let requests = Arc::new(sign_all(total + connections));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections as usize)
            .build()
            .unwrap();
        let next = Arc::new(AtomicU64::new(0));
        // When each request was due (open loop) or sent (closed loop), by event number.
        let due_at: Arc<Vec<Mutex<Option<Instant>>>> =
            Arc::new((0..total).map(|_| Mutex::new(None)).collect());
        // Open every connection first (one unmeasured request each), so that what is
        // measured is the receiver, not 1,000 TCP handshakes at once.
        let warm_up = (0..connections).map(|c| {
            let (client, requests, url) = (client.clone(), requests.clone(), url.clone());
            async move {
                let r = &requests[(total + c) as usize];
                send(&client, &url, r).await;
            }
        });
        futures::future::join_all(warm_up).await;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..connections {
            let (client, next, requests, url, due_at) = (
                client.clone(),
                next.clone(),
                requests.clone(),
                url.clone(),
                due_at.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                // Open loop: this connection's k-th request is due at
                // start + (c + k × connections) / rate.
                let mut k = 0u64;
                loop {
                    let due = rate.map(|r| {
                        start + Duration::from_secs_f64((c + k * connections) as f64 / r as f64)
                    });
                    k += 1;
                    if let Some(due) = due {
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let r = &requests[i as usize];
                    let sent = due.unwrap_or_else(Instant::now);
                    *due_at[i as usize].lock().unwrap() = Some(sent);
                    send(&client, &url, r).await;
                    latencies.push(sent.elapsed());
                }
            }));
        }
        let mut latencies: Vec<Duration> = Vec::with_capacity(total as usize);
        for t in tasks {
            latencies.extend(t.await.unwrap());
        }
        let secs = start.elapsed().as_secs_f64();
        let stored_total = (total + connections) as usize;
        assert_eq!(log.last_sequence().await.unwrap(), stored_total as i64, "every event stored once");
        // Wait for the consumer to hand over the last event.
        let deadline = Instant::now() + Duration::from_secs(60);
        while handled_at.lock().unwrap().len() < stored_total {
            assert!(Instant::now() < deadline, "the consumer fell behind for a minute");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop_consumer.send(());
        consuming.await.unwrap();
        // Event-to-handler: from the request's due (or send) time to the handler's call.
        // Sequence numbers follow commit order, not event numbers: map them through the
        // log.
        let stored = log.events_after(0, stored_total as u32).await.unwrap();
        let number_of: std::collections::HashMap<i64, usize> = stored
            .iter()
            .map(|e| {
                (
                    e.sequence,
                    e.event.event_id.trim_start_matches("msg_").parse().unwrap(),
                )
            })
            .collect();
        let mut to_handler: Vec<Duration> = handled_at
            .lock()
            .unwrap()
            .iter()
            .filter(|(seq, _)| number_of[seq] < total as usize)
            .map(|(seq, at)| {
                let sent = due_at[number_of[seq]].lock().unwrap().unwrap();
                at.saturating_duration_since(sent)
            })
            .collect();
        latencies.sort();
        to_handler.sort();
        let mode = match rate {
            Some(r) => format!("open loop at {r} events/s offered"),
            None => "closed loop".to_owned(),
        };
        println!(
            "webhook_ingest ({mode}): {total} signed webhooks over {connections} connections in {secs:.2} s = {:.0} events/s acknowledged (fsync durable); ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; event to handler p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            total as f64 / secs,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().unwrap().as_secs_f64() * 1e3,
            percentile(&to_handler, 0.50),
            percentile(&to_handler, 0.99),
            to_handler.last().unwrap().as_secs_f64() * 1e3,
        );
        server.abort();
    });
}
