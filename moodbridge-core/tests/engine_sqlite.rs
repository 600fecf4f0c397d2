//! The engine tests with the SQLite state store.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]
#![allow(async_fn_in_trait, reason = "test-only trait")]

mod engine_common;

use std::sync::Arc;

use engine_common::Backend;
use moodbridge_core::state::{SqliteStateStore, StateStore};

struct Sqlite;

impl Backend for Sqlite {
    async fn fresh() -> (Arc<dyn StateStore>, Option<tempfile::TempDir>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStateStore::open(&dir.path().join("state.db"))
            .await
            .unwrap();
        (Arc::new(store), Some(dir))
    }
}

engine_tests!(Sqlite);
