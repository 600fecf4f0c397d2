//! The state store tests on PostgreSQL 15. `scripts/test.sh` starts a server on
//! 127.0.0.1 and sets `MOODBRIDGE_TEST_POSTGRES_URL`; each test gets its own database.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]
#![allow(async_fn_in_trait, reason = "test-only trait")]

mod pg_support;
mod state_common;

use moodbridge_core::state::PostgresStateStore;
use sqlx::Connection;
use state_common::Backend;

struct Postgres {
    url: String,
}

impl Backend for Postgres {
    type Store = PostgresStateStore;
    const CURSORS_MIGRATION: &'static str = include_str!("../migrations/postgres/0004_cursors.sql");
    const DROP_GUARDS: [&'static str; 2] = [
        "DROP TRIGGER audit_log_no_update ON audit_log",
        "DROP TRIGGER audit_log_no_delete ON audit_log",
    ];

    async fn new() -> Self {
        Postgres {
            url: pg_support::fresh_database("state_test").await,
        }
    }

    async fn open(&self) -> PostgresStateStore {
        PostgresStateStore::connect(&self.url).await.unwrap()
    }

    async fn close(store: PostgresStateStore) {
        store.close().await;
    }

    async fn raw(&self, sql: &str) -> Result<(), String> {
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

state_store_tests!(Postgres);

/// The documented backup procedure (docs/state.md): `pg_dump --format=custom` of a live
/// store, `pg_restore` into an empty database, and the restored store holds exactly what
/// was there, its audit chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_restored_into_a_new_database_holds_exactly_the_state() {
    use moodbridge_core::state::{ChainStatus, StateStore};
    let pgbin = std::env::var("MOODBRIDGE_TEST_PGBIN").expect(
        "MOODBRIDGE_TEST_PGBIN is not set: run ./scripts/test.sh, which sets it to PostgreSQL's bin directory",
    );
    let source = Postgres::new().await;
    let store = source.open().await;
    let run = store.start_run("p").await.unwrap();
    store
        .commit_checkpoint(
            "p",
            &moodbridge_core::Checkpoint::new("Case", serde_json::json!({"cursor": 7})),
            run,
        )
        .await
        .unwrap();
    state_common::append_entries(&store, run, 20).await;

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("state.dump");
    let ok = std::process::Command::new(format!("{pgbin}/pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&source.url)
        .status()
        .unwrap();
    assert!(ok.success(), "pg_dump failed");
    let target = Postgres::new().await;
    let ok = std::process::Command::new(format!("{pgbin}/pg_restore"))
        .args(["--exit-on-error", "--no-owner", "--dbname"])
        .arg(&target.url)
        .arg(&dump)
        .status()
        .unwrap();
    assert!(ok.success(), "pg_restore failed");

    let restored = target.open().await;
    assert_eq!(
        restored.run(run).await.unwrap(),
        store.run(run).await.unwrap()
    );
    assert_eq!(
        restored.audit(run).await.unwrap(),
        store.audit(run).await.unwrap()
    );
    assert_eq!(
        restored.checkpoint("p", "Case").await.unwrap(),
        store.checkpoint("p", "Case").await.unwrap()
    );
    assert_eq!(
        restored.verify_audit().await.unwrap(),
        ChainStatus::Intact { entries: 20 }
    );
    // The restored store goes on: the chain continues.
    state_common::append_entries(&restored, run, 1).await;
    assert_eq!(
        restored.verify_audit().await.unwrap(),
        ChainStatus::Intact { entries: 21 }
    );
}
