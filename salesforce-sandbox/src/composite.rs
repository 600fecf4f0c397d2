//! The sandbox's composite resources: `/composite` (subrequests with `@{ref.field}`
//! references, all-or-none), `/composite/batch` (independent subrequests, halt on
//! error), and `/composite/tree/{object}` (a record tree created at once, or not at all).
//! Subrequests run through the same routes as direct calls; the whole request counts as
//! one API call, as on Salesforce.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::Service;
use tower_http::normalize_path::NormalizePath;

use super::org::Fields;
use crate::error::ApiError;
use crate::reply::{Failure, Reply};
use crate::state::Core;

/// The composite resources' state: the shared core and the routes subrequests are
/// dispatched to (the API's, without a second authorization or API-call count).
pub(crate) struct Composite {
    core: Arc<Core>,
    internal: NormalizePath<Router>,
}

crate::state::deref_to_core!(Composite);

/// `/composite`, `/composite/batch` and `/composite/tree/{object}` (to nest under
/// `/services/data/{version}`), dispatching subrequests to `internal`.
pub(crate) fn routes(core: Arc<Core>, internal: Router) -> Router {
    // As for direct calls, a trailing slash names the same resource.
    let internal = NormalizePath::trim_trailing_slash(internal);
    Router::new()
        .route("/composite", post(composite))
        .route("/composite/batch", post(batch))
        .route("/composite/tree/{object}", post(tree))
        .with_state(Arc::new(Composite { core, internal }))
}

/// Subrequests of one composite or batch request, at most.
const SUBREQUEST_LIMIT: usize = 25;
/// Records of one tree request, at most.
const TREE_LIMIT: usize = 200;

fn halted(message: &str) -> Value {
    json!([{"errorCode": "PROCESSING_HALTED", "message": message}])
}

/// Run one subrequest against the internal routes: `(status, body)`.
async fn dispatch(
    s: &Composite,
    method: &str,
    url: &str,
    body: Option<&Value>,
    auth: &str,
) -> (u16, Value) {
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return (
            400,
            json!([{"errorCode": "METHOD_NOT_ALLOWED", "message": format!("{method} is not a method")}]),
        );
    };
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header(header::AUTHORIZATION, auth)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes));
    let Ok(request) = request else {
        return (
            400,
            json!([{"errorCode": "INVALID_URL", "message": format!("{url} is not a valid URL")}]),
        );
    };
    let mut router = s.internal.clone();
    let Ok(response) = router.call(request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Replace `@{ref.path}` in `text` with the value at `path` of `ref`'s result body.
fn resolve_refs(text: &str, results: &HashMap<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("@{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed reference in {text}"))?;
        let expr = &after[..end];
        let (reference, path) = expr.split_once('.').unwrap_or((expr, ""));
        let mut value = results.get(reference).ok_or_else(|| {
            format!("Invalid reference specified. No value for {expr} found in {reference}.")
        })?;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let (name, index) = match part.split_once('[') {
                Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            value = value
                .get(name)
                .ok_or_else(|| format!("No value for {expr}"))?;
            if let Some(i) = index {
                value = value.get(i).ok_or_else(|| format!("No value for {expr}"))?;
            }
        }
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve_value(v: &Value, results: &HashMap<String, Value>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(resolve_refs(s, results)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| resolve_value(x, results))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| resolve_value(x, results).map(|x| (k.clone(), x)))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

fn auth_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[derive(Deserialize)]
struct CompositeBody {
    #[serde(rename = "allOrNone", default)]
    all_or_none: bool,
    #[serde(rename = "compositeRequest")]
    requests: Vec<SubRequest>,
}

#[derive(Deserialize)]
struct SubRequest {
    method: String,
    url: String,
    #[serde(rename = "referenceId")]
    reference_id: String,
    #[serde(default)]
    body: Option<Value>,
}

async fn composite(
    State(s): State<Arc<Composite>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Reply {
    let b: CompositeBody = serde_json::from_slice(&body)
        .map_err(|e| Failure::bad(ApiError::new("JSON_PARSER_ERROR", e.to_string())))?;
    if b.requests.len() > SUBREQUEST_LIMIT {
        return Err(Failure::bad(ApiError::new(
            "INVALID_BATCH_REQUEST",
            format!(
                "Limit Exceeded: a composite request may have at most {SUBREQUEST_LIMIT} subrequests"
            ),
        )));
    }
    let auth = auth_of(&headers);
    let before = b.all_or_none.then(|| s.org().clone());
    let mut results: HashMap<String, Value> = HashMap::new();
    let mut out: Vec<Value> = Vec::with_capacity(b.requests.len());
    let mut failed = false;
    for r in &b.requests {
        if failed && b.all_or_none {
            out.push(json!({"body": halted("The transaction was rolled back since another operation in the same transaction failed."), "httpHeaders": {}, "httpStatusCode": 400, "referenceId": r.reference_id}));
            continue;
        }
        let resolved = resolve_refs(&r.url, &results).and_then(|url| {
            r.body
                .as_ref()
                .map(|b| resolve_value(b, &results))
                .transpose()
                .map(|body| (url, body))
        });
        let (status, body) = match resolved {
            Ok((url, body)) => dispatch(&s, &r.method, &url, body.as_ref(), &auth).await,
            Err(message) => (400, halted(&message)),
        };
        if status >= 400 {
            failed = true;
        } else {
            results.insert(r.reference_id.clone(), body.clone());
        }
        out.push(json!({"body": if body.is_null() { Value::Null } else { body }, "httpHeaders": {}, "httpStatusCode": status, "referenceId": r.reference_id}));
    }
    if failed && let Some(before) = before {
        *s.org_mut() = before;
        // Everything that had succeeded was rolled back.
        for entry in &mut out {
            if entry["httpStatusCode"].as_u64().is_some_and(|c| c < 400) {
                entry["httpStatusCode"] = json!(400);
                entry["body"] = halted(
                    "The transaction was rolled back since another operation in the same transaction failed.",
                );
            }
        }
    }
    Ok(axum::Json(json!({"compositeResponse": out})).into_response())
}

#[derive(Deserialize)]
struct BatchBody {
    #[serde(rename = "haltOnError", default)]
    halt_on_error: bool,
    #[serde(rename = "batchRequests")]
    requests: Vec<BatchSub>,
}

#[derive(Deserialize)]
struct BatchSub {
    method: String,
    url: String,
    #[serde(rename = "richInput", default)]
    rich_input: Option<Value>,
}

async fn batch(
    State(s): State<Arc<Composite>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Reply {
    let b: BatchBody = serde_json::from_slice(&body)
        .map_err(|e| Failure::bad(ApiError::new("JSON_PARSER_ERROR", e.to_string())))?;
    if b.requests.len() > SUBREQUEST_LIMIT {
        return Err(Failure::bad(ApiError::new(
            "INVALID_BATCH_REQUEST",
            format!("at most {SUBREQUEST_LIMIT} batch requests"),
        )));
    }
    let auth = auth_of(&headers);
    let mut results = Vec::with_capacity(b.requests.len());
    let mut has_errors = false;
    for r in &b.requests {
        if has_errors && b.halt_on_error {
            results.push(json!({"statusCode": 412, "result": halted("The transaction was halted because a previous request failed.")}));
            continue;
        }
        // Batch URLs are relative to /services/data: "v62.0/sobjects/Account/001…".
        let url = format!(
            "/services/data/{}",
            r.url
                .trim_start_matches('/')
                .trim_start_matches("services/data/")
        );
        let (status, body) = dispatch(&s, &r.method, &url, r.rich_input.as_ref(), &auth).await;
        has_errors |= status >= 400;
        results.push(json!({"statusCode": status, "result": body}));
    }
    Ok(axum::Json(json!({"hasErrors": has_errors, "results": results})).into_response())
}

#[derive(Deserialize)]
struct TreeBody {
    records: Vec<Value>,
}

async fn tree(
    State(s): State<Arc<Composite>>,
    Path(p): Path<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Reply {
    let b: TreeBody = serde_json::from_slice(&body)
        .map_err(|e| Failure::bad(ApiError::new("JSON_PARSER_ERROR", e.to_string())))?;
    let object = p["object"].clone();
    fn count(records: &[Value]) -> usize {
        records
            .iter()
            .map(|r| {
                1 + r
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, v)| v.get("records").and_then(Value::as_array))
                    .map(|c| count(c))
                    .sum::<usize>()
            })
            .sum()
    }
    if count(&b.records) > TREE_LIMIT {
        return Err(Failure::bad(ApiError::new(
            "INVALID_BATCH_REQUEST",
            format!("at most {TREE_LIMIT} records in one tree"),
        )));
    }
    let mut org = s.org_mut();
    let before = org.clone();
    let mut created: Vec<Value> = Vec::new();
    let mut errors: Vec<Value> = Vec::new();
    insert_tree(
        &mut org,
        &object,
        &b.records,
        None,
        &mut created,
        &mut errors,
    );
    if errors.is_empty() {
        Ok((
            StatusCode::CREATED,
            axum::Json(json!({"hasErrors": false, "results": created})),
        )
            .into_response())
    } else {
        *org = before;
        Ok((
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"hasErrors": true, "results": errors})),
        )
            .into_response())
    }
}

/// Insert `records` of `object` (each with `attributes.referenceId`), their child
/// records after them with the parent's id filled in.
fn insert_tree(
    org: &mut super::org::Org,
    object: &str,
    records: &[Value],
    parent: Option<(&str, &str)>,
    created: &mut Vec<Value>,
    errors: &mut Vec<Value>,
) {
    for r in records {
        let Some(map) = r.as_object() else { continue };
        let reference = map
            .get("attributes")
            .and_then(|a| a.get("referenceId"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut fields = Fields::new();
        let mut children: Vec<(String, Vec<Value>)> = Vec::new();
        for (k, v) in map {
            if k == "attributes" {
                continue;
            }
            match v.get("records").and_then(Value::as_array) {
                Some(list) => children.push((k.clone(), list.clone())),
                None => {
                    fields.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some((field, id)) = parent {
            fields.insert(field.to_owned(), json!(id));
        }
        match org.create(object, &fields) {
            Ok(id) => {
                created.push(json!({"referenceId": reference, "id": id}));
                for (relationship, list) in children {
                    // `Contacts` under an Account: the Contact object's reference to Account.
                    let child = org
                        .objects()
                        .find(|o| {
                            format!("{}s", o.name) == relationship
                                || o.name.replace("__c", "__r") == relationship
                        })
                        .map(|o| o.name.clone());
                    let link = child.as_deref().and_then(|c| {
                        org.object(c)?
                            .fields
                            .iter()
                            .find(|f| f.reference_to.iter().any(|t| t == object))
                            .map(|f| f.name.clone())
                    });
                    match (child, link) {
                        (Some(child), Some(link)) => insert_tree(org, &child, &list, Some((&link, &id)), created, errors),
                        _ => errors.push(json!({"referenceId": reference, "errors": [ApiError::new("INVALID_FIELD", format!("No such relationship {relationship} on {object}")).for_record()]})),
                    }
                }
            }
            Err(e) => errors.push(json!({"referenceId": reference, "errors": [e.for_record()]})),
        }
    }
}
