//! # connector-salesforce
//!
//! The Salesforce connector of MoodBridge Integrations. Hosts enable it through the
//! umbrella crate's `salesforce` feature (`moodbridge::salesforce`).
//!
//! - [`config`] and [`integration`] — kind `salesforce`: typed settings, and the factory
//!   that builds an org from them as one integration (source and sink);
//! - [`client`] — the REST client: token manager, instance allow-list, API version
//!   discovery, query streams that follow `nextRecordsUrl` lazily, sObject CRUD and
//!   upsert, limits — every call through a core `Policy`;
//! - [`bulk`] — Bulk API 2.0: ingest of record streams of any size (spooled to disk,
//!   split across parallel jobs, per-record outcomes) and streamed query results;
//! - [`instance`] — where a bearer token may be sent (SSRF guard);
//! - [`error`] — Salesforce's error arrays mapped into the SDK's one error model;
//! - [`soql`] — a typed SOQL builder whose every value is escaped and every name checked;
//! - [`streaming`] — Change Data Capture and PushTopic events over CometD long polling,
//!   with replay ids kept in a cursor store;
//! - [`sync`] — Salesforce objects as the sync engine's `SyncSource` / `SyncSink`
//!   (REST below the bulk threshold, Bulk API 2.0 above it);
//!
//! The local Salesforce-compatible server the tests and examples run against is its own
//! crate, `salesforce-sandbox` (`moodbridge::salesforce::sandbox` with the umbrella's
//! feature `sandbox`): this crate holds no server code.
//!
//! Hosts name the few types they use from the crate root: [`SalesforceClient`],
//! [`SalesforceFactory`], [`SalesforceSettings`], [`KIND`].
//!
//! ```
//! use connector_salesforce::soql::{Soql, field};
//! let q = Soql::select(["Id"]).from("Account").filter(field("Name").eq("Acme")).build().unwrap();
//! assert_eq!(q, "SELECT Id FROM Account WHERE Name = 'Acme'");
//! ```

pub mod bulk;
pub mod client;
pub mod config;
pub mod error;
pub mod instance;
pub mod integration;
#[cfg(feature = "pubsub")]
pub mod pubsub;
pub mod soql;
pub mod streaming;
pub mod sync;

pub use client::SalesforceClient;
pub use config::SalesforceSettings;
pub use integration::{KIND, SalesforceFactory, SalesforceIntegration};
