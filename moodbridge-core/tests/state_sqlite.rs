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
