//! The core data-movement contract, run by the SQLite warehouse.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use connector_sqlite::SqliteTableSink;
use moodbridge_core::Record;
use moodbridge_core::catalog::{FieldDescriptor, FieldType, StreamDescriptor};
use moodbridge_core::testing::{SinkContract, sync_sink_contract};
use serde_json::json;

/// A keyed stream of matters: `Docket` identifies one; `Title` changes with the version.
fn matters() -> StreamDescriptor {
    StreamDescriptor::new("Matter")
        .field(FieldDescriptor::new("Docket", FieldType::String).required())
        .field(FieldDescriptor::new("Title", FieldType::String))
        .primary_key(["Docket"])
}

fn matter(i: u64, version: u32) -> Record {
    Record::from_json(
        json!({"Docket": format!("D-{i:04}"), "Title": format!("Matter {i}, version {version}")}),
    )
    .unwrap()
}

#[tokio::test]
async fn the_sqlite_table_sink_meets_the_sink_contract() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SqliteTableSink::open(&dir.path().join("warehouse.db"))
        .await
        .unwrap();
    let case = SinkContract {
        stream: matters(),
        record: &matter,
        bad_record: Record::from_json(json!({"Title": "a matter without a docket"})).unwrap(),
        overwrite: true,
    };
    sync_sink_contract(&sink, &case, async |stream: &str| sink.rows(stream).await).await;
}
