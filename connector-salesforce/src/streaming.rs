//! Real-time changes: Change Data Capture channels (`/data/ChangeEvents`,
//! `/data/AccountChangeEvent`, `/data/Matter__ChangeEvent`) and PushTopics (`/topic/…`)
//! over the Streaming API's CometD / Bayeux long polling.
//!
//! [`SalesforceClient::subscribe`] handshakes and subscribes (so a bad channel or a replay
//! id outside Salesforce's retention window is an error right there), then a background
//! task long-polls `/meta/connect` and hands events to a bounded channel: when the host
//! is slow, polling waits (back-pressure). The task follows the server's advice
//! (`retry`, `handshake`), re-handshakes when the client is unknown or the session
//! expired (the token manager refreshes it), and re-subscribes from the last event it
//! delivered, so nothing is skipped.
//!
//! **Replay ids.** With a [`CursorStore`] in [`SubscribeOptions::store`] (every state
//! store is one), the stream resumes after the last event [`ChangeStream::ack`]ed —
//! persisted as the cursor of the subscription's consumer name in the channel — so a
//! restart loses nothing (events after the last ack may come again: handle them
//! idempotently). Without a stored id it starts
//! from [`SubscribeOptions::replay`]: new events only (`-1`, the default) or everything
//! retained (`-2`).
//!
//! ```no_run
//! # async fn run(sf: connector_salesforce::client::SalesforceClient, state: std::sync::Arc<dyn moodbridge_core::state::CursorStore>) -> moodbridge_core::Result<()> {
//! use connector_salesforce::streaming::{ReplayFrom, SubscribeOptions};
//! use futures::StreamExt;
//!
//! let mut changes = sf
//!     .subscribe("/data/CaseChangeEvent", SubscribeOptions {
//!         store: Some((state, "case-changes".into())),
//!         replay: ReplayFrom::AllRetained,
//!         ..SubscribeOptions::default()
//!     })
//!     .await?;
//! while let Some(event) = changes.next().await {
//!     let event = event?;
//!     println!("{:?} {:?} {:?}", event.change_type, event.record_ids, event.changed_fields);
//!     changes.ack(&event).await?; // handled: a restart resumes after it
//! }
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use moodbridge_core::observe::op::salesforce as op;
use moodbridge_core::state::CursorStore;
use moodbridge_core::{Error, ErrorKind, Result};
use reqwest::Method;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::client::{RequestBody, SalesforceClient};

/// Where a subscription starts when no replay id is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayFrom {
    /// Only events published from now on (`-1`).
    #[default]
    New,
    /// Every event Salesforce still retains (`-2`; up to 72 hours).
    AllRetained,
    /// The events after this replay id.
    After(i64),
}

impl ReplayFrom {
    fn id(self) -> i64 {
        match self {
            ReplayFrom::New => -1,
            ReplayFrom::AllRetained => -2,
            ReplayFrom::After(n) => n,
        }
    }
}

/// Options of [`SalesforceClient::subscribe`].
#[derive(Clone)]
pub struct SubscribeOptions {
    /// Where to start when no replay id is stored.
    pub replay: ReplayFrom,
    /// Where acknowledged replay ids are kept: a cursor store (any state store) and the
    /// subscription's consumer name (its cursor there, one per channel).
    pub store: Option<(Arc<dyn CursorStore>, String)>,
    /// Events buffered ahead of the host (default 256); polling waits when it is full.
    pub buffer: usize,
    /// Longest wait between reconnect attempts after failures (default 30 s).
    pub max_backoff: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            replay: ReplayFrom::New,
            store: None,
            buffer: 256,
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for SubscribeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("replay", &self.replay)
            .field("store", &self.store.as_ref().map(|(_, name)| name))
            .field("buffer", &self.buffer)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// What happened to the records of a change event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Create,
    /// Updated.
    Update,
    /// Deleted.
    Delete,
    /// Restored from the recycle bin.
    Undelete,
    /// A gap event (`GAP_CREATE`, `GAP_OVERFLOW` …): Salesforce could not give the
    /// change's fields; read the records to learn their state.
    Gap(String),
    /// Anything else Salesforce sends.
    Other(String),
}

impl ChangeType {
    fn parse(s: &str) -> ChangeType {
        match s.to_ascii_uppercase().as_str() {
            "CREATE" | "CREATED" => ChangeType::Create,
            "UPDATE" | "UPDATED" => ChangeType::Update,
            "DELETE" | "DELETED" => ChangeType::Delete,
            "UNDELETE" | "UNDELETED" => ChangeType::Undelete,
            g if g.starts_with("GAP_") => ChangeType::Gap(g.to_owned()),
            other => ChangeType::Other(other.to_owned()),
        }
    }
}

/// One change event.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// The channel it came on.
    pub channel: String,
    /// Its replay id (acknowledge it to resume after it).
    pub replay_id: i64,
    /// The sObject (`Account`, `Matter__c`).
    pub entity: String,
    /// What happened.
    pub change_type: ChangeType,
    /// The records changed (one transaction may change several alike).
    pub record_ids: Vec<String>,
    /// The fields an update changed (empty for creates and deletes).
    pub changed_fields: Vec<String>,
    /// When the change was committed.
    pub commit_timestamp: Option<SystemTime>,
    /// Who committed it.
    pub commit_user: Option<String>,
    /// The transaction's key (events of one transaction share it).
    pub transaction_key: Option<String>,
    /// The new values: every set field of a create, the changed fields of an update.
    pub fields: Map<String, Value>,
}

impl ChangeEvent {
    /// Parse a Bayeux data message (`{channel, data: {payload|sobject, event}}`).
    fn from_message(channel: &str, data: &Value) -> Result<ChangeEvent> {
        let replay_id = data["event"]["replayId"].as_i64().ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!("an event on {channel} without a replay id"),
            )
        })?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        if let Some(header) = data["payload"].get("ChangeEventHeader") {
            let mut fields = data["payload"].as_object().cloned().unwrap_or_default();
            fields.remove("ChangeEventHeader");
            return Ok(ChangeEvent {
                channel: channel.to_owned(),
                replay_id,
                entity: header["entityName"].as_str().unwrap_or_default().to_owned(),
                change_type: ChangeType::parse(header["changeType"].as_str().unwrap_or_default()),
                record_ids: strings(&header["recordIds"]),
                changed_fields: strings(&header["changedFields"]),
                commit_timestamp: header["commitTimestamp"]
                    .as_u64()
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                commit_user: header["commitUser"].as_str().map(str::to_owned),
                transaction_key: header["transactionKey"].as_str().map(str::to_owned),
                fields,
            });
        }
        // A PushTopic notification: {event: {type, createdDate, replayId}, sobject: {...}}.
        let sobject = data["sobject"].as_object().cloned().unwrap_or_default();
        Ok(ChangeEvent {
            channel: channel.to_owned(),
            replay_id,
            entity: String::new(),
            change_type: ChangeType::parse(data["event"]["type"].as_str().unwrap_or_default()),
            record_ids: sobject
                .get("Id")
                .and_then(Value::as_str)
                .map(|id| vec![id.to_owned()])
                .unwrap_or_default(),
            changed_fields: Vec::new(),
            commit_timestamp: data["event"]["createdDate"]
                .as_str()
                .and_then(crate::client::parse_datetime),
            commit_user: None,
            transaction_key: None,
            fields: sobject,
        })
    }
}

/// The events of a subscription; see the [module docs](crate::streaming). Dropping it
/// stops polling.
pub struct ChangeStream {
    rx: mpsc::Receiver<Result<ChangeEvent>>,
    task: tokio::task::JoinHandle<()>,
    channel: String,
    store: Option<(Arc<dyn CursorStore>, String)>,
}

impl std::fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeStream")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Stream for ChangeStream {
    type Item = Result<ChangeEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl ChangeStream {
    /// `event` is handled: persist its replay id (when a store is configured), so a
    /// restart resumes after it.
    pub async fn ack(&self, event: &ChangeEvent) -> Result<()> {
        if let Some((cursors, consumer)) = &self.store {
            cursors
                .commit_cursor(consumer, &self.channel, &event.replay_id.to_string())
                .await?;
        }
        Ok(())
    }

    /// Stop polling. What was acknowledged stays stored.
    pub async fn close(self) -> Result<()> {
        self.task.abort();
        Ok(())
    }
}

impl Drop for ChangeStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The replay id to subscribe from: the stored one, or the configured start.
async fn start_from(channel: &str, options: &SubscribeOptions) -> Result<i64> {
    let Some((cursors, consumer)) = &options.store else {
        return Ok(options.replay.id());
    };
    match cursors.cursor(consumer, channel).await? {
        None => Ok(options.replay.id()),
        Some(stored) => stored.position.parse().map_err(|_| {
            Error::new(
                ErrorKind::Integrity,
                format!(
                    "the stored position of {consumer:?} in {channel} is not a replay id: {:?}",
                    stored.position
                ),
            )
            .with_hint("reset the consumer's cursors to start over from its configured start")
        }),
    }
}

impl SalesforceClient {
    fn cometd_path(&self) -> String {
        format!("/cometd/{}", self.api_version())
    }

    /// One Bayeux exchange: the reply messages.
    async fn bayeux(&self, op: &'static str, messages: Value) -> Result<Vec<Value>> {
        let reply = self
            .send(
                op,
                Method::POST,
                &self.cometd_path(),
                RequestBody::Json(&messages),
                true,
                None,
            )
            .await?;
        serde_json::from_slice(&reply.body).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("a Streaming API answer is not Bayeux JSON: {e}"),
            )
            .with_connector(crate::error::PLATFORM)
        })
    }

    /// Handshake and subscribe `channel` from `replay`; the client id.
    async fn bayeux_open(&self, channel: &str, replay: i64) -> Result<String> {
        let replies = self
            .bayeux(
                op::STREAMING_HANDSHAKE,
                json!([{"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
                        "supportedConnectionTypes": ["long-polling"], "ext": {"replay": true}}]),
            )
            .await?;
        let hs = meta(&replies, "/meta/handshake")?;
        if hs["successful"] != Value::Bool(true) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the Streaming API refused the handshake: {}",
                    hs["error"].as_str().unwrap_or("no reason")
                ),
            ));
        }
        let client_id = hs["clientId"].as_str().unwrap_or_default().to_owned();
        let replies = self
            .bayeux(
                op::STREAMING_SUBSCRIBE,
                json!([{"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel,
                        "ext": {"replay": {channel: replay}}}]),
            )
            .await?;
        let sub = meta(&replies, "/meta/subscribe")?;
        if sub["successful"] != Value::Bool(true) {
            let why = sub["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned();
            let e = if why.contains("replayId") {
                Error::invalid_input(format!("cannot resume {channel} after replay id {replay}: {why}"))
                    .with_hint("the events since are no longer retained (72 hours): subscribe from ReplayFrom::AllRetained and re-read the records' current state for the gap")
            } else {
                Error::invalid_input(format!("cannot subscribe to {channel}: {why}"))
                    .with_hint("CDC channels are /data/ChangeEvents or /data/<Object>ChangeEvent (custom: /data/Name__ChangeEvent), with the object selected for Change Data Capture")
            };
            return Err(e
                .with_context("channel", channel)
                .with_connector(crate::error::PLATFORM));
        }
        Ok(client_id)
    }

    /// Subscribe to `channel`; see the [module docs](crate::streaming).
    pub async fn subscribe(
        &self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<ChangeStream> {
        let replay = start_from(channel, &options).await?;
        let client_id = self.bayeux_open(channel, replay).await?;
        let store = options.store.clone();
        let (tx, rx) = mpsc::channel(options.buffer.max(1));
        let client = self.clone();
        let ch = channel.to_owned();
        let max_backoff = options.max_backoff;
        let task = tokio::spawn(async move {
            client
                .poll_loop(ch, client_id, replay, tx, max_backoff)
                .await;
        });
        Ok(ChangeStream {
            rx,
            task,
            channel: channel.to_owned(),
            store,
        })
    }

    /// Long-poll `/meta/connect` until the receiver is gone.
    async fn poll_loop(
        &self,
        channel: String,
        mut client_id: String,
        mut last: i64,
        tx: mpsc::Sender<Result<ChangeEvent>>,
        max_backoff: Duration,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut rehandshake = false;
        loop {
            if tx.is_closed() {
                return;
            }
            if rehandshake {
                match self.bayeux_open(&channel, last).await {
                    Ok(id) => {
                        client_id = id;
                        rehandshake = false;
                        tracing::info!(%channel, replay = last, "Streaming API: handshake renewed");
                    }
                    Err(e) if e.kind() == ErrorKind::InvalidInput => {
                        // The replay window moved past us: say so, and stop.
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%channel, error = %e, "Streaming API: handshake failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(max_backoff);
                        continue;
                    }
                }
            }
            let connect = json!([{"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling"}]);
            let replies = match self.bayeux(op::STREAMING_CONNECT, connect).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "Streaming API: connect failed; reconnecting");
                    rehandshake |= e.kind() == ErrorKind::AuthExpired;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            for m in &replies {
                let ch = m["channel"].as_str().unwrap_or_default();
                if ch == "/meta/connect" {
                    if m["successful"] != Value::Bool(true) {
                        rehandshake = true;
                    }
                    match m["advice"]["reconnect"].as_str() {
                        Some("handshake") => rehandshake = true,
                        Some("none") => {
                            let _ = tx
                                .send(Err(Error::unavailable(format!(
                                    "the Streaming API ended the subscription to {channel}: {}",
                                    m["error"].as_str().unwrap_or("advice: none")
                                ))))
                                .await;
                            return;
                        }
                        _ => {}
                    }
                    continue;
                }
                if ch.starts_with("/meta/") || m.get("data").is_none() {
                    continue;
                }
                let event = ChangeEvent::from_message(ch, &m["data"]);
                if let Ok(e) = &event {
                    last = e.replay_id;
                }
                // Back-pressure: wait while the host's buffer is full.
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if let Some(wait) = replies
                .iter()
                .find(|m| m["channel"] == "/meta/connect")
                .and_then(|m| m["advice"]["interval"].as_u64())
                .filter(|ms| *ms > 0)
            {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
}

fn meta<'a>(replies: &'a [Value], channel: &str) -> Result<&'a Value> {
    replies
        .iter()
        .find(|m| m["channel"] == channel)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!("no {channel} reply from the Streaming API"),
            )
        })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use super::*;

    #[test]
    fn cdc_and_pushtopic_messages_become_change_events() {
        let cdc = json!({"payload": {"ChangeEventHeader": {"entityName": "Account", "recordIds": ["001A"],
            "changeType": "UPDATE", "changedFields": ["Name"], "commitTimestamp": 1_700_000_000_000u64,
            "commitUser": "005A", "transactionKey": "tk"}, "Name": "Acme"}, "event": {"replayId": 7}});
        let e = ChangeEvent::from_message("/data/AccountChangeEvent", &cdc).unwrap();
        assert_eq!(
            (e.replay_id, e.entity.as_str(), &e.change_type),
            (7, "Account", &ChangeType::Update)
        );
        assert_eq!(e.changed_fields, ["Name"]);
        assert_eq!(e.fields.get("Name"), Some(&json!("Acme")));
        assert!(!e.fields.contains_key("ChangeEventHeader"));
        let push = json!({"event": {"type": "created", "createdDate": "2026-11-20T10:00:00.000Z", "replayId": 3},
            "sobject": {"Id": "500A", "Subject": "Help"}});
        let p = ChangeEvent::from_message("/topic/NewCases", &push).unwrap();
        assert_eq!(
            (p.change_type, p.record_ids),
            (ChangeType::Create, vec!["500A".to_owned()])
        );
        assert_eq!(
            ChangeType::parse("GAP_OVERFLOW"),
            ChangeType::Gap("GAP_OVERFLOW".into())
        );
        assert!(ChangeEvent::from_message("/x", &json!({})).is_err());
    }
}
