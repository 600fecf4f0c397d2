//! The SQLite state store: the contract suite, durability across reopen, concurrent
//! audit appends, and tamper evidence of the audit log.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;

use moodbridge_core::state::{
    AuditEntry, AuditOperation, ChainStatus, RunCounts, RunStatus, SqliteStateStore, StateStore,
};
use moodbridge_core::testing::state_store_contract;
use moodbridge_core::{Checkpoint, ErrorKind};

async fn store(dir: &tempfile::TempDir) -> SqliteStateStore {
    SqliteStateStore::open(&dir.path().join("state.db"))
        .await
        .unwrap()
}

fn entry(run: moodbridge_core::state::RunId, key: &str) -> AuditEntry {
    AuditEntry {
        run,
        stream: "Account".into(),
        record_key: key.into(),
        operation: AuditOperation::Update,
        before: Some(serde_json::json!({"Name": "Acme"})),
        after: Some(serde_json::json!({"Name": "Acme Corp"})),
        actor: "engine".into(),
    }
}

#[tokio::test]
async fn the_sqlite_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    state_store_contract(&store(&dir).await, "contract").await;
}

#[tokio::test]
async fn committed_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
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
    s.close().await;

    let s = store(&dir).await;
    let cp = s.checkpoint("p", "Case").await.unwrap().unwrap();
    assert_eq!(cp.checkpoint.state, serde_json::json!({"cursor": 42}));
    assert_eq!(s.run(run).await.unwrap().status, RunStatus::Succeeded);
    assert_eq!(
        s.verify_audit().await.unwrap(),
        ChainStatus::Intact { entries: 1 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_keep_one_unbroken_chain() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(&dir).await);
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

async fn raw(dir: &tempfile::TempDir, sql: &'static str) -> Result<(), sqlx::Error> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("state.db"))
        .connect()
        .await?;
    sqlx::query(sql).execute(&mut conn).await.map(|_| ())
}

#[tokio::test]
async fn the_audit_log_refuses_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let run = s.start_run("p").await.unwrap();
    s.append_audit(&[entry(run, "001")]).await.unwrap();
    let err = raw(&dir, "UPDATE audit_log SET actor = 'mallory'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = raw(&dir, "DELETE FROM audit_log").await.unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn an_altered_or_removed_audit_entry_is_detected() {
    for (tamper, seq, reason) in [
        (
            "UPDATE audit_log SET after_image = '{\"Name\":\"Evil Corp\"}' WHERE seq = 2",
            2,
            "altered",
        ),
        ("DELETE FROM audit_log WHERE seq = 2", 3, "missing"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let run = s.start_run("p").await.unwrap();
        s.append_audit(&[entry(run, "001"), entry(run, "002"), entry(run, "003")])
            .await
            .unwrap();
        // An attacker with database access removes the guard first.
        raw(&dir, "DROP TRIGGER audit_log_no_update").await.unwrap();
        raw(&dir, "DROP TRIGGER audit_log_no_delete").await.unwrap();
        raw(&dir, tamper).await.unwrap();
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

#[tokio::test]
async fn a_checkpoint_for_an_unknown_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let err = s
        .commit_checkpoint(
            "p",
            &Checkpoint::new("Case", serde_json::json!(1)),
            moodbridge_core::state::RunId(999),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}
