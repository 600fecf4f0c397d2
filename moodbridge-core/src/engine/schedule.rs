//! Scheduling and scale-out: a [`Worker`] runs pipelines when they are due (an interval
//! or a cron expression), and never runs one twice at once — not in this process, not on
//! another machine sharing the state store.
//!
//! The rules:
//! - A worker runs a pipeline only while it holds the pipeline's lease in the state store
//!   (`pipeline:<name>`), renewed every third of its time to live. A worker that loses the
//!   lease (paused, partitioned) stops the run at once; the next holder resumes it.
//! - Due is decided from the state store, so every worker agrees: a pipeline is due when
//!   its schedule has a slot after its last run started and that slot has come.
//! - A last run still marked `running` while its lease is free belonged to a worker that
//!   died: it is marked failed and the pipeline runs again at once, resuming from its last
//!   committed checkpoint.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use moodbridge_core::engine::{Job, Pipeline, Schedule, SyncEngine, Worker};
//! use moodbridge_core::testing::{MemorySink, MemorySource};
//! use moodbridge_core::state::PostgresStateStore;
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let state = Arc::new(PostgresStateStore::connect("postgres://moodbridge@db/moodbridge").await?);
//! let pipeline = Pipeline::from_toml("name = \"accounts\"\n[[streams]]\nname = \"Account\"\n")?;
//! let job = Job::new(pipeline, Arc::new(MemorySource::accounts(10)), Arc::new(MemorySink::new()),
//!                    Schedule::every(Duration::from_secs(900)));
//! let worker = Worker::new(SyncEngine::new(state), "worker-1", vec![job]);
//! worker.run_until(std::future::pending::<()>()).await?; // or a shutdown signal
//! # Ok(()) }
//! ```

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Pipeline, SyncEngine};
use crate::error::{Error, Result};
use crate::state::{Lease, RunStatus};
use crate::sync::{SyncSink, SyncSource};

/// When a pipeline runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Every so often, measured from the start of the last run.
    Every(#[serde(with = "humantime_serde")] Duration),
    /// At the times of a cron expression (UTC; seconds first: `sec min hour day month
    /// weekday [year]`, e.g. `0 */15 * * * *`).
    Cron(String),
}

impl Schedule {
    /// Every `interval`.
    pub fn every(interval: Duration) -> Self {
        Schedule::Every(interval)
    }

    /// At the times of `expression`; a clear `Config` error if it does not parse.
    ///
    /// ```
    /// use moodbridge_core::engine::Schedule;
    /// assert!(Schedule::cron("0 */15 * * * *").is_ok());
    /// assert!(Schedule::cron("every tuesday").unwrap_err().to_string().contains("cron"));
    /// ```
    pub fn cron(expression: &str) -> Result<Self> {
        parse_cron(expression)?;
        Ok(Schedule::Cron(expression.to_owned()))
    }

    /// The first slot after `last` (or now, if the pipeline never ran).
    pub fn next_after(&self, last: Option<SystemTime>) -> Result<SystemTime> {
        let Some(last) = last else {
            return Ok(SystemTime::now());
        };
        match self {
            Schedule::Every(interval) => Ok(last + *interval),
            Schedule::Cron(expr) => {
                let schedule = parse_cron(expr)?;
                let after: chrono::DateTime<chrono::Utc> = last.into();
                schedule
                    .after(&after)
                    .next()
                    .map(SystemTime::from)
                    .ok_or_else(|| {
                        Error::config(format!("cron expression {expr:?} has no future time"))
                    })
            }
        }
    }
}

fn parse_cron(expression: &str) -> Result<cron::Schedule> {
    cron::Schedule::from_str(expression).map_err(|e| {
        Error::config(format!(
            "{expression:?} is not a valid cron expression: {e}"
        ))
        .with_hint("write six or seven fields, seconds first: `0 */15 * * * *` is every 15 minutes")
    })
}

/// A pipeline, its source and sink, and its schedule.
#[derive(Clone)]
pub struct Job {
    pipeline: Arc<Pipeline>,
    source: Arc<dyn SyncSource>,
    sink: Arc<dyn SyncSink>,
    schedule: Schedule,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("pipeline", &self.pipeline.name())
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// Run `pipeline` from `source` to `sink` on `schedule`.
    pub fn new(
        pipeline: Pipeline,
        source: Arc<dyn SyncSource>,
        sink: Arc<dyn SyncSink>,
        schedule: Schedule,
    ) -> Self {
        Job {
            pipeline: Arc::new(pipeline),
            source,
            sink,
            schedule,
        }
    }

    fn lease_name(&self) -> String {
        format!("pipeline:{}", self.pipeline.name())
    }
}

/// What one poll of a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Not due yet.
    NotDue,
    /// Another worker holds the lease.
    Busy,
    /// This worker ran it; the run ended with this status.
    Ran(RunStatus),
    /// This worker lost the lease mid-run and stopped.
    LostLease,
}

/// Runs jobs when due, one holder per pipeline across every worker sharing the state
/// store. See the module docs.
#[derive(Debug)]
pub struct Worker {
    engine: SyncEngine,
    id: String,
    jobs: Vec<Job>,
    lease_ttl: Duration,
    poll: Duration,
}

impl Worker {
    /// A worker named `id` (unique among workers: host name and process id are a good
    /// choice) with a 30 s lease and a 1 s poll.
    pub fn new(engine: SyncEngine, id: impl Into<String>, jobs: Vec<Job>) -> Self {
        Worker {
            engine,
            id: id.into(),
            jobs,
            lease_ttl: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }

    /// How long a lease lasts unless renewed (it is renewed every third of it): how soon
    /// another worker takes over from one that died.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// How often due jobs are looked for.
    pub fn poll_every(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Poll until `shutdown` completes. Each poll claims, among the jobs that look due,
    /// one whose lease is free or lapsed (`StateStore::claim_lease`: on PostgreSQL
    /// `FOR UPDATE SKIP LOCKED`, so workers polling at once take different pipelines),
    /// checks it is still due under the lease, and runs it; it polls again at once after
    /// a run, else after the poll interval. A run in progress when `shutdown` completes
    /// is stopped; its last committed checkpoint stays.
    pub async fn run_until(&self, shutdown: impl Future) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            let ran = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                ran = self.poll_once() => match ran {
                    Ok(ran) => ran,
                    Err(e) => {
                        tracing::warn!(worker = %self.id, error = %e, "scheduling poll failed");
                        false
                    }
                },
            };
            if !ran {
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(self.poll) => {}
                }
            }
        }
    }

    /// Claim and run one due job; `true` if one ran.
    async fn poll_once(&self) -> Result<bool> {
        let state = self.engine.state();
        let mut candidates = Vec::new();
        for job in &self.jobs {
            if self.looks_due(job).await? {
                candidates.push(job.lease_name());
            }
        }
        let Some(lease) = state
            .claim_lease(&candidates, &self.id, self.lease_ttl)
            .await?
        else {
            return Ok(false);
        };
        let Some(job) = self.jobs.iter().find(|j| j.lease_name() == lease.name) else {
            state.release_lease(&lease).await?;
            return Ok(false);
        };
        let tick = self.run_if_due(job, &lease).await;
        if !matches!(tick, Ok(Tick::LostLease)) {
            state.release_lease(&lease).await?;
        }
        Ok(matches!(tick?, Tick::Ran(_)))
    }

    /// Due by the state store, without the lease: never ran, last run still marked
    /// running (perhaps orphaned: only a lapsed lease can be claimed), or its next slot
    /// has come.
    async fn looks_due(&self, job: &Job) -> Result<bool> {
        let last = self
            .engine
            .state()
            .recent_runs(job.pipeline.name(), 1)
            .await?
            .pop();
        Ok(match last {
            None => true,
            Some(r) if r.status == RunStatus::Running => true,
            Some(r) => job.schedule.next_after(Some(r.started_at))? <= SystemTime::now(),
        })
    }

    /// Poll one job once: run it if it is due and this worker gets its lease.
    pub async fn tick(&self, job: &Job) -> Result<Tick> {
        let state = self.engine.state();
        let Some(lease) = state
            .acquire_lease(&job.lease_name(), &self.id, self.lease_ttl)
            .await?
        else {
            return Ok(Tick::Busy);
        };
        let result = self.run_if_due(job, &lease).await;
        if !matches!(result, Ok(Tick::LostLease)) {
            state.release_lease(&lease).await?;
        }
        result
    }

    async fn run_if_due(&self, job: &Job, lease: &Lease) -> Result<Tick> {
        let state = self.engine.state();
        let last = state.recent_runs(job.pipeline.name(), 1).await?.pop();
        let orphan = last
            .as_ref()
            .is_some_and(|r| r.status == RunStatus::Running);
        if let Some(run) = last.as_ref().filter(|_| orphan) {
            // We hold the lease, so nobody runs it: its worker died or lost the lease.
            tracing::warn!(worker = %self.id, pipeline = %job.pipeline.name(), run = %run.id, "taking over a run whose worker is gone");
            state
                .finish_run(
                    run.id,
                    RunStatus::Failed,
                    run.counts,
                    Some("its worker stopped renewing the lease; resumed by another run"),
                )
                .await?;
        } else {
            let due = job.schedule.next_after(last.map(|r| r.started_at))?;
            if due > SystemTime::now() {
                return Ok(Tick::NotDue);
            }
        }
        let run = self
            .engine
            .run(&job.pipeline, job.source.as_ref(), job.sink.as_ref());
        let keep = self.keep_lease(lease);
        tokio::select! {
            result = run => match result {
                Ok(_) => Ok(Tick::Ran(RunStatus::Succeeded)),
                Err(e) => {
                    tracing::warn!(worker = %self.id, pipeline = %job.pipeline.name(), error = %e, "run failed");
                    Ok(Tick::Ran(RunStatus::Failed))
                }
            },
            lost = keep => {
                tracing::error!(worker = %self.id, pipeline = %job.pipeline.name(), error = %lost, "lease lost: run stopped");
                Ok(Tick::LostLease)
            }
        }
    }

    /// Renew `lease` every third of its TTL; returns (with the reason) only when it is lost.
    async fn keep_lease(&self, lease: &Lease) -> Error {
        crate::state::hold_lease(self.engine.state().as_ref(), lease.clone(), self.lease_ttl).await
    }
}
