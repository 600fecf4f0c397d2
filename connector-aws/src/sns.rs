//! Amazon SNS topics (feature `sns`), on the official `aws-sdk-sns`: publish one message
//! or batches of ten with per-message outcomes, message attributes, FIFO topics (groups
//! and deduplication ids), and SQS queues subscribed with filter policies over the
//! attributes or the body — the fan-out of one event to several consumers.
//!
//! ```no_run
//! use connector_aws::sns::{SnsTopic, Subscription};
//! use moodbridge_core::queue::OutgoingMessage;
//!
//! # async fn run(queue_arn: &str) -> moodbridge_core::Result<()> {
//! let topic = SnsTopic::builder("case-events").region("eu-west-1").build().await?;
//! let filter = serde_json::json!({"type": ["case.closed"]});
//! topic.subscribe_queue(queue_arn, &Subscription::raw().filter(filter)).await?;
//! topic.publish(&OutgoingMessage::new(r#"{"Id":"500A"}"#).attribute("type", "case.closed")).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use moodbridge_core::queue::OutgoingMessage;
use moodbridge_core::redact::Secrets;
use moodbridge_core::{
    Capabilities, Capability, Error, ErrorKind, HealthReport, PlatformIntegration, Policy,
    PolicyConfig, Result,
};

use crate::sdk::{AwsCredentialSettings, AwsCredentials, check_attributes};

const PLATFORM: &str = "sns";

/// The kind name of SNS topics.
pub const SNS_KIND: &str = "sns";

/// The most messages in one `PublishBatch` request.
pub const MAX_BATCH: usize = 10;

/// The largest message, and the largest batch, in bytes (256 KiB).
pub const MAX_MESSAGE_BYTES: usize = 262_144;

/// Settings of an `sns` integration, read from its config's `settings` table.
///
/// ```toml
/// [[integration]]
/// id = "sns:case-events"
/// kind = "sns"
///
/// [integration.settings]
/// topic = "case-events"                # a name (looked up) or the topic's ARN
/// region = "eu-west-1"
/// # endpoint = "http://127.0.0.1:5000" # a local emulator
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsSettings {
    /// The topic: its name or its ARN.
    pub topic: String,
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

impl moodbridge_core::config::Validate for SnsSettings {
    fn validate_into(&self, v: &mut moodbridge_core::config::Validator) {
        crate::sdk::validate_name(
            v,
            "topic",
            "SNS topic",
            &self.topic,
            topic_name(&self.topic),
            256,
        );
        crate::sdk::validate_endpoint(
            self.endpoint.as_deref(),
            "https://sns.eu-west-1.amazonaws.com",
            v,
        );
        self.credentials.validate_into(v);
    }
}

/// The default policy of an `sns` integration: up to 4 attempts with backoff.
pub fn default_policy_config() -> PolicyConfig {
    crate::sdk::messaging_policy_config(Duration::from_secs(30))
}

/// The name of a topic given by name or ARN.
fn topic_name(topic: &str) -> &str {
    topic.rsplit(':').next().unwrap_or(topic)
}

/// How an SQS queue subscribes to a topic.
///
/// ```
/// use connector_aws::sns::{FilterScope, Subscription};
/// let s = Subscription::raw()
///     .filter(serde_json::json!({"Status": ["Closed"]}))
///     .scope(FilterScope::MessageBody);
/// assert!(s.raw_delivery);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Deliver the message as sent (body and attributes), not wrapped in SNS's JSON
    /// envelope.
    pub raw_delivery: bool,
    /// Deliver only messages this filter policy matches.
    pub filter: Option<serde_json::Value>,
    /// What the filter policy reads.
    pub scope: FilterScope,
}

/// What a subscription's filter policy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterScope {
    /// The message attributes.
    #[default]
    MessageAttributes,
    /// The message body, a JSON document.
    MessageBody,
}

impl Subscription {
    /// Raw delivery, no filter: the queue receives each message as sent.
    pub fn raw() -> Self {
        Subscription {
            raw_delivery: true,
            filter: None,
            scope: FilterScope::MessageAttributes,
        }
    }

    /// SNS's JSON envelope around each message (`Type`, `MessageId`, `TopicArn`,
    /// `Message`, `MessageAttributes` …).
    pub fn enveloped() -> Self {
        Subscription {
            raw_delivery: false,
            ..Self::raw()
        }
    }

    /// Deliver only what `policy` matches (SNS filter policy syntax).
    #[must_use]
    pub fn filter(mut self, policy: serde_json::Value) -> Self {
        self.filter = Some(policy);
        self
    }

    /// Match the filter policy against `scope`.
    #[must_use]
    pub fn scope(mut self, scope: FilterScope) -> Self {
        self.scope = scope;
        self
    }
}

/// Settings of an [`SnsTopic`]; made by [`SnsTopic::builder`].
#[derive(Debug, Clone)]
pub struct SnsBuilder {
    topic: String,
    id: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    credentials: AwsCredentials,
    policy: Option<Policy>,
}

impl SnsBuilder {
    /// The integration id (default `sns:<topic name>`).
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

    async fn client(&self) -> Result<Inner> {
        let name = topic_name(&self.topic).to_owned();
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
        let mut config = aws_sdk_sns::config::Builder::from(&parts.sdk)
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled());
        if let Some(provider) = crate::sdk::remembering(&parts.sdk, &parts.secrets) {
            config = config.credentials_provider(provider);
        }
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint.clone());
        }
        Ok(Inner {
            id: parts.id,
            fifo: name.ends_with(".fifo"),
            name,
            arn: String::new(),
            client: Client::from_conf(config.build()),
            policy: parts.policy,
            secrets: parts.secrets,
        })
    }

    /// Create the topic (a FIFO topic for a name ending in `.fifo`; creating one that
    /// exists with the same attributes changes nothing), then use it.
    ///
    /// # Errors
    /// Refused credentials, an unreachable endpoint, a name SNS refuses.
    pub async fn create(self) -> Result<SnsTopic> {
        let mut inner = self.client().await?;
        let mut request = inner.client.create_topic().name(&inner.name);
        if inner.fifo {
            request = request.attributes("FifoTopic", "true");
        }
        let out = inner
            .call("create_topic", || request.clone().send())
            .await?;
        inner.arn = out
            .topic_arn()
            .map(str::to_owned)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "SNS gave no topic ARN"))?;
        Ok(SnsTopic {
            inner: Arc::new(inner),
        })
    }

    /// Connect to the topic: by ARN, or found by name among the account's topics.
    ///
    /// # Errors
    /// A topic that does not exist ([`NotFound`](ErrorKind::NotFound)), refused
    /// credentials, an unreachable endpoint.
    pub async fn build(self) -> Result<SnsTopic> {
        let mut inner = self.client().await?;
        if self.topic.starts_with("arn:") {
            inner.arn = self.topic.clone();
            let arn = inner.arn.clone();
            inner
                .call("get_topic_attributes", || {
                    inner.client.get_topic_attributes().topic_arn(&arn).send()
                })
                .await?;
        } else {
            let mut next: Option<String> = None;
            loop {
                let token = next.clone();
                let page = inner
                    .call("list_topics", || {
                        inner
                            .client
                            .list_topics()
                            .set_next_token(token.clone())
                            .send()
                    })
                    .await?;
                if let Some(found) = page
                    .topics()
                    .iter()
                    .filter_map(|t| t.topic_arn())
                    .find(|arn| topic_name(arn) == inner.name)
                {
                    inner.arn = found.to_owned();
                    break;
                }
                next = page.next_token().map(str::to_owned);
                if next.is_none() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("SNS has no topic named {}", inner.name),
                    )
                    .with_connector(PLATFORM)
                    .with_hint("check the topic name and the region, or create it"));
                }
            }
        }
        Ok(SnsTopic {
            inner: Arc::new(inner),
        })
    }
}

/// An SNS topic. See the [module docs](self).
#[derive(Clone)]
pub struct SnsTopic {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    name: String,
    arn: String,
    fifo: bool,
    client: Client,
    policy: Policy,
    secrets: Secrets,
}

impl fmt::Debug for SnsTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnsTopic")
            .field("id", &self.inner.id)
            .field("arn", &self.inner.arn)
            .finish_non_exhaustive()
    }
}

impl Inner {
    async fn call<T, E, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<
                    T,
                    aws_sdk_sns::error::SdkError<
                        E,
                        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
                    >,
                >,
            >,
        E: aws_sdk_sns::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let errors = crate::sdk::ServiceErrors {
            platform: PLATFORM,
            service: "SNS",
            kind_of: service_kind,
            hint_of: hint,
        };
        crate::sdk::call(
            &self.policy,
            &self.secrets,
            errors,
            &self.name,
            operation,
            true,
            f,
        )
        .await
    }
}

fn service_kind(status: u16, code: Option<&str>) -> ErrorKind {
    match code {
        Some("NotFound" | "NotFoundException" | "ResourceNotFound") => ErrorKind::NotFound,
        Some("Throttling" | "ThrottlingException" | "ThrottledException") => {
            ErrorKind::RateLimited { retry_after: None }
        }
        Some("AuthorizationError" | "AuthorizationErrorException" | "KMSAccessDenied") => {
            ErrorKind::Forbidden
        }
        Some("InvalidClientTokenId" | "SignatureDoesNotMatch" | "ExpiredToken") => ErrorKind::Auth,
        Some(
            "InvalidParameter"
            | "InvalidParameterValue"
            | "InvalidParameterException"
            | "ParameterValueInvalid"
            | "TooManyEntriesInBatchRequest"
            | "BatchRequestTooLong"
            | "BatchEntryIdsNotDistinct"
            | "EmptyBatchRequest"
            | "ValidationException",
        ) => ErrorKind::InvalidInput,
        Some("InternalError" | "InternalErrorException" | "ServiceUnavailable") => {
            ErrorKind::Unavailable
        }
        _ => moodbridge_core::raw::kind_of_status(status),
    }
}

fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "check the topic name or ARN, and the region",
        ErrorKind::Forbidden => "the credentials lack an sns: permission on this topic",
        ErrorKind::Auth => "check the access key id and secret",
        ErrorKind::RateLimited { .. } => "SNS is throttling: publish in batches, or slow down",
        _ => "",
    }
}

impl SnsTopic {
    /// A builder for the topic named `topic` (or with ARN `topic`).
    pub fn builder(topic: impl Into<String>) -> SnsBuilder {
        SnsBuilder {
            topic: topic.into(),
            id: None,
            region: None,
            endpoint: None,
            credentials: AwsCredentials::default(),
            policy: None,
        }
    }

    /// The topic's ARN.
    pub fn arn(&self) -> &str {
        &self.inner.arn
    }

    /// Whether it is a FIFO topic.
    pub fn is_fifo(&self) -> bool {
        self.inner.fifo
    }

    /// Why SNS would refuse `message`, or `None`.
    fn refusal(&self, message: &OutgoingMessage) -> Option<String> {
        let size = crate::sdk::message_size(message);
        if size > MAX_MESSAGE_BYTES {
            return Some(format!(
                "the message with its attributes is {size} bytes: SNS takes at most {MAX_MESSAGE_BYTES}"
            ));
        }
        if !message.delay.is_zero() {
            return Some("SNS cannot delay a message: send it to a queue with a delay".to_owned());
        }
        match (self.inner.fifo, &message.group) {
            (true, None) => Some("a FIFO topic needs a group on every message".to_owned()),
            (false, Some(_)) => Some(
                "a standard topic has no ordering groups: publish without a group, or use a FIFO topic"
                    .to_owned(),
            ),
            _ => check_attributes(&message.attributes).err(),
        }
    }

    fn attributes(message: &OutgoingMessage) -> Result<HashMap<String, MessageAttributeValue>> {
        message
            .attributes
            .iter()
            .map(|(k, v)| {
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(v)
                    .build()
                    .map(|value| (k.clone(), value))
                    .map_err(|e| Error::internal(format!("an SNS attribute: {e}")))
            })
            .collect()
    }

    /// Publish one message; its id.
    ///
    /// # Errors
    /// A message SNS would refuse ([`InvalidInput`](ErrorKind::InvalidInput), before
    /// anything is sent), and the platform's errors.
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<String> {
        let mut outcomes = self.publish_batch(std::slice::from_ref(message)).await?;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(Error::internal("a batch of one gave no outcome")))
    }

    /// Publish `messages` in requests of at most ten and 256 KiB: one outcome per
    /// message, in order (its id, or why it was refused). A FIFO message without a
    /// deduplication id gets a UUID, so a retried request is not a second message.
    ///
    /// # Errors
    /// Only when nothing could be published (the first request's error).
    pub async fn publish_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<Result<String>>> {
        let mut outcomes: Vec<Option<Result<String>>> = vec![None; messages.len()];
        let mut requests: Vec<Vec<(usize, PublishBatchRequestEntry)>> = Vec::new();
        let mut bytes = 0;
        for (i, m) in messages.iter().enumerate() {
            if let Some(why) = self.refusal(m) {
                outcomes[i] = Some(Err(Error::invalid_input(format!(
                    "SNS topic {}: {why}",
                    self.inner.name
                ))));
                continue;
            }
            let attributes = Self::attributes(m)?;
            let mut entry = PublishBatchRequestEntry::builder()
                .id(i.to_string())
                .message(&m.body)
                .set_message_attributes((!attributes.is_empty()).then_some(attributes));
            if self.inner.fifo {
                entry = entry
                    .set_message_group_id(m.group.clone())
                    .message_deduplication_id(
                        m.dedup_id
                            .clone()
                            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    );
            }
            let entry = entry
                .build()
                .map_err(|e| Error::internal(format!("an SNS batch entry: {e}")))?;
            let size = m.body.len();
            match requests.last_mut() {
                Some(last) if last.len() < MAX_BATCH && bytes + size <= MAX_MESSAGE_BYTES => {
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
            let entries: Vec<PublishBatchRequestEntry> =
                request.iter().map(|(_, e)| e.clone()).collect();
            let out = self
                .inner
                .call("publish_batch", || {
                    self.inner
                        .client
                        .publish_batch()
                        .topic_arn(&self.inner.arn)
                        .set_publish_batch_request_entries(Some(entries.clone()))
                        .send()
                })
                .await;
            match out {
                Ok(out) => {
                    for ok in out.successful() {
                        if let Some(i) = ok.id().and_then(|id| id.parse::<usize>().ok())
                            && i < outcomes.len()
                        {
                            outcomes[i] = Some(Ok(ok.message_id().unwrap_or_default().to_owned()));
                        }
                    }
                    for failed in out.failed() {
                        if let Ok(i) = failed.id().parse::<usize>()
                            && i < outcomes.len()
                        {
                            outcomes[i] = Some(Err(Error::new(
                                if failed.sender_fault() {
                                    ErrorKind::InvalidInput
                                } else {
                                    ErrorKind::Unavailable
                                },
                                format!(
                                    "SNS refused a message for {}: {} {}",
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
                        "SNS did not answer for a message",
                    ))
                })
            })
            .collect())
    }

    /// Subscribe the SQS queue with ARN `queue_arn`; the subscription's ARN. The queue's
    /// access policy must let the topic send to it
    /// ([`SqsQueue::allow_topic`](crate::sqs::SqsQueue::allow_topic) sets one).
    ///
    /// # Errors
    /// A filter policy SNS refuses ([`InvalidInput`](ErrorKind::InvalidInput)), and the
    /// platform's errors.
    pub async fn subscribe_queue(
        &self,
        queue_arn: &str,
        subscription: &Subscription,
    ) -> Result<String> {
        let mut request = self
            .inner
            .client
            .subscribe()
            .topic_arn(&self.inner.arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .return_subscription_arn(true)
            .attributes(
                "RawMessageDelivery",
                if subscription.raw_delivery {
                    "true"
                } else {
                    "false"
                },
            );
        if let Some(filter) = &subscription.filter {
            request = request
                .attributes("FilterPolicy", filter.to_string())
                .attributes(
                    "FilterPolicyScope",
                    match subscription.scope {
                        FilterScope::MessageAttributes => "MessageAttributes",
                        FilterScope::MessageBody => "MessageBody",
                    },
                );
        }
        let out = self
            .inner
            .call("subscribe", || request.clone().send())
            .await?;
        out.subscription_arn()
            .map(str::to_owned)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "SNS gave no subscription ARN"))
    }
}

#[async_trait]
impl PlatformIntegration for SnsTopic {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        SNS_KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::Messaging))
    }

    async fn health_check(&self) -> HealthReport {
        let started = std::time::Instant::now();
        let out = self
            .inner
            .call("get_topic_attributes", || {
                self.inner
                    .client
                    .get_topic_attributes()
                    .topic_arn(&self.inner.arn)
                    .send()
            })
            .await;
        match out {
            Ok(out) => {
                let confirmed = out
                    .attributes()
                    .and_then(|a| a.get("SubscriptionsConfirmed"))
                    .cloned()
                    .unwrap_or_else(|| "0".to_owned());
                HealthReport::new(
                    moodbridge_core::HealthStatus::Up,
                    started.elapsed(),
                    format!("{confirmed} subscriptions confirmed"),
                )
            }
            Err(e) => HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        }
    }
}
