//! The HTTP side: the drivers' endpoints, in Snowflake's answer format
//! (`{"data", "code", "message", "success"}`), over the sessions, queries and tables.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query as QueryParams, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::query::{self, Layout, Queries, Query, Rows, Served, Status};
use crate::session::{Sessions, TokenError, User};
use crate::sql::{self, SqlError, Statement};
use crate::stage;
use crate::table::Table;

/// Faults to inject, each consumed as it fires. Shared with [`Sandbox`](crate::Sandbox).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub throttle: AtomicU32,
    pub unavailable: AtomicU32,
    pub lose_responses: AtomicU32,
    pub chunk_failures: AtomicU32,
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct State {
    pub account: String,
    pub users: Vec<User>,
    pub validity: Duration,
    pub master_validity: Duration,
    pub in_progress_after: Duration,
    pub layout: Layout,
    pub base: String,
    pub sessions: Mutex<Sessions>,
    pub tables: Mutex<HashMap<String, Table>>,
    pub grants: Vec<crate::Grant>,
    pub bind_threshold: u64,
    pub queries: Mutex<Queries>,
    pub faults: Faults,
    pub renewals: AtomicU32,
    pub stages: Mutex<stage::Stages>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/session/v1/login-request", post(login))
        .route("/session/token-request", post(renew))
        .route("/session/heartbeat", post(heartbeat))
        .route("/session", post(logout))
        .route("/queries/v1/query-request", post(query_request))
        .route("/queries/v1/abort-request", post(abort_by_request))
        .route("/queries/{id}/result", get(result))
        .route("/queries/{id}/abort-request", post(abort_by_id))
        .route("/monitoring/queries/{id}", get(monitoring))
        .route("/chunks/{id}/{n}", get(chunk))
        .route("/telemetry/send", post(telemetry))
        .route(
            "/stage-files/{stage}/{*path}",
            get(stage_download).put(stage_upload),
        )
        // Snowflake's Rust core (in snowflake-connector-python 5.x) asks with a double
        // slash, which Snowflake accepts.
        .route("/monitoring/queries//{id}", get(monitoring))
        .fallback(unknown)
        .with_state(state)
}

fn ok(data: Value) -> Response {
    axum::Json(json!({"data": data, "code": null, "message": null, "success": true}))
        .into_response()
}

fn failure(code: &str, message: &str, data: Value) -> Response {
    axum::Json(json!({"data": data, "code": code, "message": message, "success": false}))
        .into_response()
}

/// A statement still running (333333) or detached (333334): the answer succeeds, its
/// code says where to poll.
fn in_progress(code: &str, message: &str, id: &str) -> Response {
    axum::Json(json!({
        "data": {"queryId": id, "getResultUrl": format!("/queries/{id}/result"), "progressDesc": null, "queryAbortsAfterSecs": 300},
        "code": code,
        "message": message,
        "success": true,
    }))
    .into_response()
}

fn sql_failure(error: &SqlError, query_id: Option<&str>) -> Response {
    failure(
        error.code,
        &error.message,
        json!({
            "errorCode": error.code,
            "sqlState": error.sql_state,
            "queryId": query_id,
            "internalError": false,
        }),
    )
}

fn token_failure(error: &TokenError) -> Response {
    match error {
        TokenError::Missing => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"data": null, "code": "390101", "message": "Authorization header not found in the request data.", "success": false})),
        )
            .into_response(),
        TokenError::Expired => failure(
            "390112",
            "Your session has expired. Please login again.",
            Value::Null,
        ),
        TokenError::MasterExpired => failure(
            "390114",
            "Authentication token has expired.  The user must authenticate again.",
            Value::Null,
        ),
        TokenError::Gone => failure("390111", "Session no longer exists.  New login required to access the service.", Value::Null),
    }
}

/// The answer refusing a request whose session token does not check, if it does not.
fn refused(state: &State, headers: &HeaderMap) -> Option<Response> {
    lock(&state.sessions)
        .check(token(headers).as_deref())
        .err()
        .map(|e| token_failure(&e))
}

/// The answer to a cancel: done, or nothing running to cancel.
fn cancelled(done: bool) -> Response {
    if done {
        ok(Value::Null)
    } else {
        failure(
            "000605",
            "Identified SQL statement is not currently executing.",
            Value::Null,
        )
    }
}

/// The token of `Authorization: Snowflake Token="…"`.
fn token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let rest = value.strip_prefix("Snowflake Token=\"")?;
    Some(rest.strip_suffix('"').unwrap_or(rest).to_owned())
}

/// The JSON body, gunzipped when sent compressed.
fn body_json(headers: &HeaderMap, body: &Bytes) -> Value {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if gzip {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .is_ok()
        {
            return serde_json::from_str(&text).unwrap_or(Value::Null);
        }
        return Value::Null;
    }
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

fn parameters(bind_threshold: u64) -> Value {
    json!([
        {"name": "AUTOCOMMIT", "value": true},
        {"name": "TIMEZONE", "value": "Etc/UTC"},
        {"name": "CLIENT_SESSION_KEEP_ALIVE_HEARTBEAT_FREQUENCY", "value": 3600},
        {"name": "CLIENT_STAGE_ARRAY_BINDING_THRESHOLD", "value": bind_threshold},
        {"name": "CLIENT_PREFETCH_THREADS", "value": 4},
        {"name": "CLIENT_RESULT_CHUNK_SIZE", "value": 160},
    ])
}

async fn login(
    AxumState(state): AxumState<Arc<State>>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = body_json(&headers, &body);
    let data = &body["data"];
    let user = match crate::session::verify(&state.account, &state.users, data) {
        Ok(user) => user,
        Err(refused) => return failure(refused.code, refused.message, Value::Null),
    };
    let upper = |name: &str| params.get(name).map(|v| v.to_ascii_uppercase());
    let session_parameters = data["SESSION_PARAMETERS"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let issued = lock(&state.sessions).open(
        upper("databaseName"),
        upper("schemaName"),
        upper("warehouse"),
        upper("roleName"),
        session_parameters,
        state.validity,
        state.master_validity,
    );
    ok(json!({
        "token": issued.token,
        "masterToken": issued.master,
        "validityInSeconds": state.validity.as_secs(),
        "masterValidityInSeconds": state.master_validity.as_secs(),
        "sessionId": issued.session_id,
        "serverVersion": "9.38.0",
        "displayUserName": user,
        "firstLogin": false,
        "healthCheckInterval": 45,
        "idToken": null,
        "mfaToken": null,
        "parameters": parameters(state.bind_threshold),
        "sessionInfo": {
            "databaseName": upper("databaseName"),
            "schemaName": upper("schemaName"),
            "warehouseName": upper("warehouse"),
            "roleName": upper("roleName").unwrap_or_else(|| "PUBLIC".to_owned()),
        },
    }))
}

async fn renew(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = body_json(&headers, &body);
    let old = body["oldSessionToken"].as_str().unwrap_or_default();
    let master = token(&headers);
    match lock(&state.sessions).renew(master.as_deref(), old, state.validity) {
        Ok((token, id)) => {
            state.renewals.fetch_add(1, Ordering::SeqCst);
            ok(json!({
            "sessionToken": token,
            "validityInSecondsST": state.validity.as_secs(),
            "masterToken": master,
            "validityInSecondsMT": state.master_validity.as_secs(),
            "sessionId": id,
            }))
        }
        Err(e) => token_failure(&e),
    }
}

async fn heartbeat(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap) -> Response {
    match lock(&state.sessions).check(token(&headers).as_deref()) {
        Ok(_) => ok(Value::Null),
        Err(e) => token_failure(&e),
    }
}

async fn logout(
    AxumState(state): AxumState<Arc<State>>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if params.get("delete").map(String::as_str) != Some("true") {
        return failure(
            "390400",
            "the sandbox closes sessions only (delete=true)",
            Value::Null,
        );
    }
    let Some(token) = token(&headers) else {
        return token_failure(&TokenError::Missing);
    };
    if lock(&state.sessions).close(&token) {
        ok(Value::Null)
    } else {
        token_failure(&TokenError::Gone)
    }
}

async fn unknown(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    tracing::debug!(%method, %uri, "the Snowflake sandbox does not serve this endpoint");
    (
        StatusCode::NOT_FOUND,
        format!(
            "the Snowflake sandbox does not serve {method} {}",
            uri.path()
        ),
    )
        .into_response()
}

/// `PUT /stage-files/<stage>/<path>`: a presigned upload.
async fn stage_upload(
    AxumState(state): AxumState<Arc<State>>,
    Path(target): Path<(String, String)>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    stage::upload(&mut lock(&state.stages), target, &query, &headers, body)
}

/// `GET` (and `HEAD`) `/stage-files/<stage>/<path>`: a presigned download.
async fn stage_download(
    AxumState(state): AxumState<Arc<State>>,
    Path(target): Path<(String, String)>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Response {
    stage::download(&lock(&state.stages), target, &query)
}

async fn telemetry() -> Response {
    ok(Value::Null)
}

/// The text of bind `n` (from 1) at row `row`: a scalar for every row, or the row's
/// element of an array bind.
fn bind_text(bindings: &Value, n: usize, row: usize) -> Result<Option<String>, SqlError> {
    let bind = &bindings[(n + 1).to_string()];
    if bind.is_null() {
        return Err(SqlError::syntax(format!(
            "Bind variable ? not set (no binding {} in the request)",
            n + 1
        )));
    }
    let value = match &bind["value"] {
        Value::Array(values) => values.get(row).cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    Ok(match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

/// Rows of an array bind (1 without one).
fn bind_rows(bindings: &Value) -> usize {
    bindings
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|b| b["value"].as_array().map(Vec::len))
        .max()
        .unwrap_or(1)
}

/// Run one statement.
async fn run(
    state: &Arc<State>,
    sql_text: &str,
    bindings: &Value,
    session: u64,
) -> Result<Rows, SqlError> {
    match sql::parse(sql_text)? {
        Statement::Use { kind, name } => {
            let mut sessions = lock(&state.sessions);
            let s = sessions
                .get_mut(session)
                .ok_or_else(|| SqlError::invalid("the session is gone"))?;
            let slot = match kind.as_str() {
                "ROLE" => &mut s.role,
                "WAREHOUSE" => &mut s.warehouse,
                "DATABASE" => &mut s.database,
                _ => &mut s.schema,
            };
            *slot = Some(name);
            Ok(Rows::text("status", "Statement executed successfully."))
        }
        Statement::AlterSession { name, value } => {
            let mut sessions = lock(&state.sessions);
            let s = sessions
                .get_mut(session)
                .ok_or_else(|| SqlError::invalid("the session is gone"))?;
            match value {
                Some(value) => {
                    s.parameters.insert(name, Value::String(value));
                }
                None => {
                    s.parameters.remove(&name);
                }
            }
            Ok(Rows::text("status", "Statement executed successfully."))
        }
        Statement::Current(what) => {
            let snapshot = lock(&state.sessions).snapshot(session);
            let value = match what.as_str() {
                "SESSION" => Some(snapshot.id.to_string()),
                "ROLE" => snapshot.role.or_else(|| Some("PUBLIC".to_owned())),
                "WAREHOUSE" => snapshot.warehouse,
                "DATABASE" => snapshot.database,
                _ => snapshot.schema,
            };
            Ok(Rows::text(
                &format!("CURRENT_{what}()"),
                value.as_deref().unwrap_or_default(),
            ))
        }
        Statement::CreateStage(name) => Ok(Rows::text(
            "status",
            &format!("Stage area {name} successfully created."),
        )),
        Statement::ShowGrants(role) => Ok(query::Rows::grants(
            state.grants.iter().filter(|g| g.role == role).map(|g| {
                [
                    g.privilege.clone(),
                    g.granted_on.clone(),
                    g.name.clone(),
                    role.clone(),
                ]
            }),
        )),
        Statement::SelectAll { table, limit } => {
            let tables = lock(&state.tables);
            let t = tables
                .get(&table)
                .ok_or_else(|| SqlError::no_table(&table))?;
            Ok(Rows::Arrow {
                rowtype: t.columns().iter().map(|c| c.rowtype(t.name())).collect(),
                schema: t.schema(),
                batches: t.rows(limit),
                statement_type: query::SELECT,
            })
        }
        Statement::Count { table } => {
            let tables = lock(&state.tables);
            let t = tables
                .get(&table)
                .ok_or_else(|| SqlError::no_table(&table))?;
            Ok(Rows::number("COUNT(*)", t.num_rows() as i64))
        }
        Statement::Literal(n) => Ok(Rows::number(&n.to_string(), n)),
        Statement::Wait(duration) => {
            tokio::time::sleep(duration).await;
            Ok(Rows::text(
                "SYSTEM$WAIT",
                &format!("waited {} seconds", duration.as_secs_f64()),
            ))
        }
        Statement::ResultScan(id) => {
            let queries = lock(&state.queries);
            let status = queries
                .by_id
                .get(&id)
                .map(|q| q.status.borrow().clone())
                .ok_or_else(|| SqlError::invalid(format!("Statement {id} not found")))?;
            match status {
                Status::Success(rows) => Ok(Rows::clone(&rows)),
                _ => Err(SqlError::invalid(format!(
                    "Statement {id} has no result to scan ({})",
                    status.name()
                ))),
            }
        }
        Statement::CancelQuery(id) => {
            let cancelled = abort(state, &id);
            Ok(Rows::text(
                "SYSTEM$CANCEL_QUERY",
                if cancelled {
                    "query [..] terminated."
                } else {
                    "Identified SQL statement is not currently executing."
                },
            ))
        }
        Statement::Insert {
            table,
            columns,
            rows,
        } => {
            let times = bind_rows(bindings);
            let mut values = Vec::with_capacity(rows.len() * times);
            for row in &rows {
                for i in 0..times {
                    values.push(
                        row.iter()
                            .map(|v| match v {
                                sql::Value::Placeholder(n) => bind_text(bindings, *n, i),
                                sql::Value::Literal(text) => Ok(text.clone()),
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
            }
            let mut tables = lock(&state.tables);
            let t = tables
                .get_mut(&table)
                .ok_or_else(|| SqlError::no_table(&table))?;
            let count = t.insert(&columns, &values).map_err(SqlError::invalid)?;
            Ok(Rows::inserted(count))
        }
        Statement::Put {
            file,
            stage,
            options,
        } => {
            // A stream's upload names its stage as a bind.
            let stage = if stage == "?" {
                bind_text(bindings, 0, 0)?.unwrap_or_default()
            } else {
                stage
            };
            Ok(stage::put(
                &lock(&state.stages),
                &state.base,
                &file,
                &stage,
                &options,
            ))
        }
        Statement::Get { stage, local } => {
            stage::get(&lock(&state.stages), &state.base, &stage, &local)
        }
        Statement::List(stage) => stage::list(&lock(&state.stages), &stage),
        Statement::Remove(stage) => stage::remove(&mut lock(&state.stages), &stage),
    }
}

/// Cancel a running query; whether one was.
fn abort(state: &Arc<State>, id: &str) -> bool {
    let mut queries = lock(&state.queries);
    let Some(query) = queries.by_id.get_mut(id) else {
        return false;
    };
    if !matches!(*query.status.borrow(), Status::Running) {
        return false;
    }
    if let Some(task) = query.task.take() {
        task.abort();
    }
    query.status.send_replace(Status::Aborted);
    true
}

fn new_query(
    state: &Arc<State>,
    sql: &str,
    session: u64,
    request_id: Option<String>,
    query_tag: Option<String>,
) -> (String, watch::Receiver<Status>) {
    let id = uuid::Uuid::new_v4().to_string();
    let (sender, receiver) = watch::channel(Status::Running);
    let mut queries = lock(&state.queries);
    if let Some(request) = &request_id {
        queries.by_request.insert(request.clone(), id.clone());
    }
    queries.order.push(id.clone());
    queries.by_id.insert(
        id.clone(),
        Query {
            id: id.clone(),
            sql: sql.to_owned(),
            session,
            request_id,
            query_tag,
            requests: 1,
            bind_stage: None,
            status: sender,
            task: None,
            served: None,
        },
    );
    (id, receiver)
}

fn finish(state: &Arc<State>, id: &str, outcome: Result<Rows, SqlError>) {
    let mut queries = lock(&state.queries);
    if let Some(query) = queries.by_id.get_mut(id)
        && matches!(*query.status.borrow(), Status::Running)
    {
        query.task = None;
        query.status.send_replace(match outcome {
            Ok(rows) => Status::Success(Arc::new(rows)),
            Err(e) => Status::Failed(e),
        });
    }
}

/// Start query `id` running `statements` (several: a multi-statement parent).
fn start(
    state: &Arc<State>,
    id: &str,
    statements: Vec<String>,
    bindings: Value,
    session: u64,
    tag: Option<String>,
) {
    let task_state = state.clone();
    let task_id = id.to_owned();
    let handle = tokio::spawn(async move {
        let state = task_state;
        let outcome = if statements.len() == 1 {
            run(&state, &statements[0], &bindings, session).await
        } else {
            let mut children = Vec::new();
            let mut failed = None;
            for statement in &statements {
                let (child, _) = new_query(&state, statement, session, None, tag.clone());
                children.push(child.clone());
                let outcome = run(&state, statement, &Value::Null, session).await;
                let error = outcome.as_ref().err().cloned();
                finish(&state, &child, outcome);
                if let Some(e) = error {
                    failed = Some(e);
                    break;
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(Rows::multi(&children)),
            }
        };
        finish(&state, &task_id, outcome);
    });
    if let Some(query) = lock(&state.queries).by_id.get_mut(id)
        && matches!(*query.status.borrow(), Status::Running)
    {
        query.task = Some(handle.abort_handle());
    }
}

/// Wait up to the in-progress limit for query `id`, then answer with its outcome (or
/// "still running").
async fn answer(state: &Arc<State>, id: &str) -> Response {
    let receiver = {
        let queries = lock(&state.queries);
        match queries.by_id.get(id) {
            Some(q) => q.status.subscribe(),
            None => {
                return sql_failure(
                    &SqlError {
                        code: "000709",
                        sql_state: "02000",
                        message: format!("Statement {id} not found"),
                    },
                    None,
                );
            }
        }
    };
    let mut receiver = receiver;
    let _ = tokio::time::timeout(
        state.in_progress_after,
        receiver.wait_for(|s| !matches!(s, Status::Running)),
    )
    .await;
    let status = receiver.borrow().clone();
    match status {
        Status::Running => in_progress(
            "333333",
            "Query execution in progress. Query will be continued in the background.",
            id,
        ),
        Status::Failed(e) => sql_failure(&e, Some(id)),
        Status::Aborted => sql_failure(
            &SqlError {
                code: "000604",
                sql_state: "57014",
                message: "SQL execution canceled".to_owned(),
            },
            Some(id),
        ),
        Status::Success(rows) => match served(state, id, &rows) {
            Ok(served) => ok(served.data.clone()),
            Err(message) => failure("000603", &message, Value::Null),
        },
    }
}

/// The served form of a finished query, made once.
fn served(state: &Arc<State>, id: &str, rows: &Rows) -> Result<Arc<Served>, String> {
    let session_id = {
        let queries = lock(&state.queries);
        let query = queries.by_id.get(id).ok_or("the query is gone")?;
        if let Some(served) = &query.served {
            return Ok(served.clone());
        }
        query.session
    };
    let session = {
        let sessions = lock(&state.sessions);
        sessions.snapshot(session_id)
    };
    let served = Arc::new(query::serve(id, rows, state.layout, &state.base, &session)?);
    if let Some(query) = lock(&state.queries).by_id.get_mut(id) {
        query.served = Some(served.clone());
    }
    Ok(served)
}

async fn query_request(
    AxumState(state): AxumState<Arc<State>>,
    QueryParams(params): QueryParams<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = match lock(&state.sessions).check(token(&headers).as_deref()) {
        Ok(session) => session.clone(),
        Err(e) => return token_failure(&e),
    };
    if take(&state.faults.throttle) {
        return (StatusCode::TOO_MANY_REQUESTS, "Too many requests").into_response();
    }
    if take(&state.faults.unavailable) {
        return (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable").into_response();
    }
    let body = body_json(&headers, &body);
    let Some(sql_text) = body["sqlText"].as_str() else {
        return failure("390400", "the request has no sqlText", Value::Null);
    };
    if body["describeOnly"].as_bool() == Some(true) {
        return describe(&state, sql_text);
    }
    let request_id = params.get("requestId").cloned();
    // A request id seen before is a retry: answer with that query, do not run it again.
    let known = request_id
        .as_ref()
        .and_then(|r| lock(&state.queries).by_request.get(r).cloned());
    let id = match known {
        Some(id) => {
            if let Some(q) = lock(&state.queries).by_id.get_mut(&id) {
                q.requests += 1;
            }
            id
        }
        None => {
            let statements = sql::split(sql_text);
            let statement_parameters = body["parameters"].as_object().cloned().unwrap_or_default();
            let setting = |name: &str| {
                statement_parameters
                    .get(name)
                    .or_else(|| session.parameters.get(name))
                    .cloned()
            };
            let expected = setting("MULTI_STATEMENT_COUNT")
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .unwrap_or(1);
            if statements.is_empty() {
                return sql_failure(&SqlError::syntax("Empty SQL statement."), None);
            }
            if expected != 0 && expected != statements.len() as u64 {
                return sql_failure(
                    &SqlError {
                        code: "000008",
                        sql_state: "0A000",
                        message: format!(
                            "Actual statement count {} did not match the desired statement count {expected}.",
                            statements.len()
                        ),
                    },
                    None,
                );
            }
            let tag = setting("QUERY_TAG").and_then(|v| v.as_str().map(str::to_owned));
            // Binds a client staged (above CLIENT_STAGE_ARRAY_BINDING_THRESHOLD).
            let bind_stage = body["bindStage"].as_str().map(str::to_owned);
            let bindings = match &bind_stage {
                Some(path) => match stage::bind_values(&lock(&state.stages), path) {
                    Ok(bindings) => bindings,
                    Err(e) => return sql_failure(&e, None),
                },
                None => body["bindings"].clone(),
            };
            let (id, _) = new_query(&state, sql_text, session.id, request_id, tag.clone());
            if let Some(q) = lock(&state.queries).by_id.get_mut(&id) {
                q.bind_stage = bind_stage;
            }
            start(&state, &id, statements, bindings, session.id, tag);
            if body["asyncExec"].as_bool() == Some(true) {
                return in_progress(
                    "333334",
                    "Asynchronous execution in progress. Use provided query id to perform query monitoring and management.",
                    &id,
                );
            }
            id
        }
    };
    let response = answer(&state, &id).await;
    if take(&state.faults.lose_responses) {
        return (StatusCode::SERVICE_UNAVAILABLE, "the answer was lost").into_response();
    }
    response
}

/// A describe-only request: the statement's result columns and binds, without running
/// it (drivers ask before an array bind).
fn describe(state: &Arc<State>, sql_text: &str) -> Response {
    let statement = match sql::parse(sql_text) {
        Ok(statement) => statement,
        Err(e) => return sql_failure(&e, None),
    };
    let (rowtype, binds, statement_type) = match &statement {
        Statement::SelectAll { table, .. } => {
            let tables = lock(&state.tables);
            let Some(t) = tables.get(table) else {
                return sql_failure(&SqlError::no_table(table), None);
            };
            let rowtype: Vec<Value> = t.columns().iter().map(|c| c.rowtype(t.name())).collect();
            (rowtype, 0, query::SELECT)
        }
        Statement::Insert { rows, .. } => {
            let binds = rows
                .iter()
                .flatten()
                .filter(|v| matches!(v, sql::Value::Placeholder(_)))
                .count();
            let rowtype = match Rows::inserted(0) {
                Rows::Json { rowtype, .. } | Rows::Arrow { rowtype, .. } => rowtype,
                Rows::Transfer(_) => Vec::new(),
            };
            (rowtype, binds, query::INSERT)
        }
        _ => (Vec::new(), 0, query::SELECT),
    };
    ok(json!({
        "queryId": uuid::Uuid::new_v4().to_string(),
        "rowtype": rowtype,
        "rowset": [],
        "total": 0,
        "returned": 0,
        "queryResultFormat": "json",
        "statementTypeId": statement_type,
        "numberOfBinds": binds,
        "arrayBindSupported": true,
        "parameters": [],
    }))
}

async fn result(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refused(&state, &headers) {
        return refused;
    }
    answer(&state, &id).await
}

async fn abort_by_request(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refused(&state, &headers) {
        return refused;
    }
    let body = body_json(&headers, &body);
    let request = body["requestId"].as_str().unwrap_or_default();
    let id = lock(&state.queries).by_request.get(request).cloned();
    cancelled(id.is_some_and(|id| abort(&state, &id)))
}

async fn abort_by_id(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refused(&state, &headers) {
        return refused;
    }
    cancelled(abort(&state, &id))
}

async fn monitoring(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refused(&state, &headers) {
        return refused;
    }
    let queries = lock(&state.queries);
    let Some(query) = queries.by_id.get(&id) else {
        return ok(json!({"queries": []}));
    };
    let status = query.status.borrow().clone();
    let mut entry = json!({
        "id": id,
        "status": status.name(),
        "state": status.name(),
        "sqlText": query.sql,
    });
    if let Status::Failed(e) = &status {
        entry["errorCode"] = json!(e.code);
        entry["errorMessage"] = json!(e.message);
    }
    if matches!(status, Status::Aborted) {
        entry["errorCode"] = json!("000604");
        entry["errorMessage"] = json!("SQL execution canceled");
    }
    ok(json!({"queries": [entry]}))
}

async fn chunk(
    AxumState(state): AxumState<Arc<State>>,
    Path((id, n)): Path<(String, usize)>,
    headers: HeaderMap,
) -> Response {
    if take(&state.faults.chunk_failures) {
        // Like a misbehaving store, the failure echoes the key it was sent.
        let key = headers
            .get("x-amz-server-side-encryption-customer-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("SlowDown: reduce the request rate for key {key}"),
        )
            .into_response();
    }
    let served = lock(&state.queries)
        .by_id
        .get(&id)
        .and_then(|q| q.served.clone());
    let Some(served) = served else {
        return (StatusCode::NOT_FOUND, "NoSuchKey").into_response();
    };
    let key = headers
        .get("x-amz-server-side-encryption-customer-key")
        .and_then(|v| v.to_str().ok());
    let algorithm = headers
        .get("x-amz-server-side-encryption-customer-algorithm")
        .and_then(|v| v.to_str().ok());
    if served.qrmk.as_deref() != key || algorithm != Some("AES256") {
        return (
            StatusCode::BAD_REQUEST,
            "InvalidRequest: the object was stored using a form of Server Side Encryption; the correct parameters must be provided to retrieve it",
        )
            .into_response();
    }
    let Some(chunk) = served.chunks.get(n) else {
        return (StatusCode::NOT_FOUND, "NoSuchKey").into_response();
    };
    let mut response = chunk.body.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if state.layout.gzip {
        headers.insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    response
}
