//! The receiver killed under load: a child process (this test binary, re-run with
//! `--ignored --exact receiver_child`) serves the webhook receiver over a SQLite event
//! log; senders post signed webhooks at it from several tasks, retrying whatever was not
//! acknowledged, as a platform does; the child is killed with SIGKILL at random moments
//! 20 times and restarted. At the end every acknowledged event is in the log, every
//! event sent is there exactly once, sequences have no gap, and a consumer with an
//! idempotent handler ends with exactly the events stored.
//!
//! The kill points are random (seed printed; `MOODBRIDGE_CRASH_SEED` replays one).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moodbridge_core::state::{EventLog, EventWriter, SqliteStateStore};
use moodbridge_core::testing::{CrashChild, crash_rng};
use moodbridge_ops::webhooks::{WebhookReceiver, WebhookSource};
use secrecy::SecretString;
use tokio::sync::Mutex;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CHILD_DIR: &str = "MOODBRIDGE_WEBHOOK_CHILD_DIR";
const CHILD_PORT: &str = "MOODBRIDGE_WEBHOOK_CHILD_PORT";
const KILLS: usize = 20;
const SENDERS: usize = 8;

/// The child: serve until killed.
#[test]
#[ignore = "the child process of acknowledged_webhooks_survive_twenty_kills"]
fn receiver_child() {
    let dir = std::env::var(CHILD_DIR).expect("run by the crash test only");
    let port: u16 = std::env::var(CHILD_PORT).unwrap().parse().unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let log = Arc::new(
                SqliteStateStore::open(&Path::new(&dir).join("state.db"))
                    .await
                    .unwrap(),
            );
            let app = WebhookReceiver::new(EventWriter::spawn(log, 200))
                .source(WebhookSource::signed("load", [SecretString::from(SECRET)]).unwrap())
                .router();
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(listener, app).await.unwrap();
        });
}

fn spawn_child(dir: &Path, port: u16) -> CrashChild {
    CrashChild::spawn(
        "receiver_child",
        &[
            (CHILD_DIR, dir.display().to_string()),
            (CHILD_PORT, port.to_string()),
        ],
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Post event `i` until it is acknowledged (or the test says stop); whether it was.
async fn send_until_acked(client: &reqwest::Client, url: &str, i: u64, stop: &AtomicBool) -> bool {
    let signer = standardwebhooks::Webhook::new(SECRET).unwrap();
    let id = format!("evt_{i}");
    let body = format!(r#"{{"type":"case.updated","data":{{"Id":"500{i:012}"}}}}"#);
    while !stop.load(Ordering::Relaxed) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let signature = signer.sign(&id, now, body.as_bytes()).unwrap();
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(response) = sent
            && response.status() == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_webhooks_survive_twenty_kills() {
    let mut rng = crash_rng("webhook crash test");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/webhooks/load");
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut child = spawn_child(dir.path(), port);

    // Senders: each takes the next event and posts it until acknowledged.
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (acked, stop, next, url) = (acked.clone(), stop.clone(), next.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if send_until_acked(&client, &url, i, &stop).await {
                    acked.lock().await.insert(i);
                } else {
                    // Stopped mid-send: this one may or may not be in the log.
                    return Some(i);
                }
            }
            None
        }));
    }

    let deadline = Instant::now() + Duration::from_secs(180);
    for _ in 0..KILLS {
        // Let the child take some load, then kill it at a random moment.
        let before = acked.lock().await.len();
        child
            .kill_after_progress(&mut rng, deadline, Duration::from_millis(50), || async {
                acked.lock().await.len() >= before + 20
            })
            .await;
        child = spawn_child(dir.path(), port);
    }
    // Let the last child take some load too, then stop sending and drain.
    let before = acked.lock().await.len();
    while acked.lock().await.len() < before + 50 {
        assert!(
            Instant::now() < deadline,
            "no progress after the last restart"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut unsure = BTreeSet::new();
    for s in senders {
        if let Some(i) = s.await.unwrap() {
            unsure.insert(i);
        }
    }
    child.kill();

    let log = SqliteStateStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let events = log.events_after(0, 1_000_000).await.unwrap();
    let stored: Vec<u64> = events
        .iter()
        .map(|e| e.event.event_id.trim_start_matches("evt_").parse().unwrap())
        .collect();
    let unique: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "an event stored twice");
    let acked = acked.lock().await;
    let lost: Vec<&u64> = acked.difference(&unique).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged but not stored, first: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    let extra: Vec<&u64> = unique
        .difference(&acked)
        .filter(|i| !unsure.contains(i))
        .collect();
    assert!(
        extra.is_empty(),
        "stored without being sent to the end: {extra:?}"
    );
    assert!(
        events
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence + 1),
        "sequences have a gap"
    );
    // A consumer with an idempotent handler ends with exactly the events stored.
    let log = Arc::new(log);
    let handled: Arc<std::sync::Mutex<BTreeSet<String>>> = Arc::default();
    let consumer = moodbridge_core::engine::EventConsumer::new("crash", log.clone(), log.clone());
    let h = handled.clone();
    consumer
        .run_once(&move |e: moodbridge_core::state::StoredEvent| {
            let h = h.clone();
            async move {
                h.lock().unwrap().insert(e.event.event_id);
                Ok(())
            }
        })
        .await
        .unwrap();
    let handled: BTreeSet<u64> = handled
        .lock()
        .unwrap()
        .iter()
        .map(|id| id.trim_start_matches("evt_").parse().unwrap())
        .collect();
    assert_eq!(
        handled, unique,
        "the consumer's end state is the events stored"
    );
    println!(
        "{} events acknowledged across {KILLS} kills, each stored once",
        acked.len()
    );
}
