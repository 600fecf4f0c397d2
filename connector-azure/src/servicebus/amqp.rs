//! The AMQP side of the Service Bus client, on `fe2o3-amqp`: one connection per entity
//! with its session, claims-based security (a SAS token put on `$cbs`, renewed before it
//! runs out), the entity's sender and receiver links, and request/response calls to the
//! entity's `$management` node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::{ReceiverAttachError, SenderAttachError};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Outcome, Properties, Source,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use hmac::{Hmac, Mac};
use moodbridge_core::redact::Secrets;
use moodbridge_core::{Error, ErrorKind, Result};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use tokio::sync::Mutex;

use super::PLATFORM;

/// A message as the links carry it.
pub(crate) type AmqpMessage = Message<Body<Value>>;

/// How long a SAS token put on `$cbs` is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Renew a token this long before it runs out.
const TOKEN_MARGIN: Duration = Duration::from_secs(600);
/// How long a management request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// `amqps://<namespace>.servicebus.windows.net` or, for the emulator,
    /// `amqp://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// The namespace host (the audience of tokens).
    pub(crate) host: String,
    pub(crate) key_name: String,
    pub(crate) key: SecretString,
}

/// A shared access signature for `audience`, valid until `expiry` (seconds since the
/// epoch): `SharedAccessSignature sr=…&sig=…&se=…&skn=…`.
pub(crate) fn sas_token(
    audience: &str,
    key_name: &str,
    key: &SecretString,
    expiry: u64,
) -> Result<String> {
    let resource: String = url::form_urlencoded::byte_serialize(audience.as_bytes()).collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).map_err(|_| {
        Error::config("the Service Bus key cannot key an HMAC").with_connector(PLATFORM)
    })?;
    mac.update(format!("{resource}\n{expiry}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let signature: String = url::form_urlencoded::byte_serialize(signature.as_bytes()).collect();
    let name: String = url::form_urlencoded::byte_serialize(key_name.as_bytes()).collect();
    Ok(format!(
        "SharedAccessSignature sr={resource}&sig={signature}&se={expiry}&skn={name}"
    ))
}

/// A received delivery: the message and what settles it on its link.
pub(crate) struct Received {
    pub(crate) message: AmqpMessage,
    pub(crate) tag: Vec<u8>,
}

/// A connection, its session and the entity's links (attached when first used).
pub(crate) struct Conn {
    connection: Mutex<ConnectionHandle<()>>,
    session: Mutex<SessionHandle<()>>,
    cbs: Mutex<(Sender, Receiver, String)>,
    sender: Mutex<Option<Sender>>,
    receiver: Mutex<Option<Receiver>>,
    management: Mutex<Option<(Sender, Receiver, String)>>,
    token_until: Mutex<SystemTime>,
    broken: AtomicBool,
    entity: String,
    audience: String,
}

fn link_name(what: &str) -> String {
    format!("moodbridge-{what}-{}", uuid::Uuid::new_v4())
}

/// An error of the AMQP layer: the connection is dropped and made again by the next call.
fn transport(secrets: &Secrets, what: &str, e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!("Service Bus {what} failed: {}", secrets.scrub(&e.to_string())))
        .with_connector(PLATFORM)
        .with_hint("the connection to Service Bus broke or was refused; the call is retried on a new connection")
}

fn text_property(message: &AmqpMessage, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

fn status_of(message: &AmqpMessage, key: &str) -> Option<i32> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::Int(n) => Some(*n),
        SimpleValue::Long(n) => i32::try_from(*n).ok(),
        SimpleValue::Uint(n) => i32::try_from(*n).ok(),
        SimpleValue::Ushort(n) => Some(i32::from(*n)),
        _ => None,
    }
}

fn request_message(
    operation: &str,
    reply_to: &str,
    extra: Vec<(&str, SimpleValue)>,
    body: Value,
) -> (AmqpMessage, String) {
    let id = uuid::Uuid::new_v4().to_string();
    let mut application = OrderedMap::new();
    application.insert(
        "operation".to_owned(),
        SimpleValue::String(operation.to_owned()),
    );
    for (k, v) in extra {
        application.insert(k.to_owned(), v);
    }
    let message = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            message_id: Some(MessageId::String(id.clone())),
            reply_to: Some(reply_to.to_owned()),
            ..Properties::default()
        }),
        application_properties: Some(ApplicationProperties(application)),
        body: Body::Value(AmqpValue(body)),
        footer: None,
    };
    (message, id)
}

/// Send `request` on `tx` and wait on `rx` for the reply that names it.
async fn call(
    tx: &mut Sender,
    rx: &mut Receiver,
    request: AmqpMessage,
    id: &str,
) -> std::result::Result<AmqpMessage, String> {
    tx.send(request).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let delivery = tokio::time::timeout(remaining, rx.recv::<Body<Value>>())
            .await
            .map_err(|_| format!("no reply within {} s", REQUEST_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        rx.accept(&delivery).await.map_err(|e| e.to_string())?;
        let message = delivery.into_message();
        let correlation = message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone());
        if correlation == Some(MessageId::String(id.to_owned())) {
            return Ok(message);
        }
    }
}

impl Conn {
    /// Connect, begin a session and put a token for `entity`.
    pub(crate) async fn open(endpoint: &Endpoint, entity: &str, secrets: &Secrets) -> Result<Conn> {
        let mut connection = Connection::builder()
            .container_id(format!("moodbridge-{}", uuid::Uuid::new_v4()))
            .hostname(endpoint.host.as_str())
            .sasl_profile(SaslProfile::Anonymous)
            .idle_time_out(120_000u32)
            .open(endpoint.url.as_str())
            .await
            .map_err(|e| transport(secrets, "connect", e))?;
        let mut session = match Session::begin(&mut connection).await {
            Ok(s) => s,
            Err(e) => {
                let _ = connection.close().await;
                return Err(transport(secrets, "begin a session", e));
            }
        };
        let reply = link_name("cbs-reply");
        let cbs_tx = Sender::builder()
            .name(link_name("cbs"))
            .target("$cbs")
            .attach(&mut session)
            .await
            .map_err(|e| transport(secrets, "attach to $cbs", e))?;
        let cbs_rx = Receiver::builder()
            .name(link_name("cbs-rx"))
            .source("$cbs")
            .target(reply.as_str())
            .credit_mode(CreditMode::Auto(10))
            .attach(&mut session)
            .await
            .map_err(|e| transport(secrets, "attach to $cbs", e))?;
        let audience = format!("sb://{}/{}", endpoint.host, entity);
        let conn = Conn {
            connection: Mutex::new(connection),
            session: Mutex::new(session),
            cbs: Mutex::new((cbs_tx, cbs_rx, reply)),
            sender: Mutex::new(None),
            receiver: Mutex::new(None),
            management: Mutex::new(None),
            token_until: Mutex::new(UNIX_EPOCH),
            broken: AtomicBool::new(false),
            entity: entity.to_owned(),
            audience,
        };
        conn.authorize(endpoint, secrets).await?;
        Ok(conn)
    }

    /// Put a fresh token on `$cbs` when the last one is near its end.
    pub(crate) async fn authorize(&self, endpoint: &Endpoint, secrets: &Secrets) -> Result<()> {
        let mut until = self.token_until.lock().await;
        if until.duration_since(SystemTime::now()).unwrap_or_default() > TOKEN_MARGIN {
            return Ok(());
        }
        let expiry_at = SystemTime::now() + TOKEN_LIFETIME;
        let expiry = expiry_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let token = sas_token(&self.audience, &endpoint.key_name, &endpoint.key, expiry)?;
        secrets.remember([token.as_str()]);
        let mut cbs = self.cbs.lock().await;
        let (tx, rx, reply) = &mut *cbs;
        let (request, id) = request_message(
            "put-token",
            reply,
            vec![
                (
                    "type",
                    SimpleValue::String("servicebus.windows.net:sastoken".to_owned()),
                ),
                ("name", SimpleValue::String(self.audience.clone())),
                (
                    "expiration",
                    SimpleValue::Long(i64::try_from(expiry).unwrap_or(i64::MAX)),
                ),
            ],
            Value::String(token),
        );
        let answer = call(tx, rx, request, &id).await.map_err(|e| {
            self.broken.store(true, Ordering::Relaxed);
            transport(secrets, "the $cbs put-token request", e)
        })?;
        let status = status_of(&answer, "status-code").unwrap_or(500);
        if !(200..300).contains(&status) {
            let description = text_property(&answer, "status-description").unwrap_or_default();
            let kind = if status == 401 {
                ErrorKind::Auth
            } else {
                ErrorKind::Unavailable
            };
            return Err(Error::new(
                kind,
                format!("Service Bus refused the token for {} ({status}): {}", self.entity, secrets.scrub(&description)),
            )
            .with_connector(PLATFORM)
            .with_hint("check SharedAccessKeyName and SharedAccessKey in the connection string, and that the key has Send and Listen rights on the entity"));
        }
        *until = expiry_at;
        Ok(())
    }

    /// Whether a call found the connection broken, or it closed.
    pub(crate) async fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.connection.lock().await.is_closed()
    }

    /// Run `fut` unless the connection closes first (`fe2o3-amqp` keeps a send's outcome
    /// waiting when the connection under it dies): then the connection is marked broken.
    async fn watched<T>(
        &self,
        secrets: &Secrets,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T> {
        let closed = async {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Ok(connection) = self.connection.try_lock()
                    && connection.is_closed()
                {
                    return;
                }
            }
        };
        tokio::select! {
            out = fut => Ok(out),
            () = closed => Err(self.fail(secrets, what, "the connection closed")),
        }
    }

    /// An attach the service refused (the entity does not exist, no rights …) is its
    /// error; anything else is a broken connection.
    fn attach_failed(
        &self,
        secrets: &Secrets,
        what: &str,
        remote: Option<&fe2o3_amqp::types::definitions::Error>,
        e: impl std::fmt::Display,
    ) -> Error {
        match remote {
            Some(error) => status_error(
                secrets,
                what,
                0,
                &condition_text(&error.condition),
                error.description.as_deref().unwrap_or_default(),
            ),
            None => self.fail(secrets, what, e),
        }
    }

    fn fail(&self, secrets: &Secrets, what: &str, e: impl std::fmt::Display) -> Error {
        self.broken.store(true, Ordering::Relaxed);
        transport(secrets, what, e)
    }

    /// Close the connection (best effort).
    pub(crate) async fn close(&self) {
        let _ = self.connection.lock().await.close().await;
    }

    /// Send `messages` on the entity's sender link, all in flight at once: one outcome
    /// each (the service's refusal of one message fails that message only).
    pub(crate) async fn send(
        &self,
        messages: Vec<AmqpMessage>,
        secrets: &Secrets,
    ) -> Result<Vec<Result<()>>> {
        let mut guard = self.sender.lock().await;
        if guard.is_none() {
            let mut session = self.session.lock().await;
            let sender = Sender::builder()
                .name(link_name("sender"))
                .target(self.entity.as_str())
                .sender_settle_mode(SenderSettleMode::Unsettled)
                .attach(&mut session)
                .await
                .map_err(|e| {
                    self.attach_failed(secrets, "attach a sender", sender_remote(&e), &e)
                })?;
            *guard = Some(sender);
        }
        let Some(sender) = guard.as_mut() else {
            return Err(Error::internal("the sender link vanished"));
        };
        self.watched(
            secrets,
            "send",
            Self::send_on(sender, messages, secrets, &self.broken),
        )
        .await?
    }

    async fn send_on(
        sender: &mut Sender,
        messages: Vec<AmqpMessage>,
        secrets: &Secrets,
        broken: &AtomicBool,
    ) -> Result<Vec<Result<()>>> {
        let fail = |e: &dyn std::fmt::Display| {
            broken.store(true, Ordering::Relaxed);
            transport(secrets, "send", e)
        };
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let fut = sender.send_batchable(message).await.map_err(|e| fail(&e))?;
            pending.push(fut);
        }
        let mut out = Vec::with_capacity(pending.len());
        for fut in pending {
            out.push(match fut.await {
                Ok(Outcome::Accepted(_)) => Ok(()),
                Ok(Outcome::Rejected(rejected)) => Err(refused(secrets, rejected.error.as_ref())),
                Ok(other) => Err(Error::unavailable(format!(
                    "Service Bus did not accept the message: {other:?}"
                ))
                .with_connector(PLATFORM)),
                Err(e) => Err(fail(&e)),
            });
        }
        Ok(out)
    }

    /// Receive up to `max` deliveries, waiting up to `wait` for the first.
    pub(crate) async fn receive(
        &self,
        max: u32,
        wait: Duration,
        receive_and_delete: bool,
        secrets: &Secrets,
    ) -> Result<Vec<Received>> {
        let mut guard = self.receiver.lock().await;
        if guard.is_none() {
            let mut session = self.session.lock().await;
            let link = Receiver::builder()
                .name(link_name("receiver"))
                .source(self.entity.as_str())
                .target(link_name("receiver-target"))
                .credit_mode(CreditMode::Manual)
                .auto_accept(false)
                .sender_settle_mode(if receive_and_delete {
                    SenderSettleMode::Settled
                } else {
                    SenderSettleMode::Unsettled
                })
                .receiver_settle_mode(ReceiverSettleMode::First)
                .attach(&mut session)
                .await
                .map_err(|e| {
                    self.attach_failed(secrets, "attach a receiver", receiver_remote(&e), &e)
                })?;
            *guard = Some(link);
        }
        let Some(link) = guard.as_mut() else {
            return Err(Error::internal("the receiver link vanished"));
        };
        let max = max.max(1) as usize;
        let mut out: Vec<Received> = Vec::with_capacity(max);
        // Deliveries that arrived after the last receive stopped reading.
        while out.len() < max {
            match tokio::time::timeout(Duration::ZERO, link.recv::<Body<Value>>()).await {
                Ok(Ok(d)) => out.push(into_received(d)),
                Ok(Err(e)) => return Err(self.fail(secrets, "receive", e)),
                Err(_) => break,
            }
        }
        if out.len() < max {
            let more = u32::try_from(max - out.len()).unwrap_or(u32::MAX);
            let got = receive_from(link, more, wait)
                .await
                .map_err(|e| self.fail(secrets, "receive", e))?;
            out.extend(got);
        }
        Ok(out)
    }

    /// A request to the entity's `$management` node: the status and the body.
    pub(crate) async fn request(
        &self,
        operation: &str,
        entries: Vec<(&str, Value)>,
        secrets: &Secrets,
    ) -> Result<(i32, Value)> {
        let mut guard = self.management.lock().await;
        if guard.is_none() {
            let node = format!("{}/$management", self.entity);
            let reply = link_name("management-reply");
            let mut session = self.session.lock().await;
            let tx = Sender::builder()
                .name(link_name("management"))
                .target(node.as_str())
                .attach(&mut session)
                .await
                .map_err(|e| {
                    self.attach_failed(secrets, "attach to $management", sender_remote(&e), &e)
                })?;
            let rx = Receiver::builder()
                .name(link_name("management-rx"))
                .source(node.as_str())
                .target(reply.as_str())
                .credit_mode(CreditMode::Auto(10))
                .attach(&mut session)
                .await
                .map_err(|e| {
                    self.attach_failed(secrets, "attach to $management", receiver_remote(&e), &e)
                })?;
            *guard = Some((tx, rx, reply));
        }
        let Some((tx, rx, reply)) = guard.as_mut() else {
            return Err(Error::internal("the management link vanished"));
        };
        let mut body = OrderedMap::new();
        for (k, v) in entries {
            body.insert(Value::String(k.to_owned()), v);
        }
        let (request, id) = request_message(
            operation,
            reply,
            vec![(
                "com.microsoft:server-timeout",
                SimpleValue::Uint(u32::try_from(REQUEST_TIMEOUT.as_millis()).unwrap_or(u32::MAX)),
            )],
            Value::Map(body),
        );
        let answer = self
            .watched(secrets, operation, call(tx, rx, request, &id))
            .await?
            .map_err(|e| self.fail(secrets, operation, e))?;
        let status = status_of(&answer, "statusCode").unwrap_or(500);
        if (200..300).contains(&status) {
            let body = match answer.body {
                Body::Value(AmqpValue(v)) => v,
                _ => Value::Null,
            };
            return Ok((status, body));
        }
        let description = text_property(&answer, "statusDescription").unwrap_or_default();
        let condition = match answer
            .application_properties
            .as_ref()
            .and_then(|a| a.0.get("errorCondition"))
        {
            Some(SimpleValue::Symbol(s)) => s.0.clone(),
            Some(SimpleValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        Err(status_error(
            secrets,
            operation,
            status,
            &condition,
            &description,
        ))
    }

    /// Attach a receiver to a session of the entity: `session` or, with `None`, the next
    /// one free, waiting up to `wait` for one.
    pub(crate) async fn accept_session(
        &self,
        session_id: Option<&str>,
        wait: Duration,
        secrets: &Secrets,
    ) -> Result<Option<Receiver>> {
        let mut filter = OrderedMap::new();
        filter.insert(
            Symbol::from("com.microsoft:session-filter"),
            session_id.map_or(Value::Null, |s| Value::String(s.to_owned())),
        );
        let source = Source::builder()
            .address(self.entity.as_str())
            .filter(filter)
            .build();
        let mut properties = OrderedMap::new();
        properties.insert(
            Symbol::from("com.microsoft:timeout"),
            Value::Uint(u32::try_from(wait.as_millis()).unwrap_or(u32::MAX)),
        );
        let mut session = self.session.lock().await;
        let attached = Receiver::builder()
            .name(link_name("session-receiver"))
            .source(source)
            .target(link_name("session-target"))
            .credit_mode(CreditMode::Manual)
            .auto_accept(false)
            .sender_settle_mode(SenderSettleMode::Unsettled)
            .receiver_settle_mode(ReceiverSettleMode::First)
            .properties(properties)
            .attach(&mut session)
            .await;
        match attached {
            Ok(link) => Ok(Some(link)),
            Err(ReceiverAttachError::RemoteClosedWithError(error)) => {
                let condition = condition_text(&error.condition);
                if condition == "com.microsoft:timeout"
                    || condition == "com.microsoft:session-cannot-be-locked"
                {
                    // No session free within the wait.
                    Ok(None)
                } else {
                    Err(self.attach_failed(secrets, "accept a session", Some(&error), ""))
                }
            }
            Err(e) => Err(self.fail(secrets, "accept a session", e)),
        }
    }
}

/// Receive up to `max` from a session receiver, waiting up to `wait` for the first.
pub(crate) async fn receive_from(
    link: &mut Receiver,
    max: u32,
    wait: Duration,
) -> std::result::Result<Vec<Received>, String> {
    let max = max.max(1);
    link.set_credit(max).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while out.len() < max as usize {
        let until = if out.is_empty() {
            deadline
        } else {
            Instant::now() + Duration::from_millis(20)
        };
        match tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            link.recv::<Body<Value>>(),
        )
        .await
        {
            Ok(Ok(d)) => out.push(into_received(d)),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => break,
        }
    }
    if out.len() < max as usize {
        // Take back the credit left by setting it to zero rather than draining:
        // `fe2o3-amqp` gives no way to wait for a drain's answer, and new credit sent
        // before that answer arrives counts against deliveries the drain used up, so the
        // next receive would get nothing.
        link.set_credit(0).await.map_err(|e| e.to_string())?;
        // What the service sent before it saw the new credit.
        while out.len() < max as usize {
            match tokio::time::timeout(Duration::from_millis(20), link.recv::<Body<Value>>()).await
            {
                Ok(Ok(d)) => out.push(into_received(d)),
                _ => break,
            }
        }
    }
    Ok(out)
}

fn into_received(delivery: fe2o3_amqp::link::delivery::Delivery<Body<Value>>) -> Received {
    let tag = delivery.delivery_tag().to_vec();
    Received {
        message: delivery.into_message(),
        tag,
    }
}

/// The service's error on a refused sender attach.
fn sender_remote(e: &SenderAttachError) -> Option<&fe2o3_amqp::types::definitions::Error> {
    match e {
        SenderAttachError::RemoteClosedWithError(error) => Some(error),
        _ => None,
    }
}

/// The service's error on a refused receiver attach.
fn receiver_remote(e: &ReceiverAttachError) -> Option<&fe2o3_amqp::types::definitions::Error> {
    match e {
        ReceiverAttachError::RemoteClosedWithError(error) => Some(error),
        _ => None,
    }
}

/// The error of a message the service refused.
fn refused(secrets: &Secrets, error: Option<&fe2o3_amqp::types::definitions::Error>) -> Error {
    let condition = error
        .map(|e| condition_text(&e.condition))
        .unwrap_or_default();
    let description = error
        .and_then(|e| e.description.clone())
        .unwrap_or_default();
    status_error(secrets, "send", 0, &condition, &description)
}

fn condition_text(condition: &fe2o3_amqp::types::definitions::ErrorCondition) -> String {
    let encoded = serde_amqp::to_value(condition).ok();
    match encoded {
        Some(Value::Symbol(s)) => s.0,
        _ => format!("{condition:?}"),
    }
}

/// An error from a management status or a refusal's condition.
fn status_error(
    secrets: &Secrets,
    operation: &str,
    status: i32,
    condition: &str,
    description: &str,
) -> Error {
    let description = secrets.scrub(description);
    let message = format!(
        "Service Bus {operation}: {description} ({condition}{})",
        if status > 0 {
            format!(", status {status}")
        } else {
            String::new()
        }
    );
    let (kind, hint) = match (condition, status) {
        ("com.microsoft:message-lock-lost", _)
        | ("com.microsoft:session-lock-lost", _)
        | (_, 410) => (
            ErrorKind::InvalidInput,
            "the lock of this delivery ran out or the message was already settled: it is (or will be) delivered again; extend the visibility of slow handlers",
        ),
        ("amqp:link:message-size-exceeded", _) | (_, 413) => (
            ErrorKind::InvalidInput,
            "send a smaller message (256 KiB on the Standard tier, 100 MiB on Premium)",
        ),
        ("amqp:not-allowed", _) | ("amqp:invalid-field", _) | (_, 400) => (
            ErrorKind::InvalidInput,
            "the entity refused the message or request as it stands; see the description",
        ),
        ("amqp:not-found", _) | (_, 404) => (
            ErrorKind::NotFound,
            "create the queue (or topic and subscription) in the namespace, or fix its name",
        ),
        ("amqp:unauthorized-access", _) | (_, 401) => (
            ErrorKind::Auth,
            "the key needs Send and Listen rights on the entity",
        ),
        ("com.microsoft:server-busy", _) | (_, 503) => (
            ErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(10)),
            },
            "the namespace is throttling: calls are retried after a pause",
        ),
        _ => (
            ErrorKind::Unavailable,
            "Service Bus failed the call; it is retried",
        ),
    };
    Error::new(kind, message)
        .with_connector(PLATFORM)
        .with_hint(hint)
}

/// The connection of one entity, made again when it breaks.
pub(crate) struct Client {
    pub(crate) endpoint: Endpoint,
    pub(crate) entity: String,
    current: Mutex<Option<Arc<Conn>>>,
}

impl Client {
    pub(crate) fn new(endpoint: Endpoint, entity: String) -> Client {
        Client {
            endpoint,
            entity,
            current: Mutex::new(None),
        }
    }

    /// The live connection (a new one when there is none or the last broke), with a
    /// token that is not about to run out.
    pub(crate) async fn conn(&self, secrets: &Secrets) -> Result<Arc<Conn>> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref() {
            if !conn.is_broken().await {
                let conn = conn.clone();
                drop(current);
                conn.authorize(&self.endpoint, secrets).await?;
                return Ok(conn);
            }
            if let Some(old) = current.take() {
                tokio::spawn(async move { old.close().await });
            }
        }
        let conn = Arc::new(Conn::open(&self.endpoint, &self.entity, secrets).await?);
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Close the connection.
    pub(crate) async fn close(&self) {
        if let Some(conn) = self.current.lock().await.take() {
            conn.close().await;
        }
    }
}
