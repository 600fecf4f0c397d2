//! The engine tests with the PostgreSQL state store. `scripts/test.sh` starts a server on
//! 127.0.0.1 and sets `MOODBRIDGE_TEST_POSTGRES_URL`; each test gets its own database.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]
#![allow(async_fn_in_trait, reason = "test-only trait")]

mod engine_common;
mod pg_support;

use std::sync::Arc;

use engine_common::Backend;
use moodbridge_core::state::{PostgresStateStore, StateStore};

struct Postgres;

impl Backend for Postgres {
    async fn fresh() -> (Arc<dyn StateStore>, Option<tempfile::TempDir>) {
        let url = pg_support::fresh_database("engine_test").await;
        let store = PostgresStateStore::connect(&url).await.unwrap();
        (Arc::new(store), None)
    }
}

engine_tests!(Postgres);
