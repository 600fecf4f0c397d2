//! The state store tests every backend runs: the contract suite, durability across
//! reopen, concurrent audit appends, append-only enforcement, tamper evidence, refusal of
//! a checkpoint for an unknown run, dead letters, conflicts, leases and retention.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use moodbridge_core::Record;
use moodbridge_core::state::{
    AuditEntry, AuditOperation, ChainStatus, CursorStore, FailureStage, IntegrationEntry,
    NewConflict, NewDeadLetter, RetentionPolicy, RunCounts, RunId, RunStatus, StateStore,
};
use moodbridge_core::testing::state_store_contract;
use moodbridge_core::{Checkpoint, ErrorKind};

/// A backend under test: a fresh, empty store (and a way to reopen it), plus raw SQL
/// access to play the attacker.
pub trait Backend: Sized {
    type Store: StateStore + 'static;
    async fn new() -> Self;
    async fn open(&self) -> Self::Store;
    async fn close(store: Self::Store);
    async fn raw(&self, sql: &str) -> Result<(), String>;
    /// Statements that remove the append-only guard.
    const DROP_GUARDS: [&'static str; 2];
    /// The backend's cursors migration (its last statement carries replay ids over).
    const CURSORS_MIGRATION: &'static str;
}

fn entry(run: RunId, key: &str) -> AuditEntry {
    AuditEntry {
        run,
        stream: "Account".into(),
        record_key: key.into(),
        operation: AuditOperation::Update,
        before: Some(serde_json::json!({"Name": "Acme", "Industry": "Legal"})),
        after: Some(serde_json::json!({"Name": "Acme Corp", "Industry": "Legal"})),
        after_sha256: None,
        actor: "engine".into(),
    }
}

pub async fn meets_the_contract<B: Backend>() {
    let b = B::new().await;
    state_store_contract(&b.open().await, "contract").await;
}

pub async fn meets_the_event_log_contract<B: Backend>() {
    let b = B::new().await;
    moodbridge_core::testing::event_log_contract(Arc::new(b.open().await)).await;
}

pub async fn meets_the_lease_contract<B: Backend>() {
    let b = B::new().await;
    moodbridge_core::testing::lease_store_contract(Arc::new(b.open().await), "contract").await;
}

/// Two hosts run one singleton job under one lease: never both at once; the second takes
/// over when the first finishes; a holder whose lease is taken after it lapsed is
/// stopped; a shutdown while waiting stops the wait.
pub async fn run_leased_keeps_one_holder_at_a_time<B: Backend>() {
    use moodbridge_core::state::{LeaseStore, LeasedRun, run_leased};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let b = B::new().await;
    let store = Arc::new(b.open().await);
    // Wide margins: a renewal every third of a second cannot be starved for a whole
    // second on a loaded machine.
    let ttl = Duration::from_secs(1);
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let host = |name: &'static str| {
        let (store, active, most) = (store.clone(), active.clone(), most.clone());
        tokio::spawn(async move {
            run_leased(
                store.as_ref(),
                "singleton",
                name,
                ttl,
                std::future::pending::<()>(),
                |lease| async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Longer than the TTL: the lease is renewed while the work runs.
                    tokio::time::sleep(Duration::from_millis(1_500)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    lease.token
                },
            )
            .await
            .unwrap()
        })
    };
    let (a, b_host) = (host("host-a"), host("host-b"));
    let mut tokens = Vec::new();
    for h in [a, b_host] {
        match h.await.unwrap() {
            LeasedRun::Done(token) => tokens.push(token),
            other => panic!("both hosts finish their turn: {other:?}"),
        }
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two holders at once");
    tokens.sort();
    assert!(
        tokens[0] < tokens[1],
        "the second holder has a greater token: {tokens:?}"
    );

    // Lost: the holder's lease is shortened and lapses; another host takes it; the
    // holder's work is stopped.
    let thief = store.clone();
    let lost = run_leased(
        store.as_ref(),
        "stolen",
        "host-a",
        ttl,
        std::future::pending::<()>(),
        |lease| async move {
            thief
                .renew_lease(&lease, Duration::from_millis(1))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(
                thief
                    .acquire_lease("stolen", "host-b", Duration::from_secs(60))
                    .await
                    .unwrap()
                    .is_some()
            );
            tokio::time::sleep(Duration::from_secs(60)).await;
            "finished"
        },
    )
    .await
    .unwrap();
    match lost {
        LeasedRun::Lost(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        other => panic!("the work is stopped when the lease is lost: {other:?}"),
    }

    // Waiting for a held lease ends with the shutdown.
    let waited = run_leased(
        store.as_ref(),
        "stolen",
        "host-c",
        ttl,
        tokio::time::sleep(Duration::from_millis(200)),
        |_| async { panic!("host-b still holds it") },
    )
    .await
    .unwrap();
    assert!(matches!(waited, LeasedRun::<()>::Stopped));
}

pub async fn meets_the_cursor_contract<B: Backend>() {
    let b = B::new().await;
    moodbridge_core::testing::cursor_store_contract(Arc::new(b.open().await), "contract").await;
}

/// Replay ids a store kept as checkpoints (stream = the channel) become cursors when it
/// is opened by this version; other checkpoints stay as they are.
pub async fn stored_replay_ids_become_cursors<B: Backend>() {
    let b = B::new().await;
    let s = b.open().await;
    let run = s.start_run("case-changes").await.unwrap();
    for (stream, state) in [
        (
            "/data/CaseChangeEvent",
            serde_json::json!({"replay_id": 8123}),
        ),
        ("Case", serde_json::json!({"cursor": "2026-01-01"})),
    ] {
        s.commit_checkpoint("case-changes", &Checkpoint::new(stream, state), run)
            .await
            .unwrap();
    }
    s.reset_cursors("case-changes").await.unwrap();
    B::close(s).await;
    // The migration's carry-over statement, run on the stored checkpoints.
    let sql = B::CURSORS_MIGRATION;
    let carry_over = &sql[sql.find("INSERT INTO cursors").unwrap()..];
    b.raw(carry_over).await.unwrap();
    let s = b.open().await;
    let cursors = s.cursors("case-changes").await.unwrap();
    assert_eq!(cursors.len(), 1, "{cursors:?}");
    assert_eq!(
        (cursors[0].partition.as_str(), cursors[0].position.as_str()),
        ("/data/CaseChangeEvent", "8123")
    );
}

pub async fn committed_state_survives_reopening<B: Backend>() {
    let b = B::new().await;
    let s = b.open().await;
    let run = s.start_run("p").await.unwrap();
    s.commit_checkpoint(
        "p",
        &Checkpoint::new("Case", serde_json::json!({"cursor": 42})),
        run,
    )
    .await
    .unwrap();
    s.append_audit(&[entry(run, "001")]).await.unwrap();
    s.finish_run(
        run,
        RunStatus::Succeeded,
        RunCounts {
            read: 1,
            written: 1,
            failed: 0,
        },
        None,
    )
    .await
    .unwrap();
    B::close(s).await;

    let s = b.open().await;
    let cp = s.checkpoint("p", "Case").await.unwrap().unwrap();
    assert_eq!(cp.checkpoint.state, serde_json::json!({"cursor": 42}));
    assert_eq!(s.run(run).await.unwrap().status, RunStatus::Succeeded);
    assert_eq!(
        s.verify_audit().await.unwrap(),
        ChainStatus::Intact { entries: 1 }
    );
}

pub async fn concurrent_appends_keep_one_unbroken_chain<B: Backend>() {
    let b = B::new().await;
    let s = Arc::new(b.open().await);
    let run = s.start_run("p").await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let batch = vec![
                        entry(run, &format!("{t}-{i}-a")),
                        entry(run, &format!("{t}-{i}-b")),
                    ];
                    s.append_audit(&batch).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        s.verify_audit().await.unwrap(),
        ChainStatus::Intact { entries: 160 }
    );
}

pub async fn the_audit_log_refuses_updates_and_deletes<B: Backend>() {
    let b = B::new().await;
    let s = b.open().await;
    let run = s.start_run("p").await.unwrap();
    s.append_audit(&[entry(run, "001")]).await.unwrap();
    let err = b
        .raw("UPDATE audit_log SET actor = 'mallory'")
        .await
        .unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    let err = b.raw("DELETE FROM audit_log").await.unwrap_err();
    assert!(err.contains("append-only"), "{err}");
}

pub async fn an_altered_or_removed_audit_entry_is_detected<B: Backend>() {
    for (tamper, seq, reason) in [
        (
            "UPDATE audit_log SET after_image = '{\"Name\":\"Evil Corp\"}' WHERE seq = 2",
            2,
            "altered",
        ),
        ("DELETE FROM audit_log WHERE seq = 2", 3, "missing"),
    ] {
        let b = B::new().await;
        let s = b.open().await;
        let run = s.start_run("p").await.unwrap();
        s.append_audit(&[entry(run, "001"), entry(run, "002"), entry(run, "003")])
            .await
            .unwrap();
        // An attacker with database access removes the guard first.
        for sql in B::DROP_GUARDS {
            b.raw(sql).await.unwrap();
        }
        b.raw(tamper).await.unwrap();
        match s.verify_audit().await.unwrap() {
            ChainStatus::Broken {
                seq: at,
                reason: why,
            } => {
                assert_eq!(at, seq, "{tamper}");
                assert!(why.contains(reason), "{why}");
            }
            ChainStatus::Intact { .. } => panic!("tampering went unnoticed: {tamper}"),
        }
    }
}

pub async fn a_checkpoint_for_an_unknown_run_is_refused<B: Backend>() {
    let b = B::new().await;
    let s = b.open().await;
    let err = s
        .commit_checkpoint(
            "p",
            &Checkpoint::new("Case", serde_json::json!(1)),
            RunId(999_999),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

fn rec(v: serde_json::Value) -> Record {
    Record::from_json(v).unwrap()
}

fn letter(run: Option<RunId>, stream: &str, key: &str, reason: &str) -> NewDeadLetter {
    NewDeadLetter {
        pipeline: "p".into(),
        stream: stream.into(),
        record_key: key.into(),
        record: rec(serde_json::json!({"Id": key, "Email": "not-an-email"})),
        reason: reason.into(),
        stage: FailureStage::Validation,
        run,
    }
}

pub async fn integrations_and_their_config_round_trip<B: Backend>() {
    let b = B::new().await;
    let s = b.open().await;
    s.put_integration(&IntegrationEntry::new("salesforce:prod", "salesforce"))
        .await
        .unwrap();
    s.put_integration(
        &IntegrationEntry::new("salesforce:prod", "salesforce")
            .metadata(serde_json::json!({"org": "00D1"})),
    )
    .await
    .unwrap();
    s.put_integration(&IntegrationEntry::new("aws:docs", "aws"))
        .await
        .unwrap();
    let all = s.integrations().await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["aws:docs", "salesforce:prod"]
    );
    assert_eq!(all[1].metadata, serde_json::json!({"org": "00D1"}));

    s.set_platform_config("salesforce:prod", "api_version", &serde_json::json!("62.0"))
        .await
        .unwrap();
    s.set_platform_config("salesforce:prod", "api_version", &serde_json::json!("63.0"))
        .await
        .unwrap();
    s.set_platform_config("salesforce:prod", "page_size", &serde_json::json!(2000))
        .await
        .unwrap();
    let config = s.platform_config("salesforce:prod").await.unwrap();
    assert_eq!(config.len(), 2);
    assert_eq!(config["api_version"], serde_json::json!("63.0"));
    assert!(s.platform_config("aws:docs").await.unwrap().is_empty());

    let err = s
        .set_platform_config("nobody", "k", &serde_json::json!(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("not registered"), "{err}");
}

pub async fn a_record_failing_again_is_one_dead_letter_with_more_attempts<B: Backend>() {
    let b = B::new().await;
    let s = b.open().await;
    let run = s.start_run("p").await.unwrap();
    let id = s
        .put_dead_letter(&letter(Some(run), "Contact", "003A", "Email: not an email"))
        .await
        .unwrap();
    let again = s
        .put_dead_letter(&letter(
            Some(run),
            "Contact",
            "003A",
            "Email: still not an email",
        ))
        .await
        .unwrap();
    assert_eq!(id, again, "one open dead letter per record");
    s.put_dead_letter(&letter(None, "Contact", "003B", "LastName is required"))
        .await
        .unwrap();
    s.put_dead_letter(&letter(None, "Case", "500A", "Subject too long"))
        .await
        .unwrap();

    let contacts = s.dead_letters("p", Some("Contact"), 10).await.unwrap();
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts[0].record_key, "003A");
    assert_eq!(contacts[0].attempts, 2);
    assert_eq!(contacts[0].reason, "Email: still not an email");
    assert_eq!(contacts[0].stage, FailureStage::Validation);
    assert_eq!(contacts[0].run, Some(run));
    assert_eq!(
        contacts[0].record.get("Email"),
        Some(&serde_json::json!("not-an-email"))
    );
    assert!(contacts[0].first_seen <= contacts[0].last_seen);
    assert_eq!(s.dead_letters("p", None, 10).await.unwrap().len(), 3);
    assert_eq!(s.dead_letters("p", None, 1).await.unwrap().len(), 1);
    assert!(s.dead_letters("q", None, 10).await.unwrap().is_empty());

    s.resolve_dead_letter(id).await.unwrap();
    let open = s.dead_letters("p", Some("Contact"), 10).await.unwrap();
    assert_eq!(open.len(), 1, "a resolved dead letter is not listed");
    assert_eq!(
        s.resolve_dead_letter(id).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "resolving twice"
    );
    // Failing again after being resolved opens a new dead letter.
    let reopened = s
        .put_dead_letter(&letter(None, "Contact", "003A", "again"))
        .await
        .unwrap();
    assert_ne!(reopened, id);
    assert_eq!(
        s.dead_letters("p", Some("Contact"), 10).await.unwrap()[1].attempts,
        1
    );
}

pub async fn conflicts_are_parked_listed_and_resolved<B: Backend>() {
    let b = B::new().await;
    let s = b.open().await;
    let conflict = |left: &str, right: &str| NewConflict {
        pipeline: "p".into(),
        stream: "Account".into(),
        record_key: "001A".into(),
        left: Some(rec(serde_json::json!({"Name": left}))),
        right: Some(rec(serde_json::json!({"Name": right}))),
        run: None,
    };
    let id = s
        .park_conflict(&conflict("Acme", "ACME Inc"))
        .await
        .unwrap();
    assert_eq!(
        s.park_conflict(&conflict("Acme", "ACME Ltd"))
            .await
            .unwrap(),
        id,
        "one open conflict per record"
    );
    let mut deleted = conflict("Acme", "");
    deleted.record_key = "001B".into();
    deleted.right = None;
    s.park_conflict(&deleted).await.unwrap();

    let open = s.conflicts("p", 10).await.unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].conflict, conflict("Acme", "ACME Ltd"));
    assert_eq!(open[1].conflict.right, None);
    s.resolve_conflict(id, "kept left").await.unwrap();
    assert_eq!(s.conflicts("p", 10).await.unwrap().len(), 1);
    assert_eq!(
        s.resolve_conflict(id, "again").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

pub async fn retention_purges_only_old_finished_work<B: Backend>() {
    let b = B::new().await;
    let s = b.open().await;
    let finished = s.start_run("p").await.unwrap();
    s.finish_run(finished, RunStatus::Succeeded, RunCounts::default(), None)
        .await
        .unwrap();
    let holds_checkpoint = s.start_run("p").await.unwrap();
    s.commit_checkpoint(
        "p",
        &Checkpoint::new("Case", serde_json::json!(1)),
        holds_checkpoint,
    )
    .await
    .unwrap();
    s.finish_run(
        holds_checkpoint,
        RunStatus::Succeeded,
        RunCounts::default(),
        None,
    )
    .await
    .unwrap();
    let running = s.start_run("p").await.unwrap();
    let resolved = s
        .put_dead_letter(&letter(None, "Contact", "003A", "x"))
        .await
        .unwrap();
    s.resolve_dead_letter(resolved).await.unwrap();
    s.put_dead_letter(&letter(None, "Contact", "003B", "x"))
        .await
        .unwrap();
    s.append_audit(&[entry(running, "001"), entry(running, "002")])
        .await
        .unwrap();

    // Nothing is old enough yet.
    let keep_a_day = RetentionPolicy::default()
        .runs(Duration::from_secs(86_400))
        .dead_letters(Duration::from_secs(86_400));
    assert_eq!(s.purge(&keep_a_day).await.unwrap().runs, 0);

    // A day later: the finished run and the resolved dead letter go; the run holding a
    // checkpoint, the running run, the open dead letter and the audit log stay.
    let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
    let report = s.purge_as_of(&keep_a_day, later).await.unwrap();
    assert_eq!((report.runs, report.dead_letters, report.audit), (1, 1, 0));
    assert_eq!(
        s.run(finished).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(s.run(holds_checkpoint).await.is_ok());
    assert!(s.run(running).await.is_ok());
    assert_eq!(s.dead_letters("p", None, 10).await.unwrap().len(), 1);
    assert_eq!(s.audit(running).await.unwrap().len(), 2);

    // The audit log goes only when asked, and what remains still verifies.
    let report = s
        .purge_as_of(
            &RetentionPolicy::default().audit(Duration::from_secs(86_400)),
            later,
        )
        .await
        .unwrap();
    assert_eq!(report.audit, 2);
    s.append_audit(&[entry(running, "003")]).await.unwrap();
    assert_eq!(
        s.verify_audit().await.unwrap(),
        ChainStatus::Intact { entries: 1 },
        "the chain continues from the purge anchor"
    );
    let err = b.raw("DELETE FROM audit_log").await.unwrap_err();
    assert!(
        err.contains("append-only"),
        "entries after the anchor stay guarded: {err}"
    );
}

pub async fn fingerprints_are_remembered_per_record<B: Backend>() {
    let b = B::new().await;
    let s = b.open().await;
    assert!(
        s.fingerprints("p", "Account", &["001".into()])
            .await
            .unwrap()
            .is_empty()
    );
    s.put_fingerprints(
        "p",
        "Account",
        &[("001".into(), "aa".into()), ("002".into(), "bb".into())],
    )
    .await
    .unwrap();
    s.put_fingerprints("p", "Account", &[("001".into(), "cc".into())])
        .await
        .unwrap();
    s.put_fingerprints("p", "Contact", &[("001".into(), "zz".into())])
        .await
        .unwrap();
    let got = s
        .fingerprints("p", "Account", &["001".into(), "002".into(), "003".into()])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got["001"], "cc", "the latest write wins");
    assert_eq!(got["002"], "bb");
    assert!(
        s.fingerprints("p", "Account", &[])
            .await
            .unwrap()
            .is_empty()
    );
}

/// One `#[tokio::test]` per shared test, for backend `$b`.
#[macro_export]
macro_rules! state_store_tests {
    ($b:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn meets_the_contract() {
            state_common::meets_the_contract::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn meets_the_cursor_contract() {
            state_common::meets_the_cursor_contract::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn meets_the_event_log_contract() {
            state_common::meets_the_event_log_contract::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn stored_replay_ids_become_cursors() {
            state_common::stored_replay_ids_become_cursors::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn committed_state_survives_reopening() {
            state_common::committed_state_survives_reopening::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_appends_keep_one_unbroken_chain() {
            state_common::concurrent_appends_keep_one_unbroken_chain::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_audit_log_refuses_updates_and_deletes() {
            state_common::the_audit_log_refuses_updates_and_deletes::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_altered_or_removed_audit_entry_is_detected() {
            state_common::an_altered_or_removed_audit_entry_is_detected::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_checkpoint_for_an_unknown_run_is_refused() {
            state_common::a_checkpoint_for_an_unknown_run_is_refused::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn integrations_and_their_config_round_trip() {
            state_common::integrations_and_their_config_round_trip::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_record_failing_again_is_one_dead_letter_with_more_attempts() {
            state_common::a_record_failing_again_is_one_dead_letter_with_more_attempts::<$b>()
                .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conflicts_are_parked_listed_and_resolved() {
            state_common::conflicts_are_parked_listed_and_resolved::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn meets_the_lease_contract() {
            state_common::meets_the_lease_contract::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn run_leased_keeps_one_holder_at_a_time() {
            state_common::run_leased_keeps_one_holder_at_a_time::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn fingerprints_are_remembered_per_record() {
            state_common::fingerprints_are_remembered_per_record::<$b>().await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn retention_purges_only_old_finished_work() {
            state_common::retention_purges_only_old_finished_work::<$b>().await;
        }
    };
}

/// Append `n` audit entries to `run`.
#[allow(dead_code, reason = "used by some backends' tests only")]
pub async fn append_entries(s: &impl StateStore, run: RunId, n: usize) {
    let batch: Vec<_> = (0..n).map(|i| entry(run, &format!("{i:03}"))).collect();
    s.append_audit(&batch).await.unwrap();
}
