//! Policies as layers over the contracts, OpenDAL-style: an integration wrapped in a
//! policy is still a [`PlatformIntegration`], [`SyncSource`], [`SyncSink`] or
//! [`CredentialStore`], with every remote call of the contract going through the policy.
//!
//! ```
//! use moodbridge_core::resilience::LayerExt;
//! use moodbridge_core::{Policy, RetryConfig, SyncSink};
//! # use async_trait::async_trait;
//! # use moodbridge_core::{RecordBatch, Result, WriteMode, WriteReport};
//! # struct Warehouse;
//! # #[async_trait]
//! # impl SyncSink for Warehouse {
//! #     async fn write(&self, _: &RecordBatch, _: &WriteMode) -> Result<WriteReport> { Ok(WriteReport::default()) }
//! # }
//!
//! let policy = Policy::builder("snowflake:warehouse").retry(RetryConfig::default()).build();
//! let sink = Warehouse.layer(policy);
//! fn takes_a_sink(_: &dyn SyncSink) {}
//! takes_a_sink(&sink);
//! ```
//!
//! Which calls are retried follows the operation's idempotency: reads, discovery, upserts,
//! flushes and deletes are idempotent; appends, overwrites and secret `put`s (each makes a
//! new version) are not, so a timeout of those is never retried.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

use super::{CircuitState, Operation, Policy};
use crate::catalog::{Catalog, StreamDescriptor};
use crate::credential::{CredentialStore, Secret, SecretMetadata, SecretVersion};
use crate::error::Result;
use crate::integration::{Capabilities, HealthReport, HealthStatus, PlatformIntegration};
use crate::record::RecordBatch;
use crate::rows::RowBatch;
use crate::sync::{ReadRequest, SourceStream, SyncSink, SyncSource, WriteMode, WriteReport};

/// Something that wraps a `T` into a decorated `T`.
pub trait Layer<T> {
    /// The wrapped type.
    type Output;

    /// Wrap `inner`.
    fn layer(&self, inner: T) -> Self::Output;
}

impl<T> Layer<T> for Policy {
    type Output = Guarded<T>;

    fn layer(&self, inner: T) -> Guarded<T> {
        Guarded {
            inner,
            policy: self.clone(),
        }
    }
}

/// `.layer(…)` on anything.
pub trait LayerExt: Sized {
    /// Wrap `self` in `layer`.
    fn layer<L: Layer<Self>>(self, layer: L) -> L::Output {
        Layer::layer(&layer, self)
    }
}

impl<T> LayerExt for T {}

/// A contract implementation whose calls go through a [`Policy`].
#[derive(Debug, Clone)]
pub struct Guarded<T> {
    inner: T,
    policy: Policy,
}

impl<T> Guarded<T> {
    /// The wrapped value.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

#[async_trait]
impl<T: PlatformIntegration> PlatformIntegration for Guarded<T> {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn kind(&self) -> &str {
        self.inner.kind()
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        self.policy
            .call_as("capabilities", || self.inner.capabilities())
            .await
    }

    /// The inner health check, not retried (health must report the platform as it is),
    /// made worse by the breaker's state: an open breaker reports down without calling the
    /// platform; a half-open one reports at best degraded.
    async fn health_check(&self) -> HealthReport {
        let state = self.policy.circuit_breaker().map(|b| b.state());
        if let Some(s @ (CircuitState::Open | CircuitState::ForcedOpen)) = state {
            return HealthReport::new(
                HealthStatus::Down,
                Duration::ZERO,
                format!("circuit breaker {s}: calls are being rejected"),
            );
        }
        let mut report = self.inner.health_check().await;
        if state == Some(CircuitState::HalfOpen) && report.status == HealthStatus::Up {
            report.status = HealthStatus::Degraded;
            report.detail = format!("{}; circuit breaker half-open", report.detail);
        }
        report
    }
}

#[async_trait]
impl<T: SyncSource> SyncSource for Guarded<T> {
    async fn discover(&self) -> Result<Catalog> {
        self.policy
            .call_as("discover", || self.inner.discover())
            .await
    }

    async fn discover_streams(&self, names: &[&str]) -> Result<Catalog> {
        self.policy
            .call_as("discover", || self.inner.discover_streams(names))
            .await
    }

    /// Opening the read goes through the policy; the messages of the stream then flow
    /// unguarded (a source retries its own page fetches through its own policy).
    async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
        self.policy
            .call_as("read", || self.inner.read(request.clone()))
            .await
    }

    async fn count_hint(&self, request: &ReadRequest) -> Result<Option<u64>> {
        self.policy
            .call_as("count_hint", || self.inner.count_hint(request))
            .await
    }
}

/// A sink write as a policy sees it: not retried after a timeout unless `mode` is
/// idempotent (the sink may have written).
pub(crate) fn write_operation(mode: &WriteMode) -> Operation {
    let op = Operation::new("write");
    if mode.is_idempotent() {
        op
    } else {
        op.non_idempotent()
    }
}

#[async_trait]
impl<T: SyncSink> SyncSink for Guarded<T> {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        self.policy
            .call_as("begin_stream", || self.inner.begin_stream(stream, mode))
            .await
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        self.policy
            .call_as(write_operation(mode), || self.inner.write(batch, mode))
            .await
    }

    async fn write_rows(&self, rows: &RowBatch, mode: &WriteMode) -> Result<WriteReport> {
        self.policy
            .call_as(write_operation(mode), || self.inner.write_rows(rows, mode))
            .await
    }

    async fn flush(&self, stream: &str) -> Result<()> {
        self.policy
            .call_as("flush", || self.inner.flush(stream))
            .await
    }

    async fn commit_stream(&self, stream: &str, mode: &WriteMode) -> Result<()> {
        self.policy
            .call_as(Operation::new("commit_stream").non_idempotent(), || {
                self.inner.commit_stream(stream, mode)
            })
            .await
    }

    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        self.policy
            .call_as("delete", || self.inner.delete(batch, key))
            .await
    }

    async fn soft_delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        self.policy
            .call_as("soft_delete", || self.inner.soft_delete(batch, key))
            .await
    }
}

#[async_trait]
impl<T: CredentialStore> CredentialStore for Guarded<T> {
    async fn get(&self, key: &str) -> Result<Secret> {
        self.policy
            .call_as("secret.get", || self.inner.get(key))
            .await
    }

    async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret> {
        self.policy
            .call_as("secret.get_version", || {
                self.inner.get_version(key, version)
            })
            .await
    }

    async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        self.policy
            .call_as(Operation::new("secret.put").non_idempotent(), || {
                self.inner.put(key, value.clone())
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.policy
            .call_as("secret.delete", || self.inner.delete(key))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>> {
        self.policy
            .call_as("secret.list", || self.inner.list(prefix))
            .await
    }

    async fn retire(&self, key: &str, keep_from: &SecretVersion) -> Result<usize> {
        self.policy
            .call_as("secret.retire", || self.inner.retire(key, keep_from))
            .await
    }

    fn can_stage(&self) -> bool {
        self.inner.can_stage()
    }

    async fn stage(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        self.policy
            .call_as(Operation::new("secret.stage").non_idempotent(), || {
                self.inner.stage(key, value.clone())
            })
            .await
    }

    async fn promote(&self, key: &str, version: &SecretVersion) -> Result<()> {
        self.policy
            .call_as("secret.promote", || self.inner.promote(key, version))
            .await
    }
}
