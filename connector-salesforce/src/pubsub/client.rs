//! The Pub/Sub API client: topics, schemas (cached), subscriptions with flow control and
//! replay, and publishing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{SinkExt, Stream, StreamExt};
use moodbridge_core::redact::Scrubber;
use moodbridge_core::{Error, ErrorKind, Operation, Policy, Result};
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::avro::EventSchema;
use super::proto::pub_sub_client::PubSubClient as Raw;
use super::proto::{
    CommitReplayRequest, CommitReplayResponse, ConsumerEvent, FetchRequest, FetchResponse,
    ManagedFetchRequest, ManagedFetchResponse, ProducerEvent, PublishRequest, PublishResponse,
    PublishResult, ReplayPreset, SchemaRequest, TopicInfo, TopicRequest,
};

/// Salesforce's Pub/Sub API endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://api.pubsub.salesforce.com:7443";

/// The most events one `FetchRequest` may ask for.
pub const MAX_BATCH: u32 = 100;

/// How to reach the Pub/Sub API and who is calling.
///
/// ```
/// use connector_salesforce::pubsub::PubSubConfig;
/// let config = PubSubConfig::new(
///     "https://acme.my.salesforce.com",
///     "00D000000000001AAA",
///     "00D000000000001!AQ8AQ.token".to_owned().into(),
/// );
/// assert_eq!(config.endpoint, "https://api.pubsub.salesforce.com:7443");
/// assert!(!format!("{config:?}").contains("token"));
/// ```
#[derive(Clone)]
pub struct PubSubConfig {
    /// The gRPC endpoint (`https://…` with TLS; `http://…` for a local server).
    pub endpoint: String,
    /// The org's instance URL (sent as `instanceurl`).
    pub instance_url: String,
    /// The org's id (sent as `tenantid`).
    pub tenant_id: String,
    /// An OAuth access token of the org (sent as `accesstoken`).
    pub access_token: SecretString,
    /// A certificate (PEM) to trust besides the public roots: a local server's.
    pub ca_pem: Option<String>,
    /// The id of the user the token belongs to (`005…`, the last part of the token
    /// response's `id` URL): written as `CreatedById` of the platform events published
    /// that do not carry one.
    pub user_id: Option<String>,
}

impl std::fmt::Debug for PubSubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubConfig")
            .field("endpoint", &self.endpoint)
            .field("instance_url", &self.instance_url)
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl PubSubConfig {
    /// The public endpoint, for the org at `instance_url` with id `tenant_id`.
    pub fn new(
        instance_url: impl Into<String>,
        tenant_id: impl Into<String>,
        access_token: SecretString,
    ) -> Self {
        PubSubConfig {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            instance_url: instance_url.into(),
            tenant_id: tenant_id.into(),
            access_token,
            ca_pem: None,
            user_id: None,
        }
    }

    /// Another endpoint (a local server).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// Trust this certificate (PEM) too.
    pub fn trust(mut self, ca_pem: impl Into<String>) -> Self {
        self.ca_pem = Some(ca_pem.into());
        self
    }

    /// The calling user's id, written as `CreatedById` of published platform events.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Only events published from now on.
    Latest,
    /// Every event the bus still keeps (72 hours on Salesforce).
    Earliest,
    /// After the event with this replay id (what [`PubSubEvent::replay_id`] gave).
    After(Vec<u8>),
}

/// An event received on a subscription, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct PubSubEvent {
    /// The topic it came on.
    pub topic: String,
    /// Its replay id: keep it, and resume after it with [`ReplayFrom::After`].
    pub replay_id: Vec<u8>,
    /// The publisher's id for it.
    pub id: String,
    /// The id of the schema it was written in.
    pub schema_id: String,
    /// Its payload as JSON; a change event's header with its bitmap fields as names.
    pub payload: serde_json::Value,
}

impl PubSubEvent {
    /// The replay id as a number, when it is the 8-byte big-endian form Salesforce uses.
    ///
    /// ```
    /// use connector_salesforce::pubsub::PubSubEvent;
    /// let event = PubSubEvent {
    ///     topic: "/data/AccountChangeEvent".into(),
    ///     replay_id: 42u64.to_be_bytes().to_vec(),
    ///     id: "e1".into(),
    ///     schema_id: "s".into(),
    ///     payload: serde_json::Value::Null,
    /// };
    /// assert_eq!(event.replay_number(), Some(42));
    /// ```
    pub fn replay_number(&self) -> Option<u64> {
        <[u8; 8]>::try_from(self.replay_id.as_slice())
            .ok()
            .map(u64::from_be_bytes)
    }
}

/// A Pub/Sub API client: every unary call goes through its [`Policy`]; schemas are
/// fetched once per id.
///
/// ```no_run
/// # async fn run() -> moodbridge_core::Result<()> {
/// use futures::StreamExt;
/// use connector_salesforce::pubsub::{PubSubClient, PubSubConfig, ReplayFrom};
/// let config = PubSubConfig::new("https://acme.my.salesforce.com", "00D000000000001AAA",
///     "token".to_owned().into());
/// let client = PubSubClient::connect(config).await?;
/// let mut events = client.subscribe("/data/AccountChangeEvent", ReplayFrom::Latest, 100).await?;
/// while let Some(event) = events.next().await {
///     let event = event?;
///     println!("{} {}", event.replay_number().unwrap_or_default(), event.payload);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PubSubClient {
    raw: Raw<Channel>,
    metadata: MetadataMap,
    scrubber: Scrubber,
    policy: Policy,
    schemas: Arc<Mutex<HashMap<String, Arc<EventSchema>>>>,
    user_id: Option<String>,
}

impl std::fmt::Debug for PubSubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubClient").finish_non_exhaustive()
    }
}

impl PubSubClient {
    /// Connect to `config`'s endpoint (lazily: the first call opens the connection).
    ///
    /// # Errors
    /// An endpoint that is not a URL, a certificate that is not PEM, an access token or
    /// an org id that cannot be sent as a header ([`Config`](ErrorKind::Config)).
    pub async fn connect(config: PubSubConfig) -> Result<PubSubClient> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone()).map_err(|e| {
            Error::config(format!(
                "Pub/Sub endpoint {:?} is not a URL: {e}",
                config.endpoint
            ))
        })?;
        if config.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = &config.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::config(format!("Pub/Sub TLS settings are not usable: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        let header = |name: &str, value: &str| {
            AsciiMetadataValue::try_from(value).map_err(|_| {
                Error::config(format!(
                    "the Pub/Sub {name} cannot be sent as a gRPC header"
                ))
            })
        };
        let mut metadata = MetadataMap::new();
        let mut token = header("access token", config.access_token.expose_secret())?;
        token.set_sensitive(true);
        metadata.insert("accesstoken", token);
        metadata.insert("instanceurl", header("instance URL", &config.instance_url)?);
        metadata.insert("tenantid", header("org id", &config.tenant_id)?);
        Ok(PubSubClient {
            raw: Raw::new(channel),
            metadata,
            scrubber: Scrubber::new([config.access_token.expose_secret()]),
            policy: Policy::builder("salesforce.pubsub").build(),
            schemas: Arc::default(),
            user_id: config.user_id,
        })
    }

    /// Run unary calls through `policy` instead (retries, breaker, rate limit).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request
    }

    /// A topic's details (can the caller publish and subscribe, its schema id).
    pub async fn topic(&self, name: &str) -> Result<TopicInfo> {
        self.policy
            .call_as(Operation::new("salesforce.pubsub.get_topic"), || {
                let mut raw = self.raw.clone();
                let request = self.request(TopicRequest {
                    topic_name: name.to_owned(),
                });
                async move {
                    raw.get_topic(request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| self.status_error(&s, &format!("topic {name}")))
                }
            })
            .await
    }

    /// The schema with id `id` (fetched once, then from the cache).
    pub async fn schema(&self, id: &str) -> Result<Arc<EventSchema>> {
        if let Some(s) = self.schemas.lock().expect("schemas").get(id) {
            return Ok(s.clone());
        }
        let info = self
            .policy
            .call_as(Operation::new("salesforce.pubsub.get_schema"), || {
                let mut raw = self.raw.clone();
                let request = self.request(SchemaRequest {
                    schema_id: id.to_owned(),
                });
                async move {
                    raw.get_schema(request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| self.status_error(&s, &format!("schema {id}")))
                }
            })
            .await?;
        let schema = Arc::new(EventSchema::parse(id, info.schema_json)?);
        self.schemas
            .lock()
            .expect("schemas")
            .insert(id.to_owned(), schema.clone());
        Ok(schema)
    }

    /// Publish `events` (JSON objects, written in the topic's current schema) to
    /// `topic`; their replay ids, in order. `CreatedDate` (now) and `CreatedById` (the
    /// configured [user](PubSubConfig::user)) are filled in where an event lacks them.
    /// An event the bus refuses fails the call with its reason (the events before it
    /// were published). For many events at a high rate, use a
    /// [`publisher`](Self::publisher).
    ///
    /// # Errors
    /// A topic the user may not publish to ([`Forbidden`](ErrorKind::Forbidden)), an
    /// event that does not fit the schema ([`InvalidInput`](ErrorKind::InvalidInput),
    /// before anything is sent), an event refused by the bus
    /// ([`Rejected`](ErrorKind::Rejected)).
    pub async fn publish(&self, topic: &str, events: &[serde_json::Value]) -> Result<Vec<Vec<u8>>> {
        let schema = self.publishable(topic).await?;
        let produced = self.produce(&schema, events)?;
        let response = self
            .policy
            .call_as(Operation::new("salesforce.pubsub.publish"), || {
                let mut raw = self.raw.clone();
                let request = self.request(PublishRequest {
                    topic_name: topic.to_owned(),
                    events: produced.clone(),
                    auth_refresh: String::new(),
                });
                async move {
                    raw.publish(request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| self.status_error(&s, &format!("publish to {topic}")))
                }
            })
            .await?;
        response
            .results
            .into_iter()
            .map(|r| self.outcome(topic, r).result)
            .collect()
    }

    /// Open a publish stream to `topic` (`PublishStream`): batches are sent without
    /// waiting for the bus's answers, which come back as they are ready
    /// ([`Publisher`]).
    ///
    /// # Errors
    /// A topic the user may not publish to ([`Forbidden`](ErrorKind::Forbidden)) or that
    /// does not exist ([`NotFound`](ErrorKind::NotFound)).
    pub async fn publisher(&self, topic: &str) -> Result<Publisher> {
        let schema = self.publishable(topic).await?;
        let (requests, outbound) = mpsc::channel::<PublishRequest>(16);
        let mut raw = self.raw.clone();
        let inbound = raw
            .publish_stream(self.request(outbound))
            .await
            .map_err(|s| self.status_error(&s, &format!("publish stream to {topic}")))?
            .into_inner();
        Ok(Publisher {
            client: self.clone(),
            topic: topic.to_owned(),
            schema,
            requests: Some(requests),
            inbound,
            in_flight: std::collections::HashSet::new(),
            answered: VecDeque::new(),
        })
    }

    /// The schema of platform event topic `topic`, once the bus says the user may
    /// publish to it.
    async fn publishable(&self, topic: &str) -> Result<Arc<EventSchema>> {
        let info = self.topic(topic).await?;
        if !info.can_publish {
            return Err(Error::new(
                ErrorKind::Forbidden,
                format!("the event bus does not let this user publish to {topic}"),
            )
            .with_hint("publish platform events (/event/<Name>__e); change events come from record changes"));
        }
        self.schema(&info.schema_id).await
    }

    /// `events` as the bus takes them: encoded under `schema`, each with a fresh UUID as
    /// its id, the system fields filled in.
    fn produce(
        &self,
        schema: &EventSchema,
        events: &[serde_json::Value],
    ) -> Result<Vec<ProducerEvent>> {
        let fields = schema.field_names();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        events
            .iter()
            .map(|event| {
                let mut event = event.clone();
                if let Some(object) = event.as_object_mut() {
                    if fields.contains(&"CreatedDate") && object.get("CreatedDate").is_none_or(serde_json::Value::is_null) {
                        object.insert("CreatedDate".into(), now.into());
                    }
                    if fields.contains(&"CreatedById") && object.get("CreatedById").is_none_or(serde_json::Value::is_null) {
                        let user = self.user_id.as_ref().ok_or_else(|| {
                            Error::invalid_input("a platform event needs CreatedById: the event has none and no user is configured")
                                .with_hint("set PubSubConfig::user to the id of the token's user (005…), or give CreatedById in the event")
                        })?;
                        object.insert("CreatedById".into(), user.clone().into());
                    }
                }
                Ok(ProducerEvent {
                    id: uuid::Uuid::new_v4().to_string(),
                    schema_id: schema.id.clone(),
                    payload: schema.encode(&event)?,
                    headers: Vec::new(),
                })
            })
            .collect()
    }

    /// One event's outcome as the bus gave it.
    fn outcome(&self, topic: &str, result: PublishResult) -> Published {
        Published {
            result: match result.error {
                Some(e) => Err(Error::new(
                    ErrorKind::Rejected,
                    format!(
                        "the event bus refused event {} for {topic}: {}",
                        result.correlation_key,
                        self.scrubber.scrub(&e.msg)
                    ),
                )),
                None => Ok(result.replay_id),
            },
            correlation_key: result.correlation_key,
        }
    }

    /// Subscribe to `topic` from `from`, asking for `batch` events at a time (1 to
    /// [`MAX_BATCH`]): the next batch is asked for only once the stream's reader has
    /// taken the last one, so a slow reader slows the server down instead of filling
    /// memory. Events come decoded ([`PubSubEvent`]). The stream ends with an error if
    /// the server ends it; resume after the last replay id read.
    pub async fn subscribe(
        &self,
        topic: &str,
        from: ReplayFrom,
        batch: u32,
    ) -> Result<BoxStream<'static, Result<PubSubEvent>>> {
        let batch = batch.clamp(1, MAX_BATCH) as i32;
        let (mut requests, outbound) = mpsc::channel::<FetchRequest>(4);
        let (preset, replay_id) = match from {
            ReplayFrom::Latest => (ReplayPreset::Latest, Vec::new()),
            ReplayFrom::Earliest => (ReplayPreset::Earliest, Vec::new()),
            ReplayFrom::After(id) => (ReplayPreset::Custom, id),
        };
        requests
            .send(FetchRequest {
                topic_name: topic.to_owned(),
                replay_preset: preset as i32,
                replay_id,
                num_requested: batch,
                auth_refresh: String::new(),
            })
            .await
            .map_err(|_| Error::internal("the subscription's request stream closed"))?;
        let mut raw = self.raw.clone();
        let mut request = tonic::Request::new(outbound);
        *request.metadata_mut() = self.metadata.clone();
        let inbound = raw
            .subscribe(request)
            .await
            .map_err(|s| self.status_error(&s, &format!("subscribe to {topic}")))?
            .into_inner();
        let state = SubscriptionState::<Plain> {
            client: self.clone(),
            topic: topic.to_owned(),
            inbound,
            requests,
            buffered: VecDeque::new(),
            owed: batch,
            batch,
            committed: Arc::default(),
        };
        Ok(state.into_stream())
    }

    /// Subscribe through managed subscription `subscription` (its id or developer
    /// name): the bus keeps its position, moved by [`ManagedSubscription::commit`];
    /// events come `batch` at a time (1 to [`MAX_BATCH`]), with the same flow control as
    /// [`subscribe`](Self::subscribe).
    pub async fn managed_subscribe(
        &self,
        subscription: &str,
        batch: u32,
    ) -> Result<ManagedSubscription> {
        let batch = batch.clamp(1, MAX_BATCH) as i32;
        let (mut requests, outbound) = mpsc::channel::<ManagedFetchRequest>(4);
        // An id is 15 or 18 characters with key prefix 18x; anything else is a developer
        // name.
        let by_id = matches!(subscription.len(), 15 | 18)
            && subscription
                .get(..3)
                .is_some_and(|p| p.eq_ignore_ascii_case("18x"));
        requests
            .send(ManagedFetchRequest {
                subscription_id: if by_id {
                    subscription.to_owned()
                } else {
                    String::new()
                },
                developer_name: if by_id {
                    String::new()
                } else {
                    subscription.to_owned()
                },
                num_requested: batch,
                ..ManagedFetchRequest::default()
            })
            .await
            .map_err(|_| Error::internal("the subscription's request stream closed"))?;
        let mut raw = self.raw.clone();
        let mut request = tonic::Request::new(outbound);
        *request.metadata_mut() = self.metadata.clone();
        let inbound = raw
            .managed_subscribe(request)
            .await
            .map_err(|s| self.status_error(&s, &format!("managed subscription {subscription}")))?
            .into_inner();
        let committed: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let state = SubscriptionState::<Managed> {
            client: self.clone(),
            topic: subscription.to_owned(),
            inbound,
            requests: requests.clone(),
            buffered: VecDeque::new(),
            owed: batch,
            batch,
            committed: committed.clone(),
        };
        Ok(ManagedSubscription {
            events: state.into_stream(),
            requests,
            committed,
            commits: 0,
        })
    }

    fn status_error(&self, status: &tonic::Status, what: &str) -> Error {
        let message = self.scrubber.scrub(status.message());
        let kind = match status.code() {
            tonic::Code::Unauthenticated => ErrorKind::AuthExpired,
            tonic::Code::PermissionDenied => ErrorKind::Forbidden,
            tonic::Code::NotFound => ErrorKind::NotFound,
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                ErrorKind::InvalidInput
            }
            tonic::Code::ResourceExhausted => ErrorKind::RateLimited { retry_after: None },
            tonic::Code::Unavailable | tonic::Code::Aborted => ErrorKind::Unavailable,
            tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
            tonic::Code::Unimplemented => ErrorKind::Unsupported,
            _ => ErrorKind::Protocol,
        };
        let error = Error::new(
            kind,
            format!("Pub/Sub {what}: {:?}: {message}", status.code()),
        );
        match kind {
            ErrorKind::AuthExpired => {
                error.with_hint("the access token was refused: get a new one and connect again")
            }
            ErrorKind::InvalidInput if what.starts_with("subscribe") => error
                .with_hint("a replay id the bus no longer keeps: resume from ReplayFrom::Earliest"),
            _ => error,
        }
    }
}

/// The two kinds of subscription stream: `Subscribe` and `ManagedSubscribe`.
trait Feed: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// A request for `n` more events.
    fn more(n: i32) -> Self::Request;
    /// A response's events, the events still owed, and a commit's outcome.
    fn split(r: Self::Response) -> (Vec<ConsumerEvent>, i32, Option<CommitReplayResponse>);
}

struct Plain;

impl Feed for Plain {
    type Request = FetchRequest;
    type Response = FetchResponse;
    fn more(n: i32) -> FetchRequest {
        FetchRequest {
            num_requested: n,
            ..FetchRequest::default()
        }
    }
    fn split(r: FetchResponse) -> (Vec<ConsumerEvent>, i32, Option<CommitReplayResponse>) {
        (r.events, r.pending_num_requested, None)
    }
}

struct Managed;

impl Feed for Managed {
    type Request = ManagedFetchRequest;
    type Response = ManagedFetchResponse;
    fn more(n: i32) -> ManagedFetchRequest {
        ManagedFetchRequest {
            num_requested: n,
            ..ManagedFetchRequest::default()
        }
    }
    fn split(r: ManagedFetchResponse) -> (Vec<ConsumerEvent>, i32, Option<CommitReplayResponse>) {
        (r.events, r.pending_num_requested, r.commit_response)
    }
}

struct SubscriptionState<F: Feed> {
    client: PubSubClient,
    topic: String,
    inbound: tonic::Streaming<F::Response>,
    requests: mpsc::Sender<F::Request>,
    buffered: VecDeque<ConsumerEvent>,
    /// Events asked for and not yet received.
    owed: i32,
    batch: i32,
    /// The replay id the server last confirmed as committed (managed subscriptions).
    committed: Arc<Mutex<Option<Vec<u8>>>>,
}

impl<F: Feed> SubscriptionState<F> {
    fn into_stream(self) -> BoxStream<'static, Result<PubSubEvent>> {
        futures::stream::unfold(self, |mut state| async move {
            let next = state.next().await;
            next.map(|item| (item, state))
        })
        .boxed()
    }

    async fn next(&mut self) -> Option<Result<PubSubEvent>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Some(self.decode(event).await);
            }
            // Everything received has been read: ask for the next batch when nothing is
            // owed any more.
            if self.owed <= 0 {
                if self.requests.send(F::more(self.batch)).await.is_err() {
                    return Some(Err(Error::unavailable(format!(
                        "the subscription to {} closed",
                        self.topic
                    ))));
                }
                self.owed = self.batch;
            }
            match self.inbound.message().await {
                Ok(Some(response)) => {
                    let (events, pending, commit) = F::split(response);
                    self.owed = pending;
                    self.buffered.extend(events);
                    if let Some(commit) = commit {
                        if let Some(e) = commit.error {
                            return Some(Err(Error::new(
                                ErrorKind::Rejected,
                                format!(
                                    "the bus refused commit {} on {}: {}",
                                    commit.commit_request_id,
                                    self.topic,
                                    self.client.scrubber.scrub(&e.msg)
                                ),
                            )));
                        }
                        *self.committed.lock().expect("committed") = Some(commit.replay_id);
                    }
                }
                Ok(None) => return None,
                Err(status) => {
                    return Some(Err(self
                        .client
                        .status_error(&status, &format!("subscription to {}", self.topic))));
                }
            }
        }
    }

    async fn decode(&self, event: ConsumerEvent) -> Result<PubSubEvent> {
        let produced = event.event.ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "the server sent an event without its body",
            )
        })?;
        let schema = self.client.schema(&produced.schema_id).await?;
        Ok(PubSubEvent {
            topic: self.topic.clone(),
            replay_id: event.replay_id,
            id: produced.id,
            schema_id: produced.schema_id,
            payload: schema.decode(&produced.payload)?,
        })
    }
}

/// A managed subscription's stream of events (Salesforce keeps its position): read the
/// events, [`commit`](Self::commit) the replay id of the last one handled, and a new
/// subscription resumes after it — in this process or another.
pub struct ManagedSubscription {
    events: BoxStream<'static, Result<PubSubEvent>>,
    requests: mpsc::Sender<ManagedFetchRequest>,
    committed: Arc<Mutex<Option<Vec<u8>>>>,
    commits: u64,
}

impl std::fmt::Debug for ManagedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedSubscription")
            .field("commits", &self.commits)
            .finish_non_exhaustive()
    }
}

impl ManagedSubscription {
    /// Ask the bus to keep `replay_id` as the subscription's position. The bus answers
    /// on the event stream: [`committed`](Self::committed) shows the last confirmed
    /// commit once the stream has been read past the answer, and a refused commit comes
    /// out of the stream as an error.
    pub async fn commit(&mut self, replay_id: &[u8]) -> Result<()> {
        self.commits += 1;
        let request = ManagedFetchRequest {
            commit_replay_id_request: Some(CommitReplayRequest {
                commit_request_id: format!("commit-{}", self.commits),
                replay_id: replay_id.to_vec(),
            }),
            ..ManagedFetchRequest::default()
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| Error::unavailable("the managed subscription closed"))
    }

    /// The replay id the bus last confirmed as committed.
    pub fn committed(&self) -> Option<Vec<u8>> {
        self.committed.lock().expect("committed").clone()
    }
}

impl Stream for ManagedSubscription {
    type Item = Result<PubSubEvent>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.events.poll_next_unpin(cx)
    }
}

/// The outcome of one event sent on a [`Publisher`].
#[derive(Debug, Clone)]
pub struct Published {
    /// The event's id, as [`Publisher::send`] returned it.
    pub correlation_key: String,
    /// Its replay id, or why the bus refused it ([`Rejected`](ErrorKind::Rejected)).
    pub result: Result<Vec<u8>>,
}

/// A publish stream to one platform event topic: [`send`](Self::send) batches without
/// waiting, and read the bus's answers with [`next`](Self::next), [`flush`](Self::flush)
/// or [`close`](Self::close). The bus answers each batch when it is published, not
/// necessarily in the order sent: outcomes name their event by its correlation key.
///
/// The bus closes a stream that publishes nothing for 70 seconds; a closed stream makes
/// `send` and `next` fail with [`Unavailable`](ErrorKind::Unavailable), and a new
/// publisher is needed. Events whose outcome was not read before then may or may not
/// have been published.
///
/// ```no_run
/// # async fn run(client: connector_salesforce::pubsub::PubSubClient) -> moodbridge_core::Result<()> {
/// use serde_json::json;
/// let mut publisher = client.publisher("/event/Case_Update__e").await?;
/// for batch in 0..10 {
///     publisher.send(&[json!({"Case_Id__c": format!("500{batch}")})]).await?;
/// }
/// for published in publisher.close().await? {
///     let replay_id = published.result?;
///     println!("{} -> {replay_id:?}", published.correlation_key);
/// }
/// # Ok(()) }
/// ```
pub struct Publisher {
    client: PubSubClient,
    topic: String,
    schema: Arc<EventSchema>,
    requests: Option<mpsc::Sender<PublishRequest>>,
    inbound: tonic::Streaming<PublishResponse>,
    /// Events sent and not yet answered, by correlation key.
    in_flight: std::collections::HashSet<String>,
    /// Outcomes received and not yet read.
    answered: VecDeque<Published>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Send `events` (JSON objects in the topic's schema; system fields filled in as by
    /// [`PubSubClient::publish`]) as one batch, without waiting for the bus: their
    /// correlation keys, in order.
    ///
    /// # Errors
    /// An event that does not fit the schema ([`InvalidInput`](ErrorKind::InvalidInput):
    /// nothing of the batch is sent), a closed stream ([`Unavailable`](ErrorKind::Unavailable)).
    pub async fn send(&mut self, events: &[serde_json::Value]) -> Result<Vec<String>> {
        let produced = self.client.produce(&self.schema, events)?;
        let keys: Vec<String> = produced.iter().map(|e| e.id.clone()).collect();
        let requests = self
            .requests
            .as_mut()
            .ok_or_else(|| Error::internal("the publisher was closed"))?;
        let sent = requests
            .send(PublishRequest {
                topic_name: self.topic.clone(),
                events: produced,
                auth_refresh: String::new(),
            })
            .await;
        if sent.is_err() {
            // The bus ended the stream: its status, after what it sent before, says why.
            loop {
                match self.inbound.message().await {
                    Ok(Some(response)) => self.take(response),
                    Ok(None) => {
                        return Err(Error::unavailable(format!(
                            "the publish stream to {} closed",
                            self.topic
                        )));
                    }
                    Err(status) => {
                        return Err(self
                            .client
                            .status_error(&status, &format!("publish stream to {}", self.topic)));
                    }
                }
            }
        }
        self.in_flight.extend(keys.iter().cloned());
        Ok(keys)
    }

    /// Keep a response's outcomes (a keepalive has none).
    fn take(&mut self, response: PublishResponse) {
        for result in response.results {
            self.in_flight.remove(&result.correlation_key);
            self.answered
                .push_back(self.client.outcome(&self.topic, result));
        }
    }

    /// Events sent whose outcome has not arrived yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The next outcome: one already received, or the next to arrive; `None` when every
    /// event sent has been answered and read.
    ///
    /// # Errors
    /// The stream ended by the bus ([`Unavailable`](ErrorKind::Unavailable) and others,
    /// from its status) while events were in flight.
    pub async fn next(&mut self) -> Option<Result<Published>> {
        loop {
            if let Some(outcome) = self.answered.pop_front() {
                return Some(Ok(outcome));
            }
            if self.in_flight.is_empty() {
                return None;
            }
            match self.inbound.message().await {
                // A keepalive has no results.
                Ok(Some(response)) => self.take(response),
                Ok(None) => {
                    return Some(Err(Error::unavailable(format!(
                        "the publish stream to {} ended with {} events unanswered",
                        self.topic,
                        self.in_flight.len()
                    ))));
                }
                Err(status) => {
                    return Some(Err(self.client.status_error(
                        &status,
                        &format!("publish stream to {}", self.topic),
                    )));
                }
            }
        }
    }

    /// Wait for the outcome of every event sent so far: those not read yet, in the order
    /// they arrived.
    ///
    /// # Errors
    /// As [`next`](Self::next).
    pub async fn flush(&mut self) -> Result<Vec<Published>> {
        let mut out = Vec::new();
        while let Some(outcome) = self.next().await {
            out.push(outcome?);
        }
        Ok(out)
    }

    /// [`flush`](Self::flush), then end the stream.
    ///
    /// # Errors
    /// As [`next`](Self::next).
    pub async fn close(mut self) -> Result<Vec<Published>> {
        let out = self.flush().await;
        self.requests = None;
        out
    }
}
