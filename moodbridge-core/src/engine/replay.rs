//! Second chances and undo: replaying dead letters through a stream's transform and sink,
//! and rolling a run back by restoring the before-images its audit entries recorded.
//! Both are runs of their own, audited like any other.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pipeline::StreamPlan;
use super::{Body, Pipeline, SyncEngine, audit, audit_op, mode_key, write_through};
use crate::catalog::StreamDescriptor;
use crate::error::{Error, ErrorKind, Result};
use crate::record::{Record, RecordBatch};
use crate::state::{
    AuditEntry, AuditOperation, AuditRecord, FailureStage, NewDeadLetter, RunCounts, RunId,
    RunStatus,
};
use crate::sync::{FailureKind, SyncSink, SyncSource, WriteMode};

/// Dead letters fetched by one replay (they are expected to be few; replay again for more).
const REPLAY_LIMIT: u32 = 100_000;
/// Records per sink call during replay and rollback.
const CHUNK: usize = 500;

/// What a dead-letter replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// The replay's own run.
    pub run: RunId,
    /// Dead letters tried.
    pub replayed: u64,
    /// Written this time and resolved.
    pub resolved: u64,
    /// Failed again (their attempts counted up, reason updated).
    pub still_failing: u64,
}

/// What a rollback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackReport {
    /// The rollback's own run.
    pub run: RunId,
    /// The run rolled back.
    pub of: RunId,
    /// Records put back to their before-image.
    pub restored: u64,
    /// Records the run had created, deleted again.
    pub deleted: u64,
    /// Records that could not be restored (the run is then not marked rolled back).
    pub failed: u64,
}

impl SyncEngine {
    /// Replay the open dead letters of `stream`: each original record goes through the
    /// stream's mapping, sanitising and validation again and is written to `sink`; those
    /// that get through are resolved, the others stay with their new reason. `source` is
    /// asked only for its catalog (the target's key).
    pub async fn replay_dead_letters(
        &self,
        pipeline: &Pipeline,
        stream: &str,
        source: &dyn SyncSource,
        sink: &dyn SyncSink,
    ) -> Result<ReplayReport> {
        let (plan, target, mode) = self.target_of(pipeline, stream, source).await?;
        if mode == WriteMode::Overwrite {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("stream {stream} is written in overwrite mode: its next run replaces every record"),
            )
            .with_hint("run the pipeline again instead of replaying"));
        }
        let letters = self
            .state
            .dead_letters(pipeline.name(), Some(stream), REPLAY_LIMIT)
            .await?;
        let (run, _heartbeat) = self.begin_run(pipeline.name()).await?;
        let mut report = ReplayReport {
            run,
            replayed: letters.len() as u64,
            resolved: 0,
            still_failing: 0,
        };
        let letter = |record: Record, key: &str, stage, reason: String| NewDeadLetter {
            pipeline: pipeline.name().to_owned(),
            stream: stream.to_owned(),
            record_key: key.to_owned(),
            record,
            reason,
            stage,
            run: Some(run),
        };
        let key_fields = mode_key(&mode, &target);
        let result: Result<()> = async {
            for chunk in letters.chunks(CHUNK) {
                let mut ready = Vec::new();
                let mut records = Vec::new();
                for l in chunk {
                    let mut record = l.record.clone();
                    match plan.transform(&mut record) {
                        Ok(()) => {
                            ready.push(l);
                            records.push(record);
                        }
                        Err((stage, reason)) => {
                            report.still_failing += 1;
                            self.state
                                .put_dead_letter(&letter(
                                    l.record.clone(),
                                    &l.record_key,
                                    stage,
                                    reason,
                                ))
                                .await?;
                        }
                    }
                }
                if records.is_empty() {
                    continue;
                }
                let batch = RecordBatch::new(&target.name, records);
                let written = write_through(self, sink, &batch, &mode).await?;
                written.check_complete(batch.len())?;
                let mut audit = Vec::new();
                let head = audit::EntryHead {
                    run,
                    stream: target.name.clone(),
                    actor: format!("{}:replay", pipeline.config().actor),
                    level: pipeline.config().audit,
                    key_fields: key_fields.clone(),
                };
                let mut body = Body::Records(batch.records);
                let mut scratch = Vec::new();
                for o in written.outcomes {
                    let l = ready[o.index];
                    match &o.result {
                        Ok(action) => {
                            report.resolved += 1;
                            self.state.resolve_dead_letter(l.id).await?;
                            if let Some(operation) =
                                audit_op(*action).filter(|_| head.level.is_on())
                            {
                                let image = audit::after_image(
                                    &mut body,
                                    o.index,
                                    head.level,
                                    operation,
                                    o.before.as_ref(),
                                    &head.key_fields,
                                    &mut scratch,
                                );
                                audit.push(head.entry(operation, image, o.before));
                            }
                        }
                        Err(f) => {
                            report.still_failing += 1;
                            self.state
                                .put_dead_letter(&letter(
                                    l.record.clone(),
                                    &l.record_key,
                                    FailureStage::Write,
                                    f.message.clone(),
                                ))
                                .await?;
                        }
                    }
                }
                if !audit.is_empty() {
                    self.state.append_audit(&audit).await?;
                }
            }
            sink.flush(&target.name).await
        }
        .await;
        let counts = RunCounts {
            read: report.replayed,
            written: report.resolved,
            failed: report.still_failing,
        };
        self.end_side_run(run, counts, &result).await?;
        result.map(|()| report)
    }

    /// Undo run `of` of `pipeline`: walking its audit entries newest first, records it
    /// created are deleted and records it changed or deleted are written back as they
    /// were. Refused (`Conflict`) when a later run of the pipeline changed data and was
    /// not rolled back itself: roll back the newest first. The rollback is a run of its
    /// own whose audit entries (operation `rollback`, actor `rollback:<actor>`) record
    /// each restore; the undone run is marked `rolled_back` when every record was
    /// restored.
    pub async fn rollback(
        &self,
        pipeline: &Pipeline,
        of: RunId,
        source: &dyn SyncSource,
        sink: &dyn SyncSink,
        actor: &str,
    ) -> Result<RollbackReport> {
        let target_run = self.state.run(of).await?;
        if target_run.pipeline != pipeline.name() {
            return Err(Error::invalid_input(format!(
                "{of} belongs to pipeline {}, not {}",
                target_run.pipeline,
                pipeline.name()
            )));
        }
        if target_run.status == RunStatus::RolledBack {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{of} is already rolled back"),
            ));
        }
        for later in self.state.recent_runs(pipeline.name(), 1_000).await? {
            if later.id > of
                && later.status != RunStatus::RolledBack
                && self
                    .state
                    .audit(later.id)
                    .await?
                    .iter()
                    .any(|e| e.entry.operation != AuditOperation::Rollback)
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("{} changed data after {of}", later.id),
                )
                .with_hint("roll back the newer run first"));
            }
        }
        let entries = self.state.audit(of).await?;
        let (run, _heartbeat) = self.begin_run(pipeline.name()).await?;
        let mut report = RollbackReport {
            run,
            of,
            restored: 0,
            deleted: 0,
            failed: 0,
        };
        let result = self
            .undo(pipeline, &entries, run, source, sink, actor, &mut report)
            .await;
        let counts = RunCounts {
            read: entries.len() as u64,
            written: report.restored + report.deleted,
            failed: report.failed,
        };
        self.end_side_run(run, counts, &result).await?;
        result?;
        if report.failed == 0 {
            self.state
                .finish_run(
                    of,
                    RunStatus::RolledBack,
                    target_run.counts,
                    target_run.error.as_deref(),
                )
                .await?;
        }
        Ok(report)
    }

    #[allow(clippy::too_many_arguments, reason = "one private step of rollback")]
    async fn undo(
        &self,
        pipeline: &Pipeline,
        entries: &[AuditRecord],
        run: RunId,
        source: &dyn SyncSource,
        sink: &dyn SyncSink,
        actor: &str,
        report: &mut RollbackReport,
    ) -> Result<()> {
        let mut plans = std::collections::HashMap::new();
        // Newest first; consecutive entries of one stream and one kind of undo go to the
        // sink together (within a batch the later position wins, so the earliest
        // before-image of a record written twice is what remains).
        let mut pending: Vec<&AuditRecord> = Vec::new();
        for e in entries.iter().rev() {
            if let Some(first) = pending.first()
                && (first.entry.stream != e.entry.stream
                    || is_create(first) != is_create(e)
                    || pending.len() >= CHUNK)
            {
                self.undo_batch(
                    pipeline, &pending, run, source, sink, actor, &mut plans, report,
                )
                .await?;
                pending.clear();
            }
            pending.push(e);
        }
        if !pending.is_empty() {
            self.undo_batch(
                pipeline, &pending, run, source, sink, actor, &mut plans, report,
            )
            .await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments, reason = "one private step of rollback")]
    async fn undo_batch(
        &self,
        pipeline: &Pipeline,
        entries: &[&AuditRecord],
        run: RunId,
        source: &dyn SyncSource,
        sink: &dyn SyncSink,
        actor: &str,
        plans: &mut std::collections::HashMap<String, (StreamDescriptor, WriteMode)>,
        report: &mut RollbackReport,
    ) -> Result<()> {
        let stream = entries[0].entry.stream.clone();
        if !plans.contains_key(&stream) {
            let plan = pipeline
                .plans()
                .iter()
                .find(|p| p.target() == stream)
                .ok_or_else(|| {
                    Error::config(format!(
                        "the audit log names stream {stream}, which pipeline {} no longer writes",
                        pipeline.name()
                    ))
                })?;
            let (_, target, mode) = self.target_of(pipeline, &plan.config.name, source).await?;
            plans.insert(stream.clone(), (target, mode));
        }
        let (target, mode) = &plans[&stream];
        let key = mode_key(mode, target);
        let image = |v: &Option<Value>| {
            v.clone()
                .map(Record::from_json)
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let deleting = is_create(entries[0]);
        let records = entries
            .iter()
            .map(|e| {
                image(if deleting {
                    &e.entry.after
                } else {
                    &e.entry.before
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::new(&stream, records);
        let written = if deleting {
            self.sink_policy
                .call_as("delete", || sink.delete(&batch, &key))
                .await?
        } else {
            let upsert = WriteMode::Upsert { key: key.clone() };
            write_through(self, sink, &batch, &upsert).await?
        };
        written.check_complete(batch.len())?;
        let mut audit = Vec::new();
        for o in &written.outcomes {
            let e = &entries[o.index].entry;
            let gone = matches!(&o.result, Err(f) if deleting && f.kind == FailureKind::NotFound);
            if o.result.is_ok() || gone {
                if deleting {
                    report.deleted += 1;
                } else {
                    report.restored += 1;
                }
                audit.push(AuditEntry {
                    run,
                    stream: stream.clone(),
                    record_key: e.record_key.clone(),
                    operation: AuditOperation::Rollback,
                    before: e.after.clone(),
                    after: e.before.clone(),
                    after_sha256: None,
                    actor: format!("rollback:{actor}"),
                });
            } else {
                report.failed += 1;
            }
        }
        if !audit.is_empty() {
            self.state.append_audit(&audit).await?;
        }
        sink.flush(&stream).await
    }

    async fn target_of<'p>(
        &self,
        pipeline: &'p Pipeline,
        stream: &str,
        source: &dyn SyncSource,
    ) -> Result<(&'p StreamPlan, StreamDescriptor, WriteMode)> {
        let plan = pipeline.plan(stream).ok_or_else(|| {
            Error::invalid_input(format!(
                "pipeline {} has no stream {stream}",
                pipeline.name()
            ))
        })?;
        let catalog = self
            .source_policy
            .call_as("discover", || source.discover())
            .await?;
        let descriptor = catalog
            .stream(stream)
            .ok_or_else(|| Error::config(format!("the source does not offer stream {stream}")))?;
        let target = plan.describe(descriptor);
        let mode = plan.write_mode(&target);
        Ok((plan, target, mode))
    }

    async fn end_side_run(&self, run: RunId, counts: RunCounts, result: &Result<()>) -> Result<()> {
        let (status, error) = match result {
            Ok(()) => (RunStatus::Succeeded, None),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        self.state
            .finish_run(run, status, counts, error.as_deref())
            .await
    }
}

fn is_create(e: &AuditRecord) -> bool {
    e.entry.operation == AuditOperation::Create
}
