//! The entities of the Service Bus sandbox and what happens to their messages: enqueue
//! (with duplicate detection and scheduling), peek-lock deliveries with lock tokens, lock
//! renewal and expiry, settlement (complete, abandon, defer, dead-letter), delivery counts
//! and the dead-letter sub-queue, deferred messages by sequence number, and sessions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp_types::messaging::{
    ApplicationProperties, Body, DeliveryAnnotations, Header, Message, MessageAnnotations,
    MessageId, annotations::OwnedKey,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Symbol, Timestamp};
use serde_amqp::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use super::filter::Compiled;

/// A message as the wire carries it.
pub(crate) type AmqpMessage = Message<Body<Value>>;

/// The sub-queue that holds a queue's dead letters.
pub(crate) const DEAD_LETTER_QUEUE: &str = "$deadletterqueue";

/// How a queue behaves. See [`QueueOptions`](super::QueueOptions).
#[derive(Debug, Clone)]
pub(crate) struct EntityOptions {
    pub(crate) lock_duration: Duration,
    pub(crate) max_delivery_count: u32,
    pub(crate) requires_session: bool,
    pub(crate) duplicate_detection: Option<Duration>,
    pub(crate) max_message_bytes: usize,
}

/// Why an operation failed, with the AMQP error condition Service Bus uses for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SbError {
    pub(crate) condition: &'static str,
    pub(crate) description: String,
    /// The HTTP-like status of a management reply.
    pub(crate) status: i32,
}

impl SbError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        SbError {
            condition: "amqp:not-found",
            description: what.into(),
            status: 404,
        }
    }

    pub(crate) fn lock_lost() -> Self {
        SbError {
            condition: "com.microsoft:message-lock-lost",
            description: "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.".to_owned(),
            status: 410,
        }
    }

    pub(crate) fn session_lock_lost() -> Self {
        SbError {
            condition: "com.microsoft:session-lock-lost",
            description: "The session lock has expired on the MessageSession.".to_owned(),
            status: 410,
        }
    }

    pub(crate) fn bad_request(what: impl Into<String>) -> Self {
        SbError {
            condition: "amqp:invalid-field",
            description: what.into(),
            status: 400,
        }
    }
}

/// Where a stored message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Deliverable once its scheduled time has come and no lock holds it.
    Active,
    /// Set aside by its receiver: only `receive-by-sequence-number` returns it.
    Deferred,
}

#[derive(Debug, Clone)]
struct Stored {
    message: AmqpMessage,
    sequence: i64,
    enqueued: SystemTime,
    visible_from: SystemTime,
    place: Place,
    /// Deliveries that ended without settlement (abandoned, lock expired).
    delivery_count: u32,
    lock: Option<(Uuid, SystemTime)>,
    session: Option<String>,
    dead_letter_source: Option<String>,
}

/// A session's lock on a session-enabled queue.
#[derive(Debug, Clone)]
struct SessionLock {
    /// The connection whose receiver holds it (management requests come on it too).
    owner: u64,
    /// The receiver link that holds it.
    link: u64,
    until: SystemTime,
    state: Option<Vec<u8>>,
}

/// What an entity is.
#[derive(Debug)]
enum EntityKind {
    Queue,
    /// Messages sent to a topic go to each of its subscriptions whose rules match.
    Topic,
    Subscription {
        topic: String,
        rules: Vec<(String, Compiled)>,
    },
}

#[derive(Debug)]
struct Entity {
    kind: EntityKind,
    options: EntityOptions,
    messages: BTreeMap<i64, Stored>,
    dedup: HashMap<String, SystemTime>,
    sessions: HashMap<String, SessionLock>,
}

#[derive(Debug, Default)]
struct State {
    entities: BTreeMap<String, Entity>,
    next_sequence: i64,
}

/// A delivery handed to a receiver.
pub(crate) struct Delivered {
    pub(crate) lock_token: Option<Uuid>,
    pub(crate) message: AmqpMessage,
}

/// How a receiver settles a delivery.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Settle {
    Complete,
    /// Abandon; the annotations (if any) are set as application properties.
    Abandon(Vec<(String, SimpleValue)>),
    Defer,
    DeadLetter {
        reason: Option<String>,
        description: Option<String>,
    },
    /// Released without counting a delivery (the receiver never looked at it).
    Release,
}

/// The broker: every entity, behind one lock; `changed` wakes connections waiting to
/// deliver.
#[derive(Debug, Default)]
pub(crate) struct Broker {
    state: Mutex<State>,
    pub(crate) changed: Notify,
}

/// The path of an entity, as Service Bus compares them (case-insensitive, no slashes at
/// either end).
pub(crate) fn normalize(path: &str) -> String {
    path.trim_matches('/').to_ascii_lowercase()
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn symbol_key(name: &str) -> OwnedKey {
    OwnedKey::Symbol(Symbol::from(name))
}

fn message_id_text(message: &AmqpMessage) -> Option<String> {
    match message.properties.as_ref()?.message_id.as_ref()? {
        MessageId::String(s) => Some(s.clone()),
        MessageId::Ulong(n) => Some(n.to_string()),
        MessageId::Uuid(u) => Some(Uuid::from_bytes(<[u8; 16]>::from(u.clone())).to_string()),
        MessageId::Binary(b) => Some(format!("{b:?}")),
    }
}

/// The session of a message (`group-id`), if it has one.
pub(crate) fn session_of(message: &AmqpMessage) -> Option<String> {
    message.properties.as_ref()?.group_id.clone()
}

/// The scheduled enqueue time a sender asked for, if any.
fn scheduled_time(message: &AmqpMessage) -> Option<SystemTime> {
    let annotations = message.message_annotations.as_ref()?;
    match annotations
        .0
        .get(&symbol_key("x-opt-scheduled-enqueue-time"))?
    {
        Value::Timestamp(t) => Some(from_millis(t.milliseconds())),
        _ => None,
    }
}

impl Broker {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Create queue `path` (and its dead-letter sub-queue).
    pub(crate) fn create_queue(&self, path: &str, options: EntityOptions) {
        let mut state = self.lock();
        let path = normalize(path);
        let dead_letters = EntityOptions {
            requires_session: false,
            duplicate_detection: None,
            max_delivery_count: u32::MAX,
            ..options.clone()
        };
        state.entities.insert(
            format!("{path}/{DEAD_LETTER_QUEUE}"),
            Entity::new(dead_letters),
        );
        state.entities.insert(path, Entity::new(options));
    }

    /// Create topic `path`.
    pub(crate) fn create_topic(&self, path: &str, options: EntityOptions) {
        let mut topic = Entity::new(options);
        topic.kind = EntityKind::Topic;
        self.lock().entities.insert(normalize(path), topic);
    }

    /// Create subscription `name` of `topic` with `rules` (and its dead-letter
    /// sub-queue).
    pub(crate) fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        options: EntityOptions,
        rules: Vec<(String, Compiled)>,
    ) -> Result<(), String> {
        let topic = normalize(topic);
        let path = format!("{topic}/subscriptions/{}", normalize(name));
        if !matches!(
            self.lock().entities.get(&topic).map(|e| &e.kind),
            Some(EntityKind::Topic)
        ) {
            return Err(format!("there is no topic {topic:?}: create it first"));
        }
        self.create_queue(&path, options);
        if let Some(subscription) = self.lock().entities.get_mut(&path) {
            subscription.kind = EntityKind::Subscription { topic, rules };
        }
        Ok(())
    }

    /// Whether an entity at `path` can be received from: queues and subscriptions
    /// (and their dead-letter sub-queues) can, topics cannot.
    pub(crate) fn receivable(&self, path: &str) -> bool {
        !matches!(
            self.lock().entities.get(&normalize(path)).map(|e| &e.kind),
            Some(EntityKind::Topic)
        )
    }

    /// Whether messages can be sent to `path`: queues and topics take them.
    pub(crate) fn sendable(&self, path: &str) -> bool {
        let path = normalize(path);
        !path.ends_with(DEAD_LETTER_QUEUE)
            && !matches!(
                self.lock().entities.get(&path).map(|e| &e.kind),
                Some(EntityKind::Subscription { .. })
            )
    }

    /// Whether entity `path` exists, and whether it needs sessions.
    pub(crate) fn entity(&self, path: &str) -> Option<EntityOptions> {
        self.lock()
            .entities
            .get(&normalize(path))
            .map(|e| e.options.clone())
    }

    /// Enqueue `message` on `path`; its sequence number (a duplicate gets none: it is
    /// accepted and dropped).
    pub(crate) fn enqueue(
        &self,
        path: &str,
        message: AmqpMessage,
        size: usize,
    ) -> Result<Option<i64>, SbError> {
        let now = SystemTime::now();
        let mut state = self.lock();
        let path = normalize(path);
        let entity = state.entities.get_mut(&path).ok_or_else(|| {
            SbError::not_found(format!("The messaging entity '{path}' could not be found."))
        })?;
        if size > entity.options.max_message_bytes {
            return Err(SbError {
                condition: "amqp:link:message-size-exceeded",
                description: format!(
                    "The received message (size {size} bytes) exceeds the limit ({} bytes) currently allowed on the link.",
                    entity.options.max_message_bytes
                ),
                status: 413,
            });
        }
        let session = session_of(&message);
        if entity.options.requires_session && session.is_none() {
            return Err(SbError {
                condition: "amqp:not-allowed",
                description: "The SessionId was not set on a message, and it cannot be sent to the entity. Entities that have session support enabled can only receive messages that have the SessionId set to a valid value.".to_owned(),
                status: 400,
            });
        }
        if let (Some(window), Some(id)) = (
            entity.options.duplicate_detection,
            message_id_text(&message),
        ) {
            entity
                .dedup
                .retain(|_, at| now.duration_since(*at).unwrap_or_default() < window);
            if entity.dedup.contains_key(&id) {
                return Ok(None);
            }
            entity.dedup.insert(id, now);
        }
        // A queue keeps the message; a topic hands a copy to each subscription one of
        // whose rules matches.
        let destinations: Vec<String> = match &entity.kind {
            EntityKind::Topic => state
                .entities
                .iter()
                .filter(|(_, e)| match &e.kind {
                    EntityKind::Subscription { topic, rules } => {
                        *topic == path && rules.iter().any(|(_, r)| r.matches(&message))
                    }
                    _ => false,
                })
                .map(|(p, _)| p.clone())
                .collect(),
            _ => vec![path.clone()],
        };
        let visible_from = scheduled_time(&message).unwrap_or(now).max(now);
        let first = state.next_sequence + 1;
        for destination in destinations {
            let sequence = state.next_sequence + 1;
            state.next_sequence = sequence;
            if let Some(entity) = state.entities.get_mut(&destination) {
                entity.messages.insert(
                    sequence,
                    Stored {
                        message: message.clone(),
                        sequence,
                        enqueued: now,
                        visible_from,
                        place: Place::Active,
                        delivery_count: 0,
                        lock: None,
                        session: session.clone(),
                        dead_letter_source: None,
                    },
                );
            }
        }
        state.next_sequence = state.next_sequence.max(first);
        drop(state);
        self.changed.notify_waiters();
        Ok(Some(first))
    }

    /// Lock (or, with `delete`, remove) the next deliverable message of `path`, from
    /// session `session` on session-enabled entities.
    pub(crate) fn next(
        &self,
        path: &str,
        session: Option<&str>,
        delete: bool,
    ) -> Option<Delivered> {
        let now = SystemTime::now();
        let mut state = self.lock();
        let path = normalize(path);
        expire(&mut state, &path, now);
        let entity = state.entities.get_mut(&path)?;
        let lock_duration = entity.options.lock_duration;
        let sequence = entity
            .messages
            .values()
            .find(|m| {
                m.place == Place::Active
                    && m.visible_from <= now
                    && m.lock.is_none()
                    && m.session.as_deref() == session
            })?
            .sequence;
        if delete {
            let stored = entity.messages.remove(&sequence)?;
            return Some(Delivered {
                lock_token: None,
                message: decorate(&stored, None),
            });
        }
        let stored = entity.messages.get_mut(&sequence)?;
        let token = Uuid::new_v4();
        stored.lock = Some((token, now + lock_duration));
        Some(Delivered {
            lock_token: Some(token),
            message: decorate(stored, Some(token)),
        })
    }

    /// Settle the delivery locked by `token` on `path`.
    pub(crate) fn settle(&self, path: &str, token: Uuid, how: Settle) -> Result<(), SbError> {
        let now = SystemTime::now();
        let mut state = self.lock();
        let path = normalize(path);
        expire(&mut state, &path, now);
        let entity = state
            .entities
            .get_mut(&path)
            .ok_or_else(|| SbError::not_found(path.clone()))?;
        let sequence = entity
            .messages
            .values()
            .find(|m| m.lock.map(|(t, _)| t) == Some(token))
            .map(|m| m.sequence)
            .ok_or_else(SbError::lock_lost)?;
        match how {
            Settle::Complete => {
                entity.messages.remove(&sequence);
            }
            Settle::Release => {
                if let Some(m) = entity.messages.get_mut(&sequence) {
                    m.lock = None;
                }
            }
            Settle::Abandon(properties) => {
                if let Some(m) = entity.messages.get_mut(&sequence) {
                    m.lock = None;
                    m.delivery_count += 1;
                    set_properties(&mut m.message, properties);
                }
                dead_letter_if_exhausted(&mut state, &path, sequence);
            }
            Settle::Defer => {
                if let Some(m) = entity.messages.get_mut(&sequence) {
                    m.lock = None;
                    m.place = Place::Deferred;
                }
            }
            Settle::DeadLetter {
                reason,
                description,
            } => {
                move_to_dead_letters(&mut state, &path, sequence, reason, description);
            }
        }
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Renew the locks `tokens` on `path`: their new expiry times.
    pub(crate) fn renew(&self, path: &str, tokens: &[Uuid]) -> Result<Vec<SystemTime>, SbError> {
        let now = SystemTime::now();
        let mut state = self.lock();
        let path = normalize(path);
        expire(&mut state, &path, now);
        let entity = state
            .entities
            .get_mut(&path)
            .ok_or_else(|| SbError::not_found(path.clone()))?;
        let duration = entity.options.lock_duration;
        let mut out = Vec::with_capacity(tokens.len());
        for token in tokens {
            let stored = entity
                .messages
                .values_mut()
                .find(|m| m.lock.map(|(t, _)| t) == Some(*token))
                .ok_or_else(SbError::lock_lost)?;
            let until = now + duration;
            stored.lock = Some((*token, until));
            out.push(until);
        }
        Ok(out)
    }

    /// Messages of `path` from sequence number `from`, without locking them.
    pub(crate) fn peek(&self, path: &str, from: i64, count: usize) -> Vec<AmqpMessage> {
        let state = self.lock();
        let Some(entity) = state.entities.get(&normalize(path)) else {
            return Vec::new();
        };
        entity
            .messages
            .range(from..)
            .take(count)
            .map(|(_, m)| decorate(m, None))
            .collect()
    }

    /// Schedule `messages` on `path`: their sequence numbers.
    pub(crate) fn schedule(
        &self,
        path: &str,
        messages: Vec<(AmqpMessage, usize)>,
    ) -> Result<Vec<i64>, SbError> {
        let mut out = Vec::with_capacity(messages.len());
        for (message, size) in messages {
            // A duplicate of a scheduled message is dropped; Service Bus still answers
            // with a number, which then names no message.
            out.push(self.enqueue(path, message, size)?.unwrap_or(-1));
        }
        Ok(out)
    }

    /// Cancel the scheduled messages `sequences` of `path`.
    pub(crate) fn cancel_scheduled(&self, path: &str, sequences: &[i64]) -> Result<(), SbError> {
        let now = SystemTime::now();
        let mut state = self.lock();
        let entity = state
            .entities
            .get_mut(&normalize(path))
            .ok_or_else(|| SbError::not_found(path.to_owned()))?;
        for sequence in sequences {
            if entity
                .messages
                .get(sequence)
                .is_some_and(|m| m.visible_from > now)
            {
                entity.messages.remove(sequence);
            }
        }
        Ok(())
    }

    /// Receive deferred messages by sequence number: each locked (or removed, with
    /// `delete`), with its lock token.
    pub(crate) fn receive_deferred(
        &self,
        path: &str,
        sequences: &[i64],
        delete: bool,
    ) -> Result<Vec<Delivered>, SbError> {
        let now = SystemTime::now();
        let mut state = self.lock();
        let path = normalize(path);
        expire(&mut state, &path, now);
        let entity = state
            .entities
            .get_mut(&path)
            .ok_or_else(|| SbError::not_found(path.clone()))?;
        let duration = entity.options.lock_duration;
        let mut out = Vec::with_capacity(sequences.len());
        for sequence in sequences {
            let deferred = entity
                .messages
                .get(sequence)
                .is_some_and(|m| m.place == Place::Deferred && m.lock.is_none());
            if !deferred {
                return Err(SbError {
                    condition: "com.microsoft:message-not-found",
                    description: format!(
                        "Failed to lock one or more specified messages. Either the message is already locked or it was not found. Sequence number: {sequence}"
                    ),
                    status: 410,
                });
            }
        }
        for sequence in sequences {
            if delete {
                if let Some(stored) = entity.messages.remove(sequence) {
                    out.push(Delivered {
                        lock_token: None,
                        message: decorate(&stored, None),
                    });
                }
            } else if let Some(stored) = entity.messages.get_mut(sequence) {
                let token = Uuid::new_v4();
                stored.lock = Some((token, now + duration));
                out.push(Delivered {
                    lock_token: Some(token),
                    message: decorate(stored, Some(token)),
                });
            }
        }
        Ok(out)
    }

    /// Lock session `session` of `path` for `owner` (any free session with messages
    /// when `None`): the session's id and lock expiry.
    pub(crate) fn lock_session(
        &self,
        path: &str,
        session: Option<&str>,
        owner: u64,
        link: u64,
    ) -> Result<(String, SystemTime), SbError> {
        let now = SystemTime::now();
        let mut state = self.lock();
        let path = normalize(path);
        let entity = state
            .entities
            .get_mut(&path)
            .ok_or_else(|| SbError::not_found(path.clone()))?;
        let free = |e: &Entity, id: &str| {
            e.sessions
                .get(id)
                .is_none_or(|l| l.until <= now || l.link == link)
        };
        let id = match session {
            Some(id) => {
                if !free(entity, id) {
                    return Err(SbError {
                        condition: "com.microsoft:session-cannot-be-locked",
                        description: format!(
                            "The requested session '{id}' cannot be accepted. It may be locked by another receiver."
                        ),
                        status: 410,
                    });
                }
                id.to_owned()
            }
            None => entity
                .messages
                .values()
                .filter(|m| m.place == Place::Active && m.visible_from <= now)
                .filter_map(|m| m.session.clone())
                .find(|id| free(entity, id))
                .ok_or_else(|| SbError {
                    condition: "com.microsoft:timeout",
                    description: "There are no sessions available to lock.".to_owned(),
                    status: 408,
                })?,
        };
        let until = now + entity.options.lock_duration;
        let previous = entity.sessions.remove(&id).and_then(|l| l.state);
        entity.sessions.insert(
            id.clone(),
            SessionLock {
                owner,
                link,
                until,
                state: previous,
            },
        );
        Ok((id, until))
    }

    /// Renew `owner`'s lock on session `session`: its new expiry.
    pub(crate) fn renew_session(
        &self,
        path: &str,
        session: &str,
        owner: u64,
    ) -> Result<SystemTime, SbError> {
        let now = SystemTime::now();
        let mut state = self.lock();
        let entity = state
            .entities
            .get_mut(&normalize(path))
            .ok_or_else(|| SbError::not_found(path.to_owned()))?;
        let duration = entity.options.lock_duration;
        let lock = entity
            .sessions
            .get_mut(session)
            .filter(|l| l.owner == owner && l.until > now)
            .ok_or_else(SbError::session_lock_lost)?;
        lock.until = now + duration;
        Ok(lock.until)
    }

    /// Whether receiver `link` still holds session `session`.
    pub(crate) fn holds_session(&self, path: &str, session: &str, link: u64) -> bool {
        let now = SystemTime::now();
        self.lock()
            .entities
            .get(&normalize(path))
            .and_then(|e| e.sessions.get(session))
            .is_some_and(|l| l.link == link && l.until > now)
    }

    /// Release receiver `link`'s lock on session `session` (the receiver closed).
    pub(crate) fn release_session(&self, path: &str, session: &str, link: u64) {
        let mut state = self.lock();
        if let Some(lock) = state
            .entities
            .get_mut(&normalize(path))
            .and_then(|e| e.sessions.get_mut(session))
            .filter(|l| l.link == link)
        {
            lock.until = UNIX_EPOCH;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Session state: get (`None` to set) or set.
    pub(crate) fn session_state(
        &self,
        path: &str,
        session: &str,
        set: Option<Option<Vec<u8>>>,
    ) -> Result<Option<Vec<u8>>, SbError> {
        let mut state = self.lock();
        let entity = state
            .entities
            .get_mut(&normalize(path))
            .ok_or_else(|| SbError::not_found(path.to_owned()))?;
        let lock = entity
            .sessions
            .get_mut(session)
            .ok_or_else(SbError::session_lock_lost)?;
        match set {
            Some(value) => {
                lock.state = value;
                Ok(None)
            }
            None => Ok(lock.state.clone()),
        }
    }

    /// When the next scheduled message of any entity becomes deliverable, or a lock
    /// runs out: connections wake then.
    pub(crate) fn next_due(&self) -> Option<SystemTime> {
        let now = SystemTime::now();
        let state = self.lock();
        state
            .entities
            .values()
            .flat_map(|e| e.messages.values())
            .filter_map(|m| match m.lock {
                Some((_, until)) => Some(until),
                None if m.visible_from > now => Some(m.visible_from),
                None => None,
            })
            .min()
    }
}

impl Entity {
    fn new(options: EntityOptions) -> Self {
        Entity {
            kind: EntityKind::Queue,
            options,
            messages: BTreeMap::new(),
            dedup: HashMap::new(),
            sessions: HashMap::new(),
        }
    }
}

/// Locks of `path` that ran out: the delivery counts, and dead letters.
fn expire(state: &mut State, path: &str, now: SystemTime) {
    let Some(entity) = state.entities.get_mut(path) else {
        return;
    };
    let mut expired = Vec::new();
    for m in entity.messages.values_mut() {
        if m.lock.is_some_and(|(_, until)| until <= now) {
            m.lock = None;
            m.delivery_count += 1;
            expired.push(m.sequence);
        }
    }
    for sequence in expired {
        dead_letter_if_exhausted(state, path, sequence);
    }
}

fn dead_letter_if_exhausted(state: &mut State, path: &str, sequence: i64) {
    let exhausted = state.entities.get(path).is_some_and(|e| {
        e.messages
            .get(&sequence)
            .is_some_and(|m| m.delivery_count >= e.options.max_delivery_count)
    });
    if exhausted {
        move_to_dead_letters(
            state,
            path,
            sequence,
            Some("MaxDeliveryCountExceeded".to_owned()),
            Some("Message could not be consumed after maximum delivery attempts.".to_owned()),
        );
    }
}

fn move_to_dead_letters(
    state: &mut State,
    path: &str,
    sequence: i64,
    reason: Option<String>,
    description: Option<String>,
) {
    let Some(mut stored) = state
        .entities
        .get_mut(path)
        .and_then(|e| e.messages.remove(&sequence))
    else {
        return;
    };
    let mut properties = Vec::new();
    if let Some(reason) = reason {
        properties.push(("DeadLetterReason".to_owned(), SimpleValue::String(reason)));
    }
    if let Some(description) = description {
        properties.push((
            "DeadLetterErrorDescription".to_owned(),
            SimpleValue::String(description),
        ));
    }
    set_properties(&mut stored.message, properties);
    stored.lock = None;
    stored.place = Place::Active;
    stored.dead_letter_source = Some(path.to_owned());
    if let Some(dlq) = state
        .entities
        .get_mut(&format!("{path}/{DEAD_LETTER_QUEUE}"))
    {
        dlq.messages.insert(sequence, stored);
    }
}

fn set_properties(message: &mut AmqpMessage, properties: Vec<(String, SimpleValue)>) {
    if properties.is_empty() {
        return;
    }
    let map = &mut message
        .application_properties
        .get_or_insert_with(ApplicationProperties::default)
        .0;
    for (name, value) in properties {
        map.insert(name, value);
    }
}

/// The message as a receiver gets it: the broker's annotations (sequence number,
/// enqueued time, lock) added, the delivery count in the header.
fn decorate(stored: &Stored, lock: Option<Uuid>) -> AmqpMessage {
    let mut message = stored.message.clone();
    let header = message.header.get_or_insert_with(Header::default);
    header.delivery_count = stored.delivery_count;
    let annotations = &mut message
        .message_annotations
        .get_or_insert_with(MessageAnnotations::default)
        .0;
    annotations.insert(
        symbol_key("x-opt-sequence-number"),
        Value::Long(stored.sequence),
    );
    annotations.insert(
        symbol_key("x-opt-enqueued-time"),
        Value::Timestamp(Timestamp::from_milliseconds(millis(stored.enqueued))),
    );
    annotations.insert(
        symbol_key("x-opt-enqueue-sequence-number"),
        Value::Long(stored.sequence),
    );
    if let Some(session) = &stored.session {
        annotations.insert(
            symbol_key("x-opt-partition-key"),
            Value::String(session.clone()),
        );
    }
    if let Some(source) = &stored.dead_letter_source {
        annotations.insert(
            symbol_key("x-opt-deadletter-source"),
            Value::String(source.clone()),
        );
    }
    if let Some((token, until)) = stored.lock.filter(|(t, _)| Some(*t) == lock) {
        annotations.insert(
            symbol_key("x-opt-locked-until"),
            Value::Timestamp(Timestamp::from_milliseconds(millis(until))),
        );
        let delivery = &mut message
            .delivery_annotations
            .get_or_insert_with(DeliveryAnnotations::default)
            .0;
        delivery.insert(
            symbol_key("x-opt-lock-token"),
            Value::Uuid(serde_amqp::primitives::Uuid::from(*token.as_bytes())),
        );
    }
    message
}

/// Milliseconds since the epoch, as AMQP timestamps carry them.
pub(crate) fn timestamp(at: SystemTime) -> Timestamp {
    Timestamp::from_milliseconds(millis(at))
}
