//! The engine tests with the PostgreSQL state store. `scripts/test.sh` starts a server on
//! 127.0.0.1 and sets `MOODBRIDGE_TEST_POSTGRES_URL`; each test gets its own database.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]
#![allow(async_fn_in_trait, reason = "test-only trait")]

mod engine_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use engine_common::Backend;
use moodbridge_core::state::{PostgresStateStore, StateStore};
use sqlx::Connection;

struct Postgres;

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Backend for Postgres {
    async fn fresh() -> (Arc<dyn StateStore>, Option<tempfile::TempDir>) {
        let server = std::env::var("MOODBRIDGE_TEST_POSTGRES_URL").expect(
            "MOODBRIDGE_TEST_POSTGRES_URL is not set: run ./scripts/test.sh, which starts PostgreSQL on 127.0.0.1",
        );
        let name = format!(
            "engine_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let store = PostgresStateStore::connect(&format!("{server}/{name}"))
            .await
            .unwrap();
        (Arc::new(store), None)
    }
}

engine_tests!(Postgres);
