//! What the state store keeps besides runs, checkpoints and the audit log: registered
//! integrations and their configuration, dead letters, parked conflicts, leases, and the
//! retention policy that purges old rows.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::RunId;
use crate::record::Record;

/// A registered integration, as the host described it.
///
/// ```
/// use moodbridge_core::state::IntegrationEntry;
/// let entry = IntegrationEntry::new("salesforce:prod", "salesforce")
///     .metadata(serde_json::json!({"org": "00Dxx0000001"}));
/// assert_eq!(entry.kind, "salesforce");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationEntry {
    /// Its id (`salesforce:prod`).
    pub id: String,
    /// Its kind (`salesforce`).
    pub kind: String,
    /// What the host wants to keep about it (a JSON object; never a secret).
    pub metadata: serde_json::Value,
}

impl IntegrationEntry {
    /// An integration with empty metadata.
    pub fn new(id: impl Into<String>, kind: impl Into<String>) -> Self {
        IntegrationEntry {
            id: id.into(),
            kind: kind.into(),
            metadata: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Set the metadata.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An integration's platform configuration: key → JSON value.
pub type PlatformConfig = BTreeMap<String, serde_json::Value>;

/// Where in the pipeline a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureStage {
    /// Field mapping (rename, cast, computed fields) failed.
    Mapping,
    /// A validation rule refused it.
    Validation,
    /// The sink refused it.
    Write,
    /// An event handler failed on it, its retries spent.
    Handle,
}

impl FailureStage {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureStage::Mapping => "mapping",
            FailureStage::Validation => "validation",
            FailureStage::Write => "write",
            FailureStage::Handle => "handle",
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mapping" => FailureStage::Mapping,
            "validation" => FailureStage::Validation,
            "write" => FailureStage::Write,
            "handle" => FailureStage::Handle,
            _ => return None,
        })
    }
}

/// A record that could not be moved, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDeadLetter {
    /// The pipeline.
    pub pipeline: String,
    /// The stream.
    pub stream: String,
    /// The record's key (or a content hash for records without one).
    pub record_key: String,
    /// The record as the source gave it, so a replay starts from the original.
    pub record: Record,
    /// Why it failed, in words a person can act on.
    pub reason: String,
    /// Where it failed.
    pub stage: FailureStage,
    /// The run that saw it fail.
    pub run: Option<RunId>,
}

/// A dead letter as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id.
    pub id: i64,
    /// The pipeline.
    pub pipeline: String,
    /// The stream.
    pub stream: String,
    /// The record's key.
    pub record_key: String,
    /// The record as the source gave it.
    pub record: Record,
    /// Why it failed (the latest reason).
    pub reason: String,
    /// Where it failed (the latest stage).
    pub stage: FailureStage,
    /// How many times it failed.
    pub attempts: u32,
    /// The run that saw it fail last.
    pub run: Option<RunId>,
    /// When it first failed.
    pub first_seen: SystemTime,
    /// When it last failed.
    pub last_seen: SystemTime,
}

/// A conflict a bidirectional sync parked for review: the record changed on both sides
/// since the last sync and the policy said not to choose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewConflict {
    /// The pipeline.
    pub pipeline: String,
    /// The stream.
    pub stream: String,
    /// The record's key.
    pub record_key: String,
    /// The record on the left system (none if deleted there).
    pub left: Option<Record>,
    /// The record on the right system (none if deleted there).
    pub right: Option<Record>,
    /// The run that found it.
    pub run: Option<RunId>,
}

/// A parked conflict as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Its id.
    pub id: i64,
    /// What was parked.
    pub conflict: NewConflict,
    /// When it was found.
    pub detected_at: SystemTime,
}

/// A held lease: the right to run `name` until `expires_at`.
///
/// `token` grows at every acquisition of the lease (a fencing token): a worker that lost
/// its lease while paused can tell, and stores can refuse its writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// What is leased (a pipeline name).
    pub name: String,
    /// Who holds it (a worker id).
    pub holder: String,
    /// The fencing token of this acquisition.
    pub token: i64,
    /// When it lapses unless renewed, in milliseconds since the epoch.
    pub expires_at_ms: i64,
}

/// How long to keep rows, per table. `None` keeps them forever.
///
/// Only finished runs, resolved dead letters and resolved conflicts are purged: open work
/// is never lost to retention. A run that still holds a stream's committed checkpoint is
/// kept. The audit log is purged only when `audit` is set explicitly; the purge records an
/// anchor so that the remaining chain still verifies.
///
/// ```
/// use moodbridge_core::state::RetentionPolicy;
/// use std::time::Duration;
/// let policy = RetentionPolicy::default().runs(Duration::from_secs(90 * 86_400));
/// assert!(policy.audit.is_none(), "the audit log is kept unless asked");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Finished sync runs older than this.
    #[serde(default, with = "humantime_serde")]
    pub runs: Option<Duration>,
    /// Resolved dead letters older than this.
    #[serde(default, with = "humantime_serde")]
    pub dead_letters: Option<Duration>,
    /// Resolved conflicts older than this.
    #[serde(default, with = "humantime_serde")]
    pub conflicts: Option<Duration>,
    /// Audit entries older than this (explicit only).
    #[serde(default, with = "humantime_serde")]
    pub audit: Option<Duration>,
}

impl RetentionPolicy {
    /// Keep finished runs for `age`.
    pub fn runs(mut self, age: Duration) -> Self {
        self.runs = Some(age);
        self
    }

    /// Keep resolved dead letters for `age`.
    pub fn dead_letters(mut self, age: Duration) -> Self {
        self.dead_letters = Some(age);
        self
    }

    /// Keep resolved conflicts for `age`.
    pub fn conflicts(mut self, age: Duration) -> Self {
        self.conflicts = Some(age);
        self
    }

    /// Purge audit entries older than `age`.
    pub fn audit(mut self, age: Duration) -> Self {
        self.audit = Some(age);
        self
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Sync runs removed.
    pub runs: u64,
    /// Dead letters removed.
    pub dead_letters: u64,
    /// Conflicts removed.
    pub conflicts: u64,
    /// Audit entries removed.
    pub audit: u64,
}
