//! The sync engine: drives [`SyncSource`] → mapping → sanitising → validation →
//! [`SyncSink`], stream by stream, keeping its durable state in a [`StateStore`].
//!
//! The rules it keeps:
//! - **A checkpoint is committed only after the sink has durably written every record
//!   before it** ([`SyncSink::flush`] first) **and the audit of those writes is
//!   appended**; the commit itself runs while the next batch is written. After a crash a
//!   run resumes from the last committed checkpoint; delivery is at-least-once, and a
//!   sink that upserts by primary key makes the end state exact.
//! - Rows stay rows: a source that yields column-shaped [`RowBatch`]es has them mapped,
//!   sanitised and validated as rows (no record is made per row) and written with
//!   [`SyncSink::write_rows`], with exactly the results the same records would get.
//! - **One bad record never stops a run**: a record that fails mapping, validation or
//!   writing becomes a dead letter (with the original record and the reason) and the run
//!   goes on. Dead letters can be listed and replayed ([`SyncEngine::replay_dead_letters`]).
//! - **Every write is audited** with what undoing it needs — a create's key and image
//!   digest, an update's before-image and changed fields, a delete's before-image — or
//!   whole after-images as well ([`AuditLevel`](crate::state::AuditLevel)), so a run can
//!   be rolled back ([`SyncEngine::rollback`]); the rollback is audited too. The entries
//!   are made and appended off the write path, while the sink takes the next batch.
//! - Temporary errors are retried by the engine's policies (sink writes only when the
//!   write mode is idempotent or the sink said nothing was written); a source stream that
//!   breaks with a temporary error is reopened from the last committed checkpoint.
//!
//! ```
//! use std::sync::Arc;
//! use moodbridge_core::engine::{Pipeline, PipelineConfig, StreamConfig, SyncEngine};
//! use moodbridge_core::testing::{MemorySink, MemorySource};
//! use moodbridge_core::state::SqliteStateStore;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let state = Arc::new(SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap());
//! let source = MemorySource::accounts(1_000);
//! let sink = MemorySink::new();
//! let pipeline = Pipeline::new(PipelineConfig::new("demo", vec![StreamConfig::new("Account")])).unwrap();
//!
//! let report = SyncEngine::new(state).run(&pipeline, &source, &sink).await.unwrap();
//! assert_eq!(report.counts.written, 1_000);
//! assert_eq!(sink.len("Account"), 1_000);
//! # });
//! ```

mod audit;
mod bidirectional;
mod consumer;
mod filter;
mod mapping;
mod pipeline;
mod progress;
mod queue_ingest;
mod replay;
mod routing;
mod row_path;
mod schedule;
mod validation;

pub use bidirectional::{BidirectionalConfig, BidirectionalReport, ConflictPolicy, Side};
pub use consumer::{
    ConsumeReport, EVENTS_DEAD_LETTERS, EVENTS_HANDLED, EVENTS_LAG, EVENTS_LATENCY,
    EVENTS_OLDEST_AGE, EVENTS_PARTITION, EventConsumer, EventHandler, Lag, LagThresholds,
    Resequence, purge_consumed_events,
};
pub use filter::FilterPolicy;
pub use mapping::{CastType, MapStep, Mapping};
pub use pipeline::{DeleteMode, Pipeline, PipelineConfig, StreamConfig};
pub use progress::{ProgressEvent, StreamProgress};
pub use queue_ingest::QueueIngest;
pub use replay::{ReplayReport, RollbackReport};
pub use routing::{EventRouter, Match, SinkHandler, SyncTrigger};
pub use schedule::{Job, Schedule, Tick, Worker};
pub use validation::{Rule, Rules, Sanitize, ValueType};

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::catalog::{StreamDescriptor, SyncMode};
use crate::error::{Error, ErrorKind, Result};
use crate::observe::metric;
use crate::record::{Record, RecordBatch};
use crate::resilience::layer::write_operation;
use crate::resilience::{Operation, Policy, RetryConfig};
use crate::rows::RowBatch;
use crate::state::{
    AuditEntry, AuditOperation, FailureStage, NewDeadLetter, RunCounts, RunId, RunStatus,
    StateStore,
};
use crate::sync::{
    Checkpoint, FailureKind, ReadRequest, RecordFailure, SourceMessage, SyncSink, SyncSource,
    WriteAction, WriteMode, WriteReport,
};
use pipeline::StreamPlan;
use row_path::RowProgram;

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The run.
    pub run: RunId,
    /// Its totals.
    pub counts: RunCounts,
    /// Each stream's final progress, in pipeline order.
    pub streams: Vec<(String, StreamProgress)>,
}

/// The sync engine. Cheap to clone; share one per state store.
#[derive(Clone)]
pub struct SyncEngine {
    state: Arc<dyn StateStore>,
    source_policy: Policy,
    sink_policy: Policy,
    events: broadcast::Sender<ProgressEvent>,
    reopen_limit: u32,
    liveness: Liveness,
}

/// How a running run shows it is alive, and when a silent one is taken for dead.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    heartbeat: std::time::Duration,
    abandon_after: std::time::Duration,
}

/// A run's heartbeat, beating until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("source_policy", &self.source_policy)
            .field("sink_policy", &self.sink_policy)
            .finish_non_exhaustive()
    }
}

impl SyncEngine {
    /// An engine keeping its state in `state`, retrying source and sink calls with the
    /// default [`RetryConfig`].
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        let (events, _) = broadcast::channel(1024);
        SyncEngine {
            state,
            source_policy: Policy::builder("sync.source")
                .retry(RetryConfig::default())
                .build(),
            sink_policy: Policy::builder("sync.sink")
                .retry(RetryConfig::default())
                .build(),
            events,
            reopen_limit: 10,
            liveness: Liveness {
                heartbeat: std::time::Duration::from_secs(15),
                abandon_after: std::time::Duration::from_secs(120),
            },
        }
    }

    /// While a run goes on, its heartbeat is recorded every `heartbeat` (default 15 s);
    /// a run of the same pipeline found still `running` with no heartbeat for
    /// `abandon_after` (default 2 minutes) is taken for one whose process died, and is
    /// marked failed — with the reason — when the pipeline runs again.
    ///
    /// ```
    /// # fn f(engine: moodbridge_core::engine::SyncEngine) {
    /// use std::time::Duration;
    /// let engine = engine.with_liveness(Duration::from_secs(5), Duration::from_secs(30));
    /// # }
    /// ```
    pub fn with_liveness(
        mut self,
        heartbeat: std::time::Duration,
        abandon_after: std::time::Duration,
    ) -> Self {
        self.liveness = Liveness {
            heartbeat: heartbeat.max(std::time::Duration::from_millis(1)),
            abandon_after: abandon_after.max(heartbeat),
        };
        self
    }

    /// Start a run of `pipeline`: runs of it abandoned by a process that died are marked
    /// failed first; the new run's heartbeat beats until the returned guard is dropped.
    async fn begin_run(&self, pipeline: &str) -> Result<(RunId, Heartbeat)> {
        let now = std::time::SystemTime::now();
        for run in self.state.recent_runs(pipeline, 20).await? {
            if run.status != RunStatus::Running {
                continue;
            }
            let last = run.heartbeat_at.unwrap_or(run.started_at);
            let silent = now.duration_since(last).unwrap_or_default();
            if silent < self.liveness.abandon_after {
                continue;
            }
            let reason = format!(
                "abandoned: no heartbeat for {} s (its process stopped); marked failed when the pipeline ran again",
                silent.as_secs()
            );
            tracing::warn!(pipeline, run = %run.id, "{reason}");
            self.state
                .finish_run(run.id, RunStatus::Failed, run.counts, Some(&reason))
                .await?;
        }
        let run = self.state.start_run(pipeline).await?;
        let state = Arc::clone(&self.state);
        let every = self.liveness.heartbeat;
        let beat = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(e) = state.heartbeat_run(run).await {
                    tracing::warn!(run = %run, error = %e, "the run's heartbeat was not recorded");
                }
            }
        });
        Ok((run, Heartbeat(beat)))
    }

    /// Use `source` for calls to sources and `sink` for calls to sinks.
    pub fn with_policies(mut self, source: Policy, sink: Policy) -> Self {
        self.source_policy = source;
        self.sink_policy = sink;
        self
    }

    /// How many times in a row a broken source stream is reopened before the run fails
    /// (default 10; the count resets at every committed checkpoint).
    pub fn with_reopen_limit(mut self, limit: u32) -> Self {
        self.reopen_limit = limit;
        self
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    /// Progress events of every run from now on. A receiver that falls more than 1,024
    /// events behind skips the oldest (`RecvError::Lagged`); the run never waits for it.
    pub fn subscribe(&self) -> broadcast::Receiver<ProgressEvent> {
        self.events.subscribe()
    }

    fn emit(&self, event: ProgressEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Run `pipeline` once: every stream, in order, from its last committed checkpoint.
    /// A stream that fails stops the run (status `failed`, error recorded); what was
    /// committed stays committed, and the next run resumes from there.
    pub async fn run(
        &self,
        pipeline: &Pipeline,
        source: &dyn SyncSource,
        sink: &dyn SyncSink,
    ) -> Result<RunReport> {
        let (run, _heartbeat) = self.begin_run(pipeline.name()).await?;
        self.emit(ProgressEvent::RunStarted {
            run,
            pipeline: pipeline.name().to_owned(),
        });
        let mut report = RunReport {
            run,
            counts: RunCounts::default(),
            streams: Vec::new(),
        };
        let scope = crate::observe::RunScope::new(pipeline.name(), run.0)
            .with_source(source.lineage_namespace().await);
        let result = crate::observe::with_run_scope(
            scope,
            self.run_streams(pipeline, source, sink, &mut report),
        )
        .await;
        let (status, error) = match &result {
            Ok(()) => (RunStatus::Succeeded, None),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        self.state
            .finish_run(run, status, report.counts, error.as_deref())
            .await?;
        metrics::counter!(metric::SYNC_RUNS, "pipeline" => pipeline.name().to_owned(), "status" => status.as_str())
            .increment(1);
        self.emit(ProgressEvent::RunFinished {
            run,
            status,
            counts: report.counts,
        });
        result.map(|()| report)
    }

    async fn run_streams(
        &self,
        pipeline: &Pipeline,
        source: &dyn SyncSource,
        sink: &dyn SyncSink,
        report: &mut RunReport,
    ) -> Result<()> {
        let names: Vec<&str> = pipeline
            .plans()
            .iter()
            .map(|p| p.config.name.as_str())
            .collect();
        let catalog = self
            .source_policy
            .call_as("discover", || source.discover_streams(&names))
            .await?;
        if let Some(missing) = pipeline
            .plans()
            .iter()
            .find(|p| catalog.stream(&p.config.name).is_none())
        {
            // Only on the error path: the whole catalog, to say what the source offers.
            let offered = match source.discover().await {
                Ok(all) => all
                    .streams
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(_) => "unknown: its catalog could not be read".to_owned(),
            };
            return Err(Error::config(format!(
                "pipeline {} names stream {}, which the source does not offer (it offers: {offered})",
                pipeline.name(),
                missing.config.name,
            ))
            .with_hint("fix the stream name in the pipeline"));
        }
        for plan in pipeline.plans() {
            let descriptor = catalog
                .stream(&plan.config.name)
                .ok_or_else(|| Error::internal("a stream left the catalog"))?;
            let mut run = StreamRun {
                engine: self,
                pipeline,
                plan: plan.clone(),
                source,
                sink,
                run: report.run,
                progress: StreamProgress::default(),
                counts: report.counts,
                source_key: descriptor.primary_key.clone(),
                audits: std::collections::VecDeque::new(),
                checkpoint_in_flight: None,
            };
            let outcome = run.execute(descriptor).await;
            report.counts = run.counts;
            report
                .streams
                .push((plan.config.name.clone(), run.progress));
            outcome?;
        }
        Ok(())
    }
}

/// One stream of one run.
struct StreamRun<'a> {
    engine: &'a SyncEngine,
    pipeline: &'a Pipeline,
    plan: Arc<StreamPlan>,
    source: &'a dyn SyncSource,
    sink: &'a dyn SyncSink,
    run: RunId,
    progress: StreamProgress,
    /// The run's totals, this stream included.
    counts: RunCounts,
    /// The source's primary key: what names a record in a dead letter.
    source_key: Vec<String>,
    /// The audit appends of the last batches written, oldest first, running while the
    /// next batches are written (at most [`AUDITS_IN_FLIGHT`]); each appends after the
    /// one before it. A checkpoint commits only once the appends before it are done.
    audits: std::collections::VecDeque<AuditDone>,
    /// The commit of the last checkpoint (and the run's counts), running while the next
    /// batch is written; settled before the next checkpoint is committed and before the
    /// stream ends. It was started only after the sink flushed what it covers.
    checkpoint_in_flight: Option<(Checkpoint, tokio::task::JoinHandle<Result<i64>>)>,
}

impl StreamRun<'_> {
    async fn execute(&mut self, descriptor: &StreamDescriptor) -> Result<()> {
        let result = self.execute_stream(descriptor).await;
        // Whatever happened, the audit of what was written is appended, and the last
        // checkpoint committed, before the stream is over.
        let settled = self.settle_audit().await;
        let committed = self.settle_checkpoint().await;
        result.and(settled).and(committed)
    }

    /// Wait for the checkpoint commit in flight, if any, and report it.
    async fn settle_checkpoint(&mut self) -> Result<()> {
        let Some((cp, task)) = self.checkpoint_in_flight.take() else {
            return Ok(());
        };
        let sequence = task.await.map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("the checkpoint commit task did not finish: {e}"),
            )
        })??;
        metrics::counter!(
            metric::SYNC_CHECKPOINTS,
            "pipeline" => self.pipeline.name().to_owned(),
            "stream" => cp.stream.clone()
        )
        .increment(1);
        self.engine.emit(ProgressEvent::Checkpoint {
            run: self.run,
            stream: cp.stream,
            sequence,
        });
        Ok(())
    }

    /// Wait for the audit appends in flight.
    async fn settle_audit(&mut self) -> Result<()> {
        while let Some(done) = self.audits.pop_front() {
            done.await?;
        }
        Ok(())
    }

    async fn execute_stream(&mut self, descriptor: &StreamDescriptor) -> Result<()> {
        let engine = self.engine;
        let name = self.plan.config.name.clone();
        let mode = match self.plan.config.mode {
            Some(mode) => mode,
            None if descriptor.supports(SyncMode::Incremental) => SyncMode::Incremental,
            None => SyncMode::FullRefresh,
        };
        let target = self.plan.describe(descriptor);
        let write_mode = self.plan.write_mode(&target);
        // Overwrite replaces the target with this run's records: never resume mid-pass.
        let resume = if write_mode == WriteMode::Overwrite {
            None
        } else {
            engine
                .state
                .checkpoint(self.pipeline.name(), &name)
                .await?
                .map(|c| c.checkpoint)
                .filter(|c| !c.state.is_null())
        };
        let mut request = ReadRequest::new(&name, mode);
        if let Some(size) = self.plan.config.batch_size {
            request = request.batch_size(size);
        }
        if let Some(cp) = resume {
            request = request.resume_from(cp);
        }
        request.check_against(descriptor)?;
        self.progress.total = self.source.count_hint(&request).await.unwrap_or(None);
        engine.emit(ProgressEvent::StreamStarted {
            run: self.run,
            stream: name.clone(),
            total: self.progress.total,
        });
        self.sink_call("begin_stream", true, || {
            self.sink.begin_stream(&target, &write_mode)
        })
        .await?;

        let started = Instant::now();
        let mut reopens = 0;
        let mut items = self.open(&request).await?;
        loop {
            match items.next().await {
                None => break,
                Some(Ok(Item::Batch(prepared))) => {
                    self.write_batch(prepared, &target, &write_mode).await?;
                    self.progress.tick(started.elapsed());
                    engine.emit(ProgressEvent::Batch {
                        run: self.run,
                        stream: name.clone(),
                        progress: self.progress,
                    });
                }
                Some(Ok(Item::Deletes(tombstones))) => {
                    self.apply_deletes(tombstones, &target, &write_mode).await?;
                    self.progress.tick(started.elapsed());
                }
                Some(Ok(Item::Checkpoint(cp))) => {
                    if cp.stream != name {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!(
                                "the source sent a checkpoint of {} while reading {name}",
                                cp.stream
                            ),
                        ));
                    }
                    self.commit(&cp, &target).await?;
                    request.checkpoint = Some(cp);
                    reopens = 0;
                }
                Some(Err(e)) if e.is_temporary() && reopens < engine.reopen_limit => {
                    // Everything since the last committed checkpoint is read again; the
                    // sink's upsert makes that harmless. Append would duplicate: fail.
                    if !write_mode.is_idempotent() {
                        return Err(e);
                    }
                    reopens += 1;
                    tracing::warn!(stream = %name, error = %e, reopens, "source stream broke; reopening from the last checkpoint");
                    items = self.open(&request).await?;
                }
                Some(Err(e)) => return Err(e),
            }
        }
        let target_name = target.name.clone();
        self.sink_call("flush", true, || self.sink.flush(&target_name))
            .await?;
        self.sink_call("commit_stream", false, || {
            self.sink.commit_stream(&target_name, &write_mode)
        })
        .await?;
        self.settle_audit().await?;
        self.settle_checkpoint().await?;
        if mode == SyncMode::FullRefresh {
            // The pass is complete: the next run starts from the beginning.
            engine
                .state
                .commit_checkpoint(
                    self.pipeline.name(),
                    &Checkpoint::new(&name, Value::Null),
                    self.run,
                )
                .await?;
        }
        self.progress.tick(started.elapsed());
        engine.state.update_run(self.run, self.counts).await?;
        engine.emit(ProgressEvent::StreamFinished {
            run: self.run,
            stream: name,
            progress: self.progress,
        });
        Ok(())
    }

    /// Open the source's stream and start reading it ahead: a task reads and transforms
    /// batches while the sink writes earlier ones, at most [`READ_AHEAD`] batches ahead.
    async fn open(&self, request: &ReadRequest) -> Result<Reader> {
        let messages = self
            .engine
            .source_policy
            .call_as("read", || self.source.read(request.clone()))
            .await?;
        Ok(Reader::spawn(messages, self.plan.clone()))
    }

    async fn sink_call<T, F, Fut>(&self, op: &'static str, idempotent: bool, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut operation = Operation::new(op);
        if !idempotent {
            operation = operation.non_idempotent();
        }
        self.engine.sink_policy.call_as(operation, f).await
    }

    /// Flush the sink, then — once the audit of what was written is appended — commit
    /// the checkpoint: never the other way round. The audit and the commit finish while
    /// the next batch is written; checkpoints commit one at a time, in order.
    async fn commit(&mut self, cp: &Checkpoint, target: &StreamDescriptor) -> Result<()> {
        self.sink_call("flush", true, || self.sink.flush(&target.name))
            .await?;
        let audited = self.audits.back().cloned();
        self.settle_checkpoint().await?;
        let state = self.engine.state.clone();
        let (pipeline, run, counts) = (self.pipeline.name().to_owned(), self.run, self.counts);
        let checkpoint = cp.clone();
        let task = tokio::spawn(async move {
            if let Some(audited) = audited {
                audited.await?;
            }
            let sequence = state.commit_checkpoint(&pipeline, &checkpoint, run).await?;
            state.update_run(run, counts).await?;
            Ok(sequence)
        });
        self.checkpoint_in_flight = Some((cp.clone(), task));
        Ok(())
    }

    async fn write_batch(
        &mut self,
        prepared: Prepared,
        target: &StreamDescriptor,
        mode: &WriteMode,
    ) -> Result<()> {
        let Prepared {
            read,
            bytes,
            body,
            originals,
            rejected,
        } = prepared;
        self.progress.read += read;
        self.counts.read += read;
        self.progress.bytes += bytes;

        let source_key = self.source_key.clone();
        let mut failed = rejected.len() as u64;
        for (original, stage, reason) in rejected {
            self.dead_letter(&source_key, original, stage, reason)
                .await?;
        }
        let (report, mut written_records) = match body {
            Body::Records(records) => {
                let out = RecordBatch::new(&target.name, records);
                let report = if out.is_empty() {
                    WriteReport::default()
                } else {
                    write_through(self.engine, self.sink, &out, mode).await?
                };
                (report, Body::Records(out.records))
            }
            Body::Rows(mut rows) => {
                rows.stream.clone_from(&target.name);
                let report = if rows.is_empty() {
                    WriteReport::default()
                } else {
                    let op = write_operation(mode);
                    self.engine
                        .sink_policy
                        .call_as(op, || self.sink.write_rows(&rows, mode))
                        .await?
                };
                (report, Body::Rows(rows))
            }
        };
        report.check_complete(written_records.len())?;

        let level = self.pipeline.config().audit;
        let mut writes = Vec::new();
        // Each index appears once (checked above): a written record moves into its audit
        // entry or dead letter, never copied.
        let mut originals = originals;
        let written = report.succeeded() as u64;
        for outcome in report.outcomes {
            match &outcome.result {
                Ok(action) => {
                    if let Some(operation) = audit_op(*action).filter(|_| level.is_on()) {
                        writes.push((outcome.index, operation, outcome.before));
                    }
                }
                Err(failure) => {
                    let written = written_records.take(outcome.index);
                    failed += 1;
                    let original = originals.take(outcome.index).unwrap_or(written);
                    self.dead_letter(
                        &source_key,
                        original,
                        FailureStage::Write,
                        describe(failure),
                    )
                    .await?;
                }
            }
        }
        if writes.is_empty() {
            // The records not kept are freed off the write path: the next batch need
            // not wait for a batch's worth of deallocations.
            if let Body::Records(records) = written_records
                && records.iter().any(|r| !r.is_empty())
            {
                drop(tokio::task::spawn_blocking(move || drop(records)));
            }
        } else {
            // The entries are made (images hashed, changes found) and appended off the
            // write path, while the sink takes the next batch; the batch goes with them.
            let pending = audit::PendingAudit {
                head: audit::EntryHead {
                    run: self.run,
                    stream: self.plan.target().to_owned(),
                    actor: self.pipeline.config().actor.clone(),
                    level,
                    key_fields: mode_key(mode, target),
                },
                body: written_records,
                writes,
            };
            self.queue_audit(move || pending.entries()).await?;
        }
        self.tally(&[("read", read), ("written", written), ("failed", failed)]);
        self.add_outcomes(written, failed);
        Ok(())
    }

    /// Make audit entries (on a blocking thread, while earlier appends run) and append
    /// them once the appends before are done (the chain is sequential), without waiting
    /// for it — unless [`AUDITS_IN_FLIGHT`] are queued already.
    async fn queue_audit<F>(&mut self, make: F) -> Result<()>
    where
        F: FnOnce() -> Vec<AuditEntry> + Send + 'static,
    {
        while self.audits.len() >= AUDITS_IN_FLIGHT {
            if let Some(oldest) = self.audits.pop_front() {
                oldest.await?;
            }
        }
        let before = self.audits.back().cloned();
        let state = self.engine.state.clone();
        let task = tokio::spawn(async move {
            let audit = tokio::task::spawn_blocking(make).await.map_err(|e| {
                Error::internal(format!("making the audit entries did not finish: {e}"))
            })?;
            if let Some(before) = before {
                before.await?;
            }
            if !audit.is_empty() {
                state.append_audit(&audit).await?;
            }
            Ok(())
        });
        let done = async move {
            task.await.map_err(|e| {
                Error::internal(format!("the audit append task did not finish: {e}"))
            })?
        };
        self.audits
            .push_back(futures::FutureExt::shared(Box::pin(done) as AuditFuture));
        Ok(())
    }

    /// Count records by outcome in the records metric.
    fn tally(&self, outcomes: &[(&'static str, u64)]) {
        for &(outcome, n) in outcomes {
            if n > 0 {
                metrics::counter!(
                    metric::SYNC_RECORDS,
                    "pipeline" => self.pipeline.name().to_owned(),
                    "stream" => self.plan.config.name.clone(),
                    "outcome" => outcome
                )
                .increment(n);
            }
        }
    }

    /// Add records written and failed to the stream's progress and the run's counts.
    fn add_outcomes(&mut self, written: u64, failed: u64) {
        self.progress.written += written;
        self.progress.failed += failed;
        self.counts.written += written;
        self.counts.failed += failed;
    }

    /// Carry the source's deletes to the sink as the stream's [`DeleteMode`] says: soft
    /// or hard deletes by the write key; a record the sink does not hold is already as
    /// the source has it; another failure is dead-lettered with the tombstone.
    async fn apply_deletes(
        &mut self,
        mut tombstones: RecordBatch,
        target: &StreamDescriptor,
        mode: &WriteMode,
    ) -> Result<()> {
        let read = tombstones.len() as u64;
        self.progress.read += read;
        self.counts.read += read;
        let how = self.plan.config.deletes;
        if how == DeleteMode::Ignore || tombstones.is_empty() {
            tracing::debug!(stream = %self.plan.config.name, deletes = read, "source deletes ignored (deletes = \"ignore\")");
            return Ok(());
        }
        tombstones.stream.clone_from(&target.name);
        let key = mode_key(mode, target);
        let op = match how {
            DeleteMode::Soft => "soft_delete",
            _ => "delete",
        };
        let report = self
            .engine
            .sink_policy
            .call_as(op, || async {
                match how {
                    DeleteMode::Soft => self.sink.soft_delete(&tombstones, &key).await,
                    _ => self.sink.delete(&tombstones, &key).await,
                }
            })
            .await?;
        report.check_complete(tombstones.len())?;
        let (mut deleted, mut failed) = (0u64, 0u64);
        let mut audit = Vec::new();
        let head = audit::EntryHead {
            run: self.run,
            stream: self.plan.target().to_owned(),
            actor: self.pipeline.config().actor.clone(),
            level: self.pipeline.config().audit,
            key_fields: Vec::new(),
        };
        for outcome in report.outcomes {
            let tombstone = tombstones
                .records
                .get_mut(outcome.index)
                .map(std::mem::take)
                .unwrap_or_default();
            match outcome.result {
                Ok(WriteAction::Deleted) => {
                    deleted += 1;
                    if head.level.is_on() {
                        let image = audit::AfterImage {
                            record_key: key_of(&tombstone, &key),
                            after: None,
                            after_sha256: None,
                        };
                        audit.push(head.entry(AuditOperation::Delete, image, outcome.before));
                    }
                }
                Ok(_) => {}
                Err(failure) if failure.kind == FailureKind::NotFound => {}
                Err(failure) => {
                    failed += 1;
                    self.dead_letter(&key, tombstone, FailureStage::Write, describe(&failure))
                        .await?;
                }
            }
        }
        if !audit.is_empty() {
            self.queue_audit(move || audit).await?;
        }
        self.tally(&[("deleted", deleted), ("failed", failed)]);
        self.add_outcomes(deleted, failed);
        Ok(())
    }

    async fn dead_letter(
        &self,
        key_fields: &[String],
        record: Record,
        stage: FailureStage,
        reason: String,
    ) -> Result<()> {
        tracing::debug!(stream = %self.plan.config.name, ?stage, %reason, "record dead-lettered");
        self.engine
            .state
            .put_dead_letter(&NewDeadLetter {
                pipeline: self.pipeline.name().to_owned(),
                stream: self.plan.config.name.clone(),
                record_key: key_of(&record, key_fields),
                record,
                reason,
                stage,
                run: Some(self.run),
            })
            .await?;
        Ok(())
    }
}

/// Write `batch` under the engine's sink policy. A whole-batch error means nothing was
/// written, so it is retried whatever the mode, except a timeout (the sink may have
/// written) under a non-idempotent mode.
pub(crate) async fn write_through(
    engine: &SyncEngine,
    sink: &dyn SyncSink,
    batch: &RecordBatch,
    mode: &WriteMode,
) -> Result<WriteReport> {
    engine
        .sink_policy
        .call_as(write_operation(mode), || sink.write(batch, mode))
        .await
}

/// The audit operation of a write (none for an unchanged record).
pub(crate) fn audit_op(action: WriteAction) -> Option<AuditOperation> {
    match action {
        WriteAction::Created => Some(AuditOperation::Create),
        WriteAction::Updated => Some(AuditOperation::Update),
        WriteAction::Deleted => Some(AuditOperation::Delete),
        WriteAction::Unchanged => None,
    }
}

/// The key fields of a write mode (upsert key, else the target's primary key).
pub(crate) fn mode_key(mode: &WriteMode, target: &StreamDescriptor) -> Vec<String> {
    match mode {
        WriteMode::Upsert { key } => key.clone(),
        _ => target.primary_key.clone(),
    }
}

/// A record's key text from its fields: its key fields' values, or, when it has none,
/// `Id`; `None` when it has neither.
pub(crate) fn declared_key(record: &Record, key_fields: &[String]) -> Option<String> {
    (!key_fields.is_empty())
        .then(|| record.key(key_fields))
        .flatten()
        .or_else(|| record.key(&["Id".to_owned()]))
        .map(|key| key.to_string())
}

/// A record's key text: its key fields' values, or, when it has none, `Id`, or a content
/// hash (`sha256:…`) so that a record without a key still has a stable identity.
pub(crate) fn key_of(record: &Record, key_fields: &[String]) -> String {
    if let Some(key) = declared_key(record, key_fields) {
        return key;
    }
    let digest = Sha256::digest(serde_json::to_vec(record).unwrap_or_default());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn describe(failure: &RecordFailure) -> String {
    let mut text = failure.message.clone();
    if let Some(code) = &failure.code {
        text = format!("{code}: {text}");
    }
    if !failure.fields.is_empty() {
        text = format!("{text} (fields: {})", failure.fields.join(", "));
    }
    text
}

/// Batches read ahead of the sink, at most.
const READ_AHEAD: usize = 2;

/// Batches whose audit append may be in flight while the sink writes, at most.
const AUDITS_IN_FLIGHT: usize = 1;

type AuditFuture = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// The end of a queued audit append (and of every append before it), awaitable by the
/// next append and by the checkpoint after it.
type AuditDone = futures::future::Shared<AuditFuture>;

/// What a batch writes: records (a map each), or rows passed through as the source
/// gave them.
enum Body {
    Records(Vec<Record>),
    Rows(RowBatch),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Records(r) => r.len(),
            Body::Rows(r) => r.len(),
        }
    }

    /// Record `index`, moved out (records) or built (rows); empty past the end.
    fn take(&mut self, index: usize) -> Record {
        match self {
            Body::Records(r) => r.get_mut(index).map(std::mem::take).unwrap_or_default(),
            Body::Rows(r) => r.row(index).map(|row| row.to_record()).unwrap_or_default(),
        }
    }
}

/// A batch read and transformed, ready for the sink.
struct Prepared {
    /// Records read.
    read: u64,
    /// Their approximate size.
    bytes: u64,
    /// The records that passed mapping and validation, transformed.
    body: Body,
    /// Their originals, when the transform rewrites records (a record failing at the
    /// sink is dead-lettered as the source gave it).
    originals: Originals,
    /// Records that failed mapping or validation: original, stage, reason.
    rejected: Vec<(Record, FailureStage, String)>,
}

/// The source's records of a batch's written records, kept for dead letters.
enum Originals {
    /// The written records are as the source gave them.
    Unchanged,
    /// One per written record, in the same order.
    Records(Vec<Record>),
    /// The source's rows, and per written row its row among them.
    Rows { rows: RowBatch, from: Vec<usize> },
}

impl Originals {
    /// The source's record of written record `index`; `None` when the written record is
    /// itself the original.
    fn take(&mut self, index: usize) -> Option<Record> {
        match self {
            Originals::Unchanged => None,
            Originals::Records(r) => r.get_mut(index).map(std::mem::take),
            Originals::Rows { rows, from } => from
                .get(index)
                .and_then(|&i| rows.row(i))
                .map(|row| row.to_record()),
        }
    }
}

enum Item {
    Batch(Prepared),
    /// Tombstones, their fields renamed as the mapping renames them.
    Deletes(RecordBatch),
    Checkpoint(Checkpoint),
}

/// The reading side of a stream, in a task of its own; stopped when dropped.
struct Reader {
    items: tokio::sync::mpsc::Receiver<Result<Item>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    fn spawn(mut messages: crate::sync::SourceStream, plan: Arc<StreamPlan>) -> Reader {
        let (tx, items) = tokio::sync::mpsc::channel(READ_AHEAD);
        let task = tokio::spawn(async move {
            let mut cache = None;
            while let Some(message) = messages.next().await {
                let item = match message {
                    Ok(SourceMessage::Records(batch)) => {
                        Ok(Item::Batch(prepare(&plan, batch.records)))
                    }
                    Ok(SourceMessage::Rows(rows)) => {
                        Ok(Item::Batch(prepare_rows(&plan, &mut cache, rows)))
                    }
                    Ok(SourceMessage::Deletes(mut batch)) => {
                        for record in &mut batch.records {
                            plan.rename(record);
                        }
                        Ok(Item::Deletes(batch))
                    }
                    Ok(SourceMessage::Checkpoint(cp)) => Ok(Item::Checkpoint(cp)),
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Reader { items, task }
    }

    async fn next(&mut self) -> Option<Result<Item>> {
        self.items.recv().await
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Map, sanitise and validate rows as rows ([`row_path`]), with the program compiled
/// for their columns (kept in `cache` for the next batch); as records when the row path
/// cannot take them.
fn prepare_rows(plan: &StreamPlan, cache: &mut Option<ProgramCache>, rows: RowBatch) -> Prepared {
    let columns = rows.shared_columns();
    if !cache.as_ref().is_some_and(|c| c.fits(columns)) {
        *cache = Some(ProgramCache {
            columns: columns.clone(),
            program: RowProgram::compile(plan, columns),
        });
    }
    let Some(program) = cache.as_ref().and_then(|c| c.program.as_ref()) else {
        return prepare(plan, rows.to_records().records);
    };
    let Some(done) = program.run(plan, &rows) else {
        return prepare(plan, rows.to_records().records);
    };
    // As `approx_size` counts a record: names, values as text, a few bytes a field.
    let names: usize = rows.columns().iter().map(|c| c.name.len() + 5).sum();
    let bytes = (rows.len() * names + rows.text_len()) as u64;
    let read = rows.len() as u64;
    let (body, originals) = match done.rows {
        None => (rows, Originals::Unchanged),
        Some(out) if !done.changed => (out, Originals::Unchanged),
        Some(out) => (
            out,
            Originals::Rows {
                rows,
                from: done.from,
            },
        ),
    };
    Prepared {
        read,
        bytes,
        body: Body::Rows(body),
        originals,
        rejected: done.rejected,
    }
}

/// A stream's row program and the columns it was compiled for (`None`: the row path
/// cannot take them).
struct ProgramCache {
    columns: Arc<[crate::rows::Column]>,
    program: Option<RowProgram>,
}

impl ProgramCache {
    fn fits(&self, columns: &Arc<[crate::rows::Column]>) -> bool {
        Arc::ptr_eq(&self.columns, columns) || self.columns[..] == columns[..]
    }
}

/// Map, sanitise and validate a batch.
fn prepare(plan: &StreamPlan, batch: Vec<Record>) -> Prepared {
    let read = batch.len() as u64;
    let bytes = batch.iter().map(approx_size).sum();
    let keep_originals = plan.rewrites();
    let mut originals = Vec::new();
    let mut records = Vec::with_capacity(batch.len());
    let mut rejected = Vec::new();
    for mut record in batch {
        let original = keep_originals.then(|| record.clone());
        match plan.transform(&mut record) {
            Ok(()) => {
                if let Some(o) = original {
                    originals.push(o);
                }
                records.push(record);
            }
            Err((stage, reason)) => rejected.push((original.unwrap_or(record), stage, reason)),
        }
    }
    Prepared {
        read,
        bytes,
        body: Body::Records(records),
        originals: if keep_originals {
            Originals::Records(originals)
        } else {
            Originals::Unchanged
        },
        rejected,
    }
}

/// The approximate size of a record's data: field names and values as text.
fn approx_size(record: &Record) -> u64 {
    fn value_size(v: &Value) -> u64 {
        match v {
            Value::Null => 4,
            Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() as u64 + 2,
            Value::Array(a) => a.iter().map(value_size).sum::<u64>() + 2,
            Value::Object(o) => o.iter().map(|(k, v)| k.len() as u64 + value_size(v)).sum(),
        }
    }
    record
        .fields()
        .iter()
        .map(|(k, v)| k.len() as u64 + 3 + value_size(v))
        .sum()
}

#[cfg(test)]
mod tests;
