//! Progress of sync runs, as events a host subscribes to (`SyncEngine::subscribe`): one
//! when a run and a stream start, one after every batch, one per committed checkpoint, one
//! when a stream and a run end. Examples turn them into `indicatif` progress bars.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::{RunCounts, RunId, RunStatus};

/// Counts and speed of one stream so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamProgress {
    /// Records read from the source.
    pub read: u64,
    /// Records written to the sink.
    pub written: u64,
    /// Records that became dead letters.
    pub failed: u64,
    /// Approximate bytes read (the size of the records' values).
    pub bytes: u64,
    /// Time since the stream started.
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
    /// Records read per second so far.
    pub rate: f64,
    /// The records the source expects to yield, when it said.
    pub total: Option<u64>,
    /// Time left at the current rate, when the total is known.
    #[serde(default, with = "humantime_serde")]
    pub eta: Option<Duration>,
}

impl StreamProgress {
    pub(crate) fn tick(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
        let secs = elapsed.as_secs_f64();
        self.rate = if secs > 0.0 {
            self.read as f64 / secs
        } else {
            0.0
        };
        self.eta = match self.total {
            Some(total) if self.rate > 0.0 => Some(Duration::from_secs_f64(
                total.saturating_sub(self.read) as f64 / self.rate,
            )),
            _ => None,
        };
    }
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum ProgressEvent {
    /// A run started.
    RunStarted {
        /// The run.
        run: RunId,
        /// Its pipeline.
        pipeline: String,
    },
    /// A stream started.
    StreamStarted {
        /// The run.
        run: RunId,
        /// The stream.
        stream: String,
        /// The records the source expects to yield, when it said.
        total: Option<u64>,
    },
    /// A batch was handled.
    Batch {
        /// The run.
        run: RunId,
        /// The stream.
        stream: String,
        /// The stream's progress so far.
        progress: StreamProgress,
    },
    /// A checkpoint was committed.
    Checkpoint {
        /// The run.
        run: RunId,
        /// The stream.
        stream: String,
        /// Its sequence number.
        sequence: i64,
    },
    /// A stream finished.
    StreamFinished {
        /// The run.
        run: RunId,
        /// The stream.
        stream: String,
        /// Its final progress.
        progress: StreamProgress,
    },
    /// A run ended.
    RunFinished {
        /// The run.
        run: RunId,
        /// How.
        status: RunStatus,
        /// Its counts.
        counts: RunCounts,
    },
}
