//! Azure Service Bus queues as a [`MessageQueue`] (feature `servicebus`), over AMQP 1.0
//! with `fe2o3-amqp`.
//!
//! - **Connection**: a namespace connection string (`Endpoint=sb://…;SharedAccessKeyName=…;
//!   SharedAccessKey=…`); each queue object keeps one AMQP connection (TLS on port 5671,
//!   or plain AMQP to the emulator when the string says `UseDevelopmentEmulator=true`),
//!   authorized by a SAS token put on the `$cbs` node and renewed before it runs out. A
//!   connection that breaks is made again by the next call.
//! - **Peek-lock**: a received message is locked for the entity's lock duration. The
//!   [`Receipt`] is the lock token; `ack` completes, `nack` abandons (delivered again, its
//!   delivery count one higher), both through the entity's `$management` node, which
//!   answers for each lock (a lost lock is an [`InvalidInput`](ErrorKind::InvalidInput)
//!   error, not a silent no-op).
//! - **Visibility** is the lock: Service Bus fixes its length per entity, so a receive that
//!   asks for another visibility, an [`extend`](MessageQueue::extend) and a
//!   [`nack`](MessageQueue::nack) with a delay are kept by this client — it renews the
//!   lock while the message should stay hidden and abandons it when it should come back.
//!   If the process dies, the entity's lock duration applies.
//! - **Dead letters**: after the entity's `MaxDeliveryCount` deliveries Service Bus moves
//!   the message to `<queue>/$DeadLetterQueue`, read with
//!   [`dead_letter_queue`](ServiceBusQueue::dead_letter_queue);
//!   [`dead_letter`](ServiceBusQueue::dead_letter) moves one there with a reason.
//! - **Sessions** (FIFO): on an entity that requires sessions, the
//!   [`group`](OutgoingMessage::group) is the session id; a receive locks a session and
//!   returns its messages in order, and takes nothing more from it while any is out.
//! - **Other**: attributes are application properties; [`delay`](OutgoingMessage::delay)
//!   is a scheduled enqueue time; the [`dedup_id`](OutgoingMessage::dedup_id) is the
//!   message id (duplicate detection, when the entity has it, drops a second one); bodies
//!   travel as one data section of UTF-8 text (what Microsoft's clients send).
//!
//! ```no_run
//! use std::time::Duration;
//! use connector_azure::servicebus::{ServiceBusConnectionString, ServiceBusQueue};
//! use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
//!
//! # async fn run(connection_string: &str) -> moodbridge_core::Result<()> {
//! let queue = ServiceBusQueue::builder("case-events")
//!     .connection_string(ServiceBusConnectionString::parse(connection_string)?)
//!     .build()?;
//! queue.send(&OutgoingMessage::new(r#"{"Id":"500A"}"#).attribute("type", "case.closed")).await?;
//! for message in queue.receive(&ReceiveOptions::new(10).wait(Duration::from_secs(20))).await? {
//!     println!("{} {} (delivery {})", message.id, message.body, message.delivery_count);
//!     queue.ack(&message.receipt).await?;
//! }
//! # Ok(()) }
//! ```

mod amqp;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations, MessageId, Properties,
    annotations::OwnedKey,
};
use fe2o3_amqp::types::primitives::{Array, Binary, SimpleValue, Symbol, Timestamp, Value};
use moodbridge_core::config::{Validate, Validator};
use moodbridge_core::integration::{
    Capabilities, Capability, HealthReport, HealthStatus, Interfaces, PlatformIntegration,
};
use moodbridge_core::queue::{
    MessageQueue, OutgoingMessage, QueueFeatures, Receipt, ReceiveOptions, ReceivedMessage, refusal,
};
use moodbridge_core::redact::Secrets;
use moodbridge_core::resilience::{Operation, Policy, PolicyConfig, RetryConfig};
use moodbridge_core::{Error, ErrorKind, Result, SecretRef};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex as AsyncMutex;
use uuid::Uuid;

use amqp::{AmqpMessage, Client, Endpoint, Received};

const PLATFORM: &str = "azure-servicebus";

/// The kind name of Service Bus queues.
pub const SERVICE_BUS_KIND: &str = "azure-servicebus";
/// The largest message body on the Standard tier, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The most messages one `receive` returns.
pub const MAX_RECEIVE: u32 = 100;
/// The most messages sent in flight at once by one `send_batch` call.
pub const MAX_BATCH: usize = 100;
/// The longest visibility kept by renewing locks, and the longest delay.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The sub-queue of dead letters.
pub const DEAD_LETTER_SUFFIX: &str = "/$DeadLetterQueue";

/// A Service Bus namespace connection string: `Endpoint=sb://<namespace>.servicebus.windows.net/;
/// SharedAccessKeyName=…;SharedAccessKey=…` (and, for the emulator,
/// `UseDevelopmentEmulator=true`). Its `Debug` form hides the key.
///
/// ```
/// use connector_azure::servicebus::ServiceBusConnectionString;
/// let cs = ServiceBusConnectionString::parse(
///     "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send-listen;SharedAccessKey=c2VjcmV0",
/// ).unwrap();
/// assert_eq!(cs.host(), "acme.servicebus.windows.net");
/// assert!(!format!("{cs:?}").contains("c2VjcmV0"));
/// assert!(ServiceBusConnectionString::parse("Endpoint=sb://acme/").is_err());
/// ```
#[derive(Clone)]
pub struct ServiceBusConnectionString {
    host: String,
    port: Option<u16>,
    key_name: String,
    key: SecretString,
    emulator: bool,
    entity_path: Option<String>,
}

impl fmt::Debug for ServiceBusConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBusConnectionString")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("key_name", &self.key_name)
            .field("key", &"<redacted>")
            .field("emulator", &self.emulator)
            .finish()
    }
}

impl ServiceBusConnectionString {
    /// Parse a connection string.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error naming the missing or bad part (never the
    /// key).
    pub fn parse(text: &str) -> Result<Self> {
        let mut fields = HashMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(Error::config("a Service Bus connection string part has no `=`")
                    .with_connector(PLATFORM)
                    .with_hint("use Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=<name>;SharedAccessKey=<key>"));
            };
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let endpoint = fields.get("endpoint").ok_or_else(|| {
            Error::config("the Service Bus connection string has no Endpoint")
                .with_connector(PLATFORM)
                .with_hint("copy the connection string of a shared access policy from the namespace (Endpoint=sb://…)")
        })?;
        let url = url::Url::parse(endpoint).map_err(|_| {
            Error::config("the Service Bus Endpoint is not a URL")
                .with_connector(PLATFORM)
                .with_hint("use Endpoint=sb://<namespace>.servicebus.windows.net/")
        })?;
        let host = url.host_str().unwrap_or_default().to_owned();
        if host.is_empty() {
            return Err(
                Error::config("the Service Bus Endpoint has no host").with_connector(PLATFORM)
            );
        }
        let (Some(key_name), Some(key)) = (
            fields.get("sharedaccesskeyname"),
            fields.get("sharedaccesskey"),
        ) else {
            return Err(Error::config(
                "the Service Bus connection string lacks SharedAccessKeyName or SharedAccessKey",
            )
            .with_connector(PLATFORM)
            .with_hint("use the connection string of a shared access policy (it carries both)"));
        };
        Ok(ServiceBusConnectionString {
            host,
            port: url.port(),
            key_name: key_name.clone(),
            key: SecretString::from(key.clone()),
            emulator: fields
                .get("usedevelopmentemulator")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            entity_path: fields.get("entitypath").cloned(),
        })
    }

    /// The namespace host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The entity the string is scoped to (`EntityPath`), if any.
    pub fn entity_path(&self) -> Option<&str> {
        self.entity_path.as_deref()
    }

    fn endpoint(&self) -> Endpoint {
        let url = if self.emulator {
            format!("amqp://{}:{}", self.host, self.port.unwrap_or(5672))
        } else {
            format!("amqps://{}:{}", self.host, self.port.unwrap_or(5671))
        };
        Endpoint {
            url,
            host: self.host.clone(),
            key_name: self.key_name.clone(),
            key: self.key.clone(),
        }
    }
}

/// The default policy of an `azure-servicebus` integration: up to 4 attempts with backoff
/// from 200 ms (a broken connection is made again), 60 s per attempt.
pub fn default_policy_config() -> PolicyConfig {
    PolicyConfig {
        retry: Some(RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(90),
            budget: None,
        }),
        attempt_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

/// Checks an entity path: a queue (`case-events`), a subscription
/// (`case-events/subscriptions/billing`) or a dead-letter sub-queue of either.
///
/// ```
/// use connector_azure::servicebus::check_entity;
/// assert!(check_entity("case-events").is_ok());
/// assert!(check_entity("cases/subscriptions/billing/$DeadLetterQueue").is_ok());
/// assert!(check_entity("").is_err());
/// assert!(check_entity("a b").is_err());
/// ```
///
/// # Errors
/// A [`Config`](ErrorKind::Config) error naming the rule broken.
pub fn check_entity(entity: &str) -> Result<()> {
    let ok = !entity.is_empty()
        && entity.len() <= 260
        && !entity.starts_with('/')
        && !entity.ends_with('/')
        && entity
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '$' | '~'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!("Service Bus entity {entity:?} is not valid"))
            .with_connector(PLATFORM)
            .with_hint("use letters, digits, `-`, `.`, `_` and `/` between path segments (a queue name, or <topic>/subscriptions/<name>), up to 260 characters"))
    }
}

/// Settings of a [`ServiceBusQueue`]; made by [`ServiceBusQueue::builder`].
#[derive(Debug, Clone)]
pub struct ServiceBusQueueBuilder {
    entity: String,
    id: Option<String>,
    connection: Option<ServiceBusConnectionString>,
    policy: Option<Policy>,
    sessions: bool,
    max_delivery_count: u32,
    lock_duration: Duration,
}

impl ServiceBusQueueBuilder {
    /// The integration id (default `azure-servicebus:<entity>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The namespace and key.
    pub fn connection_string(mut self, connection_string: ServiceBusConnectionString) -> Self {
        self.connection = Some(connection_string);
        self
    }

    /// Run every call through `policy` (default: [`default_policy_config`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The entity requires sessions: messages need a [`group`](OutgoingMessage::group)
    /// (the session id) and are received a session at a time, in order.
    pub fn sessions(mut self, sessions: bool) -> Self {
        self.sessions = sessions;
        self
    }

    /// The entity's `MaxDeliveryCount` (default 10, Service Bus's default), reported as
    /// [`QueueFeatures::dead_letter_after`].
    pub fn max_delivery_count(mut self, n: u32) -> Self {
        self.max_delivery_count = n;
        self
    }

    /// The entity's `LockDuration` (default 60 s), used when a delivery does not say
    /// when its lock ends.
    pub fn lock_duration(mut self, duration: Duration) -> Self {
        self.lock_duration = duration;
        self
    }

    /// Checks the settings and builds the queue (no connection is made yet).
    ///
    /// # Errors
    /// A bad entity path or setting, or no connection string, as
    /// [`Config`](ErrorKind::Config) errors.
    pub fn build(self) -> Result<ServiceBusQueue> {
        check_entity(&self.entity)?;
        let Some(connection) = self.connection.clone() else {
            return Err(Error::config(format!(
                "Service Bus queue {} has no connection string",
                self.entity
            ))
            .with_connector(PLATFORM)
            .with_hint(
                "give the connection string of a shared access policy with Send and Listen rights",
            ));
        };
        if self.max_delivery_count == 0 {
            return Err(Error::config("Service Bus max_delivery_count is 0")
                .with_connector(PLATFORM)
                .with_hint("use the entity's MaxDeliveryCount (10 by default)"));
        }
        if self.lock_duration < Duration::from_secs(1) {
            return Err(Error::config("Service Bus lock_duration is under 1 s")
                .with_connector(PLATFORM)
                .with_hint("use the entity's LockDuration (60 s by default, 5 s to 5 min)"));
        }
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("{PLATFORM}:{}", self.entity.replace('/', ".")));
        moodbridge_core::integration::check_id(&id, PLATFORM)?;
        let policy = match &self.policy {
            Some(policy) => policy.clone(),
            None => Policy::from_config(id.clone(), &default_policy_config())?,
        };
        let secrets = Secrets::new();
        secrets.remember([connection.key.expose_secret()]);
        let dead_letters = self
            .entity
            .to_ascii_lowercase()
            .ends_with("/$deadletterqueue");
        Ok(ServiceBusQueue {
            inner: Arc::new(Inner {
                id,
                client: Client::new(connection.endpoint(), self.entity.clone()),
                policy,
                secrets,
                features: QueueFeatures {
                    fifo: self.sessions,
                    max_body_bytes: MAX_MESSAGE_BYTES,
                    max_batch: MAX_BATCH,
                    max_receive: MAX_RECEIVE,
                    max_delay: MAX_VISIBILITY,
                    max_visibility: MAX_VISIBILITY,
                    dead_letter_after: (!dead_letters).then_some(self.max_delivery_count),
                },
                held: Mutex::new(HashMap::new()),
                sessions: AsyncMutex::new(Vec::new()),
                session_locks: Mutex::new(HashMap::new()),
                keeper: Mutex::new(None),
                settings: self,
            }),
        })
    }
}

/// A message kept hidden by this client: renewed until `deadline`, then abandoned.
#[derive(Debug, Clone)]
struct Held {
    deadline: Instant,
    lock_until: Instant,
    lock_span: Duration,
    session: Option<String>,
}

/// A session this client holds.
struct OpenSession {
    id: String,
    link: fe2o3_amqp::Receiver,
    /// Lock tokens of its messages not yet settled.
    outstanding: HashSet<Uuid>,
}

/// A Service Bus queue (or subscription, or dead-letter sub-queue). See the
/// [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct ServiceBusQueue {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    client: Client,
    policy: Policy,
    secrets: Secrets,
    features: QueueFeatures,
    held: Mutex<HashMap<Uuid, Held>>,
    sessions: AsyncMutex<Vec<OpenSession>>,
    /// Sessions held, with when their locks run out and how long a renewal gives.
    session_locks: Mutex<HashMap<String, (Instant, Duration)>>,
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    settings: ServiceBusQueueBuilder,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.lock().ok().and_then(|mut k| k.take()) {
            keeper.abort();
        }
    }
}

impl fmt::Debug for ServiceBusQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBusQueue")
            .field("id", &self.inner.id)
            .field("entity", &self.inner.settings.entity)
            .field("sessions", &self.inner.settings.sessions)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A receipt: the lock token, the sequence number after a `.` (when known), and the
/// session after a `:` on session entities.
fn receipt_of(token: Uuid, sequence: Option<i64>, session: Option<&str>) -> Receipt {
    let mut text = token.to_string();
    if let Some(sequence) = sequence {
        text.push_str(&format!(".{sequence}"));
    }
    if let Some(session) = session {
        text.push(':');
        text.push_str(session);
    }
    Receipt::new(text)
}

/// The lock token, sequence number and session of a receipt.
fn parse_receipt(receipt: &Receipt) -> Result<(Uuid, Option<i64>, Option<String>)> {
    let bad = || {
        Error::invalid_input("not a Service Bus receipt")
            .with_connector(PLATFORM)
            .with_hint("pass the receipt of a message this queue returned")
    };
    let text = receipt.as_str();
    let (head, session) = match text.split_once(':') {
        Some((h, s)) => (h, Some(s.to_owned())),
        None => (text, None),
    };
    let (token, sequence) = match head.split_once('.') {
        Some((t, n)) => (t, Some(n.parse::<i64>().map_err(|_| bad())?)),
        None => (head, None),
    };
    let token = Uuid::parse_str(token).map_err(|_| bad())?;
    Ok((token, sequence, session))
}

fn symbol_key(name: &str) -> OwnedKey {
    OwnedKey::Symbol(Symbol::from(name))
}

fn to_timestamp(at: SystemTime) -> Timestamp {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_milliseconds(ms)
}

fn from_timestamp(t: &Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(t.milliseconds()).unwrap_or(0))
}

/// The AMQP message for `message` (its id: the dedup id, or a new one).
fn to_amqp(message: &OutgoingMessage) -> (AmqpMessage, String) {
    let id = message
        .dedup_id
        .clone()
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let mut application = fe2o3_amqp::types::primitives::OrderedMap::new();
    for (k, v) in &message.attributes {
        application.insert(k.clone(), SimpleValue::String(v.clone()));
    }
    let annotations = (!message.delay.is_zero()).then(|| {
        let mut a = fe2o3_amqp::types::primitives::OrderedMap::new();
        a.insert(
            symbol_key("x-opt-scheduled-enqueue-time"),
            Value::Timestamp(to_timestamp(SystemTime::now() + message.delay)),
        );
        MessageAnnotations(a)
    });
    let amqp = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: annotations,
        properties: Some(Properties {
            message_id: Some(MessageId::String(id.clone())),
            group_id: message.group.clone(),
            ..Properties::default()
        }),
        application_properties: (!application.is_empty())
            .then_some(ApplicationProperties(application)),
        body: Body::Data(vec![Data(Binary::from(message.body.as_bytes().to_vec()))].into()),
        footer: None,
    };
    (amqp, id)
}

fn simple_text(value: &SimpleValue) -> String {
    match value {
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.0.clone(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Double(n) => n.to_string(),
        SimpleValue::Float(n) => n.to_string(),
        SimpleValue::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

fn body_text(body: &Body<Value>) -> String {
    match body {
        Body::Data(sections) => {
            let mut bytes = Vec::new();
            for section in sections.iter() {
                bytes.extend_from_slice(&section.0);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone(),
            Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        },
        Body::Sequence(_) | Body::Empty => String::new(),
    }
}

/// The parts of a delivery the queue reports.
struct Delivered {
    message: ReceivedMessage,
    token: Option<Uuid>,
    session: Option<String>,
    lock_until: Option<SystemTime>,
}

fn from_amqp(received: Received) -> Delivered {
    let message = received.message;
    let annotation = |name: &str| {
        message
            .message_annotations
            .as_ref()
            .and_then(|a| a.0.get(&symbol_key(name)).cloned())
    };
    let token = <[u8; 16]>::try_from(received.tag.as_slice())
        .ok()
        .map(Uuid::from_bytes_le);
    let sequence = match annotation("x-opt-sequence-number") {
        Some(Value::Long(n)) => Some(n),
        _ => None,
    };
    let properties = message.properties.as_ref();
    let id = match properties.and_then(|p| p.message_id.as_ref()) {
        Some(MessageId::String(s)) => s.clone(),
        Some(MessageId::Ulong(n)) => n.to_string(),
        Some(MessageId::Uuid(u)) => Uuid::from_bytes(<[u8; 16]>::from(u.clone())).to_string(),
        Some(MessageId::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        None => sequence.map(|s| s.to_string()).unwrap_or_default(),
    };
    let session = properties.and_then(|p| p.group_id.clone());
    let attributes: BTreeMap<String, String> = message
        .application_properties
        .as_ref()
        .map(|a| {
            a.0.iter()
                .map(|(k, v)| (k.clone(), simple_text(v)))
                .collect()
        })
        .unwrap_or_default();
    let sent_at = match annotation("x-opt-enqueued-time") {
        Some(Value::Timestamp(t)) => Some(from_timestamp(&t)),
        _ => None,
    };
    let lock_until = match annotation("x-opt-locked-until") {
        Some(Value::Timestamp(t)) => Some(from_timestamp(&t)),
        _ => None,
    };
    let delivery_count = message.header.as_ref().map_or(0, |h| h.delivery_count) + 1;
    let receipt = token.map_or_else(
        || Receipt::new(id.clone()),
        |t| receipt_of(t, sequence, session.as_deref()),
    );
    Delivered {
        message: ReceivedMessage {
            id,
            body: body_text(&message.body),
            attributes,
            group: session.clone(),
            delivery_count,
            sent_at,
            receipt,
        },
        token,
        session,
        lock_until,
    }
}

impl ServiceBusQueue {
    /// Settings for entity `entity` (a queue name; `<topic>/subscriptions/<name>` to
    /// receive from a subscription).
    pub fn builder(entity: impl Into<String>) -> ServiceBusQueueBuilder {
        ServiceBusQueueBuilder {
            entity: entity.into(),
            id: None,
            connection: None,
            policy: None,
            sessions: false,
            max_delivery_count: 10,
            lock_duration: Duration::from_secs(60),
        }
    }

    /// The entity path.
    pub fn entity(&self) -> &str {
        &self.inner.settings.entity
    }

    /// The policy every call runs through.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The entity's dead-letter sub-queue (`<entity>/$DeadLetterQueue`), on the same
    /// namespace and key.
    ///
    /// # Errors
    /// As [`ServiceBusQueueBuilder::build`].
    pub fn dead_letter_queue(&self) -> Result<ServiceBusQueue> {
        let mut settings = self.inner.settings.clone();
        settings.entity = format!("{}{DEAD_LETTER_SUFFIX}", settings.entity);
        settings.id = Some(format!("{}.dead-letters", self.inner.id));
        settings.sessions = false;
        settings.policy = Some(self.inner.policy.clone());
        settings.build()
    }

    /// Close the connection (a later call opens a new one).
    pub async fn close(&self) {
        self.inner.sessions.lock().await.clear();
        self.inner.client.close().await;
    }

    async fn call<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.inner
            .policy
            .call_as(Operation::new(format!("azure_servicebus.{operation}")), f)
            .await
    }

    /// A `$management` request, through the policy.
    async fn request(
        &self,
        operation: &'static str,
        entries: Vec<(&'static str, Value)>,
    ) -> Result<(i32, Value)> {
        let inner = &self.inner;
        self.call(operation, || {
            let entries = entries.clone();
            async move {
                let conn = inner.client.conn(&inner.secrets).await?;
                conn.request(
                    &format!("com.microsoft:{operation}"),
                    entries,
                    &inner.secrets,
                )
                .await
            }
        })
        .await
    }

    /// Settle locks by token: `status` is `completed`, `abandoned`, `defered` or
    /// `suspended` (dead-letter).
    async fn settle(
        &self,
        tokens: &[Uuid],
        session: Option<&str>,
        status: &str,
        extra: Vec<(&'static str, Value)>,
    ) -> Result<()> {
        let mut entries = vec![
            ("disposition-status", Value::String(status.to_owned())),
            (
                "lock-tokens",
                Value::Array(Array(
                    tokens
                        .iter()
                        .map(|t| {
                            Value::Uuid(fe2o3_amqp::types::primitives::Uuid::from(*t.as_bytes()))
                        })
                        .collect(),
                )),
            ),
        ];
        if let Some(session) = session {
            entries.push(("session-id", Value::String(session.to_owned())));
        }
        entries.extend(extra);
        self.request("update-disposition", entries).await?;
        {
            let mut held = lock(&self.inner.held);
            for token in tokens {
                held.remove(token);
            }
        }
        if let Some(session) = session {
            let mut sessions = self.inner.sessions.lock().await;
            for s in sessions.iter_mut().filter(|s| s.id == session) {
                for token in tokens {
                    s.outstanding.remove(token);
                }
            }
        }
        Ok(())
    }

    /// Move the message of `receipt` to the dead-letter sub-queue, with `reason` and
    /// `description` (its `DeadLetterReason` and `DeadLetterErrorDescription`).
    ///
    /// # Errors
    /// A lost lock ([`InvalidInput`](ErrorKind::InvalidInput)) and the platform's errors.
    pub async fn dead_letter(
        &self,
        receipt: &Receipt,
        reason: &str,
        description: &str,
    ) -> Result<()> {
        let (token, _, session) = parse_receipt(receipt)?;
        self.settle(
            &[token],
            session.as_deref(),
            "suspended",
            vec![
                ("deadletter-reason", Value::String(reason.to_owned())),
                (
                    "deadletter-description",
                    Value::String(description.to_owned()),
                ),
            ],
        )
        .await
    }

    /// Up to `count` messages from sequence number `from` on, without locking them
    /// (their receipts settle nothing).
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn peek(&self, from: i64, count: u32) -> Result<Vec<ReceivedMessage>> {
        let (status, body) = self
            .request(
                "peek-message",
                vec![
                    ("from-sequence-number", Value::Long(from)),
                    (
                        "message-count",
                        Value::Int(i32::try_from(count).unwrap_or(i32::MAX)),
                    ),
                ],
            )
            .await?;
        if status == 204 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in list_field(&body, "messages") {
            let Value::Map(entry) = entry else { continue };
            let Some(Value::Binary(bytes)) = entry.get(&Value::String("message".to_owned())) else {
                continue;
            };
            out.push(
                from_amqp(Received {
                    message: decode_message(bytes)?,
                    tag: Vec::new(),
                })
                .message,
            );
        }
        Ok(out)
    }

    /// Set the message of `receipt` aside: it is not delivered again, and only
    /// [`receive_deferred`](Self::receive_deferred) with the sequence number returned
    /// here gives it back.
    ///
    /// # Errors
    /// A lost lock ([`InvalidInput`](ErrorKind::InvalidInput)) and the platform's errors.
    pub async fn defer(&self, receipt: &Receipt) -> Result<i64> {
        let (token, sequence, session) = parse_receipt(receipt)?;
        let sequence = sequence.ok_or_else(|| {
            Error::invalid_input("this receipt has no sequence number to defer by")
                .with_connector(PLATFORM)
                .with_hint("defer a message this queue received")
        })?;
        self.settle(&[token], session.as_deref(), "defered", Vec::new())
            .await?;
        Ok(sequence)
    }

    /// The deferred messages with `sequences`, locked (settle them with their receipts).
    ///
    /// # Errors
    /// A sequence number that names no deferred message, and the platform's errors.
    pub async fn receive_deferred(&self, sequences: &[i64]) -> Result<Vec<ReceivedMessage>> {
        let (_, body) = self
            .request(
                "receive-by-sequence-number",
                vec![
                    (
                        "sequence-numbers",
                        Value::Array(Array(sequences.iter().map(|s| Value::Long(*s)).collect())),
                    ),
                    ("receiver-settle-mode", Value::Uint(1)),
                ],
            )
            .await?;
        let mut out = Vec::new();
        for entry in list_field(&body, "messages") {
            let Value::Map(entry) = entry else { continue };
            let Some(Value::Binary(bytes)) = entry.get(&Value::String("message".to_owned())) else {
                continue;
            };
            let tag = match entry.get(&Value::String("lock-token".to_owned())) {
                Some(Value::Uuid(u)) => Uuid::from_bytes(<[u8; 16]>::from(u.clone()))
                    .to_bytes_le()
                    .to_vec(),
                _ => Vec::new(),
            };
            out.push(
                from_amqp(Received {
                    message: decode_message(bytes)?,
                    tag,
                })
                .message,
            );
        }
        Ok(out)
    }

    /// Send `message` to be enqueued at `at`: its sequence number, for
    /// [`cancel_scheduled`](Self::cancel_scheduled). (A message with a
    /// [`delay`](OutgoingMessage::delay) is scheduled too, without a number to cancel by.)
    ///
    /// # Errors
    /// A message the queue refuses ([`InvalidInput`](ErrorKind::InvalidInput)), and the
    /// platform's errors.
    pub async fn schedule(&self, message: &OutgoingMessage, at: SystemTime) -> Result<i64> {
        if let Some(why) = refusal(
            &OutgoingMessage {
                delay: Duration::ZERO,
                ..message.clone()
            },
            &self.inner.features,
        ) {
            return Err(Error::invalid_input(why).with_connector(PLATFORM));
        }
        let (mut amqp, id) = to_amqp(message);
        let mut annotations = fe2o3_amqp::types::primitives::OrderedMap::new();
        annotations.insert(
            symbol_key("x-opt-scheduled-enqueue-time"),
            Value::Timestamp(to_timestamp(at)),
        );
        amqp.message_annotations = Some(MessageAnnotations(annotations));
        let encoded = serde_amqp::to_vec(
            &fe2o3_amqp::types::messaging::message::__private::Serializable(&amqp),
        )
        .map_err(|e| Error::internal(format!("a message does not encode: {e}")))?;
        let mut entry = fe2o3_amqp::types::primitives::OrderedMap::new();
        entry.insert(Value::String("message-id".to_owned()), Value::String(id));
        entry.insert(
            Value::String("message".to_owned()),
            Value::Binary(Binary::from(encoded)),
        );
        if let Some(session) = &message.group {
            entry.insert(
                Value::String("session-id".to_owned()),
                Value::String(session.clone()),
            );
        }
        let (_, body) = self
            .request(
                "schedule-message",
                vec![("messages", Value::List(vec![Value::Map(entry)]))],
            )
            .await?;
        list_field(&body, "sequence-numbers")
            .first()
            .and_then(|v| match v {
                Value::Long(n) => Some(*n),
                _ => None,
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    "Service Bus scheduled the message without a sequence number",
                )
                .with_connector(PLATFORM)
            })
    }

    /// Cancel the scheduled messages `sequences` (one already enqueued is not touched).
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn cancel_scheduled(&self, sequences: &[i64]) -> Result<()> {
        self.request(
            "cancel-scheduled-message",
            vec![(
                "sequence-numbers",
                Value::Array(Array(sequences.iter().map(|s| Value::Long(*s)).collect())),
            )],
        )
        .await
        .map(|_| ())
    }

    /// Move up to `max` messages from the dead-letter sub-queue back to the entity: each
    /// is sent again (without the dead-letter properties, with a new message id) before
    /// it is completed there, so a failure in between duplicates a message but never
    /// loses one. How many moved.
    ///
    /// # Errors
    /// The platform's errors (what moved before stays moved).
    pub async fn redrive_dead_letters(&self, max: u32) -> Result<u64> {
        let dead = self.dead_letter_queue()?;
        let mut moved = 0u64;
        while moved < u64::from(max) {
            let want = u32::try_from(u64::from(max) - moved)
                .unwrap_or(MAX_RECEIVE)
                .min(MAX_RECEIVE);
            let got = dead
                .receive(&ReceiveOptions::new(want).wait(Duration::from_millis(500)))
                .await?;
            if got.is_empty() {
                break;
            }
            let again: Vec<OutgoingMessage> = got
                .iter()
                .map(|m| {
                    let mut message = OutgoingMessage::new(m.body.clone());
                    message.attributes = m
                        .attributes
                        .iter()
                        .filter(|(k, _)| {
                            !matches!(
                                k.as_str(),
                                "DeadLetterReason" | "DeadLetterErrorDescription"
                            )
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    message.group = m.group.clone();
                    message
                })
                .collect();
            for outcome in self.send_batch(&again).await? {
                outcome?;
            }
            let receipts: Vec<Receipt> = got.iter().map(|m| m.receipt.clone()).collect();
            for outcome in dead.ack_batch(&receipts).await? {
                outcome?;
            }
            moved += got.len() as u64;
        }
        dead.close().await;
        Ok(moved)
    }

    fn keep(&self, token: Uuid, held: Held) {
        lock(&self.inner.held).insert(token, held);
        let mut keeper = lock(&self.inner.keeper);
        if keeper
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished)
        {
            let weak = Arc::downgrade(&self.inner);
            *keeper = Some(tokio::spawn(keep_locks(weak)));
        }
    }

    async fn renew(&self, token: Uuid, session: Option<&str>) -> Result<Option<Instant>> {
        if let Some(session) = session {
            let (_, body) = self
                .request(
                    "renew-session-lock",
                    vec![("session-id", Value::String(session.to_owned()))],
                )
                .await?;
            let until = match field(&body, "expiration") {
                Some(Value::Timestamp(t)) => Some(instant_of(from_timestamp(t))),
                _ => None,
            };
            if let Some(until) = until
                && let Some(entry) = lock(&self.inner.session_locks).get_mut(session)
            {
                entry.0 = until;
            }
            return Ok(until);
        }
        let (_, body) = self
            .request(
                "renew-lock",
                vec![(
                    "lock-tokens",
                    Value::Array(Array(vec![Value::Uuid(
                        fe2o3_amqp::types::primitives::Uuid::from(*token.as_bytes()),
                    )])),
                )],
            )
            .await?;
        Ok(list_field(&body, "expirations")
            .first()
            .and_then(|v| match v {
                Value::Timestamp(t) => Some(instant_of(from_timestamp(t))),
                _ => None,
            }))
    }

    /// Renew the lock of `token` now and keep it hidden for `span` from now (the
    /// keeper renews it until then, and abandons it after).
    async fn hold(&self, token: Uuid, session: Option<String>, span: Duration) -> Result<()> {
        let until = self.renew(token, session.as_deref()).await?;
        let now = Instant::now();
        let lock_until = until.unwrap_or(now + self.inner.settings.lock_duration);
        self.keep(
            token,
            Held {
                deadline: now + span.min(MAX_VISIBILITY),
                lock_until,
                lock_span: lock_until
                    .saturating_duration_since(now)
                    .max(Duration::from_secs(1)),
                session,
            },
        );
        Ok(())
    }

    async fn receive_plain(&self, options: &ReceiveOptions) -> Result<Vec<Received>> {
        let inner = &self.inner;
        let max = options.max_messages.clamp(1, MAX_RECEIVE);
        self.call("receive", || async move {
            let conn = inner.client.conn(&inner.secrets).await?;
            conn.receive(max, options.wait, false, &inner.secrets).await
        })
        .await
    }

    async fn receive_sessions(&self, options: &ReceiveOptions) -> Result<Vec<Received>> {
        let inner = &self.inner;
        let max = options.max_messages.clamp(1, MAX_RECEIVE);
        let deadline = Instant::now() + options.wait;
        let mut sessions = inner.sessions.lock().await;
        // Sessions with nothing out: their next messages, or they are let go.
        let mut index = 0;
        while index < sessions.len() {
            if !sessions[index].outstanding.is_empty() {
                index += 1;
                continue;
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            let got = amqp::receive_from(&mut sessions[index].link, max, wait).await;
            match got {
                Ok(got) if !got.is_empty() => {
                    let open = &mut sessions[index];
                    for r in &got {
                        if let Some(t) = <[u8; 16]>::try_from(r.tag.as_slice())
                            .ok()
                            .map(Uuid::from_bytes_le)
                        {
                            open.outstanding.insert(t);
                        }
                    }
                    return Ok(got);
                }
                _ => {
                    let done = sessions.remove(index);
                    lock(&inner.session_locks).remove(&done.id);
                    let _ = done.link.close().await;
                }
            }
        }
        // A session not held yet.
        let wait = deadline.saturating_duration_since(Instant::now());
        let conn = inner.client.conn(&inner.secrets).await?;
        let Some(mut link) = conn
            .accept_session(None, wait.max(Duration::from_millis(50)), &inner.secrets)
            .await?
        else {
            return Ok(Vec::new());
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let got = amqp::receive_from(&mut link, max, remaining.max(Duration::from_millis(100)))
            .await
            .map_err(|e| {
                Error::unavailable(format!(
                    "Service Bus session receive failed: {}",
                    inner.secrets.scrub(&e)
                ))
                .with_connector(PLATFORM)
            })?;
        let Some(id) = got.first().and_then(|r| {
            r.message
                .properties
                .as_ref()
                .and_then(|p| p.group_id.clone())
        }) else {
            let _ = link.close().await;
            return Ok(Vec::new());
        };
        let outstanding = got
            .iter()
            .filter_map(|r| {
                <[u8; 16]>::try_from(r.tag.as_slice())
                    .ok()
                    .map(Uuid::from_bytes_le)
            })
            .collect();
        let span = inner.settings.lock_duration;
        lock(&inner.session_locks).insert(id.clone(), (Instant::now() + span, span));
        sessions.push(OpenSession {
            id,
            link,
            outstanding,
        });
        Ok(got)
    }
}

/// A message as `$management` carries it: encoded in a binary.
fn decode_message(bytes: &[u8]) -> Result<AmqpMessage> {
    serde_amqp::from_slice::<
        fe2o3_amqp::types::messaging::message::__private::Deserializable<AmqpMessage>,
    >(bytes)
    .map(|m| m.0)
    .map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!("a message from $management does not decode: {e}"),
        )
        .with_connector(PLATFORM)
    })
}

fn instant_of(at: SystemTime) -> Instant {
    let now = SystemTime::now();
    match at.duration_since(now) {
        Ok(ahead) => Instant::now() + ahead,
        Err(_) => Instant::now(),
    }
}

fn field<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    match body {
        Value::Map(map) => map
            .get(&Value::String(key.to_owned()))
            .or_else(|| map.get(&Value::Symbol(Symbol::from(key)))),
        _ => None,
    }
}

fn list_field(body: &Value, key: &str) -> Vec<Value> {
    match field(body, key) {
        Some(Value::Array(a)) => a.0.clone(),
        Some(Value::List(l)) => l.clone(),
        _ => Vec::new(),
    }
}

/// Renew the locks of held messages while they should stay hidden, and abandon them
/// when their time is up; renew the locks of held sessions.
async fn keep_locks(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(inner) = weak.upgrade() else { return };
        let queue = ServiceBusQueue { inner };
        let now = Instant::now();
        let (due, renew): (Vec<_>, Vec<_>) = {
            let held = lock(&queue.inner.held);
            let due = held
                .iter()
                .filter(|(_, h)| h.deadline <= now)
                .map(|(t, h)| (*t, h.session.clone()))
                .collect();
            let renew = held
                .iter()
                .filter(|(_, h)| {
                    h.session.is_none()
                        && h.deadline > h.lock_until
                        && h.lock_until.saturating_duration_since(now) < h.lock_span / 3
                })
                .map(|(t, _)| *t)
                .collect();
            (due, renew)
        };
        for (token, session) in due {
            lock(&queue.inner.held).remove(&token);
            if let Err(e) = queue
                .settle(&[token], session.as_deref(), "abandoned", Vec::new())
                .await
            {
                tracing::debug!(entity = %queue.entity(), error = %e, "a held message could not be released");
            }
        }
        for token in renew {
            match queue.renew(token, None).await {
                Ok(Some(until)) => {
                    if let Some(h) = lock(&queue.inner.held).get_mut(&token) {
                        h.lock_until = until;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    lock(&queue.inner.held).remove(&token);
                    tracing::warn!(entity = %queue.entity(), error = %e, "a message lock could not be renewed: the message will be delivered again");
                }
            }
        }
        let sessions: Vec<String> = lock(&queue.inner.session_locks)
            .iter()
            .filter(|(_, (until, span))| until.saturating_duration_since(now) < *span / 3)
            .map(|(id, _)| id.clone())
            .collect();
        for session in sessions {
            if let Err(e) = queue.renew(Uuid::nil(), Some(&session)).await {
                lock(&queue.inner.session_locks).remove(&session);
                tracing::warn!(entity = %queue.entity(), session = %session, error = %e, "a session lock could not be renewed");
            }
        }
    }
}

#[async_trait]
impl MessageQueue for ServiceBusQueue {
    fn name(&self) -> &str {
        &self.inner.settings.entity
    }

    fn features(&self) -> QueueFeatures {
        self.inner.features.clone()
    }

    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<Result<String>>> {
        let features = &self.inner.features;
        let mut outcomes: Vec<Option<Result<String>>> = Vec::with_capacity(messages.len());
        let mut ready = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            match refusal(message, features) {
                Some(why) => outcomes.push(Some(Err(Error::invalid_input(why)
                    .with_connector(PLATFORM)
                    .with_hint("send a smaller message, or split the payload (256 KiB on the Standard tier)")))),
                None => {
                    outcomes.push(None);
                    ready.push((i, to_amqp(message)));
                }
            }
        }
        let inner = &self.inner;
        // Messages the service refused for now (throttled, or lost with a connection)
        // are sent again, up to four rounds; the others keep their outcome.
        let mut round = 0u32;
        while !ready.is_empty() {
            let mut again = Vec::new();
            for chunk in ready.chunks(MAX_BATCH) {
                let sent = self
                    .call("send", || async move {
                        let conn = inner.client.conn(&inner.secrets).await?;
                        let batch = chunk.iter().map(|(_, (m, _))| m.clone()).collect();
                        conn.send(batch, &inner.secrets).await
                    })
                    .await?;
                for ((i, (message, id)), result) in chunk.iter().zip(sent) {
                    match result {
                        Err(e) if round < 3 && e.is_temporary() => {
                            again.push((*i, (message.clone(), id.clone())));
                        }
                        result => outcomes[*i] = Some(result.map(|()| id.clone())),
                    }
                }
            }
            ready = again;
            if !ready.is_empty() {
                tokio::time::sleep(Duration::from_millis(200 << round)).await;
                round += 1;
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::internal("a message got no outcome"))))
            .collect())
    }

    async fn receive(&self, options: &ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let received = if self.inner.settings.sessions {
            self.receive_sessions(options).await?
        } else {
            self.receive_plain(options).await?
        };
        let now = Instant::now();
        let mut out = Vec::with_capacity(received.len());
        for r in received {
            let delivered = from_amqp(r);
            if let (Some(token), Some(visibility)) = (delivered.token, options.visibility) {
                let lock_until = delivered
                    .lock_until
                    .map_or(now + self.inner.settings.lock_duration, instant_of);
                self.keep(
                    token,
                    Held {
                        deadline: now + visibility.min(MAX_VISIBILITY),
                        lock_until,
                        lock_span: lock_until
                            .saturating_duration_since(now)
                            .max(Duration::from_secs(1)),
                        session: delivered.session.clone(),
                    },
                );
            }
            out.push(delivered.message);
        }
        Ok(out)
    }

    async fn ack(&self, receipt: &Receipt) -> Result<()> {
        let (token, _, session) = parse_receipt(receipt)?;
        self.settle(&[token], session.as_deref(), "completed", Vec::new())
            .await
    }

    async fn ack_batch(&self, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        // One request per session (or for all, on entities without sessions); a request
        // that fails is retried receipt by receipt, so each gets its own outcome.
        let mut groups: BTreeMap<Option<String>, Vec<(usize, Uuid)>> = BTreeMap::new();
        let mut out: Vec<Option<Result<()>>> = receipts.iter().map(|_| None).collect();
        for (i, receipt) in receipts.iter().enumerate() {
            match parse_receipt(receipt) {
                Ok((token, _, session)) => groups.entry(session).or_default().push((i, token)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        for (session, entries) in groups {
            let tokens: Vec<Uuid> = entries.iter().map(|(_, t)| *t).collect();
            if self
                .settle(&tokens, session.as_deref(), "completed", Vec::new())
                .await
                .is_ok()
            {
                for (i, _) in &entries {
                    out[*i] = Some(Ok(()));
                }
            } else {
                for (i, token) in entries {
                    out[i] = Some(
                        self.settle(&[token], session.as_deref(), "completed", Vec::new())
                            .await,
                    );
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::internal("a receipt got no outcome"))))
            .collect())
    }

    async fn nack(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        let (token, _, session) = parse_receipt(receipt)?;
        if delay.is_zero() {
            return self
                .settle(&[token], session.as_deref(), "abandoned", Vec::new())
                .await;
        }
        // Kept hidden until the delay is over, then abandoned.
        self.hold(token, session, delay).await
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        let (token, _, session) = parse_receipt(receipt)?;
        self.hold(token, session, visibility).await
    }
}

#[async_trait]
impl PlatformIntegration for ServiceBusQueue {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        SERVICE_BUS_KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::Messaging))
    }

    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        match self.peek(0, 1).await {
            Ok(found) => HealthReport::new(
                HealthStatus::Up,
                started.elapsed(),
                if found.is_empty() {
                    "reachable, empty".to_owned()
                } else {
                    "reachable, messages waiting".to_owned()
                },
            ),
            Err(e) => HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new().with::<dyn MessageQueue>(self)
    }
}

/// Settings of an `azure-servicebus` integration, read from its config's `settings`
/// table.
///
/// ```toml
/// [[integration]]
/// id = "azure-servicebus:case-events"
/// kind = "azure-servicebus"
///
/// [integration.settings]
/// entity = "case-events"            # or "<topic>/subscriptions/<name>" to receive
/// connection_string = "secret:azure/prod/servicebus_connection_string"
/// sessions = false                  # true on entities that require sessions
/// max_delivery_count = 10           # the entity's MaxDeliveryCount
/// lock_duration_secs = 60           # the entity's LockDuration
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBusSettings {
    /// The queue, or `<topic>/subscriptions/<name>`.
    pub entity: String,
    /// The namespace connection string (it holds the key: a reference only).
    pub connection_string: SecretRef,
    /// The entity requires sessions.
    #[serde(default)]
    pub sessions: bool,
    /// The entity's `MaxDeliveryCount` (default 10).
    #[serde(default = "default_max_delivery_count")]
    pub max_delivery_count: u32,
    /// The entity's `LockDuration`, seconds (default 60).
    #[serde(default = "default_lock_duration_secs")]
    pub lock_duration_secs: u64,
}

fn default_max_delivery_count() -> u32 {
    10
}

fn default_lock_duration_secs() -> u64 {
    60
}

impl Validate for ServiceBusSettings {
    fn validate_into(&self, v: &mut Validator) {
        if let Err(e) = check_entity(&self.entity) {
            v.problem("entity", e.message().to_owned(), e.hint().to_owned());
        }
        if self.max_delivery_count == 0 {
            v.problem(
                "max_delivery_count",
                "is 0",
                "use the entity's MaxDeliveryCount (10 by default)",
            );
        }
        if !(1..=300).contains(&self.lock_duration_secs) {
            v.problem(
                "lock_duration_secs",
                format!("{} is outside 1 to 300", self.lock_duration_secs),
                "use the entity's LockDuration (60 by default; Service Bus allows 5 s to 5 min)",
            );
        }
    }
}

/// Builds `azure-servicebus` integrations from [`ServiceBusSettings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceBusFactory;

impl ServiceBusFactory {
    /// The queue `ctx` describes.
    ///
    /// # Errors
    /// Bad settings or an unresolvable connection string.
    pub async fn queue(ctx: &moodbridge_core::registry::BuildContext) -> Result<ServiceBusQueue> {
        let s: ServiceBusSettings = ctx.settings()?;
        let text = ctx.resolve(&s.connection_string).await?;
        let connection = ServiceBusConnectionString::parse(text.expose_secret())?;
        ServiceBusQueue::builder(&s.entity)
            .id(&ctx.config.id)
            .policy(ctx.policy.clone())
            .connection_string(connection)
            .sessions(s.sessions)
            .max_delivery_count(s.max_delivery_count)
            .lock_duration(Duration::from_secs(s.lock_duration_secs))
            .build()
    }
}

#[async_trait]
impl moodbridge_core::registry::IntegrationFactory for ServiceBusFactory {
    fn kind(&self) -> &'static str {
        SERVICE_BUS_KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        default_policy_config()
    }

    fn validate(&self, config: &moodbridge_core::IntegrationConfig, v: &mut Validator) {
        config.check_settings::<ServiceBusSettings>(v);
    }

    async fn build(
        &self,
        ctx: moodbridge_core::registry::BuildContext,
    ) -> Result<Arc<dyn PlatformIntegration>> {
        Ok(Arc::new(Self::queue(&ctx).await?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;

    #[test]
    fn a_sas_token_matches_microsofts_client() {
        // What azure-servicebus 7.15.0's generate_sas_token gives for the same inputs.
        let token = amqp::sas_token(
            "sb://acme.servicebus.windows.net/case-events",
            "send-listen",
            &SecretString::from("c2VjcmV0a2V5"),
            1_893_456_000,
        )
        .unwrap();
        assert_eq!(
            token,
            "SharedAccessSignature sr=sb%3A%2F%2Facme.servicebus.windows.net%2Fcase-events&sig=cXr20uuiiIiL%2BTEt7COoF7S9JspMFnUBPEONxMrhygs%3D&se=1893456000&skn=send-listen"
        );
    }

    #[test]
    fn connection_strings_name_what_is_missing_and_hide_the_key() {
        let cs = ServiceBusConnectionString::parse(
            "Endpoint=sb://127.0.0.1:5673;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
        )
        .unwrap();
        assert_eq!(cs.endpoint().url, "amqp://127.0.0.1:5673");
        let cloud = ServiceBusConnectionString::parse(
            "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=cases",
        )
        .unwrap();
        assert_eq!(
            cloud.endpoint().url,
            "amqps://acme.servicebus.windows.net:5671"
        );
        assert_eq!(cloud.entity_path(), Some("cases"));
        for (text, says) in [
            ("SharedAccessKeyName=k;SharedAccessKey=v", "no Endpoint"),
            (
                "Endpoint=sb://acme/;SharedAccessKey=v",
                "SharedAccessKeyName",
            ),
            (
                "Endpoint=not a url;SharedAccessKeyName=k;SharedAccessKey=v",
                "not a URL",
            ),
            ("Endpoint", "no `=`"),
        ] {
            let err = ServiceBusConnectionString::parse(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains(says), "{err}");
            assert!(!err.to_string().contains("=v"), "{err}");
        }
        assert!(!format!("{cs:?}").contains("SAS_KEY_VALUE"));
    }

    #[test]
    fn receipts_carry_the_lock_token_and_the_session() {
        let token = Uuid::new_v4();
        assert_eq!(
            parse_receipt(&receipt_of(token, None, None)).unwrap(),
            (token, None, None)
        );
        assert_eq!(
            parse_receipt(&receipt_of(token, Some(42), Some("case:500A.1"))).unwrap(),
            (token, Some(42), Some("case:500A.1".to_owned()))
        );
        let err = parse_receipt(&Receipt::new("AQAB-pop-receipt")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn a_message_becomes_amqp_and_back() {
        let outgoing = OutgoingMessage::new(r#"{"Id":"500A"}"#)
            .attribute("type", "case.closed")
            .group("case-500A")
            .dedup_id("evt-1")
            .delay(Duration::from_secs(30));
        let (amqp, id) = to_amqp(&outgoing);
        assert_eq!(id, "evt-1");
        let scheduled = amqp.message_annotations.as_ref().and_then(|a| {
            a.0.get(&symbol_key("x-opt-scheduled-enqueue-time"))
                .cloned()
        });
        assert!(
            matches!(scheduled, Some(Value::Timestamp(_))),
            "{scheduled:?}"
        );
        let token = Uuid::new_v4();
        let back = from_amqp(Received {
            message: amqp,
            tag: token.to_bytes_le().to_vec(),
        });
        assert_eq!(back.message.id, "evt-1");
        assert_eq!(back.message.body, outgoing.body);
        assert_eq!(back.message.attributes, outgoing.attributes);
        assert_eq!(back.message.group.as_deref(), Some("case-500A"));
        assert_eq!(back.message.delivery_count, 1);
        assert_eq!(back.token, Some(token));
        assert_eq!(
            parse_receipt(&back.message.receipt).unwrap(),
            (token, None, Some("case-500A".to_owned()))
        );
    }

    #[test]
    fn every_settings_problem_is_named_with_its_path() {
        let found = moodbridge_core::testing::settings_problems::<ServiceBusSettings>(
            r#"entity = "bad name"
            connection_string = "secret:azure/servicebus"
            max_delivery_count = 0
            lock_duration_secs = 0"#,
        );
        let paths: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "settings.entity",
                "settings.max_delivery_count",
                "settings.lock_duration_secs"
            ],
            "{found:?}"
        );
    }
}
