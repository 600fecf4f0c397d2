//! The registry: builds integrations by `kind` from configuration, with factories
//! registered at compile time by the enabled connector features.
//!
//! This is the SDK's plugin mechanism — compile-time plugins, no dynamic library loading.
//! The umbrella crate `moodbridge` fills a registry with the factory of every connector
//! feature it was built with; a host can register its own factories too.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use secrecy::SecretString;

use crate::config::{IntegrationConfig, SdkConfig, SecretRef, Validate, Validator};
use crate::credential::CredentialStore;
use crate::error::{Error, ErrorKind, Result};
use crate::integration::{HealthReport, Interfaces, PlatformIntegration};
use crate::resilience::{Policy, PolicyBuilder, PolicyConfig};

/// What a factory gets to build an integration.
#[derive(Clone)]
pub struct BuildContext {
    /// The integration's config.
    pub config: IntegrationConfig,
    /// The policy built from the config's `policy` table; connectors run every remote call
    /// through it.
    pub policy: Policy,
    /// Where `secret:` references are resolved, if the host gave a store.
    pub credentials: Option<Arc<dyn CredentialStore>>,
}

impl BuildContext {
    /// A context for `config` with the policy its `policy` table describes and no
    /// credential store (what a test or a host building one integration by hand needs).
    pub fn new(config: IntegrationConfig) -> Result<Self> {
        let policy = Policy::from_config(config.id.clone(), &config.policy)?;
        Ok(BuildContext {
            config,
            policy,
            credentials: None,
        })
    }

    /// Resolve a secret reference of the settings through the credential store (or the
    /// environment, for `env:` references).
    pub async fn resolve(&self, secret: &SecretRef) -> Result<SecretString> {
        secret.resolve(self.credentials.as_deref()).await
    }

    /// The settings as the connector's typed struct, checked by its [`Validate`]: every
    /// problem at once, as one [`ErrorKind::Config`] error.
    pub fn settings<T>(&self) -> Result<T>
    where
        T: serde::de::DeserializeOwned + Validate,
    {
        let mut v = Validator::new();
        let settings = v.nested(format!("integration {:?}", self.config.id), |v| {
            self.config.check_settings::<T>(v)
        });
        v.finish().map_err(Error::from)?;
        settings.ok_or_else(|| Error::internal("settings neither parsed nor reported"))
    }
}

impl fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext")
            .field("config", &self.config)
            .field("policy", &self.policy)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "CredentialStore"),
            )
            .finish()
    }
}

/// Builds integrations of one kind.
///
/// ```
/// use async_trait::async_trait;
/// use moodbridge_core::registry::{BuildContext, IntegrationFactory};
/// use moodbridge_core::config::Validator;
/// use moodbridge_core::{Capabilities, HealthReport, HealthStatus, IntegrationConfig, PlatformIntegration, Result};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// struct Echo { id: String }
///
/// #[async_trait]
/// impl PlatformIntegration for Echo {
///     fn id(&self) -> &str { &self.id }
///     fn kind(&self) -> &str { "echo" }
///     async fn capabilities(&self) -> Result<Capabilities> { Ok(Capabilities::none()) }
///     async fn health_check(&self) -> HealthReport {
///         HealthReport::new(HealthStatus::Up, Duration::ZERO, "ok")
///     }
/// }
///
/// struct EchoFactory;
///
/// #[async_trait]
/// impl IntegrationFactory for EchoFactory {
///     fn kind(&self) -> &'static str { "echo" }
///     fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
///         if !config.settings.is_empty() {
///             v.problem("settings", "echo takes no settings", "remove the settings table");
///         }
///     }
///     async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
///         Ok(Arc::new(Echo { id: ctx.config.id }))
///     }
/// }
/// ```
#[async_trait]
pub trait IntegrationFactory: Send + Sync {
    /// The kind this factory builds (`"salesforce"`).
    fn kind(&self) -> &'static str;

    /// The policy of this kind's integrations where their config's `policy` table is
    /// silent ([`PolicyConfig::overlay`]): a connector's tested retry and timeouts. The
    /// default is no policy at all.
    fn default_policy(&self) -> PolicyConfig {
        PolicyConfig::default()
    }

    /// Check the connector-specific settings, adding every problem to `v` (paths are
    /// relative to the integration: use `"settings.instance_url"`).
    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        let _ = (config, v);
    }

    /// Build one integration.
    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>>;
}

/// Factories by kind.
///
/// ```
/// use moodbridge_core::{Registry, SdkConfig};
///
/// let registry = Registry::new();
/// let cfg = SdkConfig::from_toml("[[integration]]\nid = \"salesfroce:prod\"\nkind = \"salesfroce\"").unwrap();
/// let err = registry.validate(&cfg).unwrap_err();
/// assert!(err.to_string().contains("unknown kind \"salesfroce\""));
/// ```
#[derive(Default, Clone)]
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn IntegrationFactory>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a factory. Registering a kind twice is an [`ErrorKind::Config`] error.
    pub fn register(&mut self, factory: Arc<dyn IntegrationFactory>) -> Result<()> {
        let kind = factory.kind();
        if self.factories.contains_key(kind) {
            return Err(Error::config(format!("kind {kind:?} is registered twice"))
                .with_hint("register each connector factory once"));
        }
        self.factories.insert(kind, factory);
        Ok(())
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }

    /// Check a whole config: structure, policies, known kinds, and each connector's
    /// settings. `Err` lists every problem.
    pub fn validate(&self, config: &SdkConfig) -> Result<()> {
        let mut v = Validator::new();
        self.validate_into(&config.integrations, &mut v);
        v.finish().map_err(Error::from)
    }

    /// Add every problem of `integrations` to `v` (ids unique, policies, known kinds,
    /// each connector's settings), under `integration[i]` paths.
    pub fn validate_into(&self, integrations: &[IntegrationConfig], v: &mut Validator) {
        crate::config::validate_integrations(integrations, v, |integration, v| {
            match self.factories.get(integration.kind.as_str()) {
                Some(f) => f.validate(integration, v),
                None if integration.kind.is_empty() => {}
                None => v.problem(
                    "kind",
                    format!("unknown kind {:?}", integration.kind),
                    format!(
                        "use one of [{}], or enable the moodbridge cargo feature of that connector",
                        self.kinds().collect::<Vec<_>>().join(", ")
                    ),
                ),
            }
        });
    }

    /// Build one integration from its config (already validated).
    pub async fn build_one(
        &self,
        config: &IntegrationConfig,
        credentials: Option<Arc<dyn CredentialStore>>,
    ) -> Result<Built> {
        let factory = self.factories.get(config.kind.as_str()).ok_or_else(|| {
            Error::config(format!("unknown kind {:?}", config.kind)).with_hint(format!(
                "use one of [{}], or enable the moodbridge cargo feature of that connector",
                self.kinds().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let policy_config = factory.default_policy().overlay(&config.policy);
        let policy = PolicyBuilder::from_config(config.id.clone(), &policy_config)?
            .connector(factory.kind())
            .build();
        let ctx = BuildContext {
            config: config.clone(),
            policy: policy.clone(),
            credentials,
        };
        let integration = factory.build(ctx).await.map_err(|e| {
            let kind = e.kind();
            let err = e.with_platform(config.id.clone());
            if kind == ErrorKind::Config {
                err.with_context("integration", &config.id)
            } else {
                err
            }
        })?;
        if integration.id() != config.id {
            return Err(Error::internal(format!(
                "factory {:?} built {:?} for config {:?}",
                config.kind,
                integration.id(),
                config.id
            )));
        }
        tracing::info!(integration = %config.id, kind = %config.kind, "integration built");
        Ok(Built::new(integration, policy))
    }

    /// Validate `config`, then build every enabled integration.
    pub async fn build_all(
        &self,
        config: &SdkConfig,
        credentials: Option<Arc<dyn CredentialStore>>,
    ) -> Result<Integrations> {
        self.validate(config)?;
        let mut built = Integrations::default();
        for cfg in config.integrations.iter().filter(|c| c.enabled) {
            built.insert(self.build_one(cfg, credentials.clone()).await?);
        }
        Ok(built)
    }
}

/// One built integration, its policy and the contracts it implements.
#[derive(Clone)]
pub struct Built {
    /// The integration.
    pub integration: Arc<dyn PlatformIntegration>,
    /// The policy its calls go through (its breaker state feeds health reports).
    pub policy: Policy,
    /// The contracts it implements ([`PlatformIntegration::interfaces`], asked once).
    pub interfaces: Interfaces,
}

impl Built {
    /// `integration` with its `policy`; its interfaces are asked for here.
    pub fn new(integration: Arc<dyn PlatformIntegration>, policy: Policy) -> Self {
        let interfaces = Arc::clone(&integration).interfaces();
        Built {
            integration,
            policy,
            interfaces,
        }
    }
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Built")
            .field("id", &self.integration.id())
            .field("policy", &self.policy)
            .field("interfaces", &self.interfaces)
            .finish()
    }
}

/// The integrations built from a config, by id.
#[derive(Debug, Clone, Default)]
pub struct Integrations {
    built: BTreeMap<String, Built>,
}

impl Integrations {
    /// Adds an integration built in code (not from config), replacing one with the same
    /// id; returns the one replaced.
    pub fn insert(&mut self, built: Built) -> Option<Built> {
        self.built.insert(built.integration.id().to_owned(), built)
    }

    /// The integration with this id.
    pub fn get(&self, id: &str) -> Option<&Built> {
        self.built.get(id)
    }

    /// The contract `T` of integration `id` (`get_as::<dyn SyncSource>("salesforce:prod")`).
    /// A missing id or an integration that does not implement `T` is a
    /// [`ErrorKind::Config`] error naming both and what the integration does implement.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use moodbridge_core::registry::{Built, Integrations};
    /// use moodbridge_core::{ErrorKind, Policy, SyncSink, SyncSource};
    /// # use async_trait::async_trait;
    /// # use moodbridge_core::integration::Interfaces;
    /// # use moodbridge_core::{Capabilities, HealthReport, HealthStatus, PlatformIntegration, Result};
    /// # use moodbridge_core::testing::MemorySink;
    /// # struct Warehouse(Arc<MemorySink>);
    /// # #[async_trait]
    /// # impl PlatformIntegration for Warehouse {
    /// #     fn id(&self) -> &str { "warehouse" }
    /// #     fn kind(&self) -> &str { "memory-warehouse" }
    /// #     async fn capabilities(&self) -> Result<Capabilities> { Ok(Capabilities::none()) }
    /// #     async fn health_check(&self) -> HealthReport { HealthReport::new(HealthStatus::Up, std::time::Duration::ZERO, "ok") }
    /// #     fn interfaces(self: Arc<Self>) -> Interfaces { Interfaces::new().with::<dyn SyncSink>(self.0.clone()) }
    /// # }
    ///
    /// let mut all = Integrations::default();
    /// all.insert(Built::new(Arc::new(Warehouse(Arc::new(MemorySink::new()))), Policy::builder("warehouse").build()));
    /// assert!(all.get_as::<dyn SyncSink>("warehouse").is_ok());
    /// let err = all.get_as::<dyn SyncSource>("warehouse").err().unwrap();
    /// assert_eq!(err.kind(), ErrorKind::Config);
    /// assert!(err.message().contains("is not a SyncSource"), "{err}");
    /// ```
    pub fn get_as<T: ?Sized + Send + Sync + 'static>(&self, id: &str) -> Result<Arc<T>> {
        let built = self.built.get(id).ok_or_else(|| {
            Error::config(format!("no integration has the id {id:?}")).with_hint(format!(
                "use one of [{}], or add an [[integration]] with that id",
                self.built.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        built.interfaces.get::<T>().ok_or_else(|| {
            let wanted = std::any::type_name::<T>();
            let wanted = wanted.strip_prefix("dyn ").unwrap_or(wanted);
            let wanted = wanted.rsplit("::").next().unwrap_or(wanted);
            let offers: Vec<_> = built.interfaces.names().collect();
            Error::config(format!(
                "integration {id:?} (kind {:?}) is not a {wanted}",
                built.integration.kind()
            ))
            .with_hint(if offers.is_empty() {
                "name an integration that implements it".to_owned()
            } else {
                format!(
                    "it implements [{}]; name an integration that implements {wanted}",
                    offers.join(", ")
                )
            })
        })
    }

    /// Every integration, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Built)> {
        self.built.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.built.len()
    }

    /// `true` when none were built.
    pub fn is_empty(&self) -> bool {
        self.built.is_empty()
    }

    /// Health of every integration, checked concurrently, sorted by id.
    pub async fn health(&self) -> Vec<(String, HealthReport)> {
        let checks = self
            .built
            .iter()
            .map(|(id, b)| async move { (id.clone(), b.integration.health_check().await) });
        futures::future::join_all(checks).await
    }
}
