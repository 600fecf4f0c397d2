//! The state store: where the sync engine keeps what must survive a crash — sync runs,
//! committed checkpoints, a tamper-evident audit log of every change it makes, dead
//! letters, parked conflicts, leases — and the integrations registered with it.
//!
//! Backends (cargo features): `SqliteStateStore` (`sqlite`, the embedded default) and
//! `PostgresStateStore` (`postgres`, for several workers on several machines).
//! Every backend passes the same contract suite (`testing::state_store_contract`).
//! Schema changes are `sqlx` migrations embedded in the binary.
//!
//! The audit log is append-only (enforced by the database) and hash-chained: each entry's
//! hash covers the previous entry's hash, its sequence number and its content, so
//! [`StateStore::verify_audit`] finds any entry altered, removed or inserted after the fact.

mod cursor;
mod events;
mod lease;
#[cfg(feature = "postgres")]
mod postgres;
mod queue_store;
mod records;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_cursors;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_events;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_ops;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_queue;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use cursor::{CursorStore, StoredCursor};
pub use events::{Appended, EventLog, EventWriter, NewEvent, StoredEvent};
pub use lease::{LeaseStore, LeasedRun, hold_lease, run_leased};
#[cfg(feature = "postgres")]
pub use postgres::PostgresStateStore;
pub use queue_store::{DEDUP_WINDOW_MS, QueueReceive, QueueRow, QueueStore, QueuedMessage, Settle};
pub use records::{
    Conflict, DeadLetter, FailureStage, IntegrationEntry, Lease, NewConflict, NewDeadLetter,
    PlatformConfig, PurgeReport, RetentionPolicy,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStateStore;

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::sync::Checkpoint;

/// A sync run's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run {}", self.0)
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started, not finished (or its worker died).
    Running,
    /// Finished; every record was handled (some may be dead letters).
    Succeeded,
    /// Stopped by an error.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Its changes were undone.
    RolledBack,
}

impl RunStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::RolledBack => "rolled_back",
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            "rolled_back" => RunStatus::RolledBack,
            _ => return None,
        })
    }
}

/// Record counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Records read from the source.
    pub read: u64,
    /// Records written to the sink.
    pub written: u64,
    /// Records that failed (dead letters).
    pub failed: u64,
}

/// A sync run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRun {
    /// Its id.
    pub id: RunId,
    /// The pipeline it ran.
    pub pipeline: String,
    /// Where it is.
    pub status: RunStatus,
    /// When it started.
    pub started_at: SystemTime,
    /// When it finished.
    pub finished_at: Option<SystemTime>,
    /// Its counts (as of its last update).
    pub counts: RunCounts,
    /// Why it failed.
    pub error: Option<String>,
    /// When its process last said it was alive (a running run's heartbeat).
    pub heartbeat_at: Option<SystemTime>,
}

/// A committed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    /// The pipeline.
    pub pipeline: String,
    /// The checkpoint (stream and opaque state).
    pub checkpoint: Checkpoint,
    /// The run that committed it.
    pub run: RunId,
    /// 1 for the stream's first checkpoint, then one more at every commit.
    pub sequence: i64,
    /// When it was committed.
    pub committed_at: SystemTime,
}

/// What a change did to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOperation {
    /// The record was created.
    Create,
    /// The record was changed.
    Update,
    /// The record was deleted.
    Delete,
    /// A change was undone by a rollback.
    Rollback,
}

impl AuditOperation {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOperation::Create => "create",
            AuditOperation::Update => "update",
            AuditOperation::Delete => "delete",
            AuditOperation::Rollback => "rollback",
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => AuditOperation::Create,
            "update" => AuditOperation::Update,
            "delete" => AuditOperation::Delete,
            "rollback" => AuditOperation::Rollback,
            _ => return None,
        })
    }
}

/// One change, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The run that made it.
    pub run: RunId,
    /// The stream of the record.
    pub stream: String,
    /// The record's key.
    pub record_key: String,
    /// What was done.
    pub operation: AuditOperation,
    /// The record before (none for a create).
    pub before: Option<serde_json::Value>,
    /// The record after (none for a delete): the whole after-image at
    /// [`AuditLevel::Full`]; at [`AuditLevel::Compact`] a create's key fields or an
    /// update's changed fields, with the whole image's digest in `after_sha256`.
    pub after: Option<serde_json::Value>,
    /// The SHA-256 (hex) of the whole after-image as compact JSON ([`image_sha256`]),
    /// when `after` holds only part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_sha256: Option<String>,
    /// Who made it (`engine`, `rollback:<user>` …).
    pub actor: String,
}

/// How much of each write a pipeline keeps in the audit log.
///
/// Written in a pipeline as `audit = "compact"` (the default, also `true`), `"full"` or
/// `"off"` (also `false`).
///
/// - `Compact` keeps what rollback and tamper evidence need: a create's key and the
///   SHA-256 of its after-image (the image itself is in the sink), an update's
///   before-image and changed fields, a delete's before-image.
/// - `Full` also keeps every after-image whole: a second copy of everything written.
/// - `Off` keeps nothing: the run cannot be rolled back.
///
/// ```
/// use moodbridge_core::state::AuditLevel;
/// #[derive(serde::Deserialize)]
/// struct P { audit: AuditLevel }
/// let read = |s: &str| toml::from_str::<P>(s).map(|p| p.audit);
/// assert_eq!(read("audit = true").unwrap(), AuditLevel::Compact);
/// assert_eq!(read("audit = \"full\"").unwrap(), AuditLevel::Full);
/// assert_eq!(read("audit = false").unwrap(), AuditLevel::Off);
/// let err = read("audit = \"most\"").unwrap_err().to_string();
/// assert!(err.contains("compact"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditLevel {
    /// No audit entries.
    Off,
    /// Keys, digests, before-images and changed fields (the default).
    #[default]
    Compact,
    /// As `Compact`, with every after-image whole.
    Full,
}

impl AuditLevel {
    /// `true` unless [`AuditLevel::Off`].
    pub fn is_on(self) -> bool {
        self != AuditLevel::Off
    }
}

impl<'de> Deserialize<'de> for AuditLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AuditLevel;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, \"compact\", \"full\" or \"off\"")
            }

            fn visit_bool<E: serde::de::Error>(
                self,
                v: bool,
            ) -> std::result::Result<AuditLevel, E> {
                Ok(if v {
                    AuditLevel::Compact
                } else {
                    AuditLevel::Off
                })
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<AuditLevel, E> {
                match v {
                    "compact" => Ok(AuditLevel::Compact),
                    "full" => Ok(AuditLevel::Full),
                    "off" => Ok(AuditLevel::Off),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The SHA-256 (hex) of a record image as compact JSON, fields in their order: what an
/// audit entry keeps as `after_sha256`. Re-hashing the record as the sink holds it tells
/// whether it is still as the run wrote it.
///
/// ```
/// use moodbridge_core::state::image_sha256;
/// let image = serde_json::json!({"Id": "001A", "Name": "Acme"});
/// let map = image.as_object().unwrap();
/// assert_eq!(image_sha256(map), image_sha256(map));
/// assert_eq!(image_sha256(map).len(), 64);
/// ```
pub fn image_sha256(image: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut bytes = Vec::with_capacity(1024);
    // Writing a map of JSON values into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut bytes, image);
    json_sha256(&bytes)
}

/// The SHA-256 (hex) of JSON already serialized.
pub(crate) fn json_sha256(json: &[u8]) -> String {
    hex_of(&Sha256::digest(json))
}

/// A SHA-256 digest in lowercase hex, encoded into a buffer at once (`hex::encode` goes
/// character by character, which shows at a million entries).
fn hex_of(digest: &[u8]) -> String {
    let mut out = [0u8; 64];
    match hex::encode_to_slice(digest, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        // Only a digest of another length could miss the buffer.
        Err(_) => hex::encode(digest),
    }
}

/// The fields of `after` that differ from `before` (a field missing from `before` reads
/// as null): what a compact audit entry keeps of an update.
pub(crate) fn changed_fields(
    after: &serde_json::Map<String, serde_json::Value>,
    before: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Value {
    let null = serde_json::Value::Null;
    serde_json::Value::Object(
        after
            .iter()
            .filter(|(k, v)| before.and_then(|b| b.get(*k)).unwrap_or(&null) != *v)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// An audit entry as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: i64,
    /// The change.
    pub entry: AuditEntry,
    /// When it was appended, in milliseconds since the epoch.
    pub at_ms: i64,
    /// The previous entry's hash (64 zeros for the first).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// The result of checking the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ChainStatus {
    /// Every entry is as it was appended.
    Intact {
        /// Entries checked.
        entries: u64,
    },
    /// The first entry that does not match the chain.
    Broken {
        /// Its sequence number.
        seq: i64,
        /// What does not match.
        reason: String,
    },
}

/// The hash of the chain before its first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an audit entry: SHA-256 over the previous hash, the sequence number, the
/// time and the entry's fields (JSON, fixed field order; `after_sha256` only when set), in
/// hex.
///
/// ```
/// use moodbridge_core::state::{AuditEntry, AuditOperation, GENESIS_HASH, RunId, audit_hash};
/// let entry = AuditEntry {
///     run: RunId(1),
///     stream: "Case".into(),
///     record_key: "500A".into(),
///     operation: AuditOperation::Create,
///     before: None,
///     after: Some(serde_json::json!({"Id": "500A"})),
///     after_sha256: None,
///     actor: "engine".into(),
/// };
/// let hash = audit_hash(GENESIS_HASH, 1, 1_700_000_000_000, &entry);
/// assert_eq!(hash.len(), 64);
/// assert_ne!(hash, audit_hash(GENESIS_HASH, 2, 1_700_000_000_000, &entry));
/// ```
pub fn audit_hash(prev_hash: &str, seq: i64, at_ms: i64, entry: &AuditEntry) -> String {
    let (before, after) = (image_text(&entry.before), image_text(&entry.after));
    audit_hash_of_images(
        prev_hash,
        seq,
        at_ms,
        entry,
        before.as_deref(),
        after.as_deref(),
        &mut Vec::new(),
    )
}

/// The end of the audit chain an append extends: each entry gets the next sequence
/// number, the append's timestamp and the hash linking it to the one before, by the same
/// rule for every store.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct ChainTail {
    seq: i64,
    prev: String,
    at: i64,
    scratch: Vec<u8>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl ChainTail {
    /// After `head` (the last entry's, or a purge anchor's, sequence number and hash);
    /// the genesis hash when the log has neither.
    pub(crate) fn new(head: Option<(i64, String)>, at_ms: i64) -> Self {
        let (seq, prev) = head.unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
        ChainTail {
            seq,
            prev,
            at: at_ms,
            scratch: Vec::new(),
        }
    }

    /// The time every entry of this append carries, milliseconds since the epoch.
    pub(crate) fn at(&self) -> i64 {
        self.at
    }

    /// Links `entry` (its images as stored): its sequence number, the previous entry's
    /// hash and its own.
    pub(crate) fn link(
        &mut self,
        entry: &AuditEntry,
        before: Option<&str>,
        after: Option<&str>,
    ) -> (i64, String, String) {
        self.seq += 1;
        let hash = audit_hash_of_images(
            &self.prev,
            self.seq,
            self.at,
            entry,
            before,
            after,
            &mut self.scratch,
        );
        let prev = std::mem::replace(&mut self.prev, hash.clone());
        (self.seq, prev, hash)
    }
}

/// An audit image as the log stores and hashes it: compact JSON.
pub(crate) fn image_text(image: &Option<serde_json::Value>) -> Option<String> {
    image
        .as_ref()
        .map(|v| serde_json::to_string(v).unwrap_or_default())
}

/// [`audit_hash`] with the before and after images already serialized (as the log
/// stores them), so that an append serializes each image once. `scratch` is reused
/// between calls. The hashed bytes are exactly those of the serde serialization of
/// the entry's fields in their fixed order (the test below holds the two together).
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "used by the SQL state stores")
)]
pub(crate) fn audit_hash_of_images(
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    entry: &AuditEntry,
    before: Option<&str>,
    after: Option<&str>,
    scratch: &mut Vec<u8>,
) -> String {
    fn number(out: &mut Vec<u8>, n: i64) {
        // A JSON integer, as `to_string` writes it; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &n);
    }
    fn text(out: &mut Vec<u8>, s: &str) {
        // A JSON string literal; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
    let out = scratch;
    out.clear();
    out.extend_from_slice(b"{\"run\":");
    number(out, entry.run.0);
    out.extend_from_slice(b",\"stream\":");
    text(out, &entry.stream);
    out.extend_from_slice(b",\"record_key\":");
    text(out, &entry.record_key);
    out.extend_from_slice(b",\"operation\":");
    text(out, entry.operation.as_str());
    out.extend_from_slice(b",\"before\":");
    out.extend_from_slice(before.unwrap_or("null").as_bytes());
    out.extend_from_slice(b",\"after\":");
    out.extend_from_slice(after.unwrap_or("null").as_bytes());
    // Absent unless set, so entries made before the field existed hash as they did.
    if let Some(digest) = &entry.after_sha256 {
        out.extend_from_slice(b",\"after_sha256\":");
        text(out, digest);
    }
    out.extend_from_slice(b",\"actor\":");
    text(out, &entry.actor);
    out.extend_from_slice(b",\"at_ms\":");
    number(out, at_ms);
    out.push(b'}');
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    let mut seq_text = Vec::with_capacity(20);
    number(&mut seq_text, seq);
    hasher.update(&seq_text);
    hasher.update(b"\n");
    hasher.update(&*out);
    hex_of(&hasher.finalize())
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Checks the audit chain one record at a time (records in `seq` order, from 1), so a
/// log of any length is verified in constant memory.
pub(crate) struct ChainVerifier {
    prev: String,
    expected_seq: i64,
    checked: u64,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl ChainVerifier {
    /// A verifier starting after the newest purge anchor (`None`: from the genesis).
    pub(crate) fn new(anchor: Option<(i64, String)>) -> Self {
        let (seq, prev) = anchor.unwrap_or((0, GENESIS_HASH.to_owned()));
        ChainVerifier {
            prev,
            expected_seq: seq + 1,
            checked: 0,
        }
    }

    /// Check the next record; `Some` describes the first break.
    pub(crate) fn check(&mut self, r: &AuditRecord) -> Option<ChainStatus> {
        let broken = |reason: String| Some(ChainStatus::Broken { seq: r.seq, reason });
        if r.seq != self.expected_seq {
            return broken(format!("entry {} is missing", self.expected_seq));
        }
        if r.prev_hash != self.prev {
            return broken("its previous-hash link does not match the entry before it".into());
        }
        if audit_hash(&self.prev, r.seq, r.at_ms, &r.entry) != r.hash {
            return broken("its content does not match its hash (altered)".into());
        }
        self.prev.clone_from(&r.hash);
        self.expected_seq += 1;
        self.checked += 1;
        None
    }

    pub(crate) fn finish(self) -> ChainStatus {
        ChainStatus::Intact {
            entries: self.checked,
        }
    }
}

/// Durable state of the sync engine. See the module docs. Every state store is also the
/// host's [`CursorStore`], [`EventLog`] and [`LeaseStore`].
#[async_trait]
pub trait StateStore: CursorStore + EventLog + LeaseStore + Send + Sync {
    /// Record the start of a run of `pipeline`.
    async fn start_run(&self, pipeline: &str) -> Result<RunId>;

    /// Update a running run's counts (a heartbeat too).
    async fn update_run(&self, run: RunId, counts: RunCounts) -> Result<()>;

    /// Record that a running run is alive: its process calls this every few seconds, so
    /// that a run whose process died can be told from one still going. A finished run
    /// is left as it is.
    async fn heartbeat_run(&self, run: RunId) -> Result<()>;

    /// Record the end of a run.
    async fn finish_run(
        &self,
        run: RunId,
        status: RunStatus,
        counts: RunCounts,
        error: Option<&str>,
    ) -> Result<()>;

    /// One run.
    async fn run(&self, run: RunId) -> Result<SyncRun>;

    /// The newest `limit` runs of `pipeline`, newest first.
    async fn recent_runs(&self, pipeline: &str, limit: u32) -> Result<Vec<SyncRun>>;

    /// Commit `checkpoint` as the stream's resumption point; returns its sequence number.
    /// Call only after the sink has durably written every record before it.
    async fn commit_checkpoint(
        &self,
        pipeline: &str,
        checkpoint: &Checkpoint,
        run: RunId,
    ) -> Result<i64>;

    /// The last committed checkpoint of `stream`.
    async fn checkpoint(&self, pipeline: &str, stream: &str) -> Result<Option<StoredCheckpoint>>;

    /// Append changes to the audit log (in one transaction); returns their sequence numbers.
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<i64>>;

    /// A run's audit entries, in order.
    async fn audit(&self, run: RunId) -> Result<Vec<AuditRecord>>;

    /// Check the whole audit chain (from the newest purge anchor, if the log was purged).
    async fn verify_audit(&self) -> Result<ChainStatus>;

    /// Register an integration, or update its kind and metadata.
    async fn put_integration(&self, integration: &IntegrationEntry) -> Result<()>;

    /// The registered integrations, by id.
    async fn integrations(&self) -> Result<Vec<IntegrationEntry>>;

    /// Set one configuration value of a registered integration (never a secret: store a
    /// reference such as `secret:salesforce/prod/client_secret`).
    async fn set_platform_config(
        &self,
        integration: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<()>;

    /// The configuration of an integration (empty if none was set).
    async fn platform_config(&self, integration: &str) -> Result<PlatformConfig>;

    /// Record a record that could not be moved. A record that is already an open dead
    /// letter of the stream gets its reason, stage, run and last-seen time updated and its
    /// attempts counted up; returns the dead letter's id.
    async fn put_dead_letter(&self, letter: &NewDeadLetter) -> Result<i64>;

    /// Open dead letters of `pipeline` (of one stream, or all), oldest first, at most `limit`.
    async fn dead_letters(
        &self,
        pipeline: &str,
        stream: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>>;

    /// Mark a dead letter resolved (its record was replayed and written, or discarded by a
    /// person). It is no longer listed; retention purges it later.
    async fn resolve_dead_letter(&self, id: i64) -> Result<()>;

    /// Park a conflict for review; a record already parked gets its images updated.
    /// Returns the conflict's id.
    async fn park_conflict(&self, conflict: &NewConflict) -> Result<i64>;

    /// Open conflicts of `pipeline`, oldest first, at most `limit`.
    async fn conflicts(&self, pipeline: &str, limit: u32) -> Result<Vec<Conflict>>;

    /// Close a parked conflict with a note of how it was resolved.
    async fn resolve_conflict(&self, id: i64, resolution: &str) -> Result<()>;

    /// What a bidirectional sync last wrote for each of `keys` of `stream` (fingerprints
    /// of the synced fields), by key; keys never written are absent.
    async fn fingerprints(
        &self,
        pipeline: &str,
        stream: &str,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, String>>;

    /// Remember what a bidirectional sync wrote: `(record key, fingerprint)` pairs.
    async fn put_fingerprints(
        &self,
        pipeline: &str,
        stream: &str,
        prints: &[(String, String)],
    ) -> Result<()>;

    /// Purge rows older than the policy allows, measured back from `now`.
    async fn purge_as_of(&self, policy: &RetentionPolicy, now: SystemTime) -> Result<PurgeReport>;

    /// Purge rows older than the policy allows.
    async fn purge(&self, policy: &RetentionPolicy) -> Result<PurgeReport> {
        self.purge_as_of(policy, SystemTime::now()).await
    }
}

#[cfg(test)]
mod hash_tests {
    use super::*;
    use proptest::prelude::*;

    /// The hash as it was first defined: serde over a struct of the entry's fields.
    fn reference_hash(prev_hash: &str, seq: i64, at_ms: i64, entry: &AuditEntry) -> String {
        #[derive(Serialize)]
        struct Hashed<'a> {
            run: i64,
            stream: &'a str,
            record_key: &'a str,
            operation: &'a str,
            before: &'a Option<serde_json::Value>,
            after: &'a Option<serde_json::Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            after_sha256: &'a Option<String>,
            actor: &'a str,
            at_ms: i64,
        }
        let body = serde_json::to_vec(&Hashed {
            run: entry.run.0,
            stream: &entry.stream,
            record_key: &entry.record_key,
            operation: entry.operation.as_str(),
            before: &entry.before,
            after: &entry.after,
            after_sha256: &entry.after_sha256,
            actor: &entry.actor,
            at_ms,
        })
        .unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(prev_hash.as_bytes());
        hasher.update(b"\n");
        hasher.update(seq.to_string().as_bytes());
        hasher.update(b"\n");
        hasher.update(&body);
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    proptest! {
        #[test]
        fn the_hash_is_the_serde_serialization_hashed(
            run in any::<i64>(),
            stream in ".*",
            key in ".*",
            actor in ".*",
            name in ".*",
            value in ".*",
            number in any::<i64>(),
            seq in any::<i64>(),
            at in any::<i64>(),
            op in 0..3usize,
            has_before in any::<bool>(),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let image = serde_json::json!({name.clone(): value, "n": number, "f": 1.5, "b": true, "z": null});
            let entry = AuditEntry {
                run: RunId(run),
                stream,
                record_key: key,
                operation: [AuditOperation::Create, AuditOperation::Update, AuditOperation::Delete][op],
                before: has_before.then(|| image.clone()),
                after: Some(image),
                after_sha256: digest,
                actor,
            };
            prop_assert_eq!(audit_hash("prev", seq, at, &entry), reference_hash("prev", seq, at, &entry));
        }
    }
}
