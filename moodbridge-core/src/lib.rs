//! # moodbridge-core
//!
//! The contracts, error model, resilience policies and configuration that every
//! MoodBridge connector shares. Hosts normally depend on the umbrella crate `moodbridge`,
//! which re-exports this crate and the connectors enabled by its features.
//!
//! - [`PlatformIntegration`], [`SyncSource`], [`SyncSink`], [`CredentialStore`] — the
//!   contracts ([`integration`], [`sync`], [`credential`]), with the [`Record`],
//!   [`Catalog`] and [`Checkpoint`] types they exchange;
//! - [`Error`] — one error type with a [`kind`](Error::kind) and a
//!   [`status`](Error::status) that drive retries ([`error`]);
//! - [`Policy`] — timeout, retry, circuit breaker, rate limiter, bulkhead around any call,
//!   also usable as a layer over the contracts ([`resilience`]);
//! - [`SdkConfig`] and [`Registry`] — integrations built by kind from TOML, with validation
//!   that reports every problem at once and secrets only as references ([`config`],
//!   [`registry`]); [`host::Host`] builds a whole config file — integrations, pipelines
//!   named by integration id, the state store — and runs its pipelines;
//! - [`state`] — the durable state of the sync engine: runs, checkpoints, a hash-chained
//!   audit log (SQLite backend with the default `sqlite` feature);
//! - [`engine`] — the sync engine: source → mapping → validation → sink per stream, with
//!   checkpoints, dead letters, audit and rollback, progress events;
//! - [`storage`] — the [`ObjectStore`] capability (S3, Azure Blob, local filesystem) and
//!   the embedded [`LocalObjectStore`](storage::LocalObjectStore);
//! - [`queue`] — the [`MessageQueue`](queue::MessageQueue) capability (SQS, Azure queues,
//!   the embedded queue);
//! - [`observe`] — correlation ids and the metric names (see `docs/telemetry.md`).
//!
//! ```
//! use moodbridge_core::{Error, ErrorKind, Policy, RetryConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let policy = Policy::builder("salesforce:prod").retry(RetryConfig::default()).build();
//! let err = policy
//!     .call_as("salesforce.sobject_retrieve", || async { Err::<(), _>(Error::not_found("no Case 500xx")) })
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::NotFound); // permanent: not retried
//! assert_eq!(err.operation(), Some("salesforce.sobject_retrieve"));
//! # });
//! ```

pub mod catalog;
pub mod config;
pub mod credential;
pub mod engine;
pub mod error;
pub mod host;
pub mod integration;
pub mod lineage;
pub mod observe;
pub mod queue;
pub mod raw;
pub mod record;
pub mod redact;
pub mod registry;
pub mod resilience;
pub mod rotation;
pub mod rows;
pub mod state;
pub mod storage;
pub mod sync;
// Validation is below both `config` and `resilience` (each validates its settings);
// its public path is `config`.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod validate;

pub use catalog::{Catalog, FieldDescriptor, FieldType, StreamDescriptor, SyncMode};
pub use config::{IntegrationConfig, SdkConfig, SecretRef};
pub use credential::{CredentialStore, Secret, SecretMetadata, SecretVersion};
pub use error::{Error, ErrorKind, ErrorStatus, Result};
pub use integration::{Capabilities, Capability, HealthReport, HealthStatus, PlatformIntegration};
pub use record::{Record, RecordBatch, RecordKey};
pub use registry::{IntegrationFactory, Registry};
pub use resilience::{
    CircuitBreaker, CircuitBreakerConfig, CircuitState, Operation, Policy, PolicyConfig,
    RetryConfig, SlowCallConfig,
};
pub use rows::{Cell, Column, ColumnKind, Row, RowBatch};
pub use storage::{ObjectKey, ObjectStore, ObjectStoreExt};
pub use sync::{
    Checkpoint, DELETED, DELETED_AT, FailureKind, ReadRequest, RecordFailure, RecordOutcome,
    SourceMessage, SourceStream, SyncSink, SyncSource, WriteAction, WriteMode, WriteReport,
};
