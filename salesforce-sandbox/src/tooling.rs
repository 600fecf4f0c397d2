//! With the Pub/Sub API (feature `pubsub`): the Tooling API's query resource (`/services/data/vXX.X/tooling/query`), for the one
//! Tooling object the sandbox keeps: `ManagedEventSubscription`, the managed
//! subscriptions of the Pub/Sub API, as clients look them up before `ManagedSubscribe`
//! (`SELECT Id, DeveloperName, Metadata FROM ManagedEventSubscription WHERE
//! DeveloperName = '…'`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::reply::{Failure, Reply};
use crate::soql::{self, Literal, Predicate};
use crate::state::{Core, Managed};

const OBJECT: &str = "ManagedEventSubscription";

/// The Tooling API's routes (under `/services/data/{version}`).
pub(crate) fn routes(core: Arc<Core>) -> Router {
    Router::new()
        .route("/tooling/query", get(query))
        .with_state(core)
}

#[derive(serde::Deserialize)]
struct Q {
    q: Option<String>,
}

async fn query(
    State(core): State<Arc<Core>>,
    Path(p): Path<HashMap<String, String>>,
    UrlQuery(q): UrlQuery<Q>,
) -> Reply {
    let malformed = |m: String| Failure::bad(ApiError::new("MALFORMED_QUERY", m));
    let text =
        q.q.ok_or_else(|| malformed("A query string has to be specified".into()))?;
    let parsed = soql::parse(&text).map_err(|e| malformed(e.to_string()))?;
    if !parsed.object.eq_ignore_ascii_case(OBJECT) {
        return Err(Failure::bad(ApiError::new(
            "INVALID_TYPE",
            format!("sObject type '{}' is not supported.", parsed.object),
        )));
    }
    for field in &parsed.fields {
        if !["Id", "DeveloperName", "MasterLabel", "Metadata"]
            .iter()
            .any(|f| f.eq_ignore_ascii_case(field))
        {
            return Err(Failure::bad(ApiError::new(
                "INVALID_FIELD",
                format!("No such column '{field}' on entity '{OBJECT}'."),
            )));
        }
    }
    let version = p
        .get("version")
        .map_or("62.0", |v| v.trim_start_matches('v'));
    let records: Vec<Value> = {
        let all = core
            .managed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut rows: Vec<(&String, &Managed)> = all.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        for (id, m) in rows {
            if let Some(filter) = &parsed.filter
                && !matches(filter, id, m).map_err(malformed)?
            {
                continue;
            }
            out.push(record(version, &parsed.fields, id, m));
        }
        let skip = usize::try_from(parsed.offset.unwrap_or(0)).unwrap_or(usize::MAX);
        let take = usize::try_from(parsed.limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
        out.into_iter().skip(skip).take(take).collect()
    };
    Ok(axum::Json(json!({
        "size": records.len(),
        "totalSize": records.len(),
        "done": true,
        "queryLocator": null,
        "entityTypeName": OBJECT,
        "records": records,
    }))
    .into_response())
}

/// A subscription as a Tooling API record with `fields`.
fn record(version: &str, fields: &[String], id: &str, m: &Managed) -> Value {
    let mut out = serde_json::Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": OBJECT, "url": format!("/services/data/v{version}/tooling/sobjects/{OBJECT}/{id}")}),
    );
    for field in fields {
        let value = match field.to_ascii_lowercase().as_str() {
            "id" => json!(id),
            "developername" => json!(m.name),
            "masterlabel" => json!(m.name),
            _ => json!({
                "label": m.name,
                "topicName": m.topic,
                "defaultReplay": if m.from_earliest { "EARLIEST" } else { "LATEST" },
                "errorRecoveryReplay": "LATEST",
                "state": "RUN",
                "urls": null,
            }),
        };
        out.insert(field.clone(), value);
    }
    Value::Object(out)
}

/// Whether subscription `id` matches `filter`: comparisons of `Id` or `DeveloperName`
/// with `=` or `!=`, joined with AND, OR and NOT.
fn matches(filter: &Predicate, id: &str, m: &Managed) -> Result<bool, String> {
    Ok(match filter {
        Predicate::Compare { field, op, value } => {
            let actual = match field.to_ascii_lowercase().as_str() {
                "id" => id,
                "developername" => m.name.as_str(),
                _ => {
                    return Err(format!(
                        "The sandbox filters {OBJECT} on Id and DeveloperName only, not {field}"
                    ));
                }
            };
            let Literal::String(expected) = value else {
                return Err(format!("{field} is compared with a string"));
            };
            // Ids compare on their first 15 characters, names case-insensitively.
            let equal = if field.eq_ignore_ascii_case("id") {
                actual.get(..15) == expected.get(..15) && expected.len() >= 15
            } else {
                actual.eq_ignore_ascii_case(expected)
            };
            match op.as_str() {
                "=" => equal,
                "!=" => !equal,
                _ => return Err(format!("The sandbox compares {field} with = and != only")),
            }
        }
        Predicate::And(all) => {
            let mut ok = true;
            for p in all {
                ok &= matches(p, id, m)?;
            }
            ok
        }
        Predicate::Or(any) => {
            let mut ok = false;
            for p in any {
                ok |= matches(p, id, m)?;
            }
            ok
        }
        Predicate::Not(p) => !matches(p, id, m)?,
        _ => {
            return Err(format!(
                "The sandbox filters {OBJECT} with comparisons only"
            ));
        }
    })
}
