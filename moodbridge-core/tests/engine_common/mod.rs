//! The engine's behaviour, run by every state-store backend (`engine_sqlite.rs`,
//! `engine_postgres.rs`) against the memory doubles: full and incremental runs with
//! ties, resume after failure, dead letters and replay, rollback, faults, progress,
//! overwrite, scheduling, and bidirectional sync with every conflict policy.

pub mod events;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use moodbridge_core::engine::*;
use moodbridge_core::state::{
    AuditOperation, ChainStatus, FailureStage, RunCounts, RunStatus, StateStore,
};
use moodbridge_core::testing::{Faults, MemorySink, MemorySource, MemorySystem, account};
use moodbridge_core::{
    Error, ErrorKind, FieldDescriptor, FieldType, Policy, Record, RecordBatch, Result, RetryConfig,
    StreamDescriptor, SyncSink, WriteMode, WriteReport,
};

/// A state-store backend: a fresh, empty store per call.
pub trait Backend {
    /// The store, and what must live as long as it (a temp dir).
    async fn fresh() -> (Arc<dyn StateStore>, Option<tempfile::TempDir>);
}

pub struct Env {
    _dir: Option<tempfile::TempDir>,
    pub state: Arc<dyn StateStore>,
    pub engine: SyncEngine,
}

pub async fn env<B: Backend>() -> Env {
    let (state, dir) = B::fresh().await;
    let fast = RetryConfig {
        max_attempts: 8,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(30),
        budget: None,
    };
    let engine = SyncEngine::new(state.clone()).with_policies(
        Policy::builder("test.source").retry(fast.clone()).build(),
        Policy::builder("test.sink").retry(fast).build(),
    );
    Env {
        _dir: dir,
        state,
        engine,
    }
}

fn pipeline(toml: &str) -> Pipeline {
    Pipeline::from_toml(toml).unwrap()
}

fn accounts_pipeline() -> Pipeline {
    pipeline("name = \"p\"\n[[streams]]\nname = \"Account\"\nbatch_size = 500\n")
}

fn rec(v: serde_json::Value) -> Record {
    Record::from_json(v).unwrap()
}

fn cases() -> MemorySource {
    let source = MemorySource::new();
    source.add_stream(
        StreamDescriptor::new("Case")
            .field(FieldDescriptor::new("Id", FieldType::String))
            .primary_key(["Id"])
            .cursor("SystemModstamp"),
    );
    source
}

fn case(id: &str, stamp: u32, subject: &str) -> Record {
    rec(
        json!({"Id": id, "SystemModstamp": format!("2026-11-20T10:00:{stamp:02}.000Z"), "Subject": subject}),
    )
}

pub async fn a_first_run_moves_every_record_exactly<B: Backend>() {
    let e = env::<B>().await;
    let source = MemorySource::accounts(2_345);
    let sink = MemorySink::new();
    let report = e
        .engine
        .run(&accounts_pipeline(), &source, &sink)
        .await
        .unwrap();
    assert_eq!(
        report.counts,
        RunCounts {
            read: 2_345,
            written: 2_345,
            failed: 0
        }
    );
    let target = sink.snapshot("Account");
    assert_eq!(target.len(), 2_345);
    for i in [0, 1, 1_000, 2_344] {
        assert_eq!(target[&format!("001{i:015}")], account(i));
    }
    let run = e.state.run(report.run).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.counts, report.counts);
    let cp = e.state.checkpoint("p", "Account").await.unwrap().unwrap();
    assert_eq!(cp.sequence, 5, "one checkpoint per batch of 500");
    assert_eq!(cp.checkpoint.state["id"], json!("001000000000002344"));
}

pub async fn an_incremental_run_moves_only_changes_even_when_they_tie_on_the_cursor<B: Backend>() {
    let e = env::<B>().await;
    let source = cases();
    // Seven records share one timestamp; batches of three split them across pages.
    for i in 0..7 {
        source.put("Case", case(&format!("500{i}"), 1, "first"));
    }
    let p = pipeline("name = \"p\"\n[[streams]]\nname = \"Case\"\nbatch_size = 3\n");
    let sink = MemorySink::new();
    let first = e.engine.run(&p, &source, &sink).await.unwrap();
    assert_eq!(first.counts.read, 7);

    // New records at the same timestamp (after the last id) and later, one update.
    source.put("Case", case("5008", 1, "tie, later id"));
    source.put("Case", case("5009", 2, "later"));
    source.put("Case", case("5003", 3, "updated"));
    let second = e.engine.run(&p, &source, &sink).await.unwrap();
    assert_eq!(
        second.counts,
        RunCounts {
            read: 3,
            written: 3,
            failed: 0
        },
        "only the three changes are read"
    );
    let target = sink.snapshot("Case");
    assert_eq!(target.len(), 9);
    assert_eq!(target["5003"].get("Subject"), Some(&json!("updated")));

    let third = e.engine.run(&p, &source, &sink).await.unwrap();
    assert_eq!(third.counts.read, 0, "nothing changed");
}

/// Fails every write after the first `ok` writes, permanently.
struct BrokenAfter {
    inner: MemorySink,
    ok: u64,
}

#[async_trait::async_trait]
impl SyncSink for BrokenAfter {
    async fn begin_stream(&self, s: &StreamDescriptor, m: &WriteMode) -> Result<()> {
        self.inner.begin_stream(s, m).await
    }
    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        if self.inner.writes() >= self.ok {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "the warehouse went read-only",
            ));
        }
        self.inner.write(batch, mode).await
    }
}

pub async fn a_failed_run_is_resumed_from_its_last_committed_checkpoint<B: Backend>() {
    let e = env::<B>().await;
    let source = MemorySource::accounts(3_000);
    let sink = MemorySink::new();
    let broken = BrokenAfter {
        inner: sink.clone(),
        ok: 2,
    };
    let err = e
        .engine
        .run(&accounts_pipeline(), &source, &broken)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    let failed = e.state.recent_runs("p", 1).await.unwrap().remove(0);
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.error.unwrap().contains("read-only"));
    assert_eq!(sink.len("Account"), 1_000);

    let resumed = e
        .engine
        .run(&accounts_pipeline(), &source, &sink)
        .await
        .unwrap();
    assert_eq!(
        resumed.counts.read, 2_000,
        "the first 1,000 are not read again"
    );
    assert_eq!(sink.len("Account"), 3_000);
}

pub async fn bad_records_become_dead_letters_and_the_run_goes_on<B: Backend>() {
    let e = env::<B>().await;
    let source = cases();
    source.put("Case", case("5001", 1, "fine"));
    source.put("Case", case("5002", 2, ""));
    source.put("Case", rec(json!({"Id": "5003", "SystemModstamp": "2026-11-20T10:00:03.000Z", "Subject": "x".repeat(300)})));
    source.put("Case", case("5004", 4, "rejected by the target"));
    let p = pipeline(
        r#"
        name = "p"
        [[streams]]
        name = "Case"
        sanitize = { trim = true }
        validate = [{ rule = "required", field = "Subject" }, { rule = "length", field = "Subject", max = 255 }]
        "#,
    );
    let sink = MemorySink::new();
    sink.reject_when(Some(Arc::new(|r: &Record| {
        (r.get("Subject") == Some(&json!("rejected by the target")))
            .then(|| "Subject: not allowed here".to_owned())
    })));
    let report = e.engine.run(&p, &source, &sink).await.unwrap();
    assert_eq!(
        report.counts,
        RunCounts {
            read: 4,
            written: 1,
            failed: 3
        }
    );
    let letters = e.state.dead_letters("p", Some("Case"), 10).await.unwrap();
    let summary: Vec<_> = letters
        .iter()
        .map(|l| (l.record_key.as_str(), l.stage))
        .collect();
    assert_eq!(
        summary,
        [
            ("5002", FailureStage::Validation),
            ("5003", FailureStage::Validation),
            ("5004", FailureStage::Write)
        ]
    );
    assert!(
        letters[0].reason.contains("Subject is required"),
        "{}",
        letters[0].reason
    );
    assert!(
        letters[1].reason.contains("over the maximum"),
        "{}",
        letters[1].reason
    );
    assert_eq!(letters[2].reason, "Subject: not allowed here");

    // The target relents; a replay writes what now passes, the rest stays.
    sink.reject_when(None);
    let replay = e
        .engine
        .replay_dead_letters(&p, "Case", &source, &sink)
        .await
        .unwrap();
    assert_eq!(
        (replay.replayed, replay.resolved, replay.still_failing),
        (3, 1, 2)
    );
    let open = e.state.dead_letters("p", Some("Case"), 10).await.unwrap();
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|l| l.attempts == 2));
    assert!(sink.get("Case", "5004").is_some());
    // A relaxed pipeline lets the rest through.
    let relaxed = pipeline("name = \"p\"\n[[streams]]\nname = \"Case\"\n");
    let replay = e
        .engine
        .replay_dead_letters(&relaxed, "Case", &source, &sink)
        .await
        .unwrap();
    assert_eq!(replay.resolved, 2);
    assert!(
        e.state
            .dead_letters("p", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(sink.len("Case"), 4);
}

pub async fn a_run_is_rolled_back_from_its_before_images_and_the_rollback_is_audited<B: Backend>() {
    let e = env::<B>().await;
    let source = cases();
    for i in 0..5 {
        source.put("Case", case(&format!("500{i}"), 1, "original"));
    }
    let p = pipeline("name = \"p\"\n[[streams]]\nname = \"Case\"\n");
    let sink = MemorySink::new();
    e.engine.run(&p, &source, &sink).await.unwrap();
    let before = sink.snapshot("Case");

    source.put("Case", case("5001", 2, "changed"));
    source.put("Case", case("5009", 2, "new"));
    let second = e.engine.run(&p, &source, &sink).await.unwrap();
    assert_eq!(sink.len("Case"), 6);
    let audit = e.state.audit(second.run).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].entry.operation, AuditOperation::Update);
    assert_eq!(
        audit[0].entry.before.as_ref().unwrap()["Subject"],
        json!("original")
    );

    // The first run cannot be undone while the second stands.
    let first = e.state.recent_runs("p", 5).await.unwrap()[1].id;
    let err = e
        .engine
        .rollback(&p, first, &source, &sink, "alice")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");

    let undo = e
        .engine
        .rollback(&p, second.run, &source, &sink, "alice")
        .await
        .unwrap();
    assert_eq!((undo.restored, undo.deleted, undo.failed), (1, 1, 0));
    assert_eq!(
        sink.snapshot("Case"),
        before,
        "the target is as before the run"
    );
    assert_eq!(
        e.state.run(second.run).await.unwrap().status,
        RunStatus::RolledBack
    );
    let undo_audit = e.state.audit(undo.run).await.unwrap();
    assert_eq!(undo_audit.len(), 2);
    assert!(undo_audit.iter().all(
        |a| a.entry.operation == AuditOperation::Rollback && a.entry.actor == "rollback:alice"
    ));
    assert!(matches!(
        e.state.verify_audit().await.unwrap(),
        ChainStatus::Intact { .. }
    ));
    let err = e
        .engine
        .rollback(&p, second.run, &source, &sink, "alice")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already rolled back"), "{err}");
}

pub async fn flaky_source_and_sink_still_give_the_exact_result<B: Backend>() {
    let e = env::<B>().await;
    let source = MemorySource::accounts(5_000);
    let sink = MemorySink::new();
    source.inject(Faults {
        error_rate: 0.1,
        latency: Duration::from_micros(200),
        seed: 11,
    });
    sink.inject(Faults {
        error_rate: 0.1,
        latency: Duration::from_micros(200),
        seed: 12,
    });
    let p = pipeline("name = \"p\"\n[[streams]]\nname = \"Account\"\nbatch_size = 100\n");
    let report = e.engine.run(&p, &source, &sink).await.unwrap();
    assert_eq!(report.counts.failed, 0);
    assert!(
        source.injected() >= 3,
        "source faults: {}",
        source.injected()
    );
    assert!(sink.injected() >= 3, "sink faults: {}", sink.injected());
    assert_eq!(
        sink.writes(),
        50 + sink.injected(),
        "each failed write was retried"
    );
    let target = sink.snapshot("Account");
    assert_eq!(target.len(), 5_000);
    assert!((0..5_000).all(|i| target[&format!("001{i:015}")] == account(i)));
}

pub async fn progress_is_reported_from_start_to_finish<B: Backend>() {
    let e = env::<B>().await;
    let mut events = e.engine.subscribe();
    let report = e
        .engine
        .run(
            &accounts_pipeline(),
            &MemorySource::accounts(1_200),
            &MemorySink::new(),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        seen.push(ev);
    }
    assert!(matches!(&seen[0], ProgressEvent::RunStarted { run, .. } if *run == report.run));
    assert!(matches!(
        &seen[1],
        ProgressEvent::StreamStarted {
            total: Some(1_200),
            ..
        }
    ));
    let reads: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::Batch { progress, .. } => Some(progress.read),
            _ => None,
        })
        .collect();
    assert_eq!(reads, [500, 1_000, 1_200]);
    let checkpoints = seen
        .iter()
        .filter(|e| matches!(e, ProgressEvent::Checkpoint { .. }))
        .count();
    assert_eq!(checkpoints, 3);
    match &seen[seen.len() - 2] {
        ProgressEvent::StreamFinished { progress, .. } => {
            assert_eq!(progress.written, 1_200);
            assert!(progress.bytes > 1_200 * 400, "{} bytes", progress.bytes);
            assert!(progress.rate > 0.0);
        }
        other => panic!("expected StreamFinished, got {other:?}"),
    }
    assert!(matches!(
        seen.last(),
        Some(ProgressEvent::RunFinished {
            status: RunStatus::Succeeded,
            ..
        })
    ));
}

pub async fn an_overwrite_replaces_the_target_with_this_runs_records<B: Backend>() {
    let e = env::<B>().await;
    let source = cases();
    source.put("Case", case("5001", 1, "a"));
    source.put("Case", case("5002", 1, "b"));
    let p = pipeline(
        "name = \"p\"\n[[streams]]\nname = \"Case\"\nmode = \"full_refresh\"\nwrite = { mode = \"overwrite\" }\n",
    );
    let sink = MemorySink::new();
    e.engine.run(&p, &source, &sink).await.unwrap();
    assert_eq!(sink.len("Case"), 2);
    let fresh = cases();
    fresh.put("Case", case("5003", 1, "c"));
    let report = e.engine.run(&p, &fresh, &sink).await.unwrap();
    assert_eq!(
        report.counts.read, 1,
        "an overwrite never resumes: it reads everything"
    );
    assert_eq!(sink.len("Case"), 1);
}

pub async fn a_stream_the_source_lacks_is_a_config_error_listing_what_it_has<B: Backend>() {
    let e = env::<B>().await;
    let p = pipeline("name = \"p\"\n[[streams]]\nname = \"Lead\"\n");
    let err = e
        .engine
        .run(&p, &MemorySource::accounts(1), &MemorySink::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("it offers: Account"), "{err}");
}

pub async fn a_scheduled_pipeline_runs_when_due_and_never_twice_at_once<B: Backend>() {
    let e = env::<B>().await;
    let source = MemorySource::accounts(3_000);
    source.inject(Faults {
        error_rate: 0.0,
        latency: Duration::from_millis(60),
        seed: 3,
    });
    let sink = MemorySink::new();
    let job = Job::new(
        pipeline("name = \"sched\"\n[[streams]]\nname = \"Account\"\nbatch_size = 500\n"),
        Arc::new(source),
        Arc::new(sink.clone()),
        Schedule::every(Duration::from_secs(3600)),
    );
    let a = Arc::new(Worker::new(e.engine.clone(), "a", vec![job.clone()]));
    let b = Worker::new(e.engine.clone(), "b", vec![job.clone()]);

    // While a runs it (its run is recorded only once it holds the lease), b finds the
    // lease taken. Six pages of at least 60 ms each keep a busy long enough.
    let running = {
        let (a, job) = (a.clone(), job.clone());
        tokio::spawn(async move { a.tick(&job).await })
    };
    while e.state.recent_runs("sched", 1).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(b.tick(&job).await.unwrap(), Tick::Busy);
    assert_eq!(
        running.await.unwrap().unwrap(),
        Tick::Ran(RunStatus::Succeeded)
    );
    assert_eq!(sink.len("Account"), 3_000);

    // Ran an instant ago, due in an hour: nobody runs it now.
    assert_eq!(b.tick(&job).await.unwrap(), Tick::NotDue);
    assert_eq!(a.tick(&job).await.unwrap(), Tick::NotDue);
    assert_eq!(e.state.recent_runs("sched", 10).await.unwrap().len(), 1);
}

pub async fn changes_flow_both_ways_and_never_echo_back<B: Backend>() {
    let e = env::<B>().await;
    let (left, right) = crm_pair();
    left.edit("Account", rec(json!({"Id": "001", "Name": "Acme"})));
    left.edit("Account", rec(json!({"Id": "002", "Name": "Globex"})));
    right.edit("Account", rec(json!({"Id": "003", "Name": "Initech"})));
    let config = two_way(ConflictPolicy::SourceWins);
    let (l, r) = sides(&left, &right);

    let first = e.engine.run_bidirectional(&config, l, r).await.unwrap();
    assert_eq!(
        (first.left_to_right, first.right_to_left, first.echoes),
        (2, 1, 0)
    );
    for id in ["001", "002", "003"] {
        assert_eq!(name_of(&left, id), name_of(&right, id), "record {id}");
    }
    assert_eq!(e.state.audit(first.run).await.unwrap().len(), 3);

    // The three writes show up as changes on the sides they were written to: echoes.
    let second = e.engine.run_bidirectional(&config, l, r).await.unwrap();
    assert_eq!(
        (second.left_to_right, second.right_to_left, second.echoes),
        (0, 0, 3),
        "nothing is sent back"
    );
    let third = e.engine.run_bidirectional(&config, l, r).await.unwrap();
    assert_eq!(
        (third.left_to_right, third.right_to_left, third.echoes),
        (0, 0, 0)
    );

    // A real change after an echo still flows.
    right.edit("Account", rec(json!({"Id": "001", "Name": "Acme Corp"})));
    let fourth = e.engine.run_bidirectional(&config, l, r).await.unwrap();
    assert_eq!(fourth.right_to_left, 1);
    assert_eq!(name_of(&left, "001"), json!("Acme Corp"));
}

pub async fn a_record_changed_on_both_sides_is_resolved_by_the_policy<B: Backend>() {
    let cases = [
        (
            ConflictPolicy::LastWriterWins {
                field: "SystemModstamp".into(),
            },
            ("Right edit", "Right edit"),
        ),
        (ConflictPolicy::SourceWins, ("Left edit", "Left edit")),
        (ConflictPolicy::TargetWins, ("Right edit", "Right edit")),
        (ConflictPolicy::Park, ("Left edit", "Right edit")),
    ];
    for (policy, (want_left, want_right)) in cases {
        let e = env::<B>().await;
        let (left, right) = crm_pair();
        let config = two_way(policy.clone());
        let (l, r) = sides(&left, &right);
        left.edit("Account", rec(json!({"Id": "001", "Name": "Original"})));
        e.engine.run_bidirectional(&config, l, r).await.unwrap();
        e.engine.run_bidirectional(&config, l, r).await.unwrap(); // the echo

        left.edit("Account", rec(json!({"Id": "001", "Name": "Left edit"})));
        right.edit("Account", rec(json!({"Id": "001", "Name": "Right edit"}))); // later
        let report = e.engine.run_bidirectional(&config, l, r).await.unwrap();
        assert_eq!(report.conflicts, 1, "{policy:?}");
        assert_eq!(name_of(&left, "001"), json!(want_left), "{policy:?}");
        assert_eq!(name_of(&right, "001"), json!(want_right), "{policy:?}");
        let parked = e.state.conflicts("two-way", 10).await.unwrap();
        if policy == ConflictPolicy::Park {
            assert_eq!(report.parked, 1);
            assert_eq!(parked.len(), 1);
            let c = &parked[0].conflict;
            assert_eq!(
                c.left.as_ref().unwrap().get("Name"),
                Some(&json!("Left edit"))
            );
            assert_eq!(
                c.right.as_ref().unwrap().get("Name"),
                Some(&json!("Right edit"))
            );
        } else {
            assert!(parked.is_empty(), "{policy:?}");
            // Resolved, then quiet: the winner's write comes back as an echo only.
            let after = e.engine.run_bidirectional(&config, l, r).await.unwrap();
            assert_eq!(
                (after.left_to_right, after.right_to_left, after.conflicts),
                (0, 0, 0)
            );
        }
    }
}

fn crm_pair() -> (MemorySystem, MemorySystem) {
    let left = MemorySystem::new();
    let right = MemorySystem::sharing_clock_with(&left);
    for s in [&left, &right] {
        s.add_stream(
            StreamDescriptor::new("Account")
                .primary_key(["Id"])
                .cursor("SystemModstamp"),
        );
    }
    (left, right)
}

fn two_way(conflicts: ConflictPolicy) -> BidirectionalConfig {
    BidirectionalConfig {
        name: "two-way".into(),
        stream: "Account".into(),
        key: vec!["Id".into()],
        ignore: vec!["SystemModstamp".into()],
        conflicts,
        batch_size: None,
    }
}

fn sides<'a>(l: &'a MemorySystem, r: &'a MemorySystem) -> (Side<'a>, Side<'a>) {
    (Side { source: l, sink: l }, Side { source: r, sink: r })
}

fn name_of(s: &MemorySystem, id: &str) -> serde_json::Value {
    s.get("Account", id).unwrap().get("Name").cloned().unwrap()
}

/// A run left `running` by a process that died is marked failed, with the reason, by the
/// next run of its pipeline; a run whose heartbeat is fresh is left alone.
pub async fn a_run_abandoned_by_a_dead_process_is_marked_failed_by_the_next<B: Backend>() {
    let e = env::<B>().await;
    // A process that started a run and died: no finish, no heartbeat after the start.
    let dead = e.state.start_run("p").await.unwrap();
    let source = MemorySource::accounts(10);
    let sink = MemorySink::new();
    // Not silent long enough yet: the run is left as it is.
    let patient = SyncEngine::new(e.state.clone())
        .with_liveness(Duration::from_secs(60), Duration::from_secs(600));
    patient
        .run(&accounts_pipeline(), &source, &sink)
        .await
        .unwrap();
    assert_eq!(e.state.run(dead).await.unwrap().status, RunStatus::Running);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quick = SyncEngine::new(e.state.clone())
        .with_liveness(Duration::from_millis(50), Duration::from_millis(200));
    let report = quick
        .run(&accounts_pipeline(), &source, &sink)
        .await
        .unwrap();
    let abandoned = e.state.run(dead).await.unwrap();
    assert_eq!(abandoned.status, RunStatus::Failed);
    assert!(
        abandoned
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("abandoned"),
        "{abandoned:?}"
    );
    assert_eq!(
        e.state.run(report.run).await.unwrap().status,
        RunStatus::Succeeded
    );
}

/// A heartbeat keeps a long run alive: another run of its pipeline started meanwhile
/// does not take it for dead.
pub async fn a_beating_run_is_not_taken_for_dead<B: Backend>() {
    let e = env::<B>().await;
    let engine = SyncEngine::new(e.state.clone())
        .with_liveness(Duration::from_millis(20), Duration::from_secs(1));
    let source = MemorySource::accounts(3_000);
    let slow = MemorySink::new();
    slow.inject(Faults {
        latency: Duration::from_millis(300),
        ..Faults::NONE
    });
    // Six batches of 300 ms: the long run still goes on at 1.2 s, past the 1 s a silent
    // run is given, beating every 20 ms.
    let pipeline = accounts_pipeline();
    let long = engine.run(&pipeline, &source, &slow);
    let other = async {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let sink = MemorySink::new();
        engine
            .run(&accounts_pipeline(), &MemorySource::accounts(1), &sink)
            .await
            .unwrap();
        // The long run, while it still goes on (newest first: this one, then it).
        e.state.recent_runs("p", 2).await.unwrap().pop().unwrap()
    };
    let (long, meanwhile) = tokio::join!(long, other);
    let long = long.unwrap();
    assert_eq!(meanwhile.id, long.run);
    assert_eq!(meanwhile.status, RunStatus::Running, "{meanwhile:?}");
    assert_eq!(
        e.state.run(long.run).await.unwrap().status,
        RunStatus::Succeeded
    );
}

/// Deletes at the source reach the sink as the stream's `deletes` says: ignored, marked
/// (soft, with the time of deletion, audited with the before-image) or removed (hard);
/// a record deleted and then written again is live.
pub async fn deletes_reach_the_sink_as_the_stream_says<B: Backend>() {
    for how in ["ignore", "soft", "hard"] {
        let e = env::<B>().await;
        let source = cases();
        for (id, stamp) in [("500A", 1), ("500B", 2), ("500C", 3)] {
            source.put("Case", case(id, stamp, "open"));
        }
        let sink = MemorySink::new();
        let p = pipeline(&format!(
            "name = \"p\"\n[[streams]]\nname = \"Case\"\ndeletes = \"{how}\"\n"
        ));
        e.engine.run(&p, &source, &sink).await.unwrap();
        assert_eq!(sink.len("Case"), 3);

        assert!(source.delete("Case", "500B", json!("2026-11-20T10:00:09.000Z")));
        let report = e.engine.run(&p, &source, &sink).await.unwrap();
        assert_eq!(report.counts.read, 1, "{how}: one tombstone read");
        let held = sink.snapshot("Case");
        match how {
            "ignore" => {
                assert_eq!(report.counts.written, 0);
                assert_eq!(held["500B"], case("500B", 2, "open"), "left as it was");
            }
            "soft" => {
                assert_eq!(report.counts.written, 1);
                assert_eq!(held.len(), 3);
                assert_eq!(
                    held["500B"].get(moodbridge_core::DELETED),
                    Some(&json!(true))
                );
                assert_eq!(
                    held["500B"].get(moodbridge_core::DELETED_AT),
                    Some(&json!("2026-11-20T10:00:09.000Z"))
                );
                assert_eq!(held["500A"].get(moodbridge_core::DELETED), None);
            }
            _ => {
                assert_eq!(report.counts.written, 1);
                assert_eq!(held.len(), 2, "removed");
                assert!(!held.contains_key("500B"));
            }
        }
        if how != "ignore" {
            let audit = e.state.audit(report.run).await.unwrap();
            assert_eq!(audit.len(), 1, "{how}: {audit:?}");
            assert_eq!(audit[0].entry.operation, AuditOperation::Delete);
            assert_eq!(audit[0].entry.record_key, "500B");
            assert_eq!(
                audit[0]
                    .entry
                    .before
                    .as_ref()
                    .and_then(|b| b.get("Subject")),
                Some(&json!("open")),
                "the before-image is kept"
            );
        }
        // Nothing new: nothing read; the record written again is live.
        let report = e.engine.run(&p, &source, &sink).await.unwrap();
        assert_eq!(report.counts.read, 0, "{how}");
        source.put("Case", case("500B", 20, "reopened"));
        e.engine.run(&p, &source, &sink).await.unwrap();
        let back = &sink.snapshot("Case")["500B"];
        assert_eq!(back, &case("500B", 20, "reopened"), "{how}: live again");
    }
}

/// Consumers of the event log: in order, retried, dead-lettered, resumed, independent of
/// each other, replayed from a position or a time, their lag told.
pub async fn events_are_consumed_in_order_resumed_and_replayed<B: Backend>() {
    use moodbridge_core::state::{NewEvent, StoredEvent};
    use std::sync::Mutex;
    use std::time::{SystemTime, UNIX_EPOCH};
    let (state, _dir) = B::fresh().await;
    let log: Arc<dyn moodbridge_core::state::EventLog> = state.clone();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
    let events: Vec<NewEvent> = (1..=10)
        .map(|i| {
            let mut e = NewEvent::new(
                "apex",
                format!("m{i}"),
                "case.updated",
                format!(r#"{{"n":{i}}}"#),
            )
            .partition(format!("500{}", i % 3));
            e.received_at = t0 + Duration::from_secs(i);
            e
        })
        .collect();
    log.append_events(&events).await.unwrap();

    let fast = Policy::builder("test.events")
        .retry(RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_elapsed: Duration::from_secs(5),
            budget: None,
        })
        .build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let flaky_left = Arc::new(Mutex::new(1));
    let handler = {
        let seen = seen.clone();
        let flaky_left = flaky_left.clone();
        move |event: StoredEvent| {
            let seen = seen.clone();
            let flaky_left = flaky_left.clone();
            async move {
                match event.event.event_id.as_str() {
                    "m4" => return Err(Error::invalid_input("case 500 has no such status")),
                    "m6" => {
                        let mut left = flaky_left.lock().unwrap();
                        if *left > 0 {
                            *left -= 1;
                            return Err(Error::new(
                                ErrorKind::Unavailable,
                                "the CRM is restarting",
                            ));
                        }
                    }
                    _ => {}
                }
                seen.lock().unwrap().push(event.sequence);
                Ok(())
            }
        }
    };
    let a = EventConsumer::new("case-sync", log.clone(), state.clone())
        .policy(fast.clone())
        .page(3);
    assert_eq!(a.lag().await.unwrap().events, 10);
    let report = a.run_once(&handler).await.unwrap();
    assert_eq!(
        (report.handled, report.dead_lettered, report.position),
        (9, 1, 10)
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 2, 3, 5, 6, 7, 8, 9, 10],
        "in order; m6 retried"
    );
    let letters = state.dead_letters("case-sync", None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].stage, FailureStage::Handle);
    assert_eq!(letters[0].record_key, "m4");
    assert_eq!(letters[0].record.get("body"), Some(&json!({"n": 4})));
    assert!(
        letters[0].reason.contains("no such status"),
        "{}",
        letters[0].reason
    );
    assert_eq!(
        a.lag().await.unwrap(),
        Lag {
            events: 0,
            oldest: None
        }
    );

    // Nothing new: nothing handled. Two more: a new instance resumes after 10.
    assert_eq!(a.run_once(&handler).await.unwrap().handled, 0);
    let more: Vec<NewEvent> = (11..=12)
        .map(|i| NewEvent::new("apex", format!("m{i}"), "case.updated", "{}"))
        .collect();
    log.append_events(&more).await.unwrap();
    seen.lock().unwrap().clear();
    let again = EventConsumer::new("case-sync", log.clone(), state.clone()).policy(fast.clone());
    assert_eq!(again.lag().await.unwrap().events, 2);
    assert_eq!(again.run_once(&handler).await.unwrap().handled, 2);
    assert_eq!(*seen.lock().unwrap(), [11, 12]);

    // Another consumer reads everything, on its own.
    seen.lock().unwrap().clear();
    let b = EventConsumer::new("audit-feed", log.clone(), state.clone()).policy(fast.clone());
    let report = b.run_once(&handler).await.unwrap();
    assert_eq!((report.handled, report.dead_lettered), (11, 1));

    // Replays: from a position, then from a time; the other consumer stays where it is.
    seen.lock().unwrap().clear();
    a.replay_from(8).await.unwrap();
    assert_eq!(a.run_once(&handler).await.unwrap().handled, 4);
    assert_eq!(*seen.lock().unwrap(), [9, 10, 11, 12]);
    assert_eq!(b.position().await.unwrap(), 12);
    let from = a.replay_since(t0 + Duration::from_secs(7)).await.unwrap();
    assert_eq!(
        from, 6,
        "event 7 is the first received at or after the time"
    );
    assert_eq!(a.lag().await.unwrap().events, 6);
    assert!(a.lag().await.unwrap().oldest.unwrap() > Duration::from_secs(60));
    assert!(SystemTime::now() > t0);
    assert!(a.replay_from(-1).await.is_err());

    // A filtered consumer sees only what its policy matches: bodies with n > 8.
    seen.lock().unwrap().clear();
    let policy = FilterPolicy::parse(&json!({"n": [{"numeric": [">", 8]}]})).unwrap();
    let c = EventConsumer::new("big-n", log.clone(), state.clone())
        .policy(fast)
        .filter(policy);
    let report = c.run_once(&handler).await.unwrap();
    assert_eq!(
        (report.handled, report.filtered, report.position),
        (2, 10, 12)
    );
    assert_eq!(*seen.lock().unwrap(), [9, 10]);
}

/// One `#[tokio::test]` per shared test, for backend `$b`.
#[macro_export]
macro_rules! engine_tests {
    ($b:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn keys_are_handled_concurrently_each_in_order() {
            engine_common::events::keys_are_handled_concurrently_each_in_order::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn out_of_order_events_are_resequenced_and_late_ones_passed_over() {
            engine_common::events::out_of_order_events_are_resequenced_and_late_ones_passed_over::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn workers_share_partitions_under_leases() {
            engine_common::events::workers_share_partitions_under_leases::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn retention_waits_for_every_consumer() {
            engine_common::events::retention_waits_for_every_consumer::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn events_are_routed_to_a_sink_and_to_an_incremental_sync() {
            engine_common::events::events_are_routed_to_a_sink_and_to_an_incremental_sync::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn consumer_health_turns_degraded_past_its_thresholds() {
            engine_common::events::consumer_health_turns_degraded_past_its_thresholds::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn events_are_consumed_in_order_resumed_and_replayed() {
            engine_common::events_are_consumed_in_order_resumed_and_replayed::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn deletes_reach_the_sink_as_the_stream_says() {
            engine_common::deletes_reach_the_sink_as_the_stream_says::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_first_run_moves_every_record_exactly() {
            engine_common::a_first_run_moves_every_record_exactly::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_incremental_run_moves_only_changes_even_when_they_tie_on_the_cursor() {
            engine_common::an_incremental_run_moves_only_changes_even_when_they_tie_on_the_cursor::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_failed_run_is_resumed_from_its_last_committed_checkpoint() {
            engine_common::a_failed_run_is_resumed_from_its_last_committed_checkpoint::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bad_records_become_dead_letters_and_the_run_goes_on() {
            engine_common::bad_records_become_dead_letters_and_the_run_goes_on::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_run_is_rolled_back_from_its_before_images_and_the_rollback_is_audited() {
            engine_common::a_run_is_rolled_back_from_its_before_images_and_the_rollback_is_audited::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn flaky_source_and_sink_still_give_the_exact_result() {
            engine_common::flaky_source_and_sink_still_give_the_exact_result::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn progress_is_reported_from_start_to_finish() {
            engine_common::progress_is_reported_from_start_to_finish::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_overwrite_replaces_the_target_with_this_runs_records() {
            engine_common::an_overwrite_replaces_the_target_with_this_runs_records::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_stream_the_source_lacks_is_a_config_error_listing_what_it_has() {
            engine_common::a_stream_the_source_lacks_is_a_config_error_listing_what_it_has::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_scheduled_pipeline_runs_when_due_and_never_twice_at_once() {
            engine_common::a_scheduled_pipeline_runs_when_due_and_never_twice_at_once::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn changes_flow_both_ways_and_never_echo_back() {
            engine_common::changes_flow_both_ways_and_never_echo_back::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_run_abandoned_by_a_dead_process_is_marked_failed_by_the_next() {
            engine_common::a_run_abandoned_by_a_dead_process_is_marked_failed_by_the_next::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_beating_run_is_not_taken_for_dead() {
            engine_common::a_beating_run_is_not_taken_for_dead::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_record_changed_on_both_sides_is_resolved_by_the_policy() {
            engine_common::a_record_changed_on_both_sides_is_resolved_by_the_policy::<$b>().await;
        }
    };
}
