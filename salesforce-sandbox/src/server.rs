//! The sandbox's HTTP surface, after Salesforce's REST API reference: API versions, the
//! OAuth token endpoint, query / queryMore / queryAll with server-side cursors, sObject
//! create / retrieve / update / delete / upsert by external id, describeGlobal and
//! describe (with `If-Modified-Since`), limits with a counting-down `Sforce-Limit-Info`
//! header, and Salesforce's error format.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Query as UrlQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::normalize_path::NormalizePath;

use crate::bulk::Bulk;
use crate::cdc::Streaming;
use crate::error::ApiError;
use crate::org::{Fields, Org};
use crate::reply::{Failure, Reply, not_found};
use crate::state::{Core, Cursor, Injected};
use crate::{composite, eval, oauth, soql};

/// The REST API's own routes (under `/services/data/{version}`), without authorization.
fn rest_routes(core: Arc<Core>) -> Router {
    Router::new()
        .route("/query", get(query))
        .route("/queryAll", get(query_all))
        .route("/query/{locator}", get(query_more))
        .route("/queryAll/{locator}", get(query_more))
        .route("/sobjects", get(describe_global))
        .route("/sobjects/{object}", post(create))
        .route("/sobjects/{object}/describe", get(describe))
        .route("/sobjects/{object}/deleted", get(get_deleted))
        .route(
            "/sobjects/{object}/{id}",
            get(retrieve).patch(update).delete(delete),
        )
        .route(
            "/sobjects/{object}/{field}/{value}",
            get(retrieve_by).patch(upsert),
        )
        .route("/limits", get(limits))
        .route("/search", get(search))
        .route(
            "/composite/sobjects",
            post(collection_create)
                .patch(collection_update)
                .delete(collection_delete),
        )
        .route("/composite/sobjects/{object}", post(collection_retrieve))
        .route(
            "/composite/sobjects/{object}/{field}",
            axum::routing::patch(collection_upsert),
        )
        .with_state(core)
}

/// A sandbox's server: its routes, and the parts the sandbox's own API reaches into.
pub(crate) struct Server {
    pub(crate) router: NormalizePath<Router>,
    pub(crate) bulk: Arc<Bulk>,
    pub(crate) streaming: Arc<Streaming>,
}

/// Every route of the sandbox, over `core`.
pub(crate) fn server(core: Arc<Core>) -> Server {
    let bulk = Bulk::new(core.clone());
    let streaming = Streaming::new(core.clone());
    let rest = rest_routes(core.clone()).merge(bulk.routes());
    #[cfg(feature = "pubsub")]
    let rest = rest.merge(crate::tooling::routes(core.clone()));
    // Composite subrequests are dispatched here: same routes, no second authorization,
    // no API-call count of their own (a composite request is one call).
    let internal = Router::new().nest("/services/data/{version}", rest.clone());
    // An unknown resource is answered after authorization, as Salesforce answers it.
    let api = rest
        .merge(composite::routes(core.clone(), internal))
        .fallback(unknown_resource)
        .layer(middleware::from_fn_with_state(core.clone(), authorize));
    #[cfg(feature = "pubsub")]
    let core_for_grpc = core.clone();
    let router = Router::new()
        .route("/services/data", get(versions))
        .with_state(core.clone())
        .merge(streaming.routes())
        .merge(oauth::routes(core))
        .nest("/services/data/{version}", api)
        .fallback(unknown_resource)
        .layer(middleware::from_fn(read_whole_body));
    // gRPC streams after the layer that reads whole bodies: a subscription's body never
    // ends.
    #[cfg(feature = "pubsub")]
    let router = crate::pubsub::routes(router, core_for_grpc);
    // `/query/` is `/query`, `/sobjects/Account/` is `/sobjects/Account` (and so on), as
    // on Salesforce.
    let router = NormalizePath::trim_trailing_slash(router);
    Server {
        router,
        bulk,
        streaming,
    }
}

/// Salesforce's answer for a resource that is not there.
async fn unknown_resource() -> Failure {
    not_found()
}

/// Bytes of URI and headers of one request, at most (Salesforce's limit).
const MAX_HEAD_BYTES: usize = 16_384;

/// The largest request body the sandbox reads (a Bulk API 2.0 upload's limit and room
/// for its headers).
const MAX_BODY: usize = crate::bulk::MAX_UPLOAD + 1024 * 1024;

/// Reads each request's body whole before it is routed, so that every answer — an
/// unknown route, a refused session — leaves the connection ready for the next request
/// (a server that answers before the body has arrived must close the connection). A
/// body over [`MAX_BODY`] is refused with 413 and `Connection: close`.
async fn read_whole_body(request: Request, next: Next) -> Response {
    // Salesforce takes at most 16,384 bytes of URI and headers together.
    let uri = request.uri().to_string().len();
    let head = uri
        + request
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > MAX_HEAD_BYTES {
        let status = if uri > MAX_HEAD_BYTES {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        };
        let mut r = status.into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(_) => {
            let mut r = Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ApiError::new(
                    "JSON_PARSER_ERROR",
                    format!("the request body is over {MAX_BODY} bytes, or it broke off"),
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

async fn versions(State(s): State<Arc<Core>>) -> Response {
    let list: Vec<Value> = s
        .config
        .versions
        .iter()
        .map(|v| json!({"label": format!("API {v}"), "url": format!("/services/data/v{v}"), "version": v}))
        .collect();
    axum::Json(list).into_response()
}

/// Checks the bearer token and the API version, counts the call against the daily
/// limit, and adds `Sforce-Limit-Info` to the answer.
async fn authorize(
    State(s): State<Arc<Core>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let mut expire = false;
    let (latency, injected) = s
        .faults
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .next(&mut expire);
    if expire {
        s.expire_tokens();
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match injected {
        Injected::None => {}
        Injected::Status(status, e) => return Failure::new(status, e).into_response(),
        Injected::Drop => {
            // Headers, then a body that breaks: the client sees the connection fail.
            let broken = futures::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected connection drop",
                ))
            });
            return Response::new(axum::body::Body::from_stream(broken));
        }
    }
    if !s.session_valid(&headers) {
        return Failure::new(
            StatusCode::UNAUTHORIZED,
            ApiError::new("INVALID_SESSION_ID", "Session expired or invalid"),
        )
        .into_response();
    }
    let version = params
        .get("version")
        .map(String::as_str)
        .unwrap_or_default();
    if !version
        .strip_prefix('v')
        .is_some_and(|v| s.config.versions.iter().any(|x| x == v))
    {
        return Failure::new(
            StatusCode::NOT_FOUND,
            ApiError::new("NOT_FOUND", "The requested resource does not exist"),
        )
        .into_response();
    }
    let used = {
        let mut used = s.api_used.lock().unwrap_or_else(PoisonError::into_inner);
        if *used >= s.config.daily_api_limit {
            None
        } else {
            *used += 1;
            Some(*used)
        }
    };
    let Some(used) = used else {
        let mut r = Failure::new(
            StatusCode::FORBIDDEN,
            ApiError::new("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
        )
        .into_response();
        add_limit_header(&mut r, s.config.daily_api_limit, s.config.daily_api_limit);
        return r;
    };
    let mut response = next.run(request).await;
    add_limit_header(&mut response, used, s.config.daily_api_limit);
    response
}

fn add_limit_header(r: &mut Response, used: u64, max: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{max}")) {
        r.headers_mut().insert("Sforce-Limit-Info", v);
    }
}

#[derive(Deserialize)]
struct Q {
    q: Option<String>,
}

fn version_of(v: &str) -> String {
    v.trim_start_matches('v').to_owned()
}

async fn query(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    UrlQuery(q): UrlQuery<Q>,
) -> Reply {
    run_query(&s, &version_of(&p["version"]), q.q.as_deref(), false)
}

async fn query_all(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    UrlQuery(q): UrlQuery<Q>,
) -> Reply {
    run_query(&s, &version_of(&p["version"]), q.q.as_deref(), true)
}

fn run_query(s: &Core, version: &str, text: Option<&str>, all_rows: bool) -> Reply {
    let text = text.ok_or_else(|| {
        Failure::bad(ApiError::new(
            "MALFORMED_QUERY",
            "A query string has to be specified",
        ))
    })?;
    let mut parsed = soql::parse(text)
        .map_err(|e| Failure::bad(ApiError::new("MALFORMED_QUERY", e.to_string())))?;
    parsed.all_rows |= all_rows;
    if parsed.count {
        let n = eval::count(&s.org(), &parsed).map_err(Failure::bad)?;
        let body = json!({"totalSize": n, "done": true, "records": []});
        return Ok(axum::Json(body).into_response());
    }
    let records = {
        let org = s.org();
        eval::run(&org, &parsed, version).map_err(Failure::bad)?
    };
    Ok(page(s, records.into_iter(), 0, version))
}

/// One page of a result; the rest is kept behind a locator (`<cursor>-<offset>`). The
/// rest is the same iterator, not a copy: a page costs its own records only, however
/// many follow it.
fn page(
    s: &Core,
    mut records: std::vec::IntoIter<Value>,
    offset: usize,
    version: &str,
) -> Response {
    let size = s.config.page_size.max(1);
    let this: Vec<Value> = records.by_ref().take(size).collect();
    let left = records.len();
    let total = offset + this.len() + left;
    let mut body = json!({"totalSize": total, "done": left == 0, "records": this});
    if left > 0 {
        let id = format!("01g8d00000{:08X}", s.next_number());
        let next_offset = offset + size;
        body["nextRecordsUrl"] = json!(format!(
            "/services/data/v{version}/query/{id}-{next_offset}"
        ));
        s.cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                format!("{id}-{next_offset}"),
                Cursor {
                    records,
                    version: version.to_owned(),
                },
            );
    }
    axum::Json(body).into_response()
}

async fn query_more(State(s): State<Arc<Core>>, Path(p): Path<HashMap<String, String>>) -> Reply {
    let locator = p.get("locator").cloned().unwrap_or_default();
    let cursor = s
        .cursors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&locator)
        .ok_or_else(|| {
            Failure::bad(ApiError::new(
                "INVALID_QUERY_LOCATOR",
                "invalid query locator",
            ))
        })?;
    let offset: usize = locator
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ok(page(&s, cursor.records, offset, &cursor.version))
}

fn body_fields(body: &[u8]) -> Result<Fields, Failure> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Failure::bad(ApiError::new(
            "JSON_PARSER_ERROR",
            "The request body is not a JSON object",
        ))),
    }
}

async fn create(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Reply {
    let fields = body_fields(&body)?;
    let id = s
        .org_mut()
        .create(&p["object"], &fields)
        .map_err(Failure::bad)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "success": true, "errors": []})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct Fieldsq {
    fields: Option<String>,
}

fn shape_one(
    s: &Core,
    object: &str,
    record: &Fields,
    fields: Option<&str>,
    version: &str,
) -> Value {
    let org = s.org();
    let def = org.object(object).cloned();
    let mut out = serde_json::Map::new();
    let name = def.as_ref().map_or(object, |d| d.name.as_str());
    let id = record.get("Id").and_then(Value::as_str).unwrap_or_default();
    out.insert(
        "attributes".into(),
        json!({"type": name, "url": format!("/services/data/v{version}/sobjects/{name}/{id}")}),
    );
    match fields {
        Some(list) => {
            for f in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                let key = def
                    .as_ref()
                    .and_then(|d| d.field(f))
                    .map_or(f.to_owned(), |d| d.name.clone());
                out.insert(
                    key.clone(),
                    record.get(&key).cloned().unwrap_or(Value::Null),
                );
            }
        }
        None => {
            for f in def.iter().flat_map(|d| d.fields.iter()) {
                out.insert(
                    f.name.clone(),
                    record.get(&f.name).cloned().unwrap_or(Value::Null),
                );
            }
        }
    }
    Value::Object(out)
}

async fn retrieve(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    UrlQuery(q): UrlQuery<Fieldsq>,
) -> Reply {
    let (object, id, version) = (&p["object"], &p["id"], version_of(&p["version"]));
    let record = {
        let org = s.org();
        if org.object(object).is_none() {
            return Err(not_found());
        }
        org.get(org.object(object).map_or("", |d| d.name.as_str()), id)
            .cloned()
    };
    let record = record.ok_or_else(not_found)?;
    Ok(axum::Json(shape_one(
        &s,
        object,
        &record,
        q.fields.as_deref(),
        &version,
    ))
    .into_response())
}

/// Parameters of `sObject Get Deleted`.
#[derive(Deserialize)]
struct DeletedWindow {
    start: Option<String>,
    end: Option<String>,
}

/// `GET /sobjects/{object}/deleted/?start=…&end=…`: the records deleted in the window,
/// from the org's delete log. As Salesforce: times below the log's granularity (a
/// minute) are ignored, `start` must precede `end` by more than that, the log reaches
/// back 15 days (`INVALID_REPLICATION_DATE` otherwise), and `latestDateCovered` is
/// `end` cut to the granularity.
async fn get_deleted(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    UrlQuery(q): UrlQuery<DeletedWindow>,
) -> Reply {
    let bad = |message: String| Failure::bad(ApiError::new("INVALID_REPLICATION_DATE", message));
    let step = u64::try_from(s.config.delete_log_granularity.as_millis())
        .unwrap_or(60_000)
        .max(1);
    let at = |name: &str, value: Option<&String>| -> Result<u64, Failure> {
        let text = value.ok_or_else(|| {
            Failure::bad(ApiError::new(
                "MISSING_ARGUMENT",
                format!("{name} not specified"),
            ))
        })?;
        let t = chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|_| bad(format!("{name} is not a valid dateTime: {text}")))?;
        let ms = u64::try_from(t.timestamp_millis())
            .map_err(|_| bad(format!("{name} is before 1970: {text}")))?;
        Ok(ms - ms % step)
    };
    let (from, until) = (at("start", q.start.as_ref())?, at("end", q.end.as_ref())?);
    if until <= from + step {
        return Err(bad(
            "startDate must chronologically precede endDate by more than one minute".into(),
        ));
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let earliest = now.saturating_sub(15 * 86_400_000);
    let earliest = earliest - earliest % step;
    let when = |ms: u64| {
        crate::org::sf_datetime(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms))
    };
    if from < earliest {
        return Err(bad(format!(
            "startDate is before the earliest date available ({})",
            when(earliest)
        )));
    }
    let org = s.org();
    let object = org.object(&p["object"]).ok_or_else(not_found)?.name.clone();
    let records: Vec<Value> = org
        .deleted_between(&object, from, until)
        .into_iter()
        .map(|(id, ms)| json!({"id": id, "deletedDate": when(ms)}))
        .collect();
    Ok(axum::Json(json!({
        "deletedRecords": records,
        "earliestDateAvailable": when(earliest),
        "latestDateCovered": when(until),
    }))
    .into_response())
}

async fn retrieve_by(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    UrlQuery(q): UrlQuery<Fieldsq>,
) -> Reply {
    let (object, field, value, version) = (
        &p["object"],
        &p["field"],
        &p["value"],
        version_of(&p["version"]),
    );
    let record = {
        let org = s.org();
        let def = org.object(object).ok_or_else(not_found)?;
        let f = def
            .field(field)
            .filter(|f| f.external_id)
            .ok_or_else(|| {
                Failure::bad(ApiError::new(
                    "NOT_FOUND",
                    format!(
                        "Provided external ID field does not exist or is not accessible: {field}"
                    ),
                ))
            })?
            .name
            .clone();
        org.rows(&def.name, false)
            .into_iter()
            .find(|r| r.get(&f).and_then(Value::as_str) == Some(value.as_str()))
            .cloned()
    };
    let record = record.ok_or_else(not_found)?;
    Ok(axum::Json(shape_one(
        &s,
        object,
        &record,
        q.fields.as_deref(),
        &version,
    ))
    .into_response())
}

async fn update(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Reply {
    let fields = body_fields(&body)?;
    let object = s
        .org()
        .object(&p["object"])
        .map(|d| d.name.clone())
        .unwrap_or_else(|| p["object"].clone());
    s.org_mut()
        .update(&object, &p["id"], &fields)
        .map_err(Failure::bad)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete(State(s): State<Arc<Core>>, Path(p): Path<HashMap<String, String>>) -> Reply {
    let object = s
        .org()
        .object(&p["object"])
        .map(|d| d.name.clone())
        .unwrap_or_else(|| p["object"].clone());
    s.org_mut()
        .delete(&object, &p["id"])
        .map_err(Failure::bad)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upsert(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Reply {
    let fields = body_fields(&body)?;
    let (id, created) = s
        .org_mut()
        .upsert(&p["object"], &p["field"], &p["value"], &fields)
        .map_err(Failure::bad)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(json!({"id": id, "success": true, "errors": [], "created": created})),
    )
        .into_response())
}

async fn describe_global(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
) -> Response {
    let version = version_of(&p["version"]);
    let org = s.org();
    let objects: Vec<Value> = org
        .objects()
        .map(|o| {
            json!({
                "name": o.name, "label": o.name.trim_end_matches("__c").replace('_', " "),
                "keyPrefix": o.key_prefix, "custom": o.is_custom(),
                "queryable": true, "createable": true, "updateable": true, "deletable": true,
                "urls": {
                    "sobject": format!("/services/data/v{version}/sobjects/{}", o.name),
                    "describe": format!("/services/data/v{version}/sobjects/{}/describe", o.name),
                    "rowTemplate": format!("/services/data/v{version}/sobjects/{}/{{ID}}", o.name),
                },
            })
        })
        .collect();
    axum::Json(json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objects}))
        .into_response()
}

async fn describe(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Reply {
    let org = s.org();
    let def = org.object(&p["object"]).ok_or_else(not_found)?;
    let changed = httpdate_secs(org.schema_changed);
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(httpdate_parse);
    let last_modified = httpdate_format(org.schema_changed);
    if since.is_some_and(|t| t >= changed) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&last_modified) {
            r.headers_mut().insert(header::LAST_MODIFIED, v);
        }
        return Ok(r);
    }
    let fields: Vec<Value> = def
        .fields
        .iter()
        .map(|f| {
            json!({
                "name": f.name, "label": f.name.trim_end_matches("__c").replace('_', " "),
                "type": f.field_type, "nillable": f.nillable, "externalId": f.external_id,
                "createable": !f.system, "updateable": !f.system, "custom": f.name.ends_with("__c"),
                "length": f.length.unwrap_or(0), "referenceTo": f.reference_to,
                "relationshipName": if f.field_type == "reference" { Value::String(eval::relationship_name(&f.name)) } else { Value::Null },
            })
        })
        .collect();
    let body = json!({
        "name": def.name, "label": def.name, "keyPrefix": def.key_prefix, "custom": def.is_custom(),
        "queryable": true, "createable": true, "updateable": true, "deletable": true, "fields": fields,
    });
    let mut r = axum::Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&last_modified) {
        r.headers_mut().insert(header::LAST_MODIFIED, v);
    }
    Ok(r)
}

async fn limits(State(s): State<Arc<Core>>) -> Response {
    let used = *s.api_used.lock().unwrap_or_else(PoisonError::into_inner);
    let max = s.config.daily_api_limit;
    axum::Json(json!({
        "DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)},
        "DailyBulkV2QueryJobs": {"Max": 10_000, "Remaining": 10_000},
        "DataStorageMB": {"Max": 1_024, "Remaining": 1_000},
    }))
    .into_response()
}

fn httpdate_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An HTTP date (RFC 7231 IMF-fixdate).
fn httpdate_format(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let rfc = humantime::format_rfc3339_seconds(t).to_string(); // 2026-11-20T10:00:00Z
    let secs = httpdate_secs(t);
    let weekday = DAYS[((secs / 86_400) % 7) as usize];
    let (y, m, d) = (&rfc[0..4], &rfc[5..7], &rfc[8..10]);
    let month = MONTHS[m.parse::<usize>().unwrap_or(1).saturating_sub(1).min(11)];
    format!("{weekday}, {d} {month} {y} {} GMT", &rfc[11..19])
}

fn httpdate_parse(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, d, mon, y, hms, _] = parts.as_slice() else {
        return None;
    };
    let m = MONTHS.iter().position(|x| x == mon)? + 1;
    let text = format!("{y}-{m:02}-{:0>2}T{hms}Z", d);
    humantime::parse_rfc3339(&text).ok().map(httpdate_secs)
}

/// The maximum number of records of one sObject Collections request.
const COLLECTION_LIMIT: usize = 200;

#[derive(Deserialize)]
struct CollectionBody {
    #[serde(rename = "allOrNone", default)]
    all_or_none: bool,
    #[serde(default)]
    records: Vec<Value>,
}

fn collection_body(body: &[u8]) -> Result<CollectionBody, Failure> {
    let parsed: CollectionBody = serde_json::from_slice(body)
        .map_err(|e| Failure::bad(ApiError::new("JSON_PARSER_ERROR", e.to_string())))?;
    if parsed.records.len() > COLLECTION_LIMIT {
        return Err(Failure::bad(ApiError::new(
            "EXCEEDED_ID_LIMIT",
            format!(
                "record limit reached. cannot submit more than {COLLECTION_LIMIT} records into this call"
            ),
        )));
    }
    Ok(parsed)
}

/// Apply `op` to each record; per-record results. With all-or-none, one failure rolls
/// every change back and every record reports the failure or the rollback.
fn apply_each(
    s: &Core,
    records: &[Value],
    all_or_none: bool,
    op: impl Fn(&mut Org, &Fields) -> Result<(String, Option<bool>), ApiError>,
) -> Vec<Value> {
    let mut org = s.org_mut();
    let before = all_or_none.then(|| org.clone());
    let mut results: Vec<Result<(String, Option<bool>), ApiError>> =
        Vec::with_capacity(records.len());
    for r in records {
        let fields = match r {
            Value::Object(m) => {
                let mut m = m.clone();
                m.remove("attributes");
                m
            }
            _ => Fields::new(),
        };
        results.push(op(&mut org, &fields));
    }
    let failed = results.iter().any(Result::is_err);
    if let (true, Some(before)) = (failed, before) {
        *org = before;
        return results
            .into_iter()
            .map(|r| {
                let e = r.err().unwrap_or_else(|| ApiError::new(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                ));
                json!({"id": null, "success": false, "errors": [e.for_record()]})
            })
            .collect();
    }
    results
        .into_iter()
        .map(|r| match r {
            Ok((id, created)) => {
                let mut v = json!({"id": id, "success": true, "errors": []});
                if let Some(c) = created {
                    v["created"] = json!(c);
                }
                v
            }
            Err(e) => json!({"id": null, "success": false, "errors": [e.for_record()]}),
        })
        .collect()
}

fn record_type(r: &Value) -> Option<String> {
    r.get("attributes")?
        .get("type")?
        .as_str()
        .map(str::to_owned)
}

async fn collection_create(State(s): State<Arc<Core>>, body: axum::body::Bytes) -> Reply {
    let b = collection_body(&body)?;
    let types: Vec<Option<String>> = b.records.iter().map(record_type).collect();
    let idx = std::sync::atomic::AtomicUsize::new(0);
    let out = apply_each(&s, &b.records, b.all_or_none, |org, fields| {
        let i = idx.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let object = types[i]
            .clone()
            .ok_or_else(|| ApiError::new("INVALID_TYPE", "Must send a concrete entity type."))?;
        if fields.contains_key("Id") {
            return Err(ApiError::new(
                "INVALID_FIELD",
                "cannot specify Id in an insert call",
            ));
        }
        org.create(&object, fields).map(|id| (id, None))
    });
    Ok(axum::Json(out).into_response())
}

async fn collection_update(State(s): State<Arc<Core>>, body: axum::body::Bytes) -> Reply {
    let b = collection_body(&body)?;
    let types: Vec<Option<String>> = b.records.iter().map(record_type).collect();
    let idx = std::sync::atomic::AtomicUsize::new(0);
    let out = apply_each(&s, &b.records, b.all_or_none, |org, fields| {
        let i = idx.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let object = types[i]
            .clone()
            .ok_or_else(|| ApiError::new("INVALID_TYPE", "Must send a concrete entity type."))?;
        let mut fields = fields.clone();
        // Field names are case-insensitive: `"id"` names the record as `"Id"` does.
        let key = fields
            .keys()
            .find(|k| k.eq_ignore_ascii_case("Id"))
            .cloned();
        let id = key
            .and_then(|k| fields.remove(&k))
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| {
                ApiError::new("MISSING_ARGUMENT", "Id not specified in an update call")
            })?;
        org.update(&object, &id, &fields)
            .map(|()| (super::org::normalize_id(&id), None))
    });
    Ok(axum::Json(out).into_response())
}

async fn collection_upsert(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Reply {
    let b = collection_body(&body)?;
    let (object, field) = (p["object"].clone(), p["field"].clone());
    let out = apply_each(&s, &b.records, b.all_or_none, |org, fields| {
        let mut fields = fields.clone();
        let value = fields
            .remove(&field)
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| ApiError::new("MISSING_ARGUMENT", format!("{field} not specified")))?;
        org.upsert(&object, &field, &value, &fields)
            .map(|(id, created)| (id, Some(created)))
    });
    Ok(axum::Json(out).into_response())
}

#[derive(Deserialize)]
struct DeleteQ {
    ids: Option<String>,
    #[serde(rename = "allOrNone", default)]
    all_or_none: Option<bool>,
}

async fn collection_delete(State(s): State<Arc<Core>>, UrlQuery(q): UrlQuery<DeleteQ>) -> Reply {
    let ids: Vec<Value> = q
        .ids
        .unwrap_or_default()
        .split(',')
        .filter(|i| !i.is_empty())
        .map(|i| json!({"Id": i}))
        .collect();
    if ids.len() > COLLECTION_LIMIT {
        return Err(Failure::bad(ApiError::new(
            "EXCEEDED_ID_LIMIT",
            "too many ids",
        )));
    }
    let out = apply_each(&s, &ids, q.all_or_none.unwrap_or(false), |org, fields| {
        let id = fields
            .get("Id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let object = org
            .get_any(&id)
            .map(|(o, _)| o.to_owned())
            .ok_or_else(|| ApiError::new("ENTITY_IS_DELETED", "entity is deleted"))?;
        org.delete(&object, &id)
            .map(|()| (super::org::normalize_id(&id), None))
    });
    Ok(axum::Json(out).into_response())
}

#[derive(Deserialize)]
struct RetrieveBody {
    ids: Vec<String>,
    fields: Vec<String>,
}

async fn collection_retrieve(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Reply {
    let b: RetrieveBody = serde_json::from_slice(&body)
        .map_err(|e| Failure::bad(ApiError::new("JSON_PARSER_ERROR", e.to_string())))?;
    let version = version_of(&p["version"]);
    let object = p["object"].clone();
    let fields = b.fields.join(",");
    let found: Vec<Option<Fields>> = {
        let org = s.org();
        b.ids
            .iter()
            .map(|id| org.get(&object, id).cloned())
            .collect()
    };
    let out: Vec<Value> = found
        .into_iter()
        .map(|r| {
            r.map_or(Value::Null, |r| {
                shape_one(&s, &object, &r, Some(&fields), &version)
            })
        })
        .collect();
    Ok(axum::Json(out).into_response())
}

async fn search(
    State(s): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    UrlQuery(q): UrlQuery<Q>,
) -> Reply {
    let text = q.q.ok_or_else(|| {
        Failure::bad(ApiError::new(
            "MALFORMED_SEARCH",
            "A search string has to be specified",
        ))
    })?;
    let parsed = super::sosl::parse(&text).map_err(Failure::bad)?;
    let org = s.org();
    let found =
        super::sosl::run(&org, &parsed, &version_of(&p["version"])).map_err(Failure::bad)?;
    Ok(axum::Json(found).into_response())
}
