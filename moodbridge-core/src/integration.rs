//! [`PlatformIntegration`]: what every connector instance is — an id, a kind, a set of
//! capabilities, and a health check.
//!
//! Callers check [`Capabilities`], not concrete types (as OpenDAL callers check an
//! operator's capability). The contracts an integration implements — [`SyncSource`],
//! [`SyncSink`], [`CredentialStore`], [`ObjectStore`](crate::ObjectStore), or any trait a
//! connector defines later — are handed out by a typed lookup: the integration lists them
//! in [`PlatformIntegration::interfaces`], and a caller asks for one by its trait object
//! type (`interfaces.get::<dyn SyncSource>()`). Core does not change when a new contract
//! appears.
//!
//! [`SyncSource`]: crate::SyncSource
//! [`SyncSink`]: crate::SyncSink
//! [`CredentialStore`]: crate::CredentialStore

use std::any::{Any, TypeId};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One thing an integration can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Capability {
    /// Read records.
    Read,
    /// Write records.
    Write,
    /// Bulk (asynchronous, large-volume) reads or writes.
    Bulk,
    /// Incremental reads by a cursor.
    Incremental,
    /// A push stream of change events.
    ChangeStream,
    /// Webhook delivery.
    Webhooks,
    /// Object (blob) storage.
    ObjectStorage,
    /// Message queues or topics.
    Messaging,
    /// Secret storage.
    Secrets,
    /// Ad-hoc queries (SOQL, SQL).
    Query,
    /// Orchestration of jobs or pipelines.
    JobOrchestration,
}

/// The set of [`Capability`]s of an integration.
///
/// ```
/// use moodbridge_core::{Capabilities, Capability};
///
/// let caps: Capabilities = [Capability::Read, Capability::Incremental].into_iter().collect();
/// assert!(caps.supports(Capability::Incremental));
/// assert!(!caps.supports(Capability::Write));
/// assert!(caps.supports_all(&[Capability::Read, Capability::Incremental]));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capabilities(BTreeSet<Capability>);

impl Capabilities {
    /// No capabilities.
    pub fn none() -> Self {
        Self::default()
    }

    /// Add a capability.
    pub fn with(mut self, capability: Capability) -> Self {
        self.0.insert(capability);
        self
    }

    /// Whether `capability` is in the set.
    pub fn supports(&self, capability: Capability) -> bool {
        self.0.contains(&capability)
    }

    /// Whether every one of `capabilities` is in the set.
    pub fn supports_all(&self, capabilities: &[Capability]) -> bool {
        capabilities.iter().all(|c| self.0.contains(c))
    }

    /// The capabilities, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = Capability> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<T: IntoIterator<Item = Capability>>(iter: T) -> Self {
        Capabilities(iter.into_iter().collect())
    }
}

/// Overall health of an integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Working normally.
    Up,
    /// Working, but slowly, partly, or close to a limit.
    Degraded,
    /// Not working.
    Down,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Up => "up",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Down => "down",
        })
    }
}

/// The result of a health check.
///
/// ```
/// use moodbridge_core::{Error, HealthReport, HealthStatus};
/// use std::time::Duration;
///
/// let down = HealthReport::from_result(Duration::from_millis(12), Err::<(), _>(Error::unavailable("503")));
/// assert_eq!(down.status, HealthStatus::Down);
/// assert!(down.detail.contains("503"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The status.
    pub status: HealthStatus,
    /// How long the check took.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// A human-readable detail (API version, remaining quota, the error).
    pub detail: String,
    /// When the check ran.
    #[serde(with = "humantime_serde")]
    pub checked_at: SystemTime,
}

impl HealthReport {
    /// A report with status `status`.
    pub fn new(status: HealthStatus, latency: Duration, detail: impl Into<String>) -> Self {
        HealthReport {
            status,
            latency,
            detail: detail.into(),
            checked_at: SystemTime::now(),
        }
    }

    /// Up when `result` is `Ok`, down with the error as detail otherwise.
    pub fn from_result<T>(latency: Duration, result: Result<T>) -> Self {
        match result {
            Ok(_) => Self::new(HealthStatus::Up, latency, "ok"),
            Err(e) => Self::new(HealthStatus::Down, latency, e.to_string()),
        }
    }
}

/// A connector instance: `salesforce:prod`, `s3:documents`, `snowflake:warehouse`.
///
/// ```
/// use async_trait::async_trait;
/// use moodbridge_core::{Capabilities, Capability, HealthReport, HealthStatus, PlatformIntegration, Result};
/// use std::time::Duration;
///
/// struct Echo;
///
/// #[async_trait]
/// impl PlatformIntegration for Echo {
///     fn id(&self) -> &str { "echo:local" }
///     fn kind(&self) -> &str { "echo" }
///     async fn capabilities(&self) -> Result<Capabilities> {
///         Ok(Capabilities::none().with(Capability::Read))
///     }
///     async fn health_check(&self) -> HealthReport {
///         HealthReport::new(HealthStatus::Up, Duration::ZERO, "ok")
///     }
/// }
/// ```
#[async_trait]
pub trait PlatformIntegration: Send + Sync {
    /// The instance id, unique in a registry: `"<kind>:<name>"`.
    fn id(&self) -> &str;

    /// The connector kind (`"salesforce"`, `"s3"` …).
    fn kind(&self) -> &str;

    /// What this instance can do. May call the platform (API version, org limits).
    async fn capabilities(&self) -> Result<Capabilities>;

    /// Check the platform is reachable and usable. Never fails: problems are reported as
    /// [`HealthStatus::Down`] or [`HealthStatus::Degraded`] with a detail.
    async fn health_check(&self) -> HealthReport;

    /// The contracts this integration implements, for a typed lookup
    /// ([`Interfaces::get`]). The default is none.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use async_trait::async_trait;
    /// use moodbridge_core::integration::Interfaces;
    /// use moodbridge_core::{Capabilities, HealthReport, HealthStatus, ObjectStore, PlatformIntegration, Result, SyncSink};
    /// use moodbridge_core::testing::MemorySink;
    /// # use std::time::Duration;
    ///
    /// struct Warehouse { sink: Arc<MemorySink> }
    ///
    /// #[async_trait]
    /// impl PlatformIntegration for Warehouse {
    ///     fn id(&self) -> &str { "warehouse:main" }
    ///     fn kind(&self) -> &str { "warehouse" }
    ///     async fn capabilities(&self) -> Result<Capabilities> { Ok(Capabilities::none()) }
    ///     async fn health_check(&self) -> HealthReport { HealthReport::new(HealthStatus::Up, Duration::ZERO, "ok") }
    ///     fn interfaces(self: Arc<Self>) -> Interfaces {
    ///         Interfaces::new().with::<dyn SyncSink>(self.sink.clone())
    ///     }
    /// }
    ///
    /// let warehouse = Arc::new(Warehouse { sink: Arc::new(MemorySink::new()) });
    /// let interfaces = warehouse.interfaces();
    /// assert!(interfaces.get::<dyn SyncSink>().is_some());
    /// assert!(interfaces.get::<dyn ObjectStore>().is_none());
    /// ```
    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new()
    }
}

/// The contracts an integration implements, looked up by their trait object type.
///
/// Each entry is an `Arc<dyn Trait>` (or an `Arc` of any `'static` type); a lookup by
/// another type finds nothing. See [`PlatformIntegration::interfaces`].
#[derive(Default, Clone)]
pub struct Interfaces {
    entries: Vec<(TypeId, &'static str, Arc<dyn Any + Send + Sync>)>,
}

impl Interfaces {
    /// No interfaces.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `value` as an implementation of `T` (replacing an earlier one).
    #[must_use]
    pub fn with<T: ?Sized + Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        let id = TypeId::of::<Arc<T>>();
        self.entries.retain(|(t, _, _)| *t != id);
        self.entries
            .push((id, std::any::type_name::<T>(), Arc::new(value)));
        self
    }

    /// The implementation of `T`, if there is one.
    pub fn get<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let id = TypeId::of::<Arc<T>>();
        self.entries
            .iter()
            .find(|(t, _, _)| *t == id)
            .and_then(|(_, _, v)| v.downcast_ref::<Arc<T>>())
            .cloned()
    }

    /// Whether there is an implementation of `T`.
    pub fn has<T: ?Sized + Send + Sync + 'static>(&self) -> bool {
        let id = TypeId::of::<Arc<T>>();
        self.entries.iter().any(|(t, _, _)| *t == id)
    }

    /// The type names of the interfaces (for messages), in the order added.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(_, n, _)| short_type_name(n))
    }
}

impl fmt::Debug for Interfaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// `dyn moodbridge_core::sync::SyncSink` → `SyncSink`.
fn short_type_name(name: &'static str) -> &'static str {
    let name = name.strip_prefix("dyn ").unwrap_or(name);
    name.rsplit("::").next().unwrap_or(name)
}

/// A shared integration is an integration.
#[async_trait]
impl<T: PlatformIntegration + ?Sized> PlatformIntegration for Arc<T> {
    fn id(&self) -> &str {
        (**self).id()
    }

    fn kind(&self) -> &str {
        (**self).kind()
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        (**self).capabilities().await
    }

    async fn health_check(&self) -> HealthReport {
        (**self).health_check().await
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Arc::clone(&*self).interfaces()
    }
}

/// Check an integration id: a name (`"warehouse"`) or `"<kind>:<name>"`
/// (`"salesforce:prod"`), using only ASCII letters, digits, `-`, `_` and `.` in each part.
/// When the id has a kind prefix it must be the integration's kind, so a copied block
/// whose kind was changed but whose id was not is caught.
///
/// ```
/// use moodbridge_core::integration::check_id;
/// assert!(check_id("salesforce:prod", "salesforce").is_ok());
/// assert!(check_id("warehouse", "sqlite-warehouse").is_ok());
/// assert!(check_id("s3:prod", "salesforce").is_err());
/// assert!(check_id("salesforce:", "salesforce").is_err());
/// assert!(check_id("sales force", "salesforce").is_err());
/// ```
pub fn check_id(id: &str, kind: &str) -> Result<()> {
    let valid_part = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let (prefix, name) = match id.split_once(':') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, id),
    };
    if let Some(prefix) = prefix
        && prefix != kind
    {
        return Err(Error::config(format!(
            "integration id {id:?} starts with {prefix:?} but its kind is {kind:?}"
        ))
        .with_hint(format!("name it \"{kind}:{name}\" or drop the prefix")));
    }
    if !valid_part(name) {
        return Err(
            Error::config(format!("integration id {id:?} has an invalid name part"))
                .with_hint("use only ASCII letters, digits, '-', '_' and '.' in an id, e.g. \"salesforce:prod\""),
        );
    }
    Ok(())
}
