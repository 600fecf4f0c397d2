//! What NiFi's REST API answers, as typed values: the fields a client acts on, read from
//! NiFi's entity envelope (`revision`, `component`, `status.aggregateSnapshot`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A component's revision: what a change must name (NiFi refuses an older one with 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Counted up by every change.
    pub version: u64,
    /// The client that made the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// A processor's scheduled state.
///
/// ```
/// use connector_etl::nifi::ProcessorState;
/// assert_eq!(ProcessorState::from("RUNNING"), ProcessorState::Running);
/// assert_eq!(ProcessorState::RunOnce.as_str(), "RUN_ONCE");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcessorState {
    /// Scheduled to run.
    Running,
    /// Not scheduled.
    Stopped,
    /// Cannot be started until enabled (stopped).
    Disabled,
    /// Run one scheduling cycle, then stop (only as a request).
    RunOnce,
    /// A state this client does not know.
    Other(String),
}

impl ProcessorState {
    /// NiFi's name of the state.
    pub fn as_str(&self) -> &str {
        match self {
            ProcessorState::Running => "RUNNING",
            ProcessorState::Stopped => "STOPPED",
            ProcessorState::Disabled => "DISABLED",
            ProcessorState::RunOnce => "RUN_ONCE",
            ProcessorState::Other(s) => s,
        }
    }
}

impl From<&str> for ProcessorState {
    fn from(s: &str) -> Self {
        match s {
            "RUNNING" => ProcessorState::Running,
            "STOPPED" => ProcessorState::Stopped,
            "DISABLED" => ProcessorState::Disabled,
            "RUN_ONCE" => ProcessorState::RunOnce,
            other => ProcessorState::Other(other.to_owned()),
        }
    }
}

/// `GET /flow/about`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct About {
    /// `NiFi`.
    pub title: String,
    /// `2.12.0`.
    pub version: String,
    /// The server's time zone.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// `GET /flow/status`: the whole flow at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ControllerStatus {
    /// Threads at work.
    pub active_thread_count: i64,
    /// Flow files waiting in queues.
    #[serde(default)]
    pub flow_files_queued: i64,
    /// Their bytes.
    #[serde(default)]
    pub bytes_queued: i64,
    /// Components running.
    pub running_count: i64,
    /// Components stopped.
    pub stopped_count: i64,
    /// Components that cannot run as configured.
    #[serde(default)]
    pub invalid_count: i64,
    /// Components disabled.
    #[serde(default)]
    pub disabled_count: i64,
}

/// A snapshot of a group's or processor's work (`status.aggregateSnapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Snapshot {
    /// Threads at work.
    #[serde(default)]
    pub active_thread_count: i64,
    /// Flow files queued (groups).
    #[serde(default)]
    pub flow_files_queued: i64,
    /// Bytes queued (groups).
    #[serde(default)]
    pub bytes_queued: i64,
    /// Flow files in.
    #[serde(default)]
    pub flow_files_in: i64,
    /// Flow files out.
    #[serde(default)]
    pub flow_files_out: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Status {
    #[serde(default, rename = "aggregateSnapshot")]
    pub(crate) aggregate_snapshot: Snapshot,
}

/// A process group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessGroup {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its parent's id (`None` for the root).
    pub parent_group_id: Option<String>,
    /// Its revision.
    pub revision: Revision,
    /// Components running, stopped, invalid and disabled inside it.
    pub running_count: i64,
    /// See `running_count`.
    pub stopped_count: i64,
    /// See `running_count`.
    pub invalid_count: i64,
    /// See `running_count`.
    pub disabled_count: i64,
    /// Its work now.
    pub status: Snapshot,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupEntity {
    revision: Revision,
    id: String,
    component: GroupComponent,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    running_count: i64,
    #[serde(default)]
    stopped_count: i64,
    #[serde(default)]
    invalid_count: i64,
    #[serde(default)]
    disabled_count: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupComponent {
    name: String,
    #[serde(default)]
    parent_group_id: Option<String>,
}

impl From<GroupEntity> for ProcessGroup {
    fn from(e: GroupEntity) -> Self {
        ProcessGroup {
            id: e.id,
            name: e.component.name,
            parent_group_id: e.component.parent_group_id,
            revision: e.revision,
            running_count: e.running_count,
            stopped_count: e.stopped_count,
            invalid_count: e.invalid_count,
            disabled_count: e.disabled_count,
            status: e.status.aggregate_snapshot,
        }
    }
}

/// A processor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Processor {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its class (`org.apache.nifi.processors.standard.GenerateFlowFile`).
    pub kind: String,
    /// Its group.
    pub group_id: String,
    /// Its scheduled state.
    pub state: ProcessorState,
    /// `VALID`, `INVALID` or `VALIDATING`.
    pub validation_status: Option<String>,
    /// Its revision.
    pub revision: Revision,
    /// Its work now.
    pub status: Snapshot,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProcessorEntity {
    revision: Revision,
    id: String,
    component: ProcessorComponent,
    #[serde(default)]
    status: Status,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProcessorComponent {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    parent_group_id: String,
    state: String,
    #[serde(default)]
    validation_status: Option<String>,
}

impl From<ProcessorEntity> for Processor {
    fn from(e: ProcessorEntity) -> Self {
        Processor {
            id: e.id,
            name: e.component.name,
            kind: e.component.kind,
            group_id: e.component.parent_group_id,
            state: ProcessorState::from(e.component.state.as_str()),
            validation_status: e.component.validation_status,
            revision: e.revision,
            status: e.status.aggregate_snapshot,
        }
    }
}

/// A bulletin: a message a component posted (warnings and errors of the flow).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Bulletin {
    /// Its id (increasing: ask for those `after` the last seen).
    pub id: i64,
    /// `INFO`, `WARNING` or `ERROR`.
    #[serde(default)]
    pub level: Option<String>,
    /// The message.
    #[serde(default)]
    pub message: Option<String>,
    /// The component that posted it.
    #[serde(default)]
    pub source_id: Option<String>,
    /// Its name.
    #[serde(default)]
    pub source_name: Option<String>,
    /// Its group.
    #[serde(default)]
    pub group_id: Option<String>,
    /// When (`HH:MM:SS TZ`).
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// A provenance event: something a component did to a flow file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ProvenanceEvent {
    /// Its id.
    pub event_id: i64,
    /// `CREATE`, `RECEIVE`, `SEND`, `ROUTE`, `DROP` …
    pub event_type: String,
    /// When.
    #[serde(default)]
    pub event_time: Option<String>,
    /// The flow file.
    #[serde(default)]
    pub flow_file_uuid: Option<String>,
    /// The component.
    #[serde(default)]
    pub component_id: Option<String>,
    /// Its name.
    #[serde(default)]
    pub component_name: Option<String>,
    /// The flow file's attributes (`name`, `value`, `previousValue`).
    #[serde(default)]
    pub attributes: Vec<Map<String, Value>>,
}
