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

use crate::config::{IntegrationConfig, SdkConfig, Validate, Validator};
use crate::credential::CredentialStore;
use crate::error::{Error, ErrorKind, Result};
use crate::integration::{HealthReport, PlatformIntegration};
use crate::resilience::Policy;

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
        config.validate_into(&mut v);
        for (i, integration) in config.integrations.iter().enumerate() {
            v.nested(format!("integration[{i}]"), |v| {
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
        v.finish().map_err(Error::from)
    }

    /// Validate `config`, then build every enabled integration.
    pub async fn build_all(
        &self,
        config: &SdkConfig,
        credentials: Option<Arc<dyn CredentialStore>>,
    ) -> Result<Integrations> {
        self.validate(config)?;
        let mut built = BTreeMap::new();
        for cfg in config.integrations.iter().filter(|c| c.enabled) {
            let factory = self.factories.get(cfg.kind.as_str()).ok_or_else(|| {
                Error::internal(format!("kind {:?} vanished after validation", cfg.kind))
            })?;
            let policy = Policy::from_config(cfg.id.clone(), &cfg.policy)?;
            let ctx = BuildContext {
                config: cfg.clone(),
                policy: policy.clone(),
                credentials: credentials.clone(),
            };
            let integration = factory.build(ctx).await.map_err(|e| {
                let kind = e.kind();
                let err = e.with_platform(cfg.id.clone());
                if kind == ErrorKind::Config {
                    err.with_context("integration", &cfg.id)
                } else {
                    err
                }
            })?;
            if integration.id() != cfg.id {
                return Err(Error::internal(format!(
                    "factory {:?} built {:?} for config {:?}",
                    cfg.kind,
                    integration.id(),
                    cfg.id
                )));
            }
            tracing::info!(integration = %cfg.id, kind = %cfg.kind, "integration built");
            built.insert(
                cfg.id.clone(),
                Built {
                    integration,
                    policy,
                },
            );
        }
        Ok(Integrations { built })
    }
}

/// One built integration and its policy.
#[derive(Clone)]
pub struct Built {
    /// The integration.
    pub integration: Arc<dyn PlatformIntegration>,
    /// The policy its calls go through (its breaker state feeds health reports).
    pub policy: Policy,
}

impl fmt::Debug for Built {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Built")
            .field("id", &self.integration.id())
            .field("policy", &self.policy)
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
