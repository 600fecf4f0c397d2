//! What Airflow's REST API v2 answers, as typed values: the fields a client acts on,
//! everything else left out (new Airflow versions add fields; none of these break).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The state of a DAG run.
///
/// ```
/// use connector_etl::airflow::RunState;
/// assert!(RunState::Failed.is_finished());
/// assert!(!RunState::Queued.is_finished());
/// assert_eq!(RunState::from("success"), RunState::Success);
/// assert_eq!(RunState::from("restarting"), RunState::Other("restarting".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Waiting for the scheduler (or for its DAG to be unpaused).
    Queued,
    /// Its tasks are running.
    Running,
    /// Every task ended well.
    Success,
    /// A task failed.
    Failed,
    /// A state this client does not know.
    Other(String),
}

impl RunState {
    /// `success` or `failed`: the run will not change any more by itself.
    pub fn is_finished(&self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }

    /// Airflow's name of the state.
    pub fn as_str(&self) -> &str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
            RunState::Other(s) => s,
        }
    }
}

impl From<&str> for RunState {
    fn from(s: &str) -> Self {
        match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "success" => RunState::Success,
            "failed" => RunState::Failed,
            other => RunState::Other(other.to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for RunState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RunState::from(String::deserialize(d)?.as_str()))
    }
}

impl Serialize for RunState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One part of the deployment in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Component {
    /// `healthy`, `unhealthy`, or `None` when the part is not deployed (a triggerer).
    pub status: Option<String>,
    /// Its latest heartbeat (RFC 3339), for the parts that beat.
    pub latest_heartbeat: Option<String>,
}

impl Component {
    /// Whether the part says `healthy`.
    pub fn is_healthy(&self) -> bool {
        self.status.as_deref() == Some("healthy")
    }
}

/// `GET /api/v2/monitor/health`: the metadata database, the scheduler, the DAG processor
/// and the triggerer.
///
/// ```
/// use connector_etl::airflow::Health;
/// // Airflow's documented answer.
/// let health = Health::from_json(&serde_json::json!({
///     "metadatabase": {"status": "healthy"},
///     "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2026-12-07T23:28:36.905686+00:00"},
///     "triggerer": {"status": null, "latest_triggerer_heartbeat": null},
///     "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-12-07T23:28:37.050851+00:00"}
/// }));
/// assert!(health.is_healthy());
/// assert!(health.triggerer.status.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// The metadata database.
    pub metadatabase: Component,
    /// The scheduler.
    pub scheduler: Component,
    /// The DAG processor.
    pub dag_processor: Component,
    /// The triggerer (deferred tasks); not deployed everywhere.
    pub triggerer: Component,
}

impl Health {
    /// The health in Airflow's answer.
    pub fn from_json(value: &Value) -> Health {
        let part = |name: &str| {
            let v = &value[name];
            Component {
                status: v["status"].as_str().map(str::to_owned),
                latest_heartbeat: v[format!("latest_{name}_heartbeat")]
                    .as_str()
                    .map(str::to_owned),
            }
        };
        Health {
            metadatabase: part("metadatabase"),
            scheduler: part("scheduler"),
            dag_processor: part("dag_processor"),
            triggerer: part("triggerer"),
        }
    }

    /// The database and the scheduler are healthy, and so is each other part that is
    /// deployed: runs will be scheduled.
    pub fn is_healthy(&self) -> bool {
        self.metadatabase.is_healthy()
            && self.scheduler.is_healthy()
            && [&self.dag_processor, &self.triggerer]
                .iter()
                .all(|c| c.status.is_none() || c.is_healthy())
    }

    /// The parts not healthy, with their status, for a health report.
    pub fn problems(&self) -> Vec<String> {
        [
            ("metadatabase", &self.metadatabase, true),
            ("scheduler", &self.scheduler, true),
            ("dag_processor", &self.dag_processor, false),
            ("triggerer", &self.triggerer, false),
        ]
        .into_iter()
        .filter(|(_, c, required)| !c.is_healthy() && (*required || c.status.is_some()))
        .map(|(name, c, _)| format!("{name} {}", c.status.as_deref().unwrap_or("absent")))
        .collect()
    }
}

/// A DAG, as `GET /api/v2/dags` lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Dag {
    /// Its id.
    pub dag_id: String,
    /// A paused DAG's runs stay queued (new DAGs start paused).
    pub is_paused: bool,
    /// Its file is gone.
    #[serde(default)]
    pub is_stale: bool,
    /// Its file failed to import.
    #[serde(default)]
    pub has_import_errors: bool,
    /// Its tags' names.
    #[serde(default, deserialize_with = "tag_names")]
    pub tags: Vec<String>,
    /// When it runs, in words ("Never, external triggers only", "Triggered by assets").
    #[serde(default)]
    pub timetable_description: Option<String>,
    /// Its owners.
    #[serde(default)]
    pub owners: Vec<String>,
}

fn tag_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Tag {
        name: String,
    }
    Ok(Vec::<Tag>::deserialize(d)?
        .into_iter()
        .map(|t| t.name)
        .collect())
}

/// A DAG run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct DagRun {
    /// Its id within the DAG (`manual__2026-12-07T23:28:52.166554+00:00`: ids hold `:`
    /// and `+`, which the client percent-encodes in paths).
    pub dag_run_id: String,
    /// Its DAG.
    pub dag_id: String,
    /// Where it stands.
    pub state: RunState,
    /// `manual`, `scheduled`, `asset_triggered`, `backfill`.
    #[serde(default)]
    pub run_type: Option<String>,
    /// When it was queued (RFC 3339).
    #[serde(default)]
    pub queued_at: Option<String>,
    /// When it started.
    #[serde(default)]
    pub start_date: Option<String>,
    /// When it ended.
    #[serde(default)]
    pub end_date: Option<String>,
    /// The configuration it was triggered with.
    #[serde(default)]
    pub conf: Option<Value>,
    /// Its note.
    #[serde(default)]
    pub note: Option<String>,
}

impl DagRun {
    /// The run ended well.
    pub fn succeeded(&self) -> bool {
        self.state == RunState::Success
    }
}

/// One task of a DAG run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct TaskInstance {
    /// The task's id.
    pub task_id: String,
    /// Its run.
    pub dag_run_id: String,
    /// `-1` unless the task is mapped.
    #[serde(default = "unmapped")]
    pub map_index: i64,
    /// `success`, `failed`, `upstream_failed`, `running`, `queued`, `scheduled`,
    /// `skipped`, `up_for_retry` …; `None` before the scheduler looked at it.
    #[serde(default)]
    pub state: Option<String>,
    /// The attempt (logs are per attempt).
    #[serde(default)]
    pub try_number: u32,
    /// When it started.
    #[serde(default)]
    pub start_date: Option<String>,
    /// When it ended.
    #[serde(default)]
    pub end_date: Option<String>,
    /// Seconds it took.
    #[serde(default)]
    pub duration: Option<f64>,
    /// Its operator.
    #[serde(default)]
    pub operator: Option<String>,
}

fn unmapped() -> i64 {
    -1
}

/// One event of a task's log (Airflow 3 logs are structured).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct LogEvent {
    /// When (RFC 3339); the log's header lines have none.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// `info`, `warning`, `error` …
    #[serde(default)]
    pub level: Option<String>,
    /// The message.
    #[serde(default)]
    pub event: String,
    /// The rest: logger, file and line, the task's ids.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// A variable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Variable {
    /// Its key.
    pub key: String,
    /// Its value (Airflow keeps values as text).
    pub value: String,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A connection as Airflow answers it: without its password (Airflow masks it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Connection {
    /// Its id.
    pub connection_id: String,
    /// `http`, `postgres`, `aws` …
    pub conn_type: String,
    /// Host.
    #[serde(default)]
    pub host: Option<String>,
    /// Login.
    #[serde(default)]
    pub login: Option<String>,
    /// Schema (a database, for SQL connections).
    #[serde(default)]
    pub schema: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Extra settings, JSON text.
    #[serde(default)]
    pub extra: Option<String>,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
}

/// An asset (a dataset DAGs produce and are scheduled on).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Asset {
    /// Its id (what asset events name).
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its URI.
    pub uri: String,
    /// The DAGs scheduled on it.
    #[serde(default, deserialize_with = "dag_ids")]
    pub scheduled_dags: Vec<String>,
}

fn dag_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Scheduled {
        dag_id: String,
    }
    Ok(Vec::<Scheduled>::deserialize(d)?
        .into_iter()
        .map(|s| s.dag_id)
        .collect())
}

/// An asset event: the asset was updated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct AssetEvent {
    /// Its id.
    pub id: i64,
    /// The asset's id.
    pub asset_id: i64,
    /// The asset's URI.
    pub uri: String,
    /// What the producer said about the update.
    #[serde(default)]
    pub extra: Map<String, Value>,
    /// When (RFC 3339).
    pub timestamp: String,
}
