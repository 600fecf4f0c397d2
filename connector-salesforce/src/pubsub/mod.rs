//! The Pub/Sub API (feature `pubsub`): Salesforce's gRPC streaming API for change events
//! and platform events, with Avro payloads.
//!
//! - [`PubSubClient`]: topics, schemas (cached by id), [`subscribe`](PubSubClient::subscribe)
//!   with flow control (`num_requested`) and replay (latest, earliest, after a replay id),
//!   [`managed_subscribe`](PubSubClient::managed_subscribe) with commits kept by the bus,
//!   [`publish`](PubSubClient::publish), and a [`Publisher`] over `PublishStream` for
//!   batches sent without waiting.
//! - [`EventSchema`]: Avro payloads decoded to JSON (and encoded for publishing), with a
//!   change event header's bitmap fields (`changedFields`, `nulledFields`,
//!   `diffFields`) turned into field names ([`expand_bitmap`]).
//! - [`PubSubIngest`]: a topic into the durable event log, each event once, resuming after
//!   the last replay id appended.
//! - [`proto`]: the API's messages, and its gRPC client and server (`pub_sub_server`,
//!   which the local sandbox serves).

mod avro;
mod client;
mod ingest;
pub mod proto;

pub use avro::{EventSchema, expand_bitmap};
pub use client::{
    DEFAULT_ENDPOINT, MAX_BATCH, ManagedSubscription, PubSubClient, PubSubConfig, PubSubEvent,
    Published, Publisher, ReplayFrom,
};
pub use ingest::{INGEST_PARTITION, PubSubIngest};
