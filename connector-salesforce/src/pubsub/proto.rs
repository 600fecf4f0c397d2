//! The Pub/Sub API's messages (protobuf package `eventbus.v1`), written from Salesforce's
//! published API reference: message and field names and numbers are the protocol's. The
//! gRPC client and server of service `eventbus.v1.PubSub` are generated from them at
//! build time (`build.rs`, no `.proto` compiler needed).

#![allow(missing_docs, clippy::doc_markdown)]

/// A topic and what the caller may do with it (`GetTopic`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopicInfo {
    /// The topic's name (`/data/AccountChangeEvent`, `/event/Case_Update__e`).
    #[prost(string, tag = "1")]
    pub topic_name: String,
    /// The org's GUID.
    #[prost(string, tag = "2")]
    pub tenant_guid: String,
    /// Whether the caller may publish to it.
    #[prost(bool, tag = "3")]
    pub can_publish: bool,
    /// Whether the caller may subscribe to it.
    #[prost(bool, tag = "4")]
    pub can_subscribe: bool,
    /// The id of the topic's current schema.
    #[prost(string, tag = "5")]
    pub schema_id: String,
    /// The call's id, for support.
    #[prost(string, tag = "6")]
    pub rpc_id: String,
}

/// `GetTopic`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopicRequest {
    /// The topic.
    #[prost(string, tag = "1")]
    pub topic_name: String,
}

/// A header of an event (reserved by Salesforce for tracing).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventHeader {
    /// Its key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Its value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// An event as published: its payload is Avro binary under schema `schema_id`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProducerEvent {
    /// The publisher's id for it, or a generated one.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The id (fingerprint) of the schema the payload is written in.
    #[prost(string, tag = "2")]
    pub schema_id: String,
    /// The Avro binary payload.
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// Headers.
    #[prost(message, repeated, tag = "4")]
    pub headers: Vec<EventHeader>,
}

/// An event as delivered to a subscriber: the event and its replay id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConsumerEvent {
    /// The event.
    #[prost(message, optional, tag = "1")]
    pub event: Option<ProducerEvent>,
    /// Its replay id (opaque bytes): where a new subscription resumes after it.
    #[prost(bytes = "vec", tag = "2")]
    pub replay_id: Vec<u8>,
}

/// The outcome of publishing one event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishResult {
    /// The event's replay id, when it was published.
    #[prost(bytes = "vec", tag = "1")]
    pub replay_id: Vec<u8>,
    /// Why it was not.
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
    /// The event's `id` as published.
    #[prost(string, tag = "3")]
    pub correlation_key: String,
}

/// An error of a call.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    /// Its code.
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    /// Its message.
    #[prost(string, tag = "2")]
    pub msg: String,
}

/// The codes of [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    /// Anything else.
    Unknown = 0,
    /// A publish failed.
    Publish = 1,
    /// A commit of a managed subscription failed for good.
    Commit = 2,
}

/// Where a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ReplayPreset {
    /// After the newest event: only new ones.
    Latest = 0,
    /// At the oldest event kept.
    Earliest = 1,
    /// After the event of the request's `replay_id`.
    Custom = 2,
}

/// A request on a `Subscribe` stream: the first names the topic and where to start; each
/// asks for `num_requested` more events (flow control).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchRequest {
    /// The topic (first request; later ones may omit it, or must repeat it).
    #[prost(string, tag = "1")]
    pub topic_name: String,
    /// Where to start (first request only).
    #[prost(enumeration = "ReplayPreset", tag = "2")]
    pub replay_preset: i32,
    /// The replay id to start after, with [`ReplayPreset::Custom`].
    #[prost(bytes = "vec", tag = "3")]
    pub replay_id: Vec<u8>,
    /// How many more events the client can take.
    #[prost(int32, tag = "4")]
    pub num_requested: i32,
    /// Reserved by Salesforce.
    #[prost(string, tag = "5")]
    pub auth_refresh: String,
}

/// A response on a `Subscribe` stream: events, or none (a keepalive), with the latest
/// replay id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchResponse {
    /// The events.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<ConsumerEvent>,
    /// The newest replay id of the subscription: where to resume even after a batch
    /// without events.
    #[prost(bytes = "vec", tag = "2")]
    pub latest_replay_id: Vec<u8>,
    /// The call's id, for support.
    #[prost(string, tag = "3")]
    pub rpc_id: String,
    /// Events still owed to the client from its requests.
    #[prost(int32, tag = "4")]
    pub pending_num_requested: i32,
}

/// `GetSchema`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaRequest {
    /// The schema's id.
    #[prost(string, tag = "1")]
    pub schema_id: String,
}

/// A schema: Avro, as JSON.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaInfo {
    /// The Avro schema, JSON.
    #[prost(string, tag = "1")]
    pub schema_json: String,
    /// Its id.
    #[prost(string, tag = "2")]
    pub schema_id: String,
    /// The call's id, for support.
    #[prost(string, tag = "3")]
    pub rpc_id: String,
}

/// `Publish`'s request (and each of a `PublishStream`'s).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishRequest {
    /// The topic.
    #[prost(string, tag = "1")]
    pub topic_name: String,
    /// The events.
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<ProducerEvent>,
    /// Reserved by Salesforce.
    #[prost(string, tag = "3")]
    pub auth_refresh: String,
}

/// `Publish`'s response: one result per event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishResponse {
    /// The results, in the request's order.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<PublishResult>,
    /// The schema the events were published with.
    #[prost(string, tag = "2")]
    pub schema_id: String,
    /// The call's id, for support.
    #[prost(string, tag = "3")]
    pub rpc_id: String,
}

/// A request on a `ManagedSubscribe` stream: the first names the subscription; each may
/// ask for more events and commit a replay id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ManagedFetchRequest {
    /// The managed subscription's id.
    #[prost(string, tag = "1")]
    pub subscription_id: String,
    /// Or its developer name.
    #[prost(string, tag = "2")]
    pub developer_name: String,
    /// How many more events the client can take.
    #[prost(int32, tag = "3")]
    pub num_requested: i32,
    /// Reserved by Salesforce.
    #[prost(string, tag = "4")]
    pub auth_refresh: String,
    /// A replay id to commit.
    #[prost(message, optional, tag = "5")]
    pub commit_replay_id_request: Option<CommitReplayRequest>,
}

/// A response on a `ManagedSubscribe` stream: events, or a commit's outcome.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ManagedFetchResponse {
    /// The events.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<ConsumerEvent>,
    /// The newest replay id of the subscription.
    #[prost(bytes = "vec", tag = "2")]
    pub latest_replay_id: Vec<u8>,
    /// The call's id, for support.
    #[prost(string, tag = "3")]
    pub rpc_id: String,
    /// Events still owed to the client.
    #[prost(int32, tag = "4")]
    pub pending_num_requested: i32,
    /// The outcome of a commit.
    #[prost(message, optional, tag = "5")]
    pub commit_response: Option<CommitReplayResponse>,
}

/// A commit of a managed subscription's position.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommitReplayRequest {
    /// The client's id for this commit.
    #[prost(string, tag = "1")]
    pub commit_request_id: String,
    /// The replay id to commit.
    #[prost(bytes = "vec", tag = "2")]
    pub replay_id: Vec<u8>,
}

/// The outcome of a commit (several commits may be answered by one).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommitReplayResponse {
    /// The commit answered.
    #[prost(string, tag = "1")]
    pub commit_request_id: String,
    /// The replay id committed.
    #[prost(bytes = "vec", tag = "2")]
    pub replay_id: Vec<u8>,
    /// Why it failed.
    #[prost(message, optional, tag = "3")]
    pub error: Option<Error>,
    /// When the server took it, ms since the epoch.
    #[prost(int64, tag = "4")]
    pub process_time: i64,
}

include!(concat!(env!("OUT_DIR"), "/eventbus.v1.PubSub.rs"));
