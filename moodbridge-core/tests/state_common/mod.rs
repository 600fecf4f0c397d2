//! The state store tests every backend runs: the contract suite, durability across
//! reopen, concurrent audit appends, append-only enforcement, tamper evidence, and
//! refusal of a checkpoint for an unknown run.

use std::sync::Arc;

use moodbridge_core::state::{
    AuditEntry, AuditOperation, ChainStatus, RunCounts, RunId, RunStatus, StateStore,
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
}

fn entry(run: RunId, key: &str) -> AuditEntry {
    AuditEntry {
        run,
        stream: "Account".into(),
        record_key: key.into(),
        operation: AuditOperation::Update,
        before: Some(serde_json::json!({"Name": "Acme", "Industry": "Legal"})),
        after: Some(serde_json::json!({"Name": "Acme Corp", "Industry": "Legal"})),
        actor: "engine".into(),
    }
}

pub async fn meets_the_contract<B: Backend>() {
    let b = B::new().await;
    state_store_contract(&b.open().await, "contract").await;
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

/// One `#[tokio::test]` per shared test, for backend `$b`.
#[macro_export]
macro_rules! state_store_tests {
    ($b:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn meets_the_contract() {
            state_common::meets_the_contract::<$b>().await;
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
    };
}
