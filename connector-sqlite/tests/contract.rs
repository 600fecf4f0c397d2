//! The core data-movement contract, run by the SQLite warehouse.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use connector_sqlite::SqliteTableSink;
use moodbridge_core::testing::{SinkContract, sync_sink_contract, sync_sink_deletes_contract};

#[tokio::test]
async fn the_sqlite_table_sink_meets_the_sink_contract() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SqliteTableSink::open(&dir.path().join("warehouse.db"))
        .await
        .unwrap();
    let case = SinkContract::matters(true);
    sync_sink_contract(&sink, &case, async |stream: &str| sink.rows(stream).await).await;
}

#[tokio::test]
async fn the_sqlite_table_sink_soft_and_hard_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SqliteTableSink::open(&dir.path().join("warehouse.db"))
        .await
        .unwrap();
    let case = SinkContract::matters(true);
    sync_sink_deletes_contract(&sink, &case, true, async |stream: &str| {
        sink.rows(stream).await
    })
    .await;
}
