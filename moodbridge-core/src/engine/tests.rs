//! The engine's pure parts (schedules, config checks). Its behaviour with a state store
//! is tested by every backend in `tests/engine_common`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use super::*;
use crate::config::Validate;
use crate::testing::{MemorySink, MemorySource};

fn two_way(conflicts: ConflictPolicy) -> BidirectionalConfig {
    BidirectionalConfig {
        name: "two-way".into(),
        stream: "Account".into(),
        key: vec!["Id".into()],
        ignore: vec!["SystemModstamp".into()],
        conflicts,
        batch_size: None,
    }
}

#[test]
fn schedules_give_the_next_slot_after_the_last_run() {
    let last = std::time::UNIX_EPOCH + Duration::from_secs(1_763_600_000); // 2025-11-20T00:53:20Z
    let every = Schedule::every(Duration::from_secs(900));
    assert_eq!(
        every.next_after(Some(last)).unwrap(),
        last + Duration::from_secs(900)
    );
    let hourly = Schedule::cron("0 0 * * * *").unwrap();
    assert_eq!(
        hourly.next_after(Some(last)).unwrap(),
        std::time::UNIX_EPOCH + Duration::from_secs(1_763_600_400) // 01:00:00Z
    );
    let err = Schedule::cron("61 * * * * *").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn a_bidirectional_config_reports_every_problem() {
    let mut config = two_way(ConflictPolicy::LastWriterWins {
        field: String::new(),
    });
    config.ignore.push("Id".into());
    let err = Error::from(config.validate().unwrap_err()).to_string();
    for part in ["ignore: lists key field Id", "conflicts.field: is empty"] {
        assert!(err.contains(part), "{part:?} missing from {err}");
    }
}

#[test]
fn runs_count_records_checkpoints_and_runs_as_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let state = std::sync::Arc::new(
                    crate::state::SqliteStateStore::open(&dir.path().join("s.db"))
                        .await
                        .unwrap(),
                );
                let pipeline = Pipeline::from_toml(
                    "name = \"m\"\n[[streams]]\nname = \"Account\"\nbatch_size = 100\n",
                )
                .unwrap();
                SyncEngine::new(state)
                    .run(&pipeline, &MemorySource::accounts(250), &MemorySink::new())
                    .await
                    .unwrap();
            });
    });
    let mut seen = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if let DebugValue::Counter(n) = value {
            seen.insert(format!("{}{{{}}}", key.key().name(), labels.join(",")), n);
        }
    }
    let get = |k: &str| {
        seen.get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing from {seen:?}"))
    };
    assert_eq!(
        get("moodbridge_sync_records_total{pipeline=m,stream=Account,outcome=read}"),
        250
    );
    assert_eq!(
        get("moodbridge_sync_records_total{pipeline=m,stream=Account,outcome=written}"),
        250
    );
    assert_eq!(
        get("moodbridge_sync_checkpoints_total{pipeline=m,stream=Account}"),
        3
    );
    assert_eq!(
        get("moodbridge_sync_runs_total{pipeline=m,status=succeeded}"),
        1
    );
}
