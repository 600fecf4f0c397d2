//! Amazon SQS as a [`MessageQueue`] (feature `sqs`), on the official `aws-sdk-sqs`:
//! standard and FIFO queues, batches of ten split further by size, long polling,
//! visibility changes, message attributes, and the queue's redrive policy read at build
//! time, with a client-side redrive back from the dead-letter queue.
//!
//! ```no_run
//! use std::time::Duration;
//! use connector_aws::sqs::SqsQueue;
//! use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let queue = SqsQueue::builder("case-events").region("eu-west-1").build().await?;
//! queue.send(&OutgoingMessage::new(r#"{"Id":"500A"}"#).attribute("type", "case.closed")).await?;
//! for message in queue.receive(&ReceiveOptions::new(10).wait(Duration::from_secs(20))).await? {
//!     println!("{} {}", message.id, message.body);
//!     queue.ack(&message.receipt).await?;
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use moodbridge_core::integration::Interfaces;
use moodbridge_core::queue::{
    MessageQueue, OutgoingMessage, QueueFeatures, Receipt, ReceiveOptions, ReceivedMessage, refusal,
};
use moodbridge_core::redact::Secrets;
use moodbridge_core::{
    Capabilities, Capability, Error, ErrorKind, HealthReport, PlatformIntegration, Policy,
    PolicyConfig, Result,
};

use crate::sdk::{AwsCredentialSettings, AwsCredentials};

const PLATFORM: &str = "sqs";

/// The kind name of SQS queues.
pub const SQS_KIND: &str = "sqs";

/// Settings of an `sqs` integration, read from its config's `settings` table.
///
/// ```toml
/// [[integration]]
/// id = "sqs:case-events"
/// kind = "sqs"
///
/// [integration.settings]
/// queue = "case-events"                # a name, or the queue's URL
/// region = "eu-west-1"                 # default: from the environment / profile
/// # endpoint = "http://127.0.0.1:5000" # a local emulator
/// credentials = { source = "store", prefix = "aws/prod" }   # default: the AWS chain
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSettings {
    /// The queue: its name (the URL is looked up) or its URL.
    pub queue: String,
    /// The AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// A custom endpoint (a local emulator).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Where the keys come from (default: the standard AWS chain).
    #[serde(default)]
    pub credentials: AwsCredentialSettings,
}

impl moodbridge_core::config::Validate for SqsSettings {
    fn validate_into(&self, v: &mut moodbridge_core::config::Validator) {
        crate::sdk::validate_name(
            v,
            "queue",
            "SQS queue",
            &self.queue,
            queue_name(&self.queue),
            80,
        );
        crate::sdk::validate_endpoint(
            self.endpoint.as_deref(),
            "https://sqs.eu-west-1.amazonaws.com",
            v,
        );
        self.credentials.validate_into(v);
    }
}

/// The most messages in one SQS batch request.
pub const MAX_BATCH: usize = 10;
/// The longest long poll of one request.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// The longest delay of a message.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// The longest visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
/// The most message attributes a message may carry.
pub use crate::sdk::MAX_ATTRIBUTES;

/// The default policy of an `sqs` integration: up to 4 attempts with backoff (throttling
/// and 5xx are temporary), and an attempt timeout longer than a long poll.
pub fn default_policy_config() -> PolicyConfig {
    crate::sdk::messaging_policy_config(MAX_WAIT + Duration::from_secs(10))
}

/// Settings of an [`SqsQueue`]; made by [`SqsQueue::builder`].
#[derive(Debug, Clone)]
pub struct SqsBuilder {
    queue: String,
    id: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    credentials: AwsCredentials,
    policy: Option<Policy>,
}

impl SqsBuilder {
    /// The integration id (default `sqs:<queue name>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The AWS region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A custom endpoint (a local emulator).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Where the keys come from (default: the standard AWS chain).
    pub fn credentials(mut self, credentials: AwsCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Run every call through `policy`.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Create the queue (a FIFO queue for a name ending in `.fifo`), dead-lettering into
    /// `dead_letters` after `max_receives` deliveries when given; then
    /// [`build`](Self::build). Creating a queue that exists with the same attributes
    /// changes nothing.
    ///
    /// # Errors
    /// A queue that exists with other attributes ([`Conflict`](ErrorKind::Conflict)), and
    /// as [`build`](Self::build).
    pub async fn create(self, dead_letters: Option<(&SqsQueue, u32)>) -> Result<SqsQueue> {
        let inner = self.connect_only().await?;
        let name = inner.name.clone();
        let mut request = inner.client.create_queue().queue_name(&name);
        if name.ends_with(".fifo") {
            request = request.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if let Some((dlq, max_receives)) = dead_letters {
            let arn = dlq.arn().ok_or_else(|| {
                Error::invalid_input(format!("the ARN of queue {} is not known", dlq.name()))
            })?;
            request = request.attributes(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives})
                    .to_string(),
            );
        }
        let url = inner
            .call("create_queue", true, || request.clone().send())
            .await?
            .queue_url()
            .map(str::to_owned)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "SQS gave no queue URL"))?;
        Self::describe(inner, url).await
    }

    /// The client and policy, without looking the queue up.
    async fn connect_only(self) -> Result<Inner> {
        let name = queue_name(&self.queue).to_owned();
        let parts = crate::sdk::client_parts(
            PLATFORM,
            &name,
            self.id.as_deref(),
            self.region.as_deref(),
            self.endpoint.as_deref(),
            &self.credentials,
            self.policy.as_ref(),
            default_policy_config(),
        )
        .await?;
        let mut config = aws_sdk_sqs::config::Builder::from(&parts.sdk)
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled());
        if let Some(provider) = crate::sdk::remembering(&parts.sdk, &parts.secrets) {
            config = config.credentials_provider(provider);
        }
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint.clone());
        }
        Ok(Inner {
            id: parts.id,
            name,
            url: String::new(),
            client: Client::from_conf(config.build()),
            policy: parts.policy,
            secrets: parts.secrets,
            features: QueueFeatures {
                fifo: false,
                max_body_bytes: 262_144,
                max_batch: MAX_BATCH,
                max_receive: 10,
                max_delay: MAX_DELAY,
                max_visibility: MAX_VISIBILITY,
                dead_letter_after: None,
            },
            arn: None,
            dead_letter_arn: None,
        })
    }

    /// Connect: find the queue's URL (when a name was given) and read its attributes
    /// (FIFO, largest message, visibility timeout, redrive policy).
    ///
    /// # Errors
    /// A queue that does not exist ([`NotFound`](ErrorKind::NotFound)), refused
    /// credentials, an unreachable endpoint.
    pub async fn build(self) -> Result<SqsQueue> {
        let queue = self.queue.clone();
        let inner = self.connect_only().await?;
        let url = if queue.starts_with("https://") || queue.starts_with("http://") {
            queue
        } else {
            inner
                .call("get_queue_url", true, || {
                    inner.client.get_queue_url().queue_name(&queue).send()
                })
                .await?
                .queue_url()
                .map(str::to_owned)
                .ok_or_else(|| Error::new(ErrorKind::Protocol, "SQS gave no queue URL"))?
        };
        Self::describe(inner, url).await
    }

    /// The queue at `url`, its attributes read: FIFO, largest message, ARN, redrive
    /// policy.
    async fn describe(mut inner: Inner, url: String) -> Result<SqsQueue> {
        inner.url = url;
        let attributes = inner
            .call("get_queue_attributes", true, || {
                inner
                    .client
                    .get_queue_attributes()
                    .queue_url(&inner.url)
                    .attribute_names(QueueAttributeName::All)
                    .send()
            })
            .await?;
        let attributes = attributes.attributes().cloned().unwrap_or_default();
        inner.arn = attributes.get(&QueueAttributeName::QueueArn).cloned();
        inner.features.fifo = attributes
            .get(&QueueAttributeName::FifoQueue)
            .is_some_and(|v| v == "true");
        if let Some(size) = attributes
            .get(&QueueAttributeName::MaximumMessageSize)
            .and_then(|v| v.parse().ok())
        {
            inner.features.max_body_bytes = size;
        }
        if let Some(policy) = attributes.get(&QueueAttributeName::RedrivePolicy) {
            let policy: serde_json::Value = serde_json::from_str(policy).map_err(|e| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("the queue's RedrivePolicy is not JSON: {e}"),
                )
            })?;
            inner.features.dead_letter_after = policy["maxReceiveCount"]
                .as_u64()
                .or_else(|| policy["maxReceiveCount"].as_str()?.parse().ok())
                .and_then(|n| u32::try_from(n).ok());
            inner.dead_letter_arn = policy["deadLetterTargetArn"].as_str().map(str::to_owned);
        }
        Ok(SqsQueue {
            inner: Arc::new(inner),
        })
    }
}

/// The name of a queue given by name or URL.
fn queue_name(queue: &str) -> &str {
    queue.rsplit('/').next().unwrap_or(queue)
}

/// An SQS queue. See the [module docs](self).
#[derive(Clone)]
pub struct SqsQueue {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    name: String,
    url: String,
    client: Client,
    policy: Policy,
    secrets: Secrets,
    features: QueueFeatures,
    arn: Option<String>,
    dead_letter_arn: Option<String>,
}

impl fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsQueue")
            .field("id", &self.inner.id)
            .field("url", &self.inner.url)
            .field("features", &self.inner.features)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// One SDK call through the policy, its error mapped.
    async fn call<T, E, F, Fut>(&self, operation: &'static str, idempotent: bool, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<
                    T,
                    aws_sdk_sqs::error::SdkError<
                        E,
                        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
                    >,
                >,
            >,
        E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let errors = crate::sdk::ServiceErrors {
            platform: PLATFORM,
            service: "SQS",
            kind_of: service_kind,
            hint_of: hint,
        };
        crate::sdk::call(
            &self.policy,
            &self.secrets,
            errors,
            &self.name,
            operation,
            idempotent,
            f,
        )
        .await
    }
}

/// The error kind of an SQS error code.
fn service_kind(status: u16, code: Option<&str>) -> ErrorKind {
    match code {
        Some(
            "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" | "NonExistentQueue",
        ) => ErrorKind::NotFound,
        Some("ReceiptHandleIsInvalid" | "InvalidReceiptHandle" | "MessageNotInflight") => {
            ErrorKind::InvalidInput
        }
        Some(
            "RequestThrottled"
            | "ThrottlingException"
            | "Throttling"
            | "KmsThrottled"
            | "OverLimit",
        ) => ErrorKind::RateLimited { retry_after: None },
        Some("AccessDenied" | "AccessDeniedException" | "KmsAccessDenied") => ErrorKind::Forbidden,
        Some(
            "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "UnrecognizedClientException"
            | "InvalidSecurity",
        ) => ErrorKind::Auth,
        Some(
            "InvalidParameterValue"
            | "InvalidAttributeName"
            | "InvalidAttributeValue"
            | "InvalidMessageContents"
            | "MissingParameter"
            | "TooManyEntriesInBatchRequest"
            | "BatchRequestTooLong"
            | "BatchEntryIdsNotDistinct"
            | "EmptyBatchRequest"
            | "InvalidBatchEntryId"
            | "UnsupportedOperation"
            | "ValidationError",
        ) => ErrorKind::InvalidInput,
        Some("ServiceUnavailable" | "InternalFailure" | "InternalError") => ErrorKind::Unavailable,
        _ => moodbridge_core::raw::kind_of_status(status),
    }
}

fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "check the queue name or URL, and the region",
        ErrorKind::Forbidden => {
            "the credentials lack an sqs: permission on this queue (or its KMS key)"
        }
        ErrorKind::Auth => "check the access key id and secret",
        ErrorKind::RateLimited { .. } => "SQS is throttling: send in batches, or slow down",
        _ => "",
    }
}

/// A message's attributes as SQS takes them, or why they cannot be sent.
fn sqs_attributes(
    attributes: &BTreeMap<String, String>,
) -> std::result::Result<HashMap<String, MessageAttributeValue>, String> {
    crate::sdk::check_attributes(attributes)?;
    attributes
        .iter()
        .map(|(name, value)| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("attribute {name}: {e}"))
        })
        .collect()
}

impl SqsQueue {
    /// A builder for the queue named `queue` (or with URL `queue`).
    pub fn builder(queue: impl Into<String>) -> SqsBuilder {
        SqsBuilder {
            queue: queue.into(),
            id: None,
            region: None,
            endpoint: None,
            credentials: AwsCredentials::default(),
            policy: None,
        }
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The queue's ARN.
    pub fn arn(&self) -> Option<&str> {
        self.inner.arn.as_deref()
    }

    /// The ARN of the queue's dead-letter queue, from its redrive policy.
    pub fn dead_letter_arn(&self) -> Option<&str> {
        self.inner.dead_letter_arn.as_deref()
    }

    /// Let SNS topic `topic_arn` send messages to this queue: sets the queue's access
    /// policy to one statement allowing `sns.amazonaws.com` to `sqs:SendMessage` from
    /// that topic (replacing any policy the queue had).
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn allow_topic(&self, topic_arn: &str) -> Result<()> {
        let queue_arn = self.arn().unwrap_or("*").to_owned();
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "moodbridge-sns",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}
            }]
        })
        .to_string();
        self.inner
            .call("set_queue_attributes", true, || {
                self.inner
                    .client
                    .set_queue_attributes()
                    .queue_url(&self.inner.url)
                    .attributes(QueueAttributeName::Policy, &policy)
                    .send()
            })
            .await
            .map(|_| ())
    }

    /// Messages waiting (visible), by SQS's approximate count.
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn approximate_depth(&self) -> Result<u64> {
        let out = self
            .inner
            .call("get_queue_attributes", true, || {
                self.inner
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.inner.url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .send()
            })
            .await?;
        Ok(out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Move up to `max` messages from `dead_letters` (this queue's dead-letter queue)
    /// back to this queue, keeping their bodies, attributes and groups; the number
    /// moved. Each message is deleted from the dead-letter queue only after it was sent
    /// here, so a failure midway loses nothing (a message may then be in both queues).
    ///
    /// This moves the messages through the client, batch by batch, rather than with
    /// SQS's `StartMessageMoveTask`, which local emulators do not serve.
    ///
    /// # Errors
    /// The platform's errors; messages moved before the error stay moved.
    pub async fn redrive_from(&self, dead_letters: &SqsQueue, max: usize) -> Result<u64> {
        let mut moved = 0u64;
        while (moved as usize) < max {
            let want = (max - moved as usize).min(MAX_BATCH) as u32;
            let got = dead_letters
                .receive(
                    &ReceiveOptions::new(want)
                        .wait(Duration::from_secs(1))
                        .visibility(Duration::from_secs(60)),
                )
                .await?;
            if got.is_empty() {
                break;
            }
            let outgoing: Vec<OutgoingMessage> = got
                .iter()
                .map(|m| OutgoingMessage {
                    body: m.body.clone(),
                    attributes: m.attributes.clone(),
                    group: m.group.clone().filter(|_| self.inner.features.fifo),
                    // A second redrive of the same message is a duplicate, not a copy.
                    dedup_id: self.inner.features.fifo.then(|| m.id.clone()),
                    delay: Duration::ZERO,
                })
                .collect();
            let sent = self.send_batch(&outgoing).await?;
            let mut done = Vec::new();
            for (message, outcome) in got.iter().zip(sent) {
                match outcome {
                    Ok(_) => done.push(message.receipt.clone()),
                    Err(e) => {
                        tracing::warn!(queue = %self.inner.name, message_id = %message.id, error = %e, "a dead letter could not be sent back");
                    }
                }
            }
            for outcome in dead_letters.ack_batch(&done).await? {
                outcome?;
            }
            moved += done.len() as u64;
        }
        Ok(moved)
    }
}

#[async_trait]
impl MessageQueue for SqsQueue {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn features(&self) -> QueueFeatures {
        self.inner.features.clone()
    }

    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<Result<String>>> {
        let features = &self.inner.features;
        let mut outcomes: Vec<Option<Result<String>>> = vec![None; messages.len()];
        // Entries to send: (index, entry, bytes).
        let mut entries = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let refuse = |why: String| {
                Some(Err(Error::invalid_input(format!(
                    "SQS queue {}: {why}",
                    self.inner.name
                ))))
            };
            if let Some(why) = refusal(m, features) {
                outcomes[i] = refuse(why);
                continue;
            }
            let size = crate::sdk::message_size(m);
            if size > features.max_body_bytes {
                outcomes[i] = refuse(format!(
                    "the message with its attributes is {size} bytes: the queue takes at most {}",
                    features.max_body_bytes
                ));
                continue;
            }
            let attributes = match sqs_attributes(&m.attributes) {
                Ok(a) => a,
                Err(why) => {
                    outcomes[i] = refuse(why);
                    continue;
                }
            };
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&m.body)
                .set_message_attributes((!attributes.is_empty()).then_some(attributes));
            if features.fifo {
                // A FIFO send without a deduplication id gets one, so that a retried
                // request is not a second message.
                let dedup = m
                    .dedup_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                entry = entry
                    .set_message_group_id(m.group.clone())
                    .message_deduplication_id(dedup);
            } else if !m.delay.is_zero() {
                entry = entry.delay_seconds(i32::try_from(m.delay.as_secs()).unwrap_or(i32::MAX));
            }
            let entry = entry
                .build()
                .map_err(|e| Error::internal(format!("an SQS batch entry: {e}")))?;
            entries.push((i, entry, size));
        }
        // Requests of at most ten entries and the queue's size limit.
        let mut requests: Vec<Vec<(usize, SendMessageBatchRequestEntry)>> = Vec::new();
        let mut bytes = 0;
        for (i, entry, size) in entries {
            match requests.last_mut() {
                Some(last) if last.len() < MAX_BATCH && bytes + size <= features.max_body_bytes => {
                    last.push((i, entry));
                    bytes += size;
                }
                _ => {
                    requests.push(vec![(i, entry)]);
                    bytes = size;
                }
            }
        }
        let mut first_error = None;
        for request in requests {
            let batch: Vec<SendMessageBatchRequestEntry> =
                request.iter().map(|(_, e)| e.clone()).collect();
            let sent = self
                .inner
                .call("send_message_batch", true, || {
                    self.inner
                        .client
                        .send_message_batch()
                        .queue_url(&self.inner.url)
                        .set_entries(Some(batch.clone()))
                        .send()
                })
                .await;
            match sent {
                Ok(out) => {
                    for ok in out.successful() {
                        if let Ok(i) = ok.id().parse::<usize>() {
                            outcomes[i] = Some(Ok(ok.message_id().to_owned()));
                        }
                    }
                    for failed in out.failed() {
                        if let Ok(i) = failed.id().parse::<usize>() {
                            let kind = if failed.sender_fault() {
                                ErrorKind::InvalidInput
                            } else {
                                ErrorKind::Unavailable
                            };
                            outcomes[i] = Some(Err(Error::new(
                                kind,
                                format!(
                                    "SQS refused a message for {}: {} {}",
                                    self.inner.name,
                                    failed.code(),
                                    self.inner
                                        .secrets
                                        .clean(failed.message().unwrap_or_default())
                                ),
                            )));
                        }
                    }
                }
                Err(e) => {
                    for (i, _) in &request {
                        outcomes[*i] = Some(Err(e.clone()));
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error
            && outcomes.iter().all(|o| !matches!(o, Some(Ok(_))))
        {
            return Err(e);
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(Error::new(
                        ErrorKind::Protocol,
                        "SQS did not answer for a message",
                    ))
                })
            })
            .collect())
    }

    async fn receive(&self, options: &ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let max = options.max_messages.clamp(1, 10) as i32;
        let wait = options.wait.min(MAX_WAIT).as_secs() as i32;
        let visibility = options
            .visibility
            .map(|v| v.min(MAX_VISIBILITY).as_secs() as i32);
        let out = self
            .inner
            .call("receive_message", true, || {
                self.inner
                    .client
                    .receive_message()
                    .queue_url(&self.inner.url)
                    .max_number_of_messages(max)
                    .wait_time_seconds(wait)
                    .set_visibility_timeout(visibility)
                    .message_system_attribute_names(MessageSystemAttributeName::All)
                    .message_attribute_names("All")
                    .send()
            })
            .await?;
        out.messages()
            .iter()
            .map(|m| {
                let system = m.attributes().cloned().unwrap_or_default();
                let attributes = m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(ReceivedMessage {
                    id: m.message_id().unwrap_or_default().to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    attributes,
                    group: system
                        .get(&MessageSystemAttributeName::MessageGroupId)
                        .cloned(),
                    delivery_count: system
                        .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                    sent_at: system
                        .get(&MessageSystemAttributeName::SentTimestamp)
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
                    receipt: Receipt::new(m.receipt_handle().ok_or_else(|| {
                        Error::new(
                            ErrorKind::Protocol,
                            "SQS gave a message without a receipt handle",
                        )
                    })?),
                })
            })
            .collect()
    }

    async fn ack(&self, receipt: &Receipt) -> Result<()> {
        self.inner
            .call("delete_message", true, || {
                self.inner
                    .client
                    .delete_message()
                    .queue_url(&self.inner.url)
                    .receipt_handle(receipt.as_str())
                    .send()
            })
            .await
            .map(|_| ())
    }

    async fn ack_batch(&self, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        let mut outcomes: Vec<Result<()>> = Vec::with_capacity(receipts.len());
        for (n, chunk) in receipts.chunks(MAX_BATCH).enumerate() {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r.as_str())
                        .build()
                        .map_err(|e| Error::internal(format!("an SQS delete entry: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .inner
                .call("delete_message_batch", true, || {
                    self.inner
                        .client
                        .delete_message_batch()
                        .queue_url(&self.inner.url)
                        .set_entries(Some(entries.clone()))
                        .send()
                })
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) if n == 0 && receipts.len() <= MAX_BATCH => return Err(e),
                Err(e) => {
                    outcomes.extend(chunk.iter().map(|_| Err(e.clone())));
                    continue;
                }
            };
            let mut chunk_outcomes: Vec<Result<()>> = chunk
                .iter()
                .map(|_| {
                    Err(Error::new(
                        ErrorKind::Protocol,
                        "SQS did not answer for a receipt",
                    ))
                })
                .collect();
            for ok in out.successful() {
                if let Ok(i) = ok.id().parse::<usize>()
                    && i < chunk_outcomes.len()
                {
                    chunk_outcomes[i] = Ok(());
                }
            }
            for failed in out.failed() {
                if let Ok(i) = failed.id().parse::<usize>()
                    && i < chunk_outcomes.len()
                {
                    chunk_outcomes[i] = Err(Error::new(
                        if failed.sender_fault() {
                            ErrorKind::InvalidInput
                        } else {
                            ErrorKind::Unavailable
                        },
                        format!(
                            "SQS could not delete a message of {}: {} {}",
                            self.inner.name,
                            failed.code(),
                            failed.message().unwrap_or_default()
                        ),
                    ));
                }
            }
            outcomes.extend(chunk_outcomes);
        }
        Ok(outcomes)
    }

    async fn nack(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.extend(receipt, delay).await
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        let seconds = visibility.min(MAX_VISIBILITY).as_secs() as i32;
        self.inner
            .call("change_message_visibility", true, || {
                self.inner
                    .client
                    .change_message_visibility()
                    .queue_url(&self.inner.url)
                    .receipt_handle(receipt.as_str())
                    .visibility_timeout(seconds)
                    .send()
            })
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl PlatformIntegration for SqsQueue {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        SQS_KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::Messaging))
    }

    async fn health_check(&self) -> HealthReport {
        let started = std::time::Instant::now();
        match self.approximate_depth().await {
            Ok(depth) => HealthReport::new(
                moodbridge_core::HealthStatus::Up,
                started.elapsed(),
                format!("{depth} messages waiting"),
            ),
            Err(e) => HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new().with::<dyn MessageQueue>(self)
    }
}
