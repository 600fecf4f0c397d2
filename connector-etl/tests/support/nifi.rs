//! A faithful local fake of the part of Apache NiFi 2's REST API (`/nifi-api`) the NiFi
//! client uses, written from NiFi's REST API reference, for where NiFi cannot run (it
//! ships on no registry reachable here). It is trusted only for what nipyapi — the PyPI
//! client generated from NiFi's own API definition — accepts from it unchanged
//! (`tests/python/nipyapi_check.py`).
//!
//! What it keeps as NiFi does:
//! - the entity envelope: `revision` (`version`, `clientId`), `id`, `uri`, `permissions`,
//!   `component`, `status` with an `aggregateSnapshot`;
//! - revisions: a run-status change names the revision it read; an older one is `409
//!   Conflict` with NiFi's text (`… is not the most up-to-date revision …`); each change
//!   counts the version up and keeps the writer's `clientId`;
//! - run states `RUNNING` / `STOPPED` / `DISABLED`, a process group scheduled as a whole
//!   (`PUT /flow/process-groups/{id}`), running processors holding a thread;
//! - the asynchronous request life-cycle of provenance queries: `POST` answers
//!   `finished: false`, a later `GET` has the results, `DELETE` removes the query, an
//!   unknown id is `404`;
//! - bulletins with `after`, `limit` and the `groupId` / `sourceName` / `message`
//!   regular-expression filters;
//! - the flow definition of a process group (`download`), and a group created from an
//!   uploaded definition (`process-groups/upload`, multipart);
//! - `POST /access/token` (form `username`, `password`) giving a bearer token every other
//!   call needs.
//!
//! The flow itself is simulated: starting a processor records one provenance event
//! (`CREATE` for a source processor, `RECEIVE` otherwise) and holds one thread while
//! running; nothing moves data.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

/// The user the fake knows.
pub const USER: &str = "nifi-admin";
/// Its password.
pub const PASSWORD: &str = "nifi-pass-3b17c2e9";

#[derive(Debug, Clone)]
struct Group {
    id: String,
    name: String,
    parent: Option<String>,
    version: u64,
}

#[derive(Debug, Clone)]
struct Processor {
    id: String,
    name: String,
    kind: String,
    group: String,
    state: String,
    version: u64,
    client: Option<String>,
    properties: Value,
}

#[derive(Debug, Clone)]
struct ProvenanceQuery {
    request: Value,
    submitted: String,
    polled: bool,
}

#[derive(Debug, Default)]
struct Flow {
    root: String,
    groups: Vec<Group>,
    processors: Vec<Processor>,
    bulletins: Vec<Value>,
    events: Vec<Value>,
    queries: HashMap<String, ProvenanceQuery>,
    tokens: Vec<String>,
}

/// A running fake, stopped when dropped.
pub struct FakeNifi {
    pub url: String,
    flow: Arc<Mutex<Flow>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeNifi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Now as NiFi writes it: `HH:MM:SS UTC`, and as ISO 8601.
fn now() -> (String, String) {
    let iso = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let time = format!("{} UTC", &iso[11..19]);
    (time, iso)
}

impl FakeNifi {
    /// The fake on a free loopback port: a root group, a group `moodbridge-ingest` with a
    /// `GenerateFlowFile` and a `LogAttribute` (stopped), and one warning bulletin.
    pub async fn start() -> FakeNifi {
        let root = uuid();
        let ingest = uuid();
        let (time, iso) = now();
        let generate = uuid();
        let mut flow = Flow {
            root: root.clone(),
            groups: vec![
                Group {
                    id: root.clone(),
                    name: "NiFi Flow".into(),
                    parent: None,
                    version: 0,
                },
                Group {
                    id: ingest.clone(),
                    name: "moodbridge-ingest".into(),
                    parent: Some(root.clone()),
                    version: 0,
                },
            ],
            ..Flow::default()
        };
        for (id, name, kind) in [
            (
                generate.clone(),
                "Generate cases",
                "org.apache.nifi.processors.standard.GenerateFlowFile",
            ),
            (
                uuid(),
                "Log cases",
                "org.apache.nifi.processors.standard.LogAttribute",
            ),
        ] {
            flow.processors.push(Processor {
                id,
                name: name.into(),
                kind: kind.into(),
                group: ingest.clone(),
                state: "STOPPED".into(),
                version: 0,
                client: None,
                properties: json!({"Batch Size": "1"}),
            });
        }
        flow.bulletins.push(json!({
            "id": 1,
            "groupId": ingest,
            "sourceId": generate,
            "timestamp": time,
            "timestampIso": iso,
            "canRead": true,
            "bulletin": {
                "id": 1,
                "category": "Log Message",
                "groupId": ingest,
                "sourceId": generate,
                "sourceName": "Generate cases",
                "sourceType": "PROCESSOR",
                "level": "WARNING",
                "message": "Generate cases: queue to Log cases is 80% full",
                "timestamp": time,
                "timestampIso": iso,
            }
        }));
        let flow = Arc::new(Mutex::new(flow));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = router(Served {
            flow: flow.clone(),
            base: format!("{url}/nifi-api"),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        FakeNifi {
            url,
            flow,
            stop: Some(stop),
        }
    }

    /// The root group's id.
    pub fn root(&self) -> String {
        self.flow.lock().unwrap().root.clone()
    }

    /// The id of the group named `name`.
    pub fn group(&self, name: &str) -> String {
        let flow = self.flow.lock().unwrap();
        flow.groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.id.clone())
            .unwrap()
    }

    /// Change a processor's revision behind the client's back (another user's edit).
    pub fn touch(&self, processor: &str) {
        let mut flow = self.flow.lock().unwrap();
        let p = flow
            .processors
            .iter_mut()
            .find(|p| p.id == processor)
            .unwrap();
        p.version += 1;
        p.client = Some("another-user".into());
    }

    /// Forget every token issued (a restart of NiFi, or their expiry).
    pub fn expire_tokens(&self) {
        self.flow.lock().unwrap().tokens.clear();
    }

    /// Provenance queries not deleted yet.
    pub fn provenance_queries(&self) -> usize {
        self.flow.lock().unwrap().queries.len()
    }

    /// Add a bulletin from `processor`.
    pub fn bulletin(&self, processor: &str, level: &str, message: &str) {
        let mut flow = self.flow.lock().unwrap();
        let p = flow
            .processors
            .iter()
            .find(|p| p.id == processor)
            .cloned()
            .unwrap();
        let id = flow.bulletins.len() as i64 + 1;
        let (time, iso) = now();
        flow.bulletins.push(json!({
            "id": id, "groupId": p.group, "sourceId": p.id, "timestamp": time,
            "timestampIso": iso, "canRead": true,
            "bulletin": {
                "id": id, "category": "Log Message", "groupId": p.group, "sourceId": p.id,
                "sourceName": p.name, "sourceType": "PROCESSOR", "level": level,
                "message": message, "timestamp": time, "timestampIso": iso,
            }
        }));
    }
}

#[derive(Clone)]
struct Served {
    flow: Arc<Mutex<Flow>>,
    base: String,
}

fn router(served: Served) -> Router {
    Router::new()
        .route("/nifi-api/access/token", post(access_token))
        .route("/nifi-api/flow/about", get(about))
        .route("/nifi-api/flow/status", get(controller_status))
        .route("/nifi-api/flow/bulletin-board", get(bulletin_board))
        .route(
            "/nifi-api/flow/process-groups/{id}",
            get(group_flow).put(schedule_group),
        )
        .route(
            "/nifi-api/flow/process-groups/{id}/status",
            get(group_status),
        )
        .route("/nifi-api/process-groups/{id}", get(group))
        .route(
            "/nifi-api/process-groups/{id}/processors",
            get(group_processors),
        )
        .route(
            "/nifi-api/process-groups/{id}/process-groups",
            get(child_groups),
        )
        .route("/nifi-api/process-groups/{id}/download", get(download))
        .route(
            "/nifi-api/process-groups/{id}/process-groups/upload",
            post(upload),
        )
        .route("/nifi-api/processors/{id}", get(processor))
        .route("/nifi-api/processors/{id}/run-status", put(run_status))
        .route("/nifi-api/provenance", post(submit_provenance))
        .route(
            "/nifi-api/provenance/{id}",
            get(get_provenance).delete(delete_provenance),
        )
        .with_state(served)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [("content-type", "text/plain")], body.into()).into_response()
}

/// NiFi's answer to a call without a valid token; `None` for a valid one.
fn refused(s: &Served, headers: &HeaderMap) -> Option<Response> {
    let flow = s.flow.lock().unwrap();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if flow.tokens.iter().any(|k| k == t) => None,
        _ => Some(text(
            StatusCode::UNAUTHORIZED,
            "Authentication credentials must be provided",
        )),
    }
}

macro_rules! guard {
    ($s:expr, $h:expr) => {
        if let Some(r) = refused(&$s, &$h) {
            return r;
        }
    };
}

async fn access_token(
    State(s): State<Served>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.get("username").map(String::as_str) != Some(USER)
        || form.get("password").map(String::as_str) != Some(PASSWORD)
    {
        return text(
            StatusCode::BAD_REQUEST,
            "The supplied username and password are not valid.",
        );
    }
    let token = format!(
        "eyJhbGciOiJQUzUxMiJ9.{}.{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    s.flow.lock().unwrap().tokens.push(token.clone());
    text(StatusCode::CREATED, token)
}

async fn about(State(s): State<Served>, headers: HeaderMap) -> Response {
    guard!(s, headers);
    Json(json!({"about": {
        "title": "NiFi",
        "version": "2.12.0",
        "uri": format!("{}/", s.base),
        "contentViewerUrl": "../nifi-content-viewer/",
        "timezone": "UTC",
        "buildTag": "nifi-2.12.0",
        "buildRevision": "0000000",
        "buildBranch": "UNKNOWN",
        "buildTimestamp": "11/01/2026 00:00:00 UTC"
    }}))
    .into_response()
}

/// The ids of `group` and every group under it.
fn subtree(flow: &Flow, group: &str) -> Vec<String> {
    let mut out = vec![group.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].clone();
        out.extend(
            flow.groups
                .iter()
                .filter(|g| g.parent.as_deref() == Some(parent.as_str()))
                .map(|g| g.id.clone()),
        );
        i += 1;
    }
    out
}

fn resolve(flow: &Flow, id: &str) -> Option<String> {
    if id == "root" {
        return Some(flow.root.clone());
    }
    flow.groups
        .iter()
        .any(|g| g.id == id)
        .then(|| id.to_owned())
}

fn not_found(what: &str, id: &str) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!("Unable to find {what} with id '{id}'."),
    )
}

fn threads(p: &Processor) -> i64 {
    i64::from(p.state == "RUNNING")
}

fn counts(flow: &Flow, group: &str) -> (usize, usize, usize, i64) {
    let ids = subtree(flow, group);
    let inside: Vec<&Processor> = flow
        .processors
        .iter()
        .filter(|p| ids.contains(&p.group))
        .collect();
    let state = |s: &str| inside.iter().filter(|p| p.state == s).count();
    (
        state("RUNNING"),
        state("STOPPED"),
        state("DISABLED"),
        inside.iter().map(|p| threads(p)).sum(),
    )
}

fn group_snapshot(flow: &Flow, g: &Group) -> Value {
    let (_, _, _, active) = counts(flow, &g.id);
    json!({
        "id": g.id, "name": g.name,
        "versionedFlowState": null,
        "flowFilesIn": 0, "bytesIn": 0, "input": "0 (0 bytes)",
        "flowFilesQueued": 0, "bytesQueued": 0, "queued": "0 (0 bytes)",
        "queuedCount": "0", "queuedSize": "0 bytes",
        "bytesRead": 0, "read": "0 bytes", "bytesWritten": 0, "written": "0 bytes",
        "flowFilesOut": 0, "bytesOut": 0, "output": "0 (0 bytes)",
        "flowFilesTransferred": 0, "bytesTransferred": 0, "transferred": "0 (0 bytes)",
        "bytesReceived": 0, "flowFilesReceived": 0, "received": "0 (0 bytes)",
        "bytesSent": 0, "flowFilesSent": 0, "sent": "0 (0 bytes)",
        "activeThreadCount": active, "terminatedThreadCount": 0,
        "processingNanos": 0,
    })
}

fn group_entity(s: &Served, flow: &Flow, g: &Group) -> Value {
    let (running, stopped, disabled, _) = counts(flow, &g.id);
    let (time, _) = now();
    json!({
        "revision": {"version": g.version},
        "id": g.id,
        "uri": format!("{}/process-groups/{}", s.base, g.id),
        "position": {"x": 0.0, "y": 0.0},
        "permissions": {"canRead": true, "canWrite": true},
        "bulletins": [],
        "component": {
            "id": g.id, "parentGroupId": g.parent, "name": g.name, "comments": "",
            "position": {"x": 0.0, "y": 0.0},
            "runningCount": running, "stoppedCount": stopped, "invalidCount": 0,
            "disabledCount": disabled, "activeRemotePortCount": 0,
            "inactiveRemotePortCount": 0, "upToDateCount": 0, "locallyModifiedCount": 0,
            "staleCount": 0, "locallyModifiedAndStaleCount": 0, "syncFailureCount": 0,
            "localInputPortCount": 0, "localOutputPortCount": 0,
            "publicInputPortCount": 0, "publicOutputPortCount": 0,
            "inputPortCount": 0, "outputPortCount": 0,
            "executionEngine": "INHERITED", "flowfileConcurrency": "UNBOUNDED",
            "flowfileOutboundPolicy": "STREAM_WHEN_AVAILABLE",
        },
        "status": {
            "id": g.id, "name": g.name, "statsLastRefreshed": time,
            "aggregateSnapshot": group_snapshot(flow, g),
        },
        "runningCount": running, "stoppedCount": stopped, "invalidCount": 0,
        "disabledCount": disabled, "activeRemotePortCount": 0, "inactiveRemotePortCount": 0,
        "upToDateCount": 0, "locallyModifiedCount": 0, "staleCount": 0,
        "locallyModifiedAndStaleCount": 0, "syncFailureCount": 0,
        "localInputPortCount": 0, "localOutputPortCount": 0,
        "publicInputPortCount": 0, "publicOutputPortCount": 0,
        "inputPortCount": 0, "outputPortCount": 0,
    })
}

fn processor_entity(s: &Served, p: &Processor) -> Value {
    let run_status = match p.state.as_str() {
        "RUNNING" => "Running",
        "DISABLED" => "Disabled",
        _ => "Stopped",
    };
    let (time, _) = now();
    let mut revision = json!({"version": p.version});
    if let Some(client) = &p.client {
        revision["clientId"] = json!(client);
    }
    let config = json!({
        "properties": p.properties, "schedulingPeriod": "0 sec",
        "schedulingStrategy": "TIMER_DRIVEN", "executionNode": "ALL",
        "penaltyDuration": "30 sec", "yieldDuration": "1 sec",
        "bulletinLevel": "WARN", "runDurationMillis": 0,
        "concurrentlySchedulableTaskCount": 1, "comments": "",
        "lossTolerant": false, "retryCount": 10, "retriedRelationships": [],
        "backoffMechanism": "PENALIZE_FLOWFILE", "maxBackoffPeriod": "10 mins",
    });
    let snapshot = json!({
        "id": p.id, "groupId": p.group, "name": p.name, "type": p.kind,
        "runStatus": run_status, "executionNode": "ALL",
        "bytesRead": 0, "bytesWritten": 0, "read": "0 bytes", "written": "0 bytes",
        "flowFilesIn": 0, "bytesIn": 0, "input": "0 (0 bytes)",
        "flowFilesOut": 0, "bytesOut": 0, "output": "0 (0 bytes)",
        "taskCount": 0, "tasksDurationNanos": 0, "tasks": "0",
        "tasksDuration": "00:00:00.000", "activeThreadCount": threads(p),
        "terminatedThreadCount": 0,
    });
    json!({
        "revision": revision,
        "id": p.id,
        "uri": format!("{}/processors/{}", s.base, p.id),
        "position": {"x": 0.0, "y": 0.0},
        "permissions": {"canRead": true, "canWrite": true},
        "operatePermissions": {"canRead": true, "canWrite": true},
        "bulletins": [],
        "inputRequirement": "INPUT_ALLOWED",
        "component": {
            "id": p.id, "parentGroupId": p.group, "name": p.name, "type": p.kind,
            "bundle": {"group": "org.apache.nifi", "artifact": "nifi-standard-nar", "version": "2.12.0"},
            "state": p.state, "style": {}, "relationships": [],
            "supportsParallelProcessing": true, "supportsBatching": true,
            "supportsSensitiveDynamicProperties": false, "persistsState": false,
            "restricted": false, "deprecated": false, "executionNodeRestricted": false,
            "multipleVersionsAvailable": false, "inputRequirement": "INPUT_ALLOWED",
            "validationStatus": "VALID", "extensionMissing": false,
            "config": config,
        },
        "status": {
            "groupId": p.group, "id": p.id, "name": p.name, "runStatus": run_status,
            "statsLastRefreshed": time,
            "aggregateSnapshot": snapshot,
        },
    })
}

async fn controller_status(State(s): State<Served>, headers: HeaderMap) -> Response {
    guard!(s, headers);
    let flow = s.flow.lock().unwrap();
    let (running, stopped, disabled, active) = counts(&flow, &flow.root);
    Json(json!({"controllerStatus": {
        "activeThreadCount": active, "terminatedThreadCount": 0,
        "queued": "0 / 0 bytes", "flowFilesQueued": 0, "bytesQueued": 0,
        "runningCount": running, "stoppedCount": stopped, "invalidCount": 0,
        "disabledCount": disabled, "activeRemotePortCount": 0, "inactiveRemotePortCount": 0,
        "upToDateCount": 0, "locallyModifiedCount": 0, "staleCount": 0,
        "locallyModifiedAndStaleCount": 0, "syncFailureCount": 0,
    }}))
    .into_response()
}

async fn group_status(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guard!(s, headers);
    let flow = s.flow.lock().unwrap();
    let Some(id) = resolve(&flow, &id) else {
        return not_found("process group", &id);
    };
    let g = flow.groups.iter().find(|g| g.id == id).unwrap();
    let (time, _) = now();
    Json(json!({"processGroupStatus": {
        "id": g.id, "name": g.name, "statsLastRefreshed": time,
        "aggregateSnapshot": group_snapshot(&flow, g),
    }}))
    .into_response()
}

async fn group(State(s): State<Served>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    guard!(s, headers);
    let flow = s.flow.lock().unwrap();
    let Some(id) = resolve(&flow, &id) else {
        return not_found("process group", &id);
    };
    let g = flow.groups.iter().find(|g| g.id == id).unwrap();
    Json(group_entity(&s, &flow, g)).into_response()
}

/// The group's flow: its child groups and processors, with its breadcrumb.
async fn group_flow(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guard!(s, headers);
    let flow = s.flow.lock().unwrap();
    let Some(id) = resolve(&flow, &id) else {
        return not_found("process group", &id);
    };
    let g = flow.groups.iter().find(|g| g.id == id).unwrap();
    let children: Vec<Value> = flow
        .groups
        .iter()
        .filter(|c| c.parent.as_deref() == Some(id.as_str()))
        .map(|c| group_entity(&s, &flow, c))
        .collect();
    let processors: Vec<Value> = flow
        .processors
        .iter()
        .filter(|p| p.group == id)
        .map(|p| processor_entity(&s, p))
        .collect();
    let (time, _) = now();
    Json(json!({
        "permissions": {"canRead": true, "canWrite": true},
        "processGroupFlow": {
            "id": g.id,
            "uri": format!("{}/flow/process-groups/{}", s.base, g.id),
            "parentGroupId": g.parent,
            "breadcrumb": {
                "id": g.id,
                "permissions": {"canRead": true, "canWrite": true},
                "breadcrumb": {"id": g.id, "name": g.name},
            },
            "flow": {
                "processGroups": children,
                "remoteProcessGroups": [],
                "processors": processors,
                "inputPorts": [],
                "outputPorts": [],
                "connections": [],
                "labels": [],
                "funnels": [],
            },
            "lastRefreshed": time,
        },
    }))
    .into_response()
}

async fn child_groups(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guard!(s, headers);
    let flow = s.flow.lock().unwrap();
    let Some(id) = resolve(&flow, &id) else {
        return not_found("process group", &id);
    };
    let children: Vec<Value> = flow
        .groups
        .iter()
        .filter(|g| g.parent.as_deref() == Some(id.as_str()))
        .map(|g| group_entity(&s, &flow, g))
        .collect();
    Json(json!({"processGroups": children})).into_response()
}

async fn group_processors(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    guard!(s, headers);
    let flow = s.flow.lock().unwrap();
    let Some(id) = resolve(&flow, &id) else {
        return not_found("process group", &id);
    };
    // NiFi reads the flag case-insensitively (nipyapi sends `True`).
    let descendants = query
        .get("includeDescendantGroups")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let groups = if descendants {
        subtree(&flow, &id)
    } else {
        vec![id]
    };
    let processors: Vec<Value> = flow
        .processors
        .iter()
        .filter(|p| groups.contains(&p.group))
        .map(|p| processor_entity(&s, p))
        .collect();
    Json(json!({"processors": processors})).into_response()
}

async fn processor(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guard!(s, headers);
    let flow = s.flow.lock().unwrap();
    match flow.processors.iter().find(|p| p.id == id) {
        Some(p) => Json(processor_entity(&s, p)).into_response(),
        None => not_found("processor", &id),
    }
}

/// A processor starting: one provenance event, as its first task would record.
fn started(flow: &mut Flow, processor: usize) {
    let p = flow.processors[processor].clone();
    let source = p.kind.ends_with("GenerateFlowFile");
    let id = flow.events.len() as i64;
    let (time, iso) = now();
    let uuid = uuid();
    flow.events.push(json!({
        "id": id.to_string(), "eventId": id, "eventTime": time, "eventTimeIso": iso,
        "eventDuration": 0, "lineageDuration": 0,
        "eventType": if source { "CREATE" } else { "RECEIVE" },
        "flowFileUuid": uuid, "fileSize": "0 bytes", "fileSizeBytes": 0,
        "groupId": p.group, "componentId": p.id, "componentType": p.kind.rsplit('.').next(),
        "componentName": p.name, "attributes": [
            {"name": "uuid", "value": uuid, "previousValue": null},
            {"name": "filename", "value": format!("{uuid}.case"), "previousValue": null},
        ],
        "parentUuids": [], "childUuids": [], "details": null,
        "contentEqual": false, "inputContentAvailable": false,
        "outputContentAvailable": false, "replayAvailable": false,
    }));
}

fn stale(p: &Processor, version: Option<u64>, client: Option<&str>) -> Response {
    text(
        StatusCode::CONFLICT,
        format!(
            "[{}, {}, {}] is not the most up-to-date revision. This component appears to have been modified",
            version.map_or_else(|| "null".into(), |v| v.to_string()),
            client.unwrap_or("null"),
            p.id
        ),
    )
}

async fn run_status(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    guard!(s, headers);
    let mut flow = s.flow.lock().unwrap();
    let Some(i) = flow.processors.iter().position(|p| p.id == id) else {
        return not_found("processor", &id);
    };
    let version = body["revision"]["version"].as_u64();
    let client = body["revision"]["clientId"].as_str();
    if version != Some(flow.processors[i].version) {
        return stale(&flow.processors[i], version, client);
    }
    let state = body["state"].as_str().unwrap_or_default().to_owned();
    if !["RUNNING", "STOPPED", "DISABLED", "RUN_ONCE"].contains(&state.as_str()) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "The specified scheduled state ({state}) is not valid. Valid options are 'RUNNING', 'RUN_ONCE', 'STOPPED' and 'DISABLED'."
            ),
        );
    }
    let was = flow.processors[i].state.clone();
    if was == "DISABLED" && state == "RUNNING" {
        return text(
            StatusCode::CONFLICT,
            format!(
                "{} cannot be started because it is disabled",
                flow.processors[i].id
            ),
        );
    }
    {
        let p = &mut flow.processors[i];
        p.version += 1;
        p.client = client.map(str::to_owned);
        p.state = if state == "RUN_ONCE" {
            "STOPPED".into()
        } else {
            state.clone()
        };
    }
    if (state == "RUNNING" || state == "RUN_ONCE") && was != "RUNNING" {
        started(&mut flow, i);
    }
    Json(processor_entity(&s, &flow.processors[i])).into_response()
}

async fn schedule_group(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    guard!(s, headers);
    let mut flow = s.flow.lock().unwrap();
    let Some(group) = resolve(&flow, &id) else {
        return not_found("process group", &id);
    };
    if body["id"].as_str() != Some(group.as_str()) && body["id"].as_str() != Some(id.as_str()) {
        return text(
            StatusCode::BAD_REQUEST,
            "The process group id in the request body does not match the id in the path.",
        );
    }
    let state = body["state"].as_str().unwrap_or_default().to_owned();
    if state != "RUNNING" && state != "STOPPED" {
        return text(
            StatusCode::BAD_REQUEST,
            "The scheduled state must be RUNNING or STOPPED.",
        );
    }
    // Components named with their revisions must still be at them.
    if let Some(components) = body["components"].as_object() {
        for (cid, revision) in components {
            if let Some(p) = flow.processors.iter().find(|p| &p.id == cid)
                && revision["version"].as_u64() != Some(p.version)
            {
                return stale(
                    p,
                    revision["version"].as_u64(),
                    revision["clientId"].as_str(),
                );
            }
        }
    }
    let ids = subtree(&flow, &group);
    let named: Option<Vec<String>> = body["components"]
        .as_object()
        .map(|c| c.keys().cloned().collect());
    for i in 0..flow.processors.len() {
        let p = &flow.processors[i];
        let selected = ids.contains(&p.group)
            && named.as_ref().is_none_or(|n| n.contains(&p.id))
            && p.state != "DISABLED"
            && p.state != state;
        if selected {
            let start = state == "RUNNING";
            let p = &mut flow.processors[i];
            p.state = state.clone();
            p.version += 1;
            if start {
                started(&mut flow, i);
            }
        }
    }
    Json(json!({"id": id, "state": state})).into_response()
}

async fn bulletin_board(
    State(s): State<Served>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    guard!(s, headers);
    let flow = s.flow.lock().unwrap();
    let after: i64 = query
        .get("after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    let limit: usize = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let pattern = |key: &str| query.get(key).map(|p| regex::Regex::new(p).unwrap());
    let (group, source, message) = (
        pattern("groupId"),
        pattern("sourceName"),
        pattern("message"),
    );
    let matches = |re: &Option<regex::Regex>, v: &Value| {
        re.as_ref()
            .is_none_or(|re| re.is_match(v.as_str().unwrap_or_default()))
    };
    let bulletins: Vec<Value> = flow
        .bulletins
        .iter()
        .filter(|b| b["id"].as_i64().unwrap_or(0) > after)
        .filter(|b| matches(&group, &b["groupId"]))
        .filter(|b| matches(&source, &b["bulletin"]["sourceName"]))
        .filter(|b| matches(&message, &b["bulletin"]["message"]))
        .take(limit)
        .cloned()
        .collect();
    let (time, _) = now();
    Json(json!({"bulletinBoard": {"bulletins": bulletins, "generated": time}})).into_response()
}

fn provenance_entity(s: &Served, flow: &Flow, id: &str, q: &ProvenanceQuery) -> Value {
    let finished = q.polled;
    let max = q.request["maxResults"].as_u64().unwrap_or(1000) as usize;
    let component = q.request["searchTerms"]["ProcessorID"]["value"]
        .as_str()
        .or_else(|| q.request["searchTerms"]["ComponentID"]["value"].as_str());
    let events: Vec<Value> = if finished {
        flow.events
            .iter()
            .filter(|e| component.is_none_or(|c| e["componentId"] == c))
            .rev()
            .take(max)
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let (time, _) = now();
    json!({"provenance": {
        "id": id,
        "uri": format!("{}/provenance/{id}", s.base),
        "submissionTime": q.submitted,
        "expiration": q.submitted,
        "percentCompleted": if finished { 100 } else { 0 },
        "finished": finished,
        "request": q.request,
        "results": {
            "provenanceEvents": events,
            "total": events.len().to_string(),
            "totalCount": events.len(),
            "generated": time,
            "oldestEvent": flow.events.first().map(|e| e["eventTime"].clone()),
            "timeOffset": 0,
            "errors": [],
        },
    }})
}

async fn submit_provenance(
    State(s): State<Served>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    guard!(s, headers);
    let mut flow = s.flow.lock().unwrap();
    let request = body["provenance"]["request"].clone();
    if !request.is_object() {
        return text(
            StatusCode::BAD_REQUEST,
            "Provenance request must be specified.",
        );
    }
    let id = uuid();
    let (_, iso) = now();
    let query = ProvenanceQuery {
        request,
        submitted: iso,
        polled: false,
    };
    let answer = provenance_entity(&s, &flow, &id, &query);
    flow.queries.insert(id, query);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn get_provenance(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guard!(s, headers);
    let mut flow = s.flow.lock().unwrap();
    let Some(query) = flow.queries.get_mut(&id) else {
        return not_found("provenance query", &id);
    };
    // The search runs in the background: by the next look it is done.
    query.polled = true;
    let query = query.clone();
    Json(provenance_entity(&s, &flow, &id, &query)).into_response()
}

async fn delete_provenance(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guard!(s, headers);
    let mut flow = s.flow.lock().unwrap();
    match flow.queries.remove(&id) {
        Some(query) => Json(provenance_entity(&s, &flow, &id, &query)).into_response(),
        None => not_found("provenance query", &id),
    }
}

/// A group as a versioned flow snapshot's contents.
fn flow_contents(flow: &Flow, group: &str) -> Value {
    let g = flow.groups.iter().find(|g| g.id == group).unwrap();
    let processors: Vec<Value> = flow
        .processors
        .iter()
        .filter(|p| p.group == group)
        .map(|p| {
            json!({
                "identifier": p.id, "instanceIdentifier": p.id, "name": p.name,
                "type": p.kind, "componentType": "PROCESSOR", "groupIdentifier": group,
                "bundle": {"group": "org.apache.nifi", "artifact": "nifi-standard-nar", "version": "2.12.0"},
                "properties": p.properties, "propertyDescriptors": {},
                "schedulingPeriod": "0 sec", "schedulingStrategy": "TIMER_DRIVEN",
                "executionNode": "ALL", "penaltyDuration": "30 sec", "yieldDuration": "1 sec",
                "bulletinLevel": "WARN", "runDurationMillis": 0, "concurrentlySchedulableTaskCount": 1,
                "autoTerminatedRelationships": [], "scheduledState": if p.state == "DISABLED" { "DISABLED" } else { "ENABLED" },
                "position": {"x": 0.0, "y": 0.0}, "style": {},
            })
        })
        .collect();
    let children: Vec<Value> = flow
        .groups
        .iter()
        .filter(|c| c.parent.as_deref() == Some(group))
        .map(|c| flow_contents(flow, &c.id))
        .collect();
    json!({
        "identifier": g.id, "instanceIdentifier": g.id, "name": g.name, "comments": "",
        "componentType": "PROCESS_GROUP", "position": {"x": 0.0, "y": 0.0},
        "processGroups": children, "processors": processors, "connections": [],
        "inputPorts": [], "outputPorts": [], "labels": [], "funnels": [],
        "controllerServices": [], "remoteProcessGroups": [],
        "variables": {}, "flowFileConcurrency": "UNBOUNDED",
        "flowFileOutboundPolicy": "STREAM_WHEN_AVAILABLE", "executionEngine": "INHERITED",
    })
}

async fn download(State(s): State<Served>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    guard!(s, headers);
    let flow = s.flow.lock().unwrap();
    let Some(id) = resolve(&flow, &id) else {
        return not_found("process group", &id);
    };
    Json(json!({
        "flowContents": flow_contents(&flow, &id),
        "externalControllerServices": {},
        "parameterContexts": {},
        "parameterProviders": {},
        "flowEncodingVersion": "1.0",
        "latest": false,
    }))
    .into_response()
}

async fn upload(
    State(s): State<Served>,
    headers: HeaderMap,
    Path(parent): Path<String>,
    mut multipart: Multipart,
) -> Response {
    guard!(s, headers);
    let mut fields: HashMap<String, Vec<u8>> = HashMap::new();
    while let Ok(Some(field)) = multipart.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.unwrap_or_default();
        fields.insert(name, bytes.to_vec());
    }
    let text_of = |k: &str| {
        fields
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let (Some(name), Some(file)) = (text_of("groupName"), fields.get("file")) else {
        return text(
            StatusCode::BAD_REQUEST,
            "The group name and the flow definition file are required.",
        );
    };
    for required in ["positionX", "positionY", "clientId"] {
        if text_of(required).is_none() {
            return text(
                StatusCode::BAD_REQUEST,
                format!("The {required} is required."),
            );
        }
    }
    let Ok(definition) = serde_json::from_slice::<Value>(file) else {
        return text(
            StatusCode::BAD_REQUEST,
            "The uploaded file is not a valid flow definition.",
        );
    };
    if !definition["flowContents"].is_object() {
        return text(
            StatusCode::BAD_REQUEST,
            "The uploaded file is not a valid flow definition.",
        );
    }
    let mut flow = s.flow.lock().unwrap();
    let Some(parent) = resolve(&flow, &parent) else {
        return not_found("process group", &parent);
    };
    fn add(flow: &mut Flow, contents: &Value, name: &str, parent: &str) -> String {
        let id = uuid();
        flow.groups.push(Group {
            id: id.clone(),
            name: name.to_owned(),
            parent: Some(parent.to_owned()),
            version: 0,
        });
        for p in contents["processors"].as_array().into_iter().flatten() {
            flow.processors.push(Processor {
                id: uuid(),
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                kind: p["type"].as_str().unwrap_or_default().to_owned(),
                group: id.clone(),
                state: if p["scheduledState"] == "DISABLED" {
                    "DISABLED"
                } else {
                    "STOPPED"
                }
                .into(),
                version: 0,
                client: None,
                properties: p["properties"].clone(),
            });
        }
        for child in contents["processGroups"].as_array().into_iter().flatten() {
            let child_name = child["name"].as_str().unwrap_or_default().to_owned();
            add(flow, child, &child_name, &id);
        }
        id
    }
    let id = add(&mut flow, &definition["flowContents"], &name, &parent);
    let g = flow.groups.iter().find(|g| g.id == id).unwrap().clone();
    (StatusCode::CREATED, Json(group_entity(&s, &flow, &g))).into_response()
}
