//! The engine's pure parts (schedules, config checks). Its behaviour with a state store
//! is tested by every backend in `tests/engine_common`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use super::*;
use crate::config::Validate;

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
