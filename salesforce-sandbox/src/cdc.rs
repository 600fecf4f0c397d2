//! Change Data Capture in the sandbox: every create, update and delete the org performs
//! becomes a change event with a replay id, kept in a bounded window, and served over the
//! Streaming API's CometD / Bayeux long polling (`POST /cometd/{version}`: handshake,
//! subscribe with a replay id, connect, disconnect), after Salesforce's Change Data
//! Capture Developer Guide.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::server::{Failure, Shared};
use crate::error::ApiError;

/// Events kept for replay when the config says nothing (Salesforce keeps 72 hours).
pub(crate) const DEFAULT_RETENTION: usize = 10_000;

/// The org's change events, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct ChangeLog {
    events: VecDeque<Event>,
    next_replay: i64,
    next_commit: i64,
    retention: usize,
    /// Off while seeding: generated data is not a change.
    pub(crate) recording: bool,
}

#[derive(Debug, Clone)]
struct Event {
    replay_id: i64,
    entity: String,
    /// `Some("/topic/<Name>")` for a PushTopic event; `None` for a change event.
    topic: Option<String>,
    message: Value,
}

impl Default for ChangeLog {
    fn default() -> Self {
        ChangeLog {
            events: VecDeque::new(),
            next_replay: 1,
            next_commit: 1,
            retention: DEFAULT_RETENTION,
            recording: true,
        }
    }
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Create,
    Update,
    Delete,
}

impl ChangeType {
    fn as_str(self) -> &'static str {
        match self {
            ChangeType::Create => "CREATE",
            ChangeType::Update => "UPDATE",
            ChangeType::Delete => "DELETE",
        }
    }
}

impl ChangeLog {
    /// Keep at most `n` events.
    pub(crate) fn set_retention(&mut self, n: usize) {
        self.retention = n.max(1);
        self.trim();
    }

    fn trim(&mut self) {
        while self.events.len() > self.retention {
            self.events.pop_front();
        }
    }

    /// Record a change of `entity` record `id`: `fields` are the record's values (create)
    /// or the changed ones (update).
    pub(crate) fn record(
        &mut self,
        entity: &str,
        id: &str,
        change: ChangeType,
        fields: &Map<String, Value>,
        commit_ms: u64,
    ) {
        if !self.recording {
            return;
        }
        let replay_id = self.next_replay;
        self.next_replay += 1;
        let commit = self.next_commit;
        self.next_commit += 1;
        // The commit is the change's transaction time: the SystemModstamp it was given, to
        // the millisecond (as in Salesforce, where both are the commit time). A clock read
        // here instead could land a millisecond later under load, and a reader comparing
        // the two would take the change for a newer one.
        let now_ms = if commit_ms > 0 {
            commit_ms
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        let mut changed: Vec<&str> = Vec::new();
        let mut nulled: Vec<&str> = Vec::new();
        let mut payload = Map::new();
        for (k, v) in fields {
            if k == "Id" || k == "IsDeleted" {
                continue;
            }
            if change == ChangeType::Update {
                changed.push(k);
                if v.is_null() {
                    nulled.push(k);
                }
            }
            if change != ChangeType::Delete && (change == ChangeType::Update || !v.is_null()) {
                payload.insert(k.clone(), v.clone());
            }
        }
        payload.insert(
            "ChangeEventHeader".into(),
            json!({
                "entityName": entity,
                "recordIds": [id],
                "changeType": change.as_str(),
                "changeOrigin": "com/salesforce/api/rest/62.0",
                "transactionKey": format!("0002a3b4-{commit:08x}-sandbox"),
                "sequenceNumber": 1,
                "commitTimestamp": now_ms,
                "commitNumber": commit,
                "commitUser": "0058d000000001AAAA",
                "changedFields": changed,
                "diffFields": [],
                "nulledFields": nulled,
            }),
        );
        self.events.push_back(Event {
            replay_id,
            entity: entity.to_owned(),
            topic: None,
            message: json!({
                "schema": format!("sandbox-{entity}-schema"),
                "payload": payload,
                "event": {"replayId": replay_id},
            }),
        });
        self.trim();
    }

    /// Record a PushTopic notification on `channel` (`/topic/<Name>`).
    pub(crate) fn record_topic(
        &mut self,
        channel: &str,
        entity: &str,
        change: ChangeType,
        sobject: Map<String, Value>,
    ) {
        let replay_id = self.next_replay;
        self.next_replay += 1;
        let kind = match change {
            ChangeType::Create => "created",
            ChangeType::Update => "updated",
            ChangeType::Delete => "deleted",
        };
        let created = super::org::sf_datetime(SystemTime::now());
        self.events.push_back(Event {
            replay_id,
            entity: entity.to_owned(),
            topic: Some(channel.to_owned()),
            message: json!({
                "event": {"type": kind, "createdDate": created, "replayId": replay_id},
                "sobject": sobject,
            }),
        });
        self.trim();
    }

    fn oldest(&self) -> Option<i64> {
        self.events.front().map(|e| e.replay_id)
    }

    fn latest(&self) -> i64 {
        self.next_replay - 1
    }
}

/// `/data/ChangeEvents` (every entity) or `/data/<Entity>ChangeEvent` (`Account`;
/// custom `Matter__c` → `Matter__ChangeEvent`): the entity it carries, or `None` for all.
fn channel_entity(channel: &str) -> Result<Option<String>, ()> {
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

impl Shared {
    pub(crate) fn drop_streaming_clients(&self) {
        clients(self).clients.clear();
    }
}

fn clients(s: &Shared) -> std::sync::MutexGuard<'_, Clients> {
    s.cometd.lock().unwrap_or_else(PoisonError::into_inner)
}

fn advice(s: &Shared) -> Value {
    json!({"reconnect": "retry", "interval": 0, "timeout": s.config.cometd_timeout.as_millis()})
}

/// `POST /cometd/{version}`: a batch of Bayeux messages.
pub(crate) async fn cometd(
    State(s): State<Arc<Shared>>,
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

fn handshake(s: &Shared) -> Value {
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

fn subscribe(s: &Shared, client_id: &str, m: &Value) -> Value {
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

fn unsubscribe(s: &Shared, client_id: &str, m: &Value) -> Value {
    let subscription = m["subscription"].as_str().unwrap_or_default().to_owned();
    let mut all = clients(s);
    let Some(client) = all.clients.get_mut(client_id) else {
        return unknown_client("/meta/unsubscribe", client_id);
    };
    client.subscriptions.retain(|(c, _, _)| *c != subscription);
    json!({"channel": "/meta/unsubscribe", "clientId": client_id, "subscription": subscription, "successful": true})
}

/// Hold the connect until events arrive for the client's subscriptions, or the timeout.
async fn connect(s: &Shared, client_id: &str) -> (Vec<Value>, Value) {
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
                for e in org.changes.events.iter().filter(|e| e.replay_id > from) {
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

    #[test]
    fn the_window_keeps_the_newest_events() {
        let mut log = ChangeLog::default();
        log.set_retention(3);
        for i in 0..5 {
            log.record(
                "Account",
                &format!("001{i}"),
                ChangeType::Create,
                &Map::new(),
                0,
            );
        }
        assert_eq!((log.oldest(), log.latest()), (Some(3), 5));
        log.recording = false;
        log.record("Account", "0019", ChangeType::Delete, &Map::new(), 0);
        assert_eq!(log.latest(), 5);
    }
}
