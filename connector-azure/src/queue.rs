//! Azure Queue storage as a [`MessageQueue`] (feature `queue`), on the official
//! `azure_storage_queue` crate.
//!
//! - **Visibility**: a received message is hidden for the visibility timeout (30 s by
//!   default, at most 7 days); [`extend`](MessageQueue::extend) and
//!   [`nack`](MessageQueue::nack) change it with `Update Message`. Every update gives the
//!   message a new pop receipt: the queue remembers it, so the [`Receipt`] a receiver got
//!   keeps working for `ack`, `extend` and `nack` however often it was extended.
//! - **Delivery count** is the service's dequeue count.
//! - **Poison messages**: Azure Queue storage has no dead-letter queue of its own. With
//!   [`poison_after(n)`](AzureQueueBuilder::poison_after), a message received for the
//!   (n+1)th time is moved, unchanged, to `<queue>-poison` (the convention Azure
//!   Functions and WebJobs follow) instead of being delivered: sent there first, then
//!   deleted here, so a failure in between leaves it in both queues, never in neither.
//! - **Attributes** travel inside the message text: a message with attributes is sent as
//!   the JSON envelope `{"$moodbridge":1,"attributes":{…},"body":"…"}` and unwrapped on
//!   receipt; a message without attributes is its body, unchanged, so other producers
//!   and consumers read and write the same queue.
//! - **Size**: 64 KiB of message text (after encoding). The text is XML in the request:
//!   with [`MessageEncoding::Text`] (the default, as Microsoft's Python client) a body
//!   holding characters XML cannot carry is refused with a hint to use
//!   [`MessageEncoding::Base64`] (what Azure Functions expects by default).
//! - **Receiving** polls (the service has no long polling): every 100 ms at first,
//!   doubling up to [`max_poll_interval`](AzureQueueBuilder::max_poll_interval)
//!   (default 1 s) until a message comes or the wait is over.
//! - Messages never expire unless [`time_to_live`](AzureQueueBuilder::time_to_live) is
//!   set (the service's own default would drop them after 7 days).
//! - No FIFO groups, no deduplication: a message with a group is refused.
//!
//! ```no_run
//! use std::time::Duration;
//! use connector_azure::auth::ConnectionString;
//! use connector_azure::queue::AzureQueue;
//! use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
//!
//! # async fn run(connection_string: &str) -> moodbridge_core::Result<()> {
//! let queue = AzureQueue::builder("case-events")
//!     .connection_string(&ConnectionString::parse(connection_string)?)
//!     .poison_after(5)
//!     .create()
//!     .await?;
//! queue.send(&OutgoingMessage::new(r#"{"Id":"500A"}"#).attribute("type", "case.closed")).await?;
//! for message in queue.receive(&ReceiveOptions::new(32).wait(Duration::from_secs(20))).await? {
//!     println!("{} {} (delivery {})", message.id, message.body, message.delivery_count);
//!     queue.ack(&message.receipt).await?;
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use azure_core::http::{RequestContent, XmlFormat};
use azure_storage_queue::models::{
    QueueClientGetPropertiesResultHeaders, QueueClientReceiveMessagesOptions,
    QueueClientSendMessageOptions, QueueMessage,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};
use base64::Engine;
use futures::StreamExt;
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
use serde::{Deserialize, Serialize};

use crate::auth::ConnectionString;
use crate::config::AzureCredentialSettings;
use crate::storage::{AzureCredentials, StorageClient, storage_client, storage_error};

const PLATFORM: &str = "azure-queue";

/// The kind name of Azure Queue storage queues.
pub const QUEUE_KIND: &str = "azure-queue";
/// The largest message text (after encoding), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 65_536;
/// The most messages one receive returns.
pub const MAX_RECEIVE: u32 = 32;
/// The longest visibility timeout, and the longest delay.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The visibility timeout of a receive that sets none.
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);
/// What a queue's poison queue is named after: `<queue>-poison`.
pub const POISON_SUFFIX: &str = "-poison";
/// The service API version sent by default; Azurite 3.35 accepts it.
pub use crate::storage::DEFAULT_API_VERSION;
/// Messages sent or deleted at once by one `send_batch` or `ack_batch`.
const IN_FLIGHT: usize = 8;
/// The envelope's marker key.
const ENVELOPE_MARK: &str = "$moodbridge";

/// How message text is encoded on the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageEncoding {
    /// The text as is (what Microsoft's Python client sends by default). Bodies with
    /// characters XML cannot carry (control characters other than tab and line ends)
    /// are refused.
    #[default]
    Text,
    /// Base64 of the UTF-8 text (what Azure Functions' queue trigger expects by
    /// default): any body, a third less of it in 64 KiB.
    Base64,
}

/// Checks a queue name against Queue storage's rules (3–63 characters of lower-case
/// letters, digits and single hyphens, starting and ending with a letter or digit).
///
/// ```
/// use connector_azure::queue::check_queue_name;
/// assert!(check_queue_name("case-events").is_ok());
/// assert!(check_queue_name("Case_Events").is_err());
/// ```
///
/// # Errors
/// A name the service would refuse, as a [`Config`](ErrorKind::Config) error.
pub fn check_queue_name(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let ok = (3..=63).contains(&name.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[name.len() - 1].is_ascii_alphanumeric()
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(
            Error::config(format!("Azure queue name {name:?} is not valid"))
                .with_connector(PLATFORM)
                .with_hint(
                    "use 3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit",
                ),
        )
    }
}

/// The default policy of an `azure-queue` integration: up to 4 attempts with backoff
/// from 100 ms (5xx, `ServerBusy`, timeouts and dropped connections are temporary), 30 s
/// per attempt.
pub fn default_policy_config() -> PolicyConfig {
    PolicyConfig {
        retry: Some(RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
            budget: None,
        }),
        attempt_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    }
}

/// Settings of an [`AzureQueue`]; made by [`AzureQueue::builder`].
#[derive(Debug, Clone)]
pub struct AzureQueueBuilder {
    queue: String,
    id: Option<String>,
    endpoint: Option<String>,
    credentials: Option<AzureCredentials>,
    api_version: String,
    policy: Option<Policy>,
    policies: Vec<Arc<dyn azure_core::http::policies::Policy>>,
    http_client: Option<Arc<dyn azure_core::http::HttpClient>>,
    encoding: MessageEncoding,
    poison_after: Option<u32>,
    visibility: Duration,
    max_poll_interval: Duration,
    time_to_live: Option<Duration>,
}

impl AzureQueueBuilder {
    /// The integration id (default `azure-queue:<queue>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The Queue service endpoint (`https://<account>.queue.core.windows.net`, or
    /// `http://127.0.0.1:10001/devstoreaccount1` for Azurite).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Endpoint and credentials from a connection string.
    pub fn connection_string(mut self, connection_string: &ConnectionString) -> Self {
        self.endpoint = Some(connection_string.queue_endpoint.to_string());
        self.credentials = Some(AzureCredentials::from_connection_string(connection_string));
        self
    }

    /// How requests are authorized.
    pub fn credentials(mut self, credentials: AzureCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The service API version (`x-ms-version`); default 2025-11-05 (emulators lag the
    /// newest).
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = version.into();
        self
    }

    /// Run every request through `policy` (default: [`default_policy_config`]). The
    /// client's own retry is off.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Adds a policy to every try of every request (custom headers, fault injection in
    /// tests …); it runs before the Shared Key signature.
    pub fn per_try_policy(mut self, policy: Arc<dyn azure_core::http::policies::Policy>) -> Self {
        self.policies.push(policy);
        self
    }

    /// The HTTP client every request goes through (default: `reqwest`).
    pub fn http_client(mut self, client: Arc<dyn azure_core::http::HttpClient>) -> Self {
        self.http_client = Some(client);
        self
    }

    /// How message text is encoded (default [`MessageEncoding::Text`]). Every producer
    /// and consumer of a queue must agree.
    pub fn encoding(mut self, encoding: MessageEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Move a message to `<queue>-poison` when it is received for the `(n+1)`th time,
    /// instead of delivering it (`n` ≥ 1; Azure Functions uses 5).
    pub fn poison_after(mut self, n: u32) -> Self {
        self.poison_after = Some(n);
        self
    }

    /// The visibility timeout of a receive that sets none (default 30 s).
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    /// The longest pause between two polls of a receive that waits (default 1 s). Each
    /// poll is a billed transaction.
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval = interval;
        self
    }

    /// Let messages expire this long after they were sent (default: never; at most
    /// 7 days is not required, any whole number of seconds is taken).
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.time_to_live = Some(ttl);
        self
    }

    /// Create the queue (and its poison queue, with [`poison_after`](Self::poison_after))
    /// when missing, then [`build`](Self::build). An existing queue is not an error.
    ///
    /// # Errors
    /// As [`build`](Self::build), and the platform's errors.
    pub async fn create(self) -> Result<AzureQueue> {
        let queue = self.build()?;
        queue.create_queue().await?;
        if let Some(poison) = &queue.inner.poison {
            poison.create_queue().await?;
        }
        Ok(queue)
    }

    /// Checks the settings and builds the queue (no request is made).
    ///
    /// # Errors
    /// A bad queue name, endpoint or setting, missing credentials, as
    /// [`Config`](ErrorKind::Config) errors.
    pub fn build(self) -> Result<AzureQueue> {
        check_queue_name(&self.queue)?;
        if self.poison_after == Some(0) {
            return Err(Error::config("Azure queue poison_after is 0")
                .with_connector(PLATFORM)
                .with_hint("use at least 1 delivery (Azure Functions uses 5)"));
        }
        if self.visibility.is_zero() || self.visibility > MAX_VISIBILITY {
            return Err(Error::config(format!(
                "Azure queue visibility {} s is outside 1 s to 7 days",
                self.visibility.as_secs()
            ))
            .with_connector(PLATFORM));
        }
        if self.max_poll_interval.is_zero() {
            return Err(Error::config("Azure queue max_poll_interval is 0")
                .with_connector(PLATFORM)
                .with_hint("use e.g. 1 s (the default)"));
        }
        if let Some(ttl) = self.time_to_live
            && (ttl.as_secs() == 0 || ttl.as_secs() > i32::MAX as u64)
        {
            return Err(Error::config(format!(
                "Azure queue time_to_live of {} s is outside 1 s to {} s",
                ttl.as_secs(),
                i32::MAX
            ))
            .with_connector(PLATFORM));
        }
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("{PLATFORM}:{}", self.queue));
        moodbridge_core::integration::check_id(&id, PLATFORM)?;
        let policy = match &self.policy {
            Some(policy) => policy.clone(),
            None => Policy::from_config(id.clone(), &default_policy_config())?,
        };
        let poison = match self.poison_after {
            Some(_) => {
                let name = format!("{}{POISON_SUFFIX}", self.queue);
                check_queue_name(&name).map_err(|e| {
                    e.with_hint("the poison queue `<queue>-poison` must be a valid name too: use a queue name of at most 56 characters")
                })?;
                let mut settings = self.clone();
                settings.queue = name;
                settings.poison_after = None;
                settings.id = Some(format!("{id}{POISON_SUFFIX}"));
                settings.policy = Some(policy.clone());
                Some(settings.build()?)
            }
            None => None,
        };
        let StorageClient {
            url,
            options,
            token,
            secrets,
        } = storage_client(
            "Azure Queue",
            PLATFORM,
            self.endpoint.as_deref(),
            &self.queue,
            self.credentials.as_ref(),
            self.http_client.clone(),
            &self.policies,
        )?;
        let client = QueueClient::new(
            url,
            token,
            Some(QueueClientOptions {
                client_options: options,
                version: self.api_version.clone(),
            }),
        )
        .map_err(|e| storage_error("Azure Queue", PLATFORM, &secrets, "create client", None, e))?;
        Ok(AzureQueue {
            inner: Arc::new(Inner {
                id,
                client,
                policy,
                secrets,
                features: QueueFeatures {
                    fifo: false,
                    max_body_bytes: MAX_MESSAGE_BYTES,
                    max_batch: 32,
                    max_receive: MAX_RECEIVE,
                    max_delay: MAX_VISIBILITY,
                    max_visibility: MAX_VISIBILITY,
                    dead_letter_after: self.poison_after,
                },
                poison,
                renewed: Mutex::new(HashMap::new()),
                settings: self,
            }),
        })
    }
}

/// An Azure Queue storage queue. See the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct AzureQueue {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    client: QueueClient,
    policy: Policy,
    secrets: Secrets,
    features: QueueFeatures,
    poison: Option<AzureQueue>,
    /// Pop receipts replaced by an update: by message id, the receipt a receiver holds
    /// and the one that now stands for it.
    renewed: Mutex<HashMap<String, Renewed>>,
    settings: AzureQueueBuilder,
}

/// The pop receipt that replaced `held` when the message was last updated.
struct Renewed {
    held: String,
    current: String,
    /// When the update's visibility runs out (the entry is useless after).
    until: Instant,
}

impl fmt::Debug for AzureQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureQueue")
            .field("id", &self.inner.id)
            .field("settings", &self.inner.settings)
            .field("features", &self.inner.features)
            .finish_non_exhaustive()
    }
}

/// The text a message is sent as, before encoding.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(rename = "$moodbridge")]
    version: u32,
    attributes: BTreeMap<String, String>,
    body: String,
}

/// Whether XML 1.0 can carry `c` (control characters other than tab and line ends
/// cannot be, even escaped).
fn xml_safe(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

impl AzureQueue {
    /// A builder for the queue named `queue`.
    pub fn builder(queue: impl Into<String>) -> AzureQueueBuilder {
        AzureQueueBuilder {
            queue: queue.into(),
            id: None,
            endpoint: None,
            credentials: None,
            api_version: DEFAULT_API_VERSION.to_owned(),
            policy: None,
            policies: Vec::new(),
            http_client: None,
            encoding: MessageEncoding::Text,
            poison_after: None,
            visibility: DEFAULT_VISIBILITY,
            max_poll_interval: Duration::from_secs(1),
            time_to_live: None,
        }
    }

    /// The queue's name.
    pub fn queue_name(&self) -> &str {
        &self.inner.settings.queue
    }

    /// The poison queue (`<queue>-poison`) when [`poison_after`](AzureQueueBuilder::poison_after)
    /// is set: an `AzureQueue` of its own, to read or redrive.
    pub fn poison_queue(&self) -> Option<&AzureQueue> {
        self.inner.poison.as_ref()
    }

    /// The official client, for what the trait does not cover (its calls do not go
    /// through the queue's policy).
    pub fn client(&self) -> &QueueClient {
        &self.inner.client
    }

    /// The policy every request of this queue goes through.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// One request through the policy, its error mapped.
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        request: &'static str,
        f: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = azure_core::Result<T>>,
    {
        let secrets = &self.inner.secrets;
        let name = &self.inner.settings.queue;
        self.inner
            .policy
            .call_as(Operation::new(format!("azure_queue.{operation}")), || {
                let fut = f();
                async move {
                    fut.await.map_err(|e| {
                        let err =
                            storage_error("Azure Queue", PLATFORM, secrets, request, Some(name), e);
                        let hint = hint(err.kind());
                        if hint.is_empty() {
                            err
                        } else {
                            err.with_hint(hint)
                        }
                    })
                }
            })
            .await
    }

    /// Creates the queue; an existing one is not an error.
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn create_queue(&self) -> Result<()> {
        self.call("create_queue", "Create Queue", || async {
            match self.inner.client.create(None).await {
                Ok(_) => Ok(()),
                Err(e) if e.http_status().map(u16::from) == Some(409) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Deletes the queue and every message in it.
    ///
    /// # Errors
    /// The platform's errors ([`NotFound`](ErrorKind::NotFound) for a missing queue).
    pub async fn delete_queue(&self) -> Result<()> {
        self.call("delete_queue", "Delete Queue", || {
            self.inner.client.delete(None)
        })
        .await
        .map(|_| ())
    }

    /// Messages in the queue (visible or not), by the service's approximate count.
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn approximate_depth(&self) -> Result<u64> {
        let response = self
            .call("get_properties", "Get Queue Metadata", || {
                self.inner.client.get_properties(None)
            })
            .await?;
        let count = response.approximate_messages_count().map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("Azure Queue gave an unreadable message count: {e}"),
            )
        })?;
        Ok(count.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    /// Move up to `max` messages from the poison queue back to this queue, unchanged;
    /// the number moved. Each is deleted from the poison queue only after it was sent
    /// here. Its dequeue count starts again at 1.
    ///
    /// # Errors
    /// A queue without a poison queue ([`InvalidInput`](ErrorKind::InvalidInput)), and
    /// the platform's errors; messages moved before the error stay moved.
    pub async fn redrive_poison(&self, max: usize) -> Result<u64> {
        let Some(poison) = &self.inner.poison else {
            return Err(Error::invalid_input(format!(
                "Azure queue {} has no poison queue",
                self.queue_name()
            ))
            .with_hint("build it with poison_after(n)"));
        };
        let mut moved = 0u64;
        while (moved as usize) < max {
            let want = (max - moved as usize).min(MAX_RECEIVE as usize) as i32;
            let got = poison.receive_raw(want, Duration::from_secs(60)).await?;
            if got.is_empty() {
                break;
            }
            for raw in got {
                self.send_text(raw.text.clone(), Duration::ZERO).await?;
                poison.delete(&raw.id, &raw.pop_receipt).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// The text `message` is sent as (envelope and encoding), or why it cannot be.
    fn encode(&self, message: &OutgoingMessage) -> std::result::Result<String, String> {
        if let Some(why) = refusal(message, &self.inner.features) {
            return Err(why);
        }
        let text = if message.attributes.is_empty() {
            message.body.clone()
        } else {
            serde_json::to_string(&Envelope {
                version: 1,
                attributes: message.attributes.clone(),
                body: message.body.clone(),
            })
            .map_err(|e| format!("the attributes cannot be written: {e}"))?
        };
        let text = match self.inner.settings.encoding {
            MessageEncoding::Text => {
                if let Some(bad) = text.chars().find(|c| !xml_safe(*c)) {
                    return Err(format!(
                        "the message holds {bad:?}, which Queue storage cannot carry as text; use the base64 encoding"
                    ));
                }
                text
            }
            MessageEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(text),
        };
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(format!(
                "the message is {} bytes as sent (with its attributes and encoding): the queue takes at most {MAX_MESSAGE_BYTES}",
                text.len()
            ));
        }
        Ok(text)
    }

    /// Body and attributes of a message's text, or why it cannot be read.
    fn decode(
        &self,
        text: &str,
    ) -> std::result::Result<(String, BTreeMap<String, String>), String> {
        let text = match self.inner.settings.encoding {
            MessageEncoding::Text => text.to_owned(),
            MessageEncoding::Base64 => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| format!("the message text is not base64: {e}"))?;
                String::from_utf8(bytes)
                    .map_err(|_| "the decoded message is not UTF-8".to_owned())?
            }
        };
        if text.starts_with('{')
            && text.contains(ENVELOPE_MARK)
            && let Ok(envelope) = serde_json::from_str::<Envelope>(&text)
            && envelope.version == 1
        {
            return Ok((envelope.body, envelope.attributes));
        }
        Ok((text, BTreeMap::new()))
    }

    /// Sends one message's text; the message id.
    async fn send_text(&self, text: String, delay: Duration) -> Result<String> {
        let ttl = match self.inner.settings.time_to_live {
            Some(ttl) => ttl.as_secs() as i32,
            None => -1,
        };
        let visibility = (!delay.is_zero()).then(|| delay.min(MAX_VISIBILITY).as_secs() as i32);
        let response = self
            .call("send_message", "Put Message", || {
                let content: azure_core::Result<RequestContent<QueueMessage, XmlFormat>> =
                    QueueMessage {
                        message_text: Some(text.clone()),
                    }
                    .try_into();
                let options = QueueClientSendMessageOptions {
                    message_time_to_live: Some(ttl),
                    visibility_timeout: visibility,
                    ..Default::default()
                };
                async move {
                    self.inner
                        .client
                        .send_message(content?, Some(options))
                        .await?
                        .into_model()
                }
            })
            .await?;
        response
            .items
            .and_then(|items| items.into_iter().next())
            .and_then(|sent| sent.message_id)
            .ok_or_else(|| {
                Error::new(ErrorKind::Protocol, "Azure Queue gave no message id")
                    .with_connector(PLATFORM)
            })
    }

    /// One `Get Messages` request.
    async fn receive_raw(&self, max: i32, visibility: Duration) -> Result<Vec<RawMessage>> {
        let visibility = visibility
            .clamp(Duration::from_secs(1), MAX_VISIBILITY)
            .as_secs() as i32;
        let got = self
            .call("receive_messages", "Get Messages", || async {
                self.inner
                    .client
                    .receive_messages(Some(QueueClientReceiveMessagesOptions {
                        number_of_messages: Some(max),
                        visibility_timeout: Some(visibility),
                        ..Default::default()
                    }))
                    .await?
                    .into_model()
            })
            .await?;
        got.items
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let missing = |what: &str| {
                    Error::new(
                        ErrorKind::Protocol,
                        format!("Azure Queue gave a message without its {what}"),
                    )
                    .with_connector(PLATFORM)
                };
                Ok(RawMessage {
                    id: m.message_id.ok_or_else(|| missing("id"))?,
                    pop_receipt: m.pop_receipt.ok_or_else(|| missing("pop receipt"))?,
                    text: m.message_text.unwrap_or_default(),
                    dequeue_count: m.dequeue_count.unwrap_or(1).clamp(0, i64::from(u32::MAX))
                        as u32,
                    inserted: m.insertion_time.map(SystemTime::from),
                })
            })
            .collect()
    }

    async fn delete(&self, id: &str, pop_receipt: &str) -> Result<()> {
        self.call("delete_message", "Delete Message", || {
            self.inner.client.delete_message(id, pop_receipt, None)
        })
        .await
        .map(|_| ())
    }

    /// Moves `raw` to the poison queue: sent there, then deleted here.
    async fn poison(&self, poison: &AzureQueue, raw: &RawMessage, why: &str) -> Result<()> {
        poison.send_text(raw.text.clone(), Duration::ZERO).await?;
        self.delete(&raw.id, &raw.pop_receipt).await?;
        tracing::warn!(
            queue = %self.queue_name(),
            message_id = %raw.id,
            deliveries = raw.dequeue_count,
            reason = why,
            "moved a message to the poison queue"
        );
        Ok(())
    }

    /// The message id and the pop receipt that stands for `receipt` now.
    fn current(&self, receipt: &Receipt) -> Result<(String, String)> {
        let (id, pop) = receipt.as_str().split_once('/').ok_or_else(|| {
            Error::invalid_input("not a receipt of an Azure queue message")
                .with_connector(PLATFORM)
                .with_hint("pass the receipt of a message this queue delivered")
        })?;
        let renewed = self
            .inner
            .renewed
            .lock()
            .map_err(|_| Error::internal("receipt map poisoned"))?;
        let pop = match renewed.get(id) {
            Some(r) if r.held == pop => r.current.clone(),
            _ => pop.to_owned(),
        };
        Ok((id.to_owned(), pop))
    }

    /// Hides the message of `receipt` for `visibility` from now; remembers its new pop
    /// receipt unless `forget` (the receiver lets go of it).
    async fn update(&self, receipt: &Receipt, visibility: Duration, forget: bool) -> Result<()> {
        let (id, pop) = self.current(receipt)?;
        let seconds = visibility.min(MAX_VISIBILITY).as_secs() as i32;
        let response = self
            .call("update_message", "Update Message", || {
                self.inner.client.update_message(&id, &pop, seconds, None)
            })
            .await?;
        let new = response
            .headers()
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                "x-ms-popreceipt",
            ))
            .map(str::to_owned);
        let mut renewed = self
            .inner
            .renewed
            .lock()
            .map_err(|_| Error::internal("receipt map poisoned"))?;
        let now = Instant::now();
        renewed.retain(|_, r| r.until > now);
        let held = receipt
            .as_str()
            .split_once('/')
            .map(|(_, p)| p.to_owned())
            .unwrap_or_default();
        match new {
            Some(current) if !forget => {
                renewed.insert(
                    id,
                    Renewed {
                        held,
                        current,
                        until: now + visibility,
                    },
                );
            }
            _ => {
                renewed.remove(&id);
            }
        }
        Ok(())
    }
}

/// A message as the service gave it.
struct RawMessage {
    id: String,
    pop_receipt: String,
    text: String,
    dequeue_count: u32,
    inserted: Option<SystemTime>,
}

fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => {
            "the queue does not exist (create it), or the message was already deleted"
        }
        ErrorKind::InvalidInput => {
            "a pop receipt that no longer matches means the message was delivered again (its visibility timeout ran out): extend it while it is being handled"
        }
        ErrorKind::Forbidden => "the credentials lack a permission on this queue",
        ErrorKind::Auth => "check the account key, SAS token or Entra ID credential",
        ErrorKind::RateLimited { .. } => "the storage account is throttling: slow down",
        _ => "",
    }
}

#[async_trait]
impl MessageQueue for AzureQueue {
    fn name(&self) -> &str {
        &self.inner.settings.queue
    }

    fn features(&self) -> QueueFeatures {
        self.inner.features.clone()
    }

    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<Result<String>>> {
        let sends: Vec<_> = messages
            .iter()
            .map(|m| async move {
                match self.encode(m) {
                    Ok(text) => (false, self.send_text(text, m.delay).await),
                    Err(why) => (
                        true,
                        Err(Error::invalid_input(format!(
                            "Azure queue {}: {why}",
                            self.queue_name()
                        ))
                        .with_connector(PLATFORM)),
                    ),
                }
            })
            .collect();
        let outcomes: Vec<(bool, Result<String>)> = futures::stream::iter(sends)
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        // Nothing sent, and not only refusals: the queue failed, not the messages.
        if outcomes.iter().all(|(_, o)| o.is_err())
            && let Some((_, Err(e))) = outcomes.iter().find(|(refused, _)| !refused)
        {
            return Err(e.clone());
        }
        Ok(outcomes.into_iter().map(|(_, o)| o).collect())
    }

    async fn receive(&self, options: &ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let max = options.max_messages.clamp(1, MAX_RECEIVE) as i32;
        let visibility = options.visibility.unwrap_or(self.inner.settings.visibility);
        let deadline = Instant::now() + options.wait;
        let mut pause = Duration::from_millis(100);
        loop {
            let mut out = Vec::new();
            for raw in self.receive_raw(max, visibility).await? {
                let limit = self.inner.features.dead_letter_after;
                let decoded = self.decode(&raw.text);
                match (&self.inner.poison, limit, decoded) {
                    (Some(poison), Some(n), _) if raw.dequeue_count > n => {
                        self.poison(poison, &raw, "delivered too often").await?;
                    }
                    (Some(poison), _, Err(why)) => self.poison(poison, &raw, &why).await?,
                    (None, _, Err(why)) => {
                        tracing::warn!(
                            queue = %self.queue_name(),
                            message_id = %raw.id,
                            reason = %why,
                            "a message that cannot be read stays hidden for its visibility timeout; set poison_after to move such messages aside"
                        );
                    }
                    (_, _, Ok((body, attributes))) => out.push(ReceivedMessage {
                        receipt: Receipt::new(format!("{}/{}", raw.id, raw.pop_receipt)),
                        id: raw.id,
                        body,
                        attributes,
                        group: None,
                        delivery_count: raw.dequeue_count,
                        sent_at: raw.inserted,
                    }),
                }
            }
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok(out);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(self.inner.settings.max_poll_interval);
        }
    }

    async fn ack(&self, receipt: &Receipt) -> Result<()> {
        let (id, pop) = self.current(receipt)?;
        self.delete(&id, &pop).await?;
        if let Ok(mut renewed) = self.inner.renewed.lock() {
            renewed.remove(&id);
        }
        Ok(())
    }

    async fn ack_batch(&self, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        let acks: Vec<_> = receipts.iter().map(|r| self.ack(r)).collect();
        Ok(futures::stream::iter(acks)
            .buffered(IN_FLIGHT)
            .collect()
            .await)
    }

    async fn nack(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.update(receipt, delay, true).await
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        self.update(receipt, visibility, false).await
    }
}

#[async_trait]
impl PlatformIntegration for AzureQueue {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        QUEUE_KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::Messaging))
    }

    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        match self.approximate_depth().await {
            Ok(depth) => HealthReport::new(
                HealthStatus::Up,
                started.elapsed(),
                format!("{depth} messages in the queue"),
            ),
            Err(e) => HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new().with::<dyn MessageQueue>(self)
    }
}

/// Settings of an `azure-queue` integration, read from its config's `settings` table.
///
/// ```toml
/// [[integration]]
/// id = "azure-queue:case-events"
/// kind = "azure-queue"
///
/// [integration.settings]
/// queue = "case-events"
/// connection_string = "secret:azure/prod/storage_connection_string"
/// # or an endpoint and credentials:
/// # endpoint = "https://acme.queue.core.windows.net"
/// # credentials = { source = "shared_key", account = "acme", key = "secret:azure/prod/account_key" }
/// poison_after = 5            # move to case-events-poison on the 6th delivery
/// encoding = "text"           # or "base64" (Azure Functions)
/// visibility_secs = 30
/// # time_to_live_secs = 604800   # default: never expire
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureQueueSettings {
    /// The queue.
    pub queue: String,
    /// A storage connection string (it holds the key or SAS: a reference only).
    #[serde(default)]
    pub connection_string: Option<SecretRef>,
    /// The Queue service endpoint, when no connection string is given.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How requests are authorized, with `endpoint`.
    #[serde(default)]
    pub credentials: Option<AzureCredentialSettings>,
    /// Move a message to `<queue>-poison` on its `(n+1)`th delivery.
    #[serde(default)]
    pub poison_after: Option<u32>,
    /// How message text is encoded (default `text`).
    #[serde(default)]
    pub encoding: MessageEncoding,
    /// The visibility timeout of a receive that sets none, seconds (default 30).
    #[serde(default = "default_visibility_secs")]
    pub visibility_secs: u64,
    /// Let messages expire this long after they are sent, seconds (default: never).
    #[serde(default)]
    pub time_to_live_secs: Option<u64>,
    /// Create the queue (and its poison queue) when the integration is built.
    #[serde(default)]
    pub create: bool,
    /// The service API version sent.
    #[serde(default)]
    pub api_version: Option<String>,
}

fn default_visibility_secs() -> u64 {
    DEFAULT_VISIBILITY.as_secs()
}

impl Validate for AzureQueueSettings {
    fn validate_into(&self, v: &mut Validator) {
        if let Err(e) = check_queue_name(&self.queue) {
            v.problem("queue", e.message().to_owned(), e.hint().to_owned());
        } else if self.poison_after.is_some()
            && check_queue_name(&format!("{}{POISON_SUFFIX}", self.queue)).is_err()
        {
            v.problem(
                "queue",
                format!(
                    "{:?} is too long for a poison queue named after it",
                    self.queue
                ),
                "use at most 56 characters, or no poison_after",
            );
        }
        crate::config::validate_access(
            v,
            self.connection_string.as_ref(),
            self.endpoint.as_deref(),
            self.credentials.as_ref(),
            "https://acme.queue.core.windows.net",
        );
        if self.poison_after == Some(0) {
            v.problem(
                "poison_after",
                "is 0",
                "use at least 1 (Azure Functions uses 5)",
            );
        }
        if self.visibility_secs == 0 || self.visibility_secs > MAX_VISIBILITY.as_secs() {
            v.problem(
                "visibility_secs",
                format!("{} is outside 1 to 604800 (7 days)", self.visibility_secs),
                "use 30 (the default) or another number of seconds up to 7 days",
            );
        }
        if let Some(ttl) = self.time_to_live_secs
            && (ttl == 0 || ttl > i32::MAX as u64)
        {
            v.problem(
                "time_to_live_secs",
                format!("{ttl} is outside 1 to {}", i32::MAX),
                "leave it out for messages that never expire",
            );
        }
    }
}

/// Builds `azure-queue` integrations from [`AzureQueueSettings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AzureQueueFactory;

impl AzureQueueFactory {
    /// The queue `ctx` describes (created first when its settings say `create = true`).
    ///
    /// # Errors
    /// Bad settings, unresolvable secrets, and with `create` the platform's errors.
    pub async fn queue(ctx: &moodbridge_core::registry::BuildContext) -> Result<AzureQueue> {
        let s: AzureQueueSettings = ctx.settings()?;
        let mut builder = AzureQueue::builder(&s.queue)
            .id(&ctx.config.id)
            .policy(ctx.policy.clone())
            .encoding(s.encoding)
            .visibility(Duration::from_secs(s.visibility_secs));
        if let Some(n) = s.poison_after {
            builder = builder.poison_after(n);
        }
        if let Some(ttl) = s.time_to_live_secs {
            builder = builder.time_to_live(Duration::from_secs(ttl));
        }
        if let Some(version) = &s.api_version {
            builder = builder.api_version(version);
        }
        let access = crate::config::resolve_access(
            ctx,
            s.connection_string.as_ref(),
            s.credentials.as_ref(),
        )
        .await?;
        if let Some(cs) = &access.connection_string {
            builder = builder.connection_string(cs);
        }
        if let Some(endpoint) = &s.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if let Some(credentials) = access.credentials {
            builder = builder.credentials(credentials);
        }
        if s.create {
            builder.create().await
        } else {
            builder.build()
        }
    }
}

#[async_trait]
impl moodbridge_core::registry::IntegrationFactory for AzureQueueFactory {
    fn kind(&self) -> &'static str {
        QUEUE_KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        default_policy_config()
    }

    fn validate(&self, config: &moodbridge_core::IntegrationConfig, v: &mut Validator) {
        config.check_settings::<AzureQueueSettings>(v);
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
    use crate::auth::SharedKey;

    fn queue(encoding: MessageEncoding) -> AzureQueue {
        AzureQueue::builder("cases")
            .endpoint("http://127.0.0.1:1/devstoreaccount1")
            .credentials(AzureCredentials::SharedKey(SharedKey {
                account: crate::auth::DEV_ACCOUNT.to_owned(),
                key: crate::auth::DEV_ACCOUNT_KEY.to_owned().into(),
            }))
            .encoding(encoding)
            .build()
            .unwrap()
    }

    #[test]
    fn a_message_without_attributes_is_its_body() {
        let q = queue(MessageEncoding::Text);
        let text = q.encode(&OutgoingMessage::new(r#"{"Id":"500A"}"#)).unwrap();
        assert_eq!(text, r#"{"Id":"500A"}"#);
        let (body, attributes) = q.decode(&text).unwrap();
        assert_eq!(body, r#"{"Id":"500A"}"#);
        assert!(attributes.is_empty());
    }

    #[test]
    fn attributes_travel_in_an_envelope_in_either_encoding() {
        for encoding in [MessageEncoding::Text, MessageEncoding::Base64] {
            let q = queue(encoding);
            let m = OutgoingMessage::new("body \u{1F600}").attribute("type", "case.closed");
            let text = q.encode(&m).unwrap();
            let (body, attributes) = q.decode(&text).unwrap();
            assert_eq!(body, m.body, "{encoding:?}");
            assert_eq!(attributes, m.attributes, "{encoding:?}");
        }
    }

    #[test]
    fn a_json_body_that_is_not_our_envelope_is_left_alone() {
        let q = queue(MessageEncoding::Text);
        for text in [
            r#"{"$moodbridge":1,"body":"x"}"#,
            r#"{"$moodbridge":2,"attributes":{},"body":"x"}"#,
            r#"{"$moodbridge":1,"attributes":{},"body":"x","more":1}"#,
        ] {
            assert_eq!(q.decode(text).unwrap().0, text);
        }
    }

    #[test]
    fn text_xml_cannot_carry_is_refused_with_the_fix_and_base64_takes_it() {
        assert!(
            queue(MessageEncoding::Text)
                .encode(&OutgoingMessage::new("line\r\nbreak\t"))
                .is_ok()
        );
        let m = OutgoingMessage::new("line\r\nbreak\u{1}");
        let why = queue(MessageEncoding::Text).encode(&m).unwrap_err();
        assert!(why.contains("base64"), "{why}");
        let q = queue(MessageEncoding::Base64);
        let text = q.encode(&m).unwrap();
        assert_eq!(q.decode(&text).unwrap().0, m.body);
    }

    #[test]
    fn the_limit_counts_the_encoded_text() {
        let q = queue(MessageEncoding::Text);
        assert!(
            q.encode(&OutgoingMessage::new("x".repeat(MAX_MESSAGE_BYTES)))
                .is_ok()
        );
        let q = queue(MessageEncoding::Base64);
        let why = q
            .encode(&OutgoingMessage::new(
                "x".repeat(MAX_MESSAGE_BYTES / 4 * 3 + 1),
            ))
            .unwrap_err();
        assert!(why.contains("65536"), "{why}");
        assert!(q.decode("not base64!").is_err());
    }

    #[test]
    fn a_group_is_refused() {
        let why = queue(MessageEncoding::Text)
            .encode(&OutgoingMessage::new("x").group("g"))
            .unwrap_err();
        assert!(why.contains("group"), "{why}");
    }

    #[test]
    fn a_poison_queue_name_must_fit() {
        let long = "q".repeat(60);
        let err = AzureQueue::builder(&long)
            .endpoint("http://127.0.0.1:1/a")
            .credentials(AzureCredentials::Sas("sv=1&sig=x".to_owned().into()))
            .poison_after(3)
            .build()
            .unwrap_err();
        assert!(err.hint().contains("56"), "{err}");
    }

    #[test]
    fn every_settings_problem_is_named_with_its_path() {
        let found = moodbridge_core::testing::settings_problems::<AzureQueueSettings>(
            r#"queue = "Q"
            endpoint = "queue.example"
            poison_after = 0
            visibility_secs = 0
            time_to_live_secs = 0"#,
        );
        let paths: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "settings.queue",
                "settings.credentials",
                "settings.endpoint",
                "settings.poison_after",
                "settings.visibility_secs",
                "settings.time_to_live_secs"
            ],
            "{found:?}"
        );
    }
}
