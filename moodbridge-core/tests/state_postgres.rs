//! The state store tests on PostgreSQL 15. `scripts/test.sh` starts a server on
//! 127.0.0.1 and sets `MOODBRIDGE_TEST_POSTGRES_URL`; each test gets its own database.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]
#![allow(async_fn_in_trait, reason = "test-only trait")]

mod state_common;

use moodbridge_core::state::PostgresStateStore;
use sqlx::Connection;
use state_common::Backend;

struct Postgres {
    url: String,
}

fn server_url() -> String {
    std::env::var("MOODBRIDGE_TEST_POSTGRES_URL").expect(
        "MOODBRIDGE_TEST_POSTGRES_URL is not set: run ./scripts/test.sh, which starts PostgreSQL on 127.0.0.1",
    )
}

impl Backend for Postgres {
    type Store = PostgresStateStore;
    const DROP_GUARDS: [&'static str; 2] = [
        "DROP TRIGGER audit_log_no_update ON audit_log",
        "DROP TRIGGER audit_log_no_delete ON audit_log",
    ];

    async fn new() -> Self {
        let server = server_url();
        let name = format!("state_test_{:016x}", rand_u64());
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        Postgres {
            url: format!("{server}/{name}"),
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

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

state_store_tests!(Postgres);
