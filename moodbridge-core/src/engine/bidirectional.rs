//! Bidirectional sync of one stream between two systems, each both a source and a sink
//! (e.g. Salesforce and the case-management database).
//!
//! One run:
//! 1. reads what changed on each side since that side's last committed checkpoint;
//! 2. drops **echoes** — changes whose synced fields are exactly what this sync last
//!    wrote for the record (its own write, seen coming back): the loop prevention;
//! 3. finds **conflicts** — records changed on both sides — and resolves each by the
//!    policy: last writer wins (by a timestamp field), source (left) wins, target (right)
//!    wins, or park for review (neither side is touched; see `StateStore::conflicts`);
//! 4. writes each side's changes to the other (upsert by the shared key), records what
//!    was written (fingerprints, audit log), flushes both sinks, and only then commits
//!    both checkpoints.
//!
//! A run holds one run's changes in memory: schedule it often enough that deltas stay
//! modest. Deletes are not propagated (sources report changed records, not tombstones).

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{SyncEngine, audit_op, key_of, write_through};
use crate::catalog::SyncMode;
use crate::config::{Validate, Validator};
use crate::error::{Error, Result};
use crate::record::{Record, RecordBatch};
use crate::state::{
    AuditEntry, FailureStage, NewConflict, NewDeadLetter, RunCounts, RunId, RunStatus,
};
use crate::sync::{Checkpoint, ReadRequest, SourceMessage, SyncSink, SyncSource, WriteMode};

/// How a record changed on both sides is resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum ConflictPolicy {
    /// The side whose `field` (a timestamp such as `LastModifiedDate`, compared as RFC
    /// 3339 text or as numbers) is later wins; a tie goes to the left.
    LastWriterWins {
        /// The timestamp field.
        field: String,
    },
    /// The left (source) side wins.
    SourceWins,
    /// The right (target) side wins.
    TargetWins,
    /// Neither side is changed; the conflict is parked in the state store for a person.
    Park,
}

/// One stream synced both ways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BidirectionalConfig {
    /// The pipeline's name (the key of its runs, checkpoints and fingerprints).
    pub name: String,
    /// The stream, named the same on both sides.
    pub stream: String,
    /// The fields that identify a record on both sides (an external id).
    pub key: Vec<String>,
    /// Fields each system manages itself (ids, modification stamps): neither compared
    /// nor written to the other side.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// The conflict policy.
    pub conflicts: ConflictPolicy,
    /// Preferred records per read batch.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

impl Validate for BidirectionalConfig {
    fn validate_into(&self, v: &mut Validator) {
        if self.name.trim().is_empty() {
            v.problem("name", "is empty", "name the pipeline");
        }
        if self.stream.is_empty() {
            v.problem("stream", "is empty", "name the stream to sync");
        }
        if self.key.is_empty() {
            v.problem(
                "key",
                "is empty",
                "name the fields that identify a record on both sides",
            );
        }
        if let Some(k) = self.key.iter().find(|k| self.ignore.contains(k)) {
            v.problem(
                "ignore",
                format!("lists key field {k}"),
                "the key must be synced: remove it from ignore",
            );
        }
        if let ConflictPolicy::LastWriterWins { field } = &self.conflicts
            && field.is_empty()
        {
            v.problem(
                "conflicts.field",
                "is empty",
                "name the timestamp field that decides",
            );
        }
    }
}

/// One side of a bidirectional sync.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    /// Reads its changes.
    pub source: &'a dyn SyncSource,
    /// Takes the other side's changes.
    pub sink: &'a dyn SyncSink,
}

/// What a bidirectional run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidirectionalReport {
    /// The run.
    pub run: RunId,
    /// Records written to the right side.
    pub left_to_right: u64,
    /// Records written to the left side.
    pub right_to_left: u64,
    /// Changes recognised as this sync's own writes coming back, and dropped.
    pub echoes: u64,
    /// Records changed on both sides.
    pub conflicts: u64,
    /// Of those, parked for review.
    pub parked: u64,
    /// Records a side refused (dead letters).
    pub failed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    LeftToRight,
    RightToLeft,
}

impl Dir {
    fn target(self) -> &'static str {
        match self {
            Dir::LeftToRight => "right",
            Dir::RightToLeft => "left",
        }
    }
}

/// The fingerprint of a record's synced fields: SHA-256 of their canonical JSON.
fn fingerprint(record: &Record, ignore: &[String]) -> String {
    let canonical: BTreeMap<&String, &Value> = record
        .fields()
        .iter()
        .filter(|(k, _)| !ignore.contains(k))
        .collect();
    let digest = Sha256::digest(serde_json::to_vec(&canonical).unwrap_or_default());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn later(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x > y,
        _ => a.as_str().unwrap_or("") > b.as_str().unwrap_or(""),
    }
}

impl SyncEngine {
    /// Run a bidirectional sync once. See the module docs.
    pub async fn run_bidirectional(
        &self,
        config: &BidirectionalConfig,
        left: Side<'_>,
        right: Side<'_>,
    ) -> Result<BidirectionalReport> {
        config.validate()?;
        let (run, _heartbeat) = self.begin_run(&config.name).await?;
        let mut report = BidirectionalReport {
            run,
            left_to_right: 0,
            right_to_left: 0,
            echoes: 0,
            conflicts: 0,
            parked: 0,
            failed: 0,
        };
        let result = self.sync_both_ways(config, left, right, &mut report).await;
        let counts = RunCounts {
            read: report.left_to_right + report.right_to_left + report.echoes + report.conflicts,
            written: report.left_to_right + report.right_to_left,
            failed: report.failed,
        };
        let (status, error) = match &result {
            Ok(()) => (RunStatus::Succeeded, None),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        self.state
            .finish_run(run, status, counts, error.as_deref())
            .await?;
        result.map(|()| report)
    }

    async fn sync_both_ways(
        &self,
        config: &BidirectionalConfig,
        left: Side<'_>,
        right: Side<'_>,
        report: &mut BidirectionalReport,
    ) -> Result<()> {
        let (left_changes, left_cp) = self.changes(config, "left", left.source).await?;
        let (right_changes, right_cp) = self.changes(config, "right", right.source).await?;
        let keys: Vec<String> = left_changes
            .keys()
            .chain(right_changes.keys())
            .cloned()
            .collect();
        let known = self
            .state
            .fingerprints(&config.name, &config.stream, &keys)
            .await?;
        let is_echo = |key: &str, record: &Record| {
            known
                .get(key)
                .is_some_and(|fp| *fp == fingerprint(record, &config.ignore))
        };

        let mut to_right: Vec<Record> = Vec::new();
        let mut to_left: Vec<Record> = Vec::new();
        for (key, l) in &left_changes {
            let l_echo = is_echo(key, l);
            match right_changes.get(key) {
                None if l_echo => report.echoes += 1,
                None => to_right.push(l.clone()),
                Some(r) => {
                    let r_echo = is_echo(key, r);
                    match (l_echo, r_echo) {
                        (true, true) => report.echoes += 2,
                        (true, false) => {
                            report.echoes += 1;
                            to_left.push(r.clone());
                        }
                        (false, true) => {
                            report.echoes += 1;
                            to_right.push(l.clone());
                        }
                        (false, false)
                            if fingerprint(l, &config.ignore) == fingerprint(r, &config.ignore) =>
                        {
                            // The same change on both sides: nothing to do but remember it.
                            self.state
                                .put_fingerprints(
                                    &config.name,
                                    &config.stream,
                                    &[(key.clone(), fingerprint(l, &config.ignore))],
                                )
                                .await?;
                        }
                        (false, false) => {
                            report.conflicts += 1;
                            match &config.conflicts {
                                ConflictPolicy::SourceWins => to_right.push(l.clone()),
                                ConflictPolicy::TargetWins => to_left.push(r.clone()),
                                ConflictPolicy::LastWriterWins { field } => {
                                    let lt = l.get(field).unwrap_or(&Value::Null);
                                    let rt = r.get(field).unwrap_or(&Value::Null);
                                    if later(rt, lt) {
                                        to_left.push(r.clone());
                                    } else {
                                        to_right.push(l.clone());
                                    }
                                }
                                ConflictPolicy::Park => {
                                    report.parked += 1;
                                    self.state
                                        .park_conflict(&NewConflict {
                                            pipeline: config.name.clone(),
                                            stream: config.stream.clone(),
                                            record_key: key.clone(),
                                            left: Some(l.clone()),
                                            right: Some(r.clone()),
                                            run: Some(report.run),
                                        })
                                        .await?;
                                }
                            }
                        }
                    }
                }
            }
        }
        for (key, r) in &right_changes {
            if left_changes.contains_key(key) {
                continue;
            }
            if is_echo(key, r) {
                report.echoes += 1;
            } else {
                to_left.push(r.clone());
            }
        }

        report.left_to_right = self
            .push(config, Dir::LeftToRight, right.sink, to_right, report)
            .await?;
        report.right_to_left = self
            .push(config, Dir::RightToLeft, left.sink, to_left, report)
            .await?;
        // Both sides hold what was read; only now may the read positions move on.
        for (side, cp) in [("left", left_cp), ("right", right_cp)] {
            if let Some(cp) = cp {
                let cp = Checkpoint::new(format!("{side}:{}", config.stream), cp.state);
                self.state
                    .commit_checkpoint(&config.name, &cp, report.run)
                    .await?;
            }
        }
        Ok(())
    }

    /// Every change on one side since its last committed checkpoint, by key, and the
    /// checkpoint after them.
    async fn changes(
        &self,
        config: &BidirectionalConfig,
        side: &str,
        source: &dyn SyncSource,
    ) -> Result<(HashMap<String, Record>, Option<Checkpoint>)> {
        let stored = self
            .state
            .checkpoint(&config.name, &format!("{side}:{}", config.stream))
            .await?;
        let mut request = ReadRequest::new(&config.stream, SyncMode::Incremental);
        if let Some(size) = config.batch_size {
            request = request.batch_size(size);
        }
        if let Some(s) = stored {
            request = request.resume_from(Checkpoint::new(&config.stream, s.checkpoint.state));
        }
        let mut messages = self
            .source_policy
            .call_as("read", || source.read(request.clone()))
            .await?;
        let mut out = HashMap::new();
        let mut last = None;
        while let Some(m) = messages.next().await {
            let batch = match m? {
                SourceMessage::Records(batch) => batch,
                SourceMessage::Rows(rows) => rows.to_records(),
                // A bidirectional sync reconciles live records; deletes are not carried
                // across (either side would resurrect or remove the other's records).
                SourceMessage::Deletes(_) => continue,
                SourceMessage::Checkpoint(cp) => {
                    last = Some(cp);
                    continue;
                }
            };
            for r in batch.records {
                let key = r.key(&config.key).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "a {side} record of {} has no value for key {}",
                        config.stream,
                        config.key.join(", ")
                    ))
                })?;
                out.insert(key.to_string(), r);
            }
        }
        Ok((out, last))
    }

    /// Write `records` to one side; remember what was written. Returns how many were.
    async fn push(
        &self,
        config: &BidirectionalConfig,
        dir: Dir,
        sink: &dyn SyncSink,
        records: Vec<Record>,
        report: &mut BidirectionalReport,
    ) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        let mode = WriteMode::Upsert {
            key: config.key.clone(),
        };
        let outgoing: Vec<Record> = records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.fields_mut().retain(|k, _| !config.ignore.contains(k));
                r
            })
            .collect();
        let mut written = 0;
        for chunk in outgoing.chunks(config.batch_size.unwrap_or(ReadRequest::DEFAULT_BATCH_SIZE)) {
            let batch = RecordBatch::new(&config.stream, chunk.to_vec());
            let result = write_through(self, sink, &batch, &mode).await?;
            result.check_complete(batch.len())?;
            let mut prints = Vec::new();
            let mut audit = Vec::new();
            for o in &result.outcomes {
                let r = &batch.records[o.index];
                let key = key_of(r, &config.key);
                match &o.result {
                    Ok(action) => {
                        written += 1;
                        prints.push((key.clone(), fingerprint(r, &config.ignore)));
                        if let Some(op) = audit_op(*action) {
                            audit.push(AuditEntry {
                                run: report.run,
                                stream: format!("{}:{}", dir.target(), config.stream),
                                record_key: key,
                                operation: op,
                                before: o
                                    .before
                                    .as_ref()
                                    .map(|b| Value::Object(b.fields().clone())),
                                after: Some(Value::Object(r.fields().clone())),
                                after_sha256: None,
                                actor: "engine:bidirectional".into(),
                            });
                        }
                    }
                    Err(f) => {
                        report.failed += 1;
                        self.state
                            .put_dead_letter(&NewDeadLetter {
                                pipeline: config.name.clone(),
                                stream: format!("{}:{}", dir.target(), config.stream),
                                record_key: key,
                                record: r.clone(),
                                reason: f.message.clone(),
                                stage: FailureStage::Write,
                                run: Some(report.run),
                            })
                            .await?;
                    }
                }
            }
            sink.flush(&config.stream).await?;
            self.state
                .put_fingerprints(&config.name, &config.stream, &prints)
                .await?;
            if !audit.is_empty() {
                self.state.append_audit(&audit).await?;
            }
        }
        Ok(written)
    }
}
