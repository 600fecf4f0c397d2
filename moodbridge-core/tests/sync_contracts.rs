//! The data-movement contracts, run by the memory doubles.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use moodbridge_core::Result;
use moodbridge_core::record::RecordKey;
use moodbridge_core::testing::{MemorySink, MemorySource, account, account_descriptor};
use moodbridge_core::testing::{
    SinkContract, SourceContract, sync_sink_contract, sync_sink_deletes_contract,
    sync_source_contract, sync_source_deletes_contract,
};
use serde_json::Value;

#[tokio::test]
async fn the_memory_source_meets_the_source_contract() {
    let source = MemorySource::new();
    source.add_stream(account_descriptor());
    for i in 0..9 {
        source.put("Account", account(i));
    }
    let case = SourceContract {
        stream: "Account",
        batch_size: 2,
    };
    sync_source_contract(&source, &case, async || -> Result<Vec<RecordKey>> {
        // One account edited, one added, both after every existing modstamp.
        let mut edited = account(4);
        edited.set("Name", Value::from("Account 4, renamed"));
        edited.set("SystemModstamp", Value::from("2030-01-01T00:00:00.000Z"));
        let mut added = account(100);
        added.set("SystemModstamp", Value::from("2030-01-01T00:00:01.000Z"));
        source.put("Account", edited);
        source.put("Account", added);
        Ok(vec![
            RecordKey::new(vec![format!("001{:015}", 4)]),
            RecordKey::new(vec![format!("001{:015}", 100)]),
        ])
    })
    .await;
}

#[tokio::test]
async fn the_memory_sink_meets_the_sink_contract() {
    let sink = MemorySink::new();
    let case = SinkContract::matters(true);
    sync_sink_contract(&sink, &case, async |stream: &str| {
        Ok(sink.snapshot(stream).into_values().collect())
    })
    .await;
}

#[tokio::test]
async fn the_memory_source_reports_deletes() {
    let source = MemorySource::new();
    source.add_stream(account_descriptor());
    for i in 0..5 {
        source.put("Account", account(i));
    }
    let case = SourceContract {
        stream: "Account",
        batch_size: 2,
    };
    sync_source_deletes_contract(&source, &case, async || -> Result<Vec<RecordKey>> {
        let key = format!("001{:015}", 3);
        assert!(source.delete("Account", &key, Value::from("2030-01-01T00:00:00.000Z")));
        Ok(vec![RecordKey::new(vec![key])])
    })
    .await;
}

#[tokio::test]
async fn the_memory_sink_soft_and_hard_deletes() {
    let sink = MemorySink::new();
    let case = SinkContract::matters(true);
    sync_sink_deletes_contract(&sink, &case, true, async |stream: &str| {
        Ok(sink.snapshot(stream).into_values().collect())
    })
    .await;
}
