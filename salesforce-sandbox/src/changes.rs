//! The org's change events: every create, update and delete becomes a Change Data
//! Capture event (and a notification on each PushTopic that selects the record), with a
//! replay id, kept in a bounded window for replay, after Salesforce's Change Data Capture
//! Developer Guide. The Streaming API serves them (`cdc`).

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

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

/// One event, as delivered.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) replay_id: i64,
    pub(crate) entity: String,
    /// `Some("/topic/<Name>")` for a PushTopic event; `None` for a change event.
    pub(crate) topic: Option<String>,
    pub(crate) message: Value,
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
    pub(crate) fn as_str(self) -> &'static str {
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

    /// Record a platform event published on `channel` (`/event/<Name>__e`): `payload` is
    /// its fields; the message has the Streaming API's shape. Its replay id.
    #[cfg(feature = "pubsub")]
    pub(crate) fn record_platform_event(
        &mut self,
        channel: &str,
        name: &str,
        payload: Value,
    ) -> i64 {
        let replay_id = self.next_replay;
        self.next_replay += 1;
        self.events.push_back(Event {
            replay_id,
            entity: name.to_owned(),
            topic: Some(channel.to_owned()),
            message: json!({
                "schema": format!("sandbox-{name}-schema"),
                "payload": payload,
                "event": {"replayId": replay_id},
            }),
        });
        self.trim();
        replay_id
    }

    /// Record a PushTopic notification on `channel` (`/topic/<Name>`).
    pub(crate) fn record_topic(
        &mut self,
        channel: &str,
        entity: &str,
        change: ChangeType,
        sobject: Map<String, Value>,
        created: String,
    ) {
        let replay_id = self.next_replay;
        self.next_replay += 1;
        let kind = match change {
            ChangeType::Create => "created",
            ChangeType::Update => "updated",
            ChangeType::Delete => "deleted",
        };
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

    /// The replay id of the oldest event kept.
    pub(crate) fn oldest(&self) -> Option<i64> {
        self.events.front().map(|e| e.replay_id)
    }

    /// The replay id of the newest event (0 before the first).
    pub(crate) fn latest(&self) -> i64 {
        self.next_replay - 1
    }

    /// The events after replay id `after`, oldest first.
    pub(crate) fn after(&self, after: i64) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.replay_id > after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
