//! The state store tests on SQLite.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]
#![allow(async_fn_in_trait, reason = "test-only trait")]

mod state_common;

use moodbridge_core::state::SqliteStateStore;
use state_common::Backend;

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Backend for Sqlite {
    type Store = SqliteStateStore;
    const CURSORS_MIGRATION: &'static str = include_str!("../migrations/sqlite/0004_cursors.sql");
    const DROP_GUARDS: [&'static str; 2] = [
        "DROP TRIGGER audit_log_no_update",
        "DROP TRIGGER audit_log_no_delete",
    ];

    async fn new() -> Self {
        Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn open(&self) -> SqliteStateStore {
        SqliteStateStore::open(&self.dir.path().join("state.db"))
            .await
            .unwrap()
    }

    async fn close(store: SqliteStateStore) {
        store.close().await;
    }

    async fn raw(&self, sql: &str) -> Result<(), String> {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.dir.path().join("state.db"))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

state_store_tests!(Sqlite);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_holds_exactly_the_state_at_backup_time() {
    use moodbridge_core::state::{ChainStatus, StateStore};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStateStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let run = store.start_run("p").await.unwrap();
    store
        .commit_checkpoint(
            "p",
            &moodbridge_core::Checkpoint::new("Case", serde_json::json!({"cursor": 1})),
            run,
        )
        .await
        .unwrap();
    state_common::append_entries(&store, run, 50).await;
    let backup = dir.path().join("backup.db");
    store.backup(&backup).await.unwrap();
    let err = store.backup(&backup).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");

    // Changes after the backup are not in it.
    store
        .commit_checkpoint(
            "p",
            &moodbridge_core::Checkpoint::new("Case", serde_json::json!({"cursor": 2})),
            run,
        )
        .await
        .unwrap();
    state_common::append_entries(&store, run, 5).await;
    let before = store.audit(run).await.unwrap();

    let restored_path = dir.path().join("restored.db");
    SqliteStateStore::restore(&backup, &restored_path)
        .await
        .unwrap();
    let restored = SqliteStateStore::open(&restored_path).await.unwrap();
    assert_eq!(
        restored.audit(run).await.unwrap(),
        before[..50],
        "the audit log as it was"
    );
    assert_eq!(
        restored.verify_audit().await.unwrap(),
        ChainStatus::Intact { entries: 50 }
    );
    let cp = restored.checkpoint("p", "Case").await.unwrap().unwrap();
    assert_eq!(cp.checkpoint.state, serde_json::json!({"cursor": 1}));
    assert_eq!(
        restored.run(run).await.unwrap(),
        store.run(run).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_backup_is_refused_and_the_target_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("state.db");
    std::fs::write(&target, b"the old database").unwrap();
    let backup = dir.path().join("backup.db");
    std::fs::write(&backup, vec![0x42u8; 8192]).unwrap();
    let err = SqliteStateStore::restore(&backup, &target)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            moodbridge_core::ErrorKind::Integrity | moodbridge_core::ErrorKind::Internal
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"the old database");
    assert!(!dir.path().join("state.restoring").exists());
}
