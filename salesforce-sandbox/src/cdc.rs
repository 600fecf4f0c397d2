//! Change Data Capture in the sandbox: every create, update and delete the org performs
//! becomes a change event with a replay id, kept in a bounded window, and served over the
//! Streaming API's CometD / Bayeux long polling (`POST /cometd/{version}`: handshake,
//! subscribe with a replay id, connect, disconnect), after Salesforce's Change Data
//! Capture Developer Guide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::reply::Failure;
use crate::state::Core;

/// `/data/ChangeEvents` (every entity) or `/data/<Entity>ChangeEvent` (`Account`;
/// custom `Matter__c` → `Matter__ChangeEvent`): the entity it carries, or `None` for all.
pub(crate) fn channel_entity(channel: &str) -> Result<Option<String>, ()> {
    if channel == "/data/ChangeEvents" {
        return Ok(None);
    }
    let name = channel
        .strip_prefix("/data/")
        .and_then(|n| n.strip_suffix("ChangeEvent"))
        .filter(|n| !n.is_empty())
        .ok_or(())?;
    Ok(Some(match name.strip_suffix("__") {
        Some(base) => format!("{base}__c"),
        None => name.to_owned(),
    }))
}

/// A Bayeux client of the sandbox.
pub(crate) struct Client {
    /// `(channel, entity filter, replay id after which to deliver)`.
    subscriptions: Vec<(String, Option<String>, i64)>,
}

/// Every Bayeux client.
#[derive(Default)]
pub(crate) struct Clients {
    clients: HashMap<String, Client>,
}

/// The Streaming API's state: the shared core and the Bayeux clients.
pub(crate) struct Streaming {
    core: Arc<Core>,
    clients: Mutex<Clients>,
}

crate::state::deref_to_core!(Streaming);

impl Streaming {
    /// The Streaming API over the shared core, with no client yet.
    pub(crate) fn new(core: Arc<Core>) -> Arc<Self> {
        Arc::new(Streaming {
            core,
            clients: Mutex::new(Clients::default()),
        })
    }

    /// Forget every client (their next connect is told to handshake again).
    pub(crate) fn drop_clients(&self) {
        clients(self).clients.clear();
    }

    /// `POST /cometd/{version}`.
    pub(crate) fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/cometd/{version}", axum::routing::post(cometd))
            .with_state(self.clone())
    }
}

fn clients(s: &Streaming) -> std::sync::MutexGuard<'_, Clients> {
    s.clients.lock().unwrap_or_else(PoisonError::into_inner)
}

fn advice(s: &Streaming) -> Value {
    json!({"reconnect": "retry", "interval": 0, "timeout": s.config.cometd_timeout.as_millis()})
}

/// `POST /cometd/{version}`: a batch of Bayeux messages.
async fn cometd(
    State(s): State<Arc<Streaming>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    axum::Json(messages): axum::Json<Value>,
) -> Response {
    if !s.session_valid(&headers) {
        return Failure::new(
            StatusCode::UNAUTHORIZED,
            ApiError::new("INVALID_SESSION_ID", "Session expired or invalid"),
        )
        .into_response();
    }
    if !s.config.versions.contains(&version) {
        return Failure::new(
            StatusCode::NOT_FOUND,
            ApiError::new("NOT_FOUND", "The requested resource does not exist"),
        )
        .into_response();
    }
    let list = match messages {
        Value::Array(list) => list,
        one @ Value::Object(_) => vec![one],
        _ => Vec::new(),
    };
    let mut replies = Vec::new();
    for m in list {
        let channel = m["channel"].as_str().unwrap_or_default().to_owned();
        let client_id = m["clientId"].as_str().unwrap_or_default().to_owned();
        let id = m.get("id").cloned();
        let mut reply = match channel.as_str() {
            "/meta/handshake" => handshake(&s),
            "/meta/subscribe" => subscribe(&s, &client_id, &m),
            "/meta/unsubscribe" => unsubscribe(&s, &client_id, &m),
            "/meta/connect" => {
                let (events, reply) = connect(&s, &client_id).await;
                replies.extend(events);
                reply
            }
            "/meta/disconnect" => {
                clients(&s).clients.remove(&client_id);
                json!({"channel": "/meta/disconnect", "clientId": client_id, "successful": true})
            }
            other => {
                json!({"channel": other, "successful": false, "error": "400::Unknown channel"})
            }
        };
        if let Some(id) = id {
            reply["id"] = id;
        }
        replies.push(reply);
    }
    axum::Json(Value::Array(replies)).into_response()
}

fn handshake(s: &Streaming) -> Value {
    let client_id = format!("sandbox{:016x}", s.next_number() ^ 0x6b61_6e64_6f6d_21aa);
    clients(s).clients.insert(
        client_id.clone(),
        Client {
            subscriptions: Vec::new(),
        },
    );
    json!({
        "channel": "/meta/handshake", "clientId": client_id, "successful": true, "version": "1.0",
        "supportedConnectionTypes": ["long-polling"], "minimumVersion": "1.0", "advice": advice(s),
    })
}

fn unknown_client(channel: &str, client_id: &str) -> Value {
    json!({
        "channel": channel, "clientId": client_id, "successful": false, "error": "403::Unknown client",
        "advice": {"reconnect": "handshake", "interval": 0},
    })
}

fn subscribe(s: &Streaming, client_id: &str, m: &Value) -> Value {
    let subscription = m["subscription"].as_str().unwrap_or_default().to_owned();
    let fail = |error: String| json!({"channel": "/meta/subscribe", "clientId": client_id, "subscription": subscription, "successful": false, "error": error});
    if let Some(name) = subscription.strip_prefix("/topic/") {
        let exists = s
            .org()
            .rows("PushTopic", false)
            .iter()
            .any(|t| t.get("Name").and_then(Value::as_str) == Some(name));
        if !exists {
            return fail(format!(
                "400::The channel you requested to subscribe to does not exist {{{subscription}}}"
            ));
        }
    }
    let entity = if subscription.starts_with("/topic/") {
        Ok(None)
    } else {
        channel_entity(&subscription)
    };
    let Ok(entity) = entity else {
        return fail(format!(
            "400::The channel you requested to subscribe to does not exist {{{subscription}}}"
        ));
    };
    if let Some(e) = &entity
        && s.org().object(e).is_none()
    {
        return fail(format!(
            "400::The channel you requested to subscribe to does not exist {{{subscription}}}"
        ));
    }
    let replay = m["ext"]["replay"][&subscription].as_i64().unwrap_or(-1);
    let after = {
        let org = s.org();
        let log = &org.changes;
        match replay {
            -1 => log.latest(),
            -2 => log.oldest().map_or(log.latest(), |o| o - 1),
            n if n >= log.oldest().map_or(log.latest(), |o| o - 1) && n <= log.latest() => n,
            n => {
                return fail(format!(
                    "400::The replayId {{{n}}} you provided was invalid.  Please provide a valid ID, -2 to replay all events, or -1 to replay only new events."
                ));
            }
        }
    };
    let mut all = clients(s);
    let Some(client) = all.clients.get_mut(client_id) else {
        return unknown_client("/meta/subscribe", client_id);
    };
    client.subscriptions.retain(|(c, _, _)| *c != subscription);
    client
        .subscriptions
        .push((subscription.clone(), entity, after));
    json!({"channel": "/meta/subscribe", "clientId": client_id, "subscription": subscription, "successful": true})
}

fn unsubscribe(s: &Streaming, client_id: &str, m: &Value) -> Value {
    let subscription = m["subscription"].as_str().unwrap_or_default().to_owned();
    let mut all = clients(s);
    let Some(client) = all.clients.get_mut(client_id) else {
        return unknown_client("/meta/unsubscribe", client_id);
    };
    client.subscriptions.retain(|(c, _, _)| *c != subscription);
    json!({"channel": "/meta/unsubscribe", "clientId": client_id, "subscription": subscription, "successful": true})
}

/// Hold the connect until events arrive for the client's subscriptions, or the timeout.
async fn connect(s: &Streaming, client_id: &str) -> (Vec<Value>, Value) {
    const MAX_EVENTS: usize = 1_000;
    let deadline = Instant::now() + s.config.cometd_timeout;
    loop {
        let delivered = {
            let org = s.org();
            let mut all = clients(s);
            let Some(client) = all.clients.get_mut(client_id) else {
                return (Vec::new(), unknown_client("/meta/connect", client_id));
            };
            let mut out = Vec::new();
            for (channel, entity, after) in &mut client.subscriptions {
                let from = *after;
                for e in org.changes.after(from) {
                    if out.len() >= MAX_EVENTS {
                        break;
                    }
                    let wanted = match &e.topic {
                        Some(topic) => topic == channel,
                        None => {
                            !channel.starts_with("/topic/")
                                && entity.as_deref().is_none_or(|x| x == e.entity)
                        }
                    };
                    if wanted {
                        out.push(json!({"channel": channel, "data": e.message}));
                    }
                    *after = e.replay_id;
                }
            }
            out
        };
        if !delivered.is_empty() || Instant::now() >= deadline {
            let reply = json!({"channel": "/meta/connect", "clientId": client_id, "successful": true, "advice": advice(s)});
            return (delivered, reply);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_their_entities() {
        assert_eq!(channel_entity("/data/ChangeEvents"), Ok(None));
        assert_eq!(
            channel_entity("/data/AccountChangeEvent"),
            Ok(Some("Account".into()))
        );
        assert_eq!(
            channel_entity("/data/Matter__ChangeEvent"),
            Ok(Some("Matter__c".into()))
        );
        assert!(channel_entity("/topic/Foo").is_err());
    }
}
