//! Lineage as [OpenLineage](https://openlineage.io) run events: which job (a pipeline's
//! stream) read what and wrote where, run by run and batch by batch, in the shape every
//! OpenLineage consumer (Marquez, DataHub, OpenMetadata, Airflow's provider) reads.
//!
//! A sink that knows what it wrote (the staged file, the statements that loaded it)
//! reports to a [`LineageRecorder`]: `START` when a stream begins, `RUNNING` per batch
//! with the datasets and facets of that batch, `COMPLETE` when the stream commits. The
//! run id is derived from the sync run ([`RunScope`](crate::observe::RunScope)), so
//! every event of one run carries the same id.
//!
//! ```
//! use moodbridge_core::lineage::{Dataset, EventType, Job, RunEvent, facet, run_id};
//!
//! let event = RunEvent::new(EventType::Running, run_id("moodbridge:cases:run-7"), Job::new("moodbridge", "cases.Case"))
//!     .output(Dataset::new("snowflake://acme-prod", "CASES.PUBLIC.Case")
//!         .output_facet("outputStatistics", facet(
//!             "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet",
//!             serde_json::json!({"rowCount": 500}),
//!         )));
//! let json = serde_json::to_value(&event).unwrap();
//! assert_eq!(json["eventType"], "RUNNING");
//! assert_eq!(json["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"], 500);
//! assert_eq!(event.run.run_id, run_id("moodbridge:cases:run-7"));
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Who produced the events (`producer`, and `_producer` of every facet).
pub const PRODUCER: &str = "https://github.com/moodbridge/moodbridge-integrations";

/// The schema a run event follows.
pub const RUN_EVENT_SCHEMA: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// A run's transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// The run started.
    Start,
    /// The run is under way (one per batch).
    Running,
    /// It finished.
    Complete,
    /// It was stopped.
    Abort,
    /// It failed.
    Fail,
    /// More metadata about it.
    Other,
}

/// A run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// A UUID, the same for every event of the run.
    #[serde(rename = "runId")]
    pub run_id: String,
    /// Run facets.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub facets: Map<String, Value>,
}

/// A job: what runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its namespace (`moodbridge`).
    pub namespace: String,
    /// Its name in the namespace (`<pipeline>.<stream>`).
    pub name: String,
    /// Job facets.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub facets: Map<String, Value>,
}

impl Job {
    /// The job `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Job {
            namespace: namespace.into(),
            name: name.into(),
            facets: Map::new(),
        }
    }
}

/// A dataset read or written, named as OpenLineage's naming spec says for its platform
/// (`snowflake://<org>-<account>` and `DATABASE.SCHEMA.TABLE`, `s3://<bucket>` and the key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Its namespace.
    pub namespace: String,
    /// Its name in the namespace.
    pub name: String,
    /// Dataset facets.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub facets: Map<String, Value>,
    /// Facets of it as an input.
    #[serde(rename = "inputFacets", default, skip_serializing_if = "Map::is_empty")]
    pub input_facets: Map<String, Value>,
    /// Facets of it as an output.
    #[serde(
        rename = "outputFacets",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub output_facets: Map<String, Value>,
}

impl Dataset {
    /// The dataset `name` in `namespace`, without facets.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Dataset {
            namespace: namespace.into(),
            name: name.into(),
            facets: Map::new(),
            input_facets: Map::new(),
            output_facets: Map::new(),
        }
    }

    /// With the dataset facet `name`.
    #[must_use]
    pub fn facet(mut self, name: &str, facet: Value) -> Self {
        self.facets.insert(name.to_owned(), facet);
        self
    }

    /// With the output facet `name`.
    #[must_use]
    pub fn output_facet(mut self, name: &str, facet: Value) -> Self {
        self.output_facets.insert(name.to_owned(), facet);
        self
    }
}

/// An OpenLineage run event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// The transition.
    #[serde(rename = "eventType")]
    pub event_type: EventType,
    /// When it happened (RFC 3339, UTC).
    #[serde(rename = "eventTime")]
    pub event_time: String,
    /// The run.
    pub run: Run,
    /// The job.
    pub job: Job,
    /// What the run read.
    #[serde(default)]
    pub inputs: Vec<Dataset>,
    /// What it wrote.
    #[serde(default)]
    pub outputs: Vec<Dataset>,
    /// [`PRODUCER`].
    pub producer: String,
    /// [`RUN_EVENT_SCHEMA`].
    #[serde(rename = "schemaURL")]
    pub schema_url: String,
}

impl RunEvent {
    /// An event of run `run_id` of `job`, now.
    pub fn new(event_type: EventType, run_id: String, job: Job) -> Self {
        RunEvent {
            event_type,
            event_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            run: Run {
                run_id,
                facets: Map::new(),
            },
            job,
            inputs: Vec::new(),
            outputs: Vec::new(),
            producer: PRODUCER.to_owned(),
            schema_url: RUN_EVENT_SCHEMA.to_owned(),
        }
    }

    /// With an input.
    #[must_use]
    pub fn input(mut self, dataset: Dataset) -> Self {
        self.inputs.push(dataset);
        self
    }

    /// With an output.
    #[must_use]
    pub fn output(mut self, dataset: Dataset) -> Self {
        self.outputs.push(dataset);
        self
    }

    /// With the run facet `name`.
    #[must_use]
    pub fn run_facet(mut self, name: &str, facet: Value) -> Self {
        self.run.facets.insert(name.to_owned(), facet);
        self
    }
}

/// A facet: `fields` with `_producer` and `_schemaURL` added.
pub fn facet(schema_url: &str, fields: Value) -> Value {
    let mut map = match fields {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("value".to_owned(), other);
            map
        }
    };
    map.insert("_producer".to_owned(), Value::String(PRODUCER.to_owned()));
    map.insert(
        "_schemaURL".to_owned(),
        Value::String(schema_url.to_owned()),
    );
    Value::Object(map)
}

/// The run id of the run tagged `tag`: a UUID (RFC 9562 version 8) from the tag's
/// SHA-256, so every event of a run, from any process, carries the same one.
///
/// ```
/// use moodbridge_core::lineage::run_id;
/// let id = run_id("moodbridge:cases:run-7");
/// assert_eq!(id.len(), 36);
/// assert_eq!(&id[14..15], "8");
/// assert_ne!(id, run_id("moodbridge:cases:run-8"));
/// ```
pub fn run_id(tag: &str) -> String {
    let digest = Sha256::digest(tag.as_bytes());
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // Version 8 (custom) and the RFC 9562 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Where lineage events go. Recording must not block or fail the load: an
/// implementation that ships events elsewhere queues them.
pub trait LineageRecorder: Send + Sync + std::fmt::Debug {
    /// Take one event.
    fn record(&self, event: RunEvent);
}

/// Events kept in memory (tests, and a host that reads them back).
#[derive(Debug, Default)]
pub struct MemoryLineage {
    events: Mutex<Vec<RunEvent>>,
}

impl MemoryLineage {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events so far, oldest first.
    pub fn events(&self) -> Vec<RunEvent> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl LineageRecorder for MemoryLineage {
    fn record(&self, event: RunEvent) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event);
    }
}

/// Events appended to a file, one JSON object per line (what OpenLineage's file
/// transport writes, and `openlineage` clients read).
#[derive(Debug)]
pub struct JsonLinesLineage {
    path: PathBuf,
    lock: Mutex<()>,
}

impl JsonLinesLineage {
    /// Append to `path` (created when missing).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesLineage {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }
}

impl LineageRecorder for JsonLinesLineage {
    fn record(&self, event: RunEvent) {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = serde_json::to_string(&event)
            .map_err(std::io::Error::other)
            .and_then(|line| {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                writeln!(file, "{line}")
            });
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "a lineage event was not written");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn events_are_written_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lineage.jsonl");
        let recorder = JsonLinesLineage::new(&path);
        for t in [EventType::Start, EventType::Complete] {
            recorder.record(RunEvent::new(t, run_id("r"), Job::new("moodbridge", "p.s")));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<RunEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].event_type, EventType::Complete);
        assert_eq!(events[0].run.run_id, events[1].run.run_id);
        assert!(
            !text.contains("\"facets\""),
            "empty facets are left out: {text}"
        );
    }
}
