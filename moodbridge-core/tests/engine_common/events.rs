//! Event consumers beyond one in-order reader: keys handled concurrently, resequencing,
//! partitions shared by workers under leases, retention, routing to sinks and syncs,
//! and health.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;

use moodbridge_core::engine::*;
use moodbridge_core::integration::HealthStatus;
use moodbridge_core::state::{EventLog, NewEvent, StoredEvent};
use moodbridge_core::testing::{MemorySink, MemorySource, account, account_descriptor};
use moodbridge_core::{Error, ErrorKind, Policy, RetryConfig};

use super::Backend;

fn fast_policy() -> Policy {
    Policy::builder("test.events")
        .retry(RetryConfig {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_elapsed: Duration::from_secs(5),
            budget: None,
        })
        .build()
}

/// `n` events over `keys` keys, received a minute ago, body `{"k": key, "n": i}`.
fn keyed_events(n: usize, keys: usize) -> Vec<NewEvent> {
    let then = SystemTime::now() - Duration::from_secs(60);
    (1..=n)
        .map(|i| {
            let key = format!("500{}", i % keys);
            let mut e = NewEvent::new(
                "apex",
                format!("m{i}"),
                "case.updated",
                json!({"k": key, "n": i}).to_string(),
            )
            .partition(key);
            e.received_at = then;
            e
        })
        .collect()
}

/// Records, per key, the sequences handled, and how many handlers ran at once at most.
#[derive(Default)]
struct Recorder {
    by_key: Mutex<BTreeMap<String, Vec<i64>>>,
    in_flight: Mutex<(usize, usize)>,
}

impl Recorder {
    async fn handle(&self, event: &StoredEvent, pause: Duration) {
        {
            let mut f = self.in_flight.lock().unwrap();
            f.0 += 1;
            f.1 = f.1.max(f.0);
        }
        tokio::time::sleep(pause).await;
        self.by_key
            .lock()
            .unwrap()
            .entry(event.event.partition_key.clone().unwrap_or_default())
            .or_default()
            .push(event.sequence);
        self.in_flight.lock().unwrap().0 -= 1;
    }

    fn total(&self) -> usize {
        self.by_key.lock().unwrap().values().map(Vec::len).sum()
    }
}

pub async fn keys_are_handled_concurrently_each_in_order<B: Backend>() {
    let (state, _dir) = B::fresh().await;
    state.append_events(&keyed_events(60, 6)).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let handler = {
        let recorder = recorder.clone();
        move |event: StoredEvent| {
            let recorder = recorder.clone();
            async move {
                // Later events of a key are quicker: a key handled out of order would show.
                let pause = Duration::from_millis(12 - (event.sequence as u64 % 12));
                recorder.handle(&event, pause).await;
                Ok(())
            }
        }
    };
    let consumer = EventConsumer::new("parallel", state.clone(), state.clone())
        .page(25)
        .parallel(4);
    let report = consumer.run_once(&handler).await.unwrap();
    assert_eq!((report.handled, report.position), (60, 60));
    assert_eq!(recorder.total(), 60);
    for (key, seqs) in recorder.by_key.lock().unwrap().iter() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "key {key}: {seqs:?}");
        assert_eq!(seqs.len(), 10, "key {key}");
    }
    let most = recorder.in_flight.lock().unwrap().1;
    assert!((2..=4).contains(&most), "{most} handlers at once");
}

pub async fn out_of_order_events_are_resequenced_and_late_ones_passed_over<B: Backend>() {
    let (state, _dir) = B::fresh().await;
    let then = SystemTime::now() - Duration::from_secs(60);
    let event = |id: &str, key: &str, commit: i64| {
        let mut e = NewEvent::new(
            "cdc",
            id,
            "CaseChangeEvent",
            json!({"ChangeEventHeader": {"commitNumber": commit}, "key": key}).to_string(),
        )
        .partition(key);
        e.received_at = then;
        e
    };
    // Arrived in the log as 3, 1, 2 for key A, and 20, 10 for key B.
    state
        .append_events(&[
            event("a3", "A", 3),
            event("b20", "B", 20),
            event("a1", "A", 1),
            event("a2", "A", 2),
            event("b10", "B", 10),
        ])
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let seen = seen.clone();
        move |event: StoredEvent| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(event.event.event_id.clone());
                Ok(())
            }
        }
    };
    let by_commit =
        Resequence::by("/ChangeEventHeader/commitNumber", Duration::from_secs(5)).unwrap();
    let consumer = EventConsumer::new("cdc", state.clone(), state.clone()).resequence(by_commit);
    let report = consumer.run_once(&handler).await.unwrap();
    assert_eq!((report.handled, report.late, report.position), (5, 0, 5));
    let order = seen.lock().unwrap().clone();
    let pos = |id: &str| order.iter().position(|x| x == id).unwrap();
    assert!(pos("a1") < pos("a2") && pos("a2") < pos("a3"), "{order:?}");
    assert!(pos("b10") < pos("b20"), "{order:?}");

    // Key A's commit 2 again (a new id) after 3 was handled: late, passed over; a newer
    // one is handled. An event inside the window is held, and the position waits for it.
    seen.lock().unwrap().clear();
    let fresh = NewEvent::new(
        "cdc",
        "a9",
        "CaseChangeEvent",
        json!({"ChangeEventHeader": {"commitNumber": 9}}).to_string(),
    )
    .partition("A");
    state
        .append_events(&[event("a2-again", "A", 2), event("a4", "A", 4), fresh])
        .await
        .unwrap();
    let report = consumer.run_once(&handler).await.unwrap();
    assert_eq!(
        (report.handled, report.late, report.held, report.position),
        (1, 1, 1, 7)
    );
    assert_eq!(*seen.lock().unwrap(), ["a4"]);

    // A replay hands the events over again as a first pass would: none is late.
    seen.lock().unwrap().clear();
    consumer.replay_from(0).await.unwrap();
    let report = consumer.run_once(&handler).await.unwrap();
    assert_eq!((report.handled, report.late), (7, 0));

    // Keeping late events hands them over.
    let keeping = EventConsumer::new("cdc-all", state.clone(), state.clone()).resequence(
        Resequence::by("/ChangeEventHeader/commitNumber", Duration::from_secs(5))
            .unwrap()
            .keep_late(),
    );
    assert_eq!(keeping.run_once(&handler).await.unwrap().handled, 7);
}

pub async fn workers_share_partitions_under_leases<B: Backend>() {
    let (state, _dir) = B::fresh().await;
    state.append_events(&keyed_events(200, 20)).await.unwrap();
    let handled: Arc<Mutex<HashMap<i64, Vec<&'static str>>>> = Arc::default();
    let by = |worker: &'static str| {
        let handled = handled.clone();
        move |event: StoredEvent| {
            let handled = handled.clone();
            async move {
                handled
                    .lock()
                    .unwrap()
                    .entry(event.sequence)
                    .or_default()
                    .push(worker);
                Ok(())
            }
        }
    };
    let worker = |holder: &str, max: u32| {
        EventConsumer::new("shared", state.clone(), state.clone())
            .page(30)
            .partitions(8)
            .worker(holder, Duration::from_secs(30))
            .max_partitions(max)
    };
    let a = worker("a", 4);
    let b = worker("b", 4);
    let c = worker("c", 4);
    let (ha, hb) = (by("a"), by("b"));
    let (ra, rb) = tokio::join!(a.run_once(&ha), b.run_once(&hb));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!((ra.partitions, rb.partitions), (4, 4));
    assert_eq!(ra.handled + rb.handled, 200);
    assert!(ra.handled > 0 && rb.handled > 0);
    {
        let handled = handled.lock().unwrap();
        assert_eq!(handled.len(), 200);
        assert!(handled.values().all(|w| w.len() == 1), "each event once");
    }
    // Every partition is held: a third worker gets none.
    let rc = c.run_once(&by("c")).await.unwrap();
    assert_eq!((rc.partitions, rc.handled), (0, 0));

    // A stops and gives its partitions back; new events of its keys go to C.
    a.release().await.unwrap();
    handled.lock().unwrap().clear();
    let more: Vec<NewEvent> = keyed_events(40, 20)
        .into_iter()
        .map(|mut e| {
            e.event_id = format!("more-{}", e.event_id);
            e
        })
        .collect();
    state.append_events(&more).await.unwrap();
    let rc = c.run_once(&by("c")).await.unwrap();
    let rb = b.run_once(&by("b")).await.unwrap();
    assert_eq!(rc.partitions, 4);
    assert_eq!(rc.handled + rb.handled, 40);
    assert!(rc.handled > 0);
    assert_eq!(handled.lock().unwrap().len(), 40);
    assert_eq!(b.position().await.unwrap(), 240);

    // Mid-pass, B's leases lapse and D takes B's partitions and handles their events:
    // B's pass fails on renewal, and its position commits cannot move D's back.
    let d = EventConsumer::new("shared", state.clone(), state.clone())
        .partitions(8)
        .worker("d", Duration::from_secs(30));
    let stolen = Arc::new(tokio::sync::Mutex::new(false));
    let hd = by("d");
    let thief = {
        let (state, d, stolen, hd) = (state.clone(), d.clone(), stolen.clone(), hd.clone());
        move |event: StoredEvent| {
            let (state, d, stolen, hd) = (state.clone(), d.clone(), stolen.clone(), hd.clone());
            async move {
                let mut stolen = stolen.lock().await;
                if !*stolen {
                    *stolen = true;
                    for p in 0..8 {
                        // Shorten whatever B holds to a lapse.
                        state
                            .acquire_lease(
                                &format!("events:shared/{p}/8"),
                                "b",
                                Duration::from_millis(1),
                            )
                            .await?;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let taken = d.run_once(&hd).await?;
                    assert_eq!(taken.partitions, 4, "D takes B's four");
                }
                let _ = event;
                Ok(())
            }
        }
    };
    handled.lock().unwrap().clear();
    let more: Vec<NewEvent> = keyed_events(40, 20)
        .into_iter()
        .map(|mut e| {
            e.event_id = format!("again-{}", e.event_id);
            e
        })
        .collect();
    state.append_events(&more).await.unwrap();
    let err = b.run_once(&thief).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let b_keys = handled.lock().unwrap().len();
    assert!(b_keys > 0, "D handled B's partitions' events");
    // C's partitions are still at 240; D's are at 280, and stay there.
    let positions = state.cursors("shared").await.unwrap();
    let at: Vec<&str> = positions.iter().map(|c| c.position.as_str()).collect();
    assert_eq!(at.iter().filter(|p| **p == "280").count(), 4, "{at:?}");
    assert_eq!(at.iter().filter(|p| **p == "240").count(), 4, "{at:?}");

    // Changing the number of partitions starts the new ones from the lowest old position.
    let four = EventConsumer::new("shared", state.clone(), state.clone()).partitions(4);
    assert_eq!(four.position().await.unwrap(), 240);
    let rc = c.run_once(&by("c")).await.unwrap();
    assert_eq!((rc.partitions, rc.position), (4, 280));
}

pub async fn retention_waits_for_every_consumer<B: Backend>() {
    let (state, _dir) = B::fresh().await;
    state.append_events(&keyed_events(30, 3)).await.unwrap();
    let ok = |_: StoredEvent| async { Ok(()) };
    let fast = EventConsumer::new("fast", state.clone(), state.clone());
    let split = EventConsumer::new("split", state.clone(), state.clone())
        .partitions(3)
        .page(10);
    fast.run_once(&ok).await.unwrap();
    assert_eq!(
        purge_consumed_events(&*state, &["fast", "split"], Duration::ZERO)
            .await
            .unwrap(),
        0,
        "split has not run"
    );
    split.run_once(&ok).await.unwrap();
    assert_eq!(
        purge_consumed_events(&*state, &["fast", "split"], Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "younger than the retention"
    );
    assert_eq!(
        purge_consumed_events(&*state, &["fast", "split"], Duration::from_secs(1))
            .await
            .unwrap(),
        30
    );
    assert!(state.events_after(0, 10).await.unwrap().is_empty());
}

pub async fn events_are_routed_to_a_sink_and_to_an_incremental_sync<B: Backend>() {
    let env = super::env::<B>().await;
    let state = env.state.clone();
    let pipeline = Arc::new(
        Pipeline::from_toml(
            r#"
            name = "case-events"
            [[streams]]
            name = "Case"
            write = { mode = "upsert", key = ["Id"] }
            mapping = [{ op = "rename", from = "Status", to = "status" }]
            validate = [{ rule = "required", field = "Id" }]
            "#,
        )
        .unwrap(),
    );
    let cases = Arc::new(Strict::default());
    let accounts_source = Arc::new(MemorySource::new());
    accounts_source.add_stream(account_descriptor());
    for i in 0..5 {
        accounts_source.put("Account", account(i));
    }
    let accounts = Arc::new(MemorySink::new());
    let trigger = Arc::new(SyncTrigger::new(
        env.engine.clone(),
        Arc::new(super::accounts_pipeline()),
        accounts_source.clone(),
        accounts.clone(),
    ));
    let router = EventRouter::new()
        .route(
            Match::event_type("case.*"),
            SinkHandler::new(pipeline.clone(), "Case", cases.clone())
                .unwrap()
                .at("/data"),
        )
        .route(Match::event_type("account.changed"), trigger.clone());
    let case = |id: &str, status: &str, n: u32| {
        NewEvent::new(
            "apex",
            format!("c{n}"),
            "case.updated",
            json!({"data": {"Id": id, "Status": status}}).to_string(),
        )
    };
    let mut events = vec![
        case("500A", "New", 1),
        case("500B", "New", 2),
        case("500A", "Closed", 3),
        NewEvent::new(
            "apex",
            "bad",
            "case.updated",
            json!({"data": {"Status": "New"}}).to_string(),
        ),
        NewEvent::new("apex", "ping", "ping", "{}"),
    ];
    events
        .extend((1..=4).map(|i| NewEvent::new("apex", format!("acc{i}"), "account.changed", "{}")));
    state.append_events(&events).await.unwrap();
    let consumer = EventConsumer::new("router", state.clone(), state.clone())
        .policy(fast_policy())
        .parallel(3);
    let report = consumer.run_once(&router).await.unwrap();
    assert_eq!((report.handled, report.dead_lettered), (8, 1));
    assert_eq!(cases.inner.len("Case"), 2);
    assert_eq!(
        cases.inner.get("Case", "500A").unwrap().get("status"),
        Some(&json!("Closed"))
    );
    // The stream was begun once, keyed by the upsert key; every write was flushed.
    assert_eq!(
        *cases.begun.lock().unwrap(),
        [("Case".to_owned(), vec!["Id".to_owned()])]
    );
    assert_eq!(
        cases.flushed.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one flush per written event"
    );
    let letters = state.dead_letters("router", None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("Id is required"),
        "{}",
        letters[0].reason
    );
    // Four account events, received before the first run started: one run.
    assert_eq!(trigger.runs(), 1);
    assert_eq!(accounts.len("Account"), 5);
    // A change at the source and an event about it: the next run moves it.
    let mut renamed = account(3);
    renamed.set("Name", json!("Renamed"));
    renamed.set("SystemModstamp", json!("2030-01-01T00:00:00.000Z"));
    accounts_source.put("Account", renamed);
    state
        .append_events(&[NewEvent::new("apex", "acc5", "account.changed", "{}")])
        .await
        .unwrap();
    consumer.run_once(&router).await.unwrap();
    assert_eq!(trigger.runs(), 2);
    assert_eq!(
        accounts
            .get("Account", "001000000000000003")
            .unwrap()
            .get("Name"),
        Some(&json!("Renamed"))
    );

    // The sink refusing the record dead-letters the event with the sink's reason.
    let broken = SinkHandler::new(pipeline.clone(), "Case", Arc::new(Refusing))
        .unwrap()
        .at("/data");
    state
        .append_events(&[case("500C", "New", 9)])
        .await
        .unwrap();
    let other = EventConsumer::new("refused", state.clone(), state.clone()).policy(fast_policy());
    other
        .replay_from(state.last_sequence().await.unwrap() - 1)
        .await
        .unwrap();
    assert_eq!(other.run_once(&broken).await.unwrap().dead_lettered, 1);
    let letters = state.dead_letters("refused", None, 10).await.unwrap();
    assert!(
        letters[0].reason.contains("duplicate case number"),
        "{}",
        letters[0].reason
    );

    // Config errors name the fix.
    let err = SinkHandler::new(pipeline.clone(), "Contact", cases.clone()).unwrap_err();
    assert!(err.to_string().contains("no stream Contact"), "{err}");
    let no_mode =
        Arc::new(Pipeline::from_toml("name = \"x\"\n[[streams]]\nname = \"Case\"").unwrap());
    let err = SinkHandler::new(no_mode, "Case", cases.clone()).unwrap_err();
    assert!(err.hint().contains("upsert"), "{err:?}");
    let overwrite = Arc::new(
        Pipeline::from_toml(
            "name = \"x\"\n[[streams]]\nname = \"Case\"\nwrite = { mode = \"overwrite\" }",
        )
        .unwrap(),
    );
    let err = SinkHandler::new(overwrite, "Case", cases.clone()).unwrap_err();
    assert!(err.to_string().contains("overwrites"), "{err}");
}

/// A sink that, like a table, takes writes only for a begun stream; it counts flushes.
#[derive(Default)]
struct Strict {
    inner: MemorySink,
    begun: Mutex<Vec<(String, Vec<String>)>>,
    flushed: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl moodbridge_core::SyncSink for Strict {
    async fn begin_stream(
        &self,
        stream: &moodbridge_core::StreamDescriptor,
        mode: &moodbridge_core::WriteMode,
    ) -> moodbridge_core::Result<()> {
        self.begun
            .lock()
            .unwrap()
            .push((stream.name.clone(), stream.primary_key.clone()));
        self.inner.begin_stream(stream, mode).await
    }

    async fn write(
        &self,
        batch: &moodbridge_core::RecordBatch,
        mode: &moodbridge_core::WriteMode,
    ) -> moodbridge_core::Result<moodbridge_core::WriteReport> {
        if !self
            .begun
            .lock()
            .unwrap()
            .iter()
            .any(|(s, _)| *s == batch.stream)
        {
            return Err(Error::invalid_input(format!(
                "stream {} was not begun",
                batch.stream
            )));
        }
        self.inner.write(batch, mode).await
    }

    async fn flush(&self, _: &str) -> moodbridge_core::Result<()> {
        self.flushed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

struct Refusing;

#[async_trait::async_trait]
impl moodbridge_core::SyncSink for Refusing {
    async fn write(
        &self,
        batch: &moodbridge_core::RecordBatch,
        _: &moodbridge_core::WriteMode,
    ) -> moodbridge_core::Result<moodbridge_core::WriteReport> {
        Ok(moodbridge_core::WriteReport::new(
            (0..batch.len())
                .map(|i| {
                    moodbridge_core::RecordOutcome::failed(
                        i,
                        moodbridge_core::RecordFailure::new(
                            moodbridge_core::FailureKind::Conflict,
                            "duplicate case number",
                        ),
                    )
                })
                .collect(),
        ))
    }
}

pub async fn consumer_health_turns_degraded_past_its_thresholds<B: Backend>() {
    let (state, _dir) = B::fresh().await;
    let consumer =
        EventConsumer::new("watched", state.clone(), state.clone()).policy(fast_policy());
    let limits = LagThresholds {
        max_events: 3,
        max_age: Duration::from_secs(30),
        max_dead_letters: 0,
    };
    assert_eq!(consumer.health(&limits).await.status, HealthStatus::Up);
    state.append_events(&keyed_events(4, 2)).await.unwrap();
    let report = consumer.health(&limits).await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert!(
        report.detail.contains("4 events waiting"),
        "{}",
        report.detail
    );
    assert!(
        report.detail.contains("s old"),
        "received a minute ago: {}",
        report.detail
    );
    let failing = |e: StoredEvent| async move {
        if e.sequence == 2 {
            Err(Error::invalid_input("no such case"))
        } else {
            Ok(())
        }
    };
    consumer.run_once(&failing).await.unwrap();
    let report = consumer.health(&limits).await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.detail, "more than 0 open dead letters");
    let tolerant = LagThresholds {
        max_dead_letters: 5,
        ..limits
    };
    assert_eq!(consumer.health(&tolerant).await.status, HealthStatus::Up);
    let _ = ErrorKind::Conflict;
}
