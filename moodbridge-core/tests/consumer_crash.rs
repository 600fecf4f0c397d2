//! The consumer crash test: a consumer handling 10,000 events (8 keys at once, each in
//! order) runs in a child process (this test binary, re-run with `--ignored --exact
//! consumer_child`), which is killed with SIGKILL at a random point 20 times — mid-page,
//! mid-handler, mid-commit — and restarted each time. Its handler is idempotent (an
//! upsert by event id into a table of effects) and also logs every delivery.
//!
//! At the end: every event's effect is there exactly once, the position is the log's
//! last sequence and only ever moved forward, every event was delivered at least once,
//! and within one process each key's events were delivered in order.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moodbridge_core::engine::EventConsumer;
use moodbridge_core::state::{CursorStore, EventLog, NewEvent, SqliteStateStore, StoredEvent};
use moodbridge_core::testing::{CrashChild, crash_rng};

const EVENTS: i64 = 10_000;
const KEYS: i64 = 50;
const KILLS: usize = 20;
const CHILD_ENV: &str = "MOODBRIDGE_CONSUMER_CHILD_DIR";
const GENERATION_ENV: &str = "MOODBRIDGE_CONSUMER_CHILD_GENERATION";

fn effects(dir: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(dir.join("effects.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS applied (event_id TEXT PRIMARY KEY, sequence INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS deliveries (
             n INTEGER PRIMARY KEY AUTOINCREMENT, generation INTEGER, key TEXT, sequence INTEGER);",
    )
    .unwrap();
    db
}

/// The child: consume to the end of the log.
#[test]
#[ignore = "the child process of a_consumer_killed_twenty_times_applies_every_event_once"]
fn consumer_child() {
    let dir = std::env::var(CHILD_ENV).expect("run by the consumer crash test only");
    let generation: i64 = std::env::var(GENERATION_ENV).unwrap().parse().unwrap();
    let dir = Path::new(&dir);
    let db = Arc::new(Mutex::new(effects(dir)));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let state = Arc::new(SqliteStateStore::open(&dir.join("state.db")).await.unwrap());
            let consumer = EventConsumer::new("crash", state.clone(), state.clone())
                .page(200)
                .parallel(8);
            let handler = move |event: StoredEvent| {
                let db = db.clone();
                async move {
                    tokio::time::sleep(Duration::from_micros(300)).await;
                    let db = db.lock().unwrap();
                    db.execute(
                        "INSERT INTO deliveries (generation, key, sequence) VALUES (?1, ?2, ?3)",
                        rusqlite::params![generation, event.event.partition_key, event.sequence],
                    )
                    .unwrap();
                    db.execute(
                        "INSERT INTO applied (event_id, sequence) VALUES (?1, ?2)
                         ON CONFLICT (event_id) DO NOTHING",
                        rusqlite::params![event.event.event_id, event.sequence],
                    )
                    .unwrap();
                    Ok(())
                }
            };
            let report = consumer.run_once(&handler).await.unwrap();
            assert_eq!(report.position, EVENTS);
        });
}

fn spawn_child(dir: &Path, generation: usize) -> CrashChild {
    CrashChild::spawn(
        "consumer_child",
        &[
            (CHILD_ENV, dir.display().to_string()),
            (GENERATION_ENV, generation.to_string()),
        ],
    )
}

async fn position(state: &SqliteStateStore) -> i64 {
    state
        .cursor("crash", moodbridge_core::engine::EVENTS_PARTITION)
        .await
        .unwrap()
        .map_or(0, |c| c.position.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_twenty_times_applies_every_event_once() {
    let mut rng = crash_rng("consumer crash test");

    let dir = tempfile::tempdir().unwrap();
    let state = SqliteStateStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let events: Vec<NewEvent> = (1..=EVENTS)
        .map(|i| {
            NewEvent::new(
                "apex",
                format!("m{i}"),
                "case.updated",
                format!(r#"{{"n":{i}}}"#),
            )
            .partition(format!("500{}", i % KEYS))
        })
        .collect();
    for chunk in events.chunks(1_000) {
        state.append_events(chunk).await.unwrap();
    }
    drop(effects(dir.path()));

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut positions = vec![0];
    for generation in 0..KILLS {
        let mut child = spawn_child(dir.path(), generation);
        let before = position(&state).await;
        child
            .kill_after_progress(&mut rng, deadline, Duration::from_millis(40), || async {
                position(&state).await != before
            })
            .await;
        positions.push(position(&state).await);
    }
    let status = spawn_child(dir.path(), KILLS).wait(deadline).await;
    assert!(status.success(), "the final run failed: {status}");
    positions.push(position(&state).await);

    assert!(
        positions.windows(2).all(|w| w[0] <= w[1]),
        "the position went back: {positions:?}"
    );
    assert_eq!(*positions.last().unwrap(), EVENTS);
    assert!(
        positions[KILLS] < EVENTS,
        "the kills happened before the end: {positions:?}"
    );

    let db = effects(dir.path());
    let applied: i64 = db
        .query_row("SELECT COUNT(*) FROM applied", [], |r| r.get(0))
        .unwrap();
    let distinct: i64 = db
        .query_row("SELECT COUNT(DISTINCT sequence) FROM applied", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        (applied, distinct),
        (EVENTS, EVENTS),
        "every event's effect once"
    );
    let delivered: i64 = db
        .query_row("SELECT COUNT(DISTINCT sequence) FROM deliveries", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(delivered, EVENTS, "every event delivered");
    let redelivered: i64 = db
        .query_row(
            "SELECT COUNT(*) - COUNT(DISTINCT sequence) FROM deliveries",
            [],
            |r| r.get(0),
        )
        .unwrap();
    println!("{redelivered} deliveries were repeats after a kill");
    // Within one process, each key's events came in order.
    let mut out_of_order = db
        .prepare(
            "SELECT COUNT(*) FROM (
               SELECT sequence < LAG(sequence) OVER (PARTITION BY generation, key ORDER BY n) AS back
               FROM deliveries) WHERE back",
        )
        .unwrap();
    let back: i64 = out_of_order.query_row([], |r| r.get(0)).unwrap();
    assert_eq!(back, 0, "a key's events were delivered out of order");
    let _ = state.last_sequence().await.unwrap();
}
