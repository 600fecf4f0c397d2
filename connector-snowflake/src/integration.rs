//! The `snowflake` kind: a pool of sessions built from config ([`SnowflakeSettings`]),
//! every request of every session through the integration's `Policy`, credentials read
//! from the host's credential store at every login.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moodbridge_core::config::Validator;
use moodbridge_core::integration::Interfaces;
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::{
    Capabilities, Capability, Error, HealthReport, HealthStatus, IntegrationConfig,
    PlatformIntegration, PolicyConfig, Result, SyncSink,
};

use crate::config::{SnowflakeConfig, default_policy_config};
use crate::pool::SessionPool;
use crate::settings::SnowflakeSettings;
use crate::sink::SnowflakeSink;

/// The kind name.
pub const KIND: &str = "snowflake";

/// Builds `snowflake` integrations from [`SnowflakeSettings`].
///
/// ```
/// use connector_snowflake::SnowflakeFactory;
/// use moodbridge_core::{Registry, SdkConfig};
///
/// let mut registry = Registry::new();
/// registry.register(std::sync::Arc::new(SnowflakeFactory)).unwrap();
/// let config = SdkConfig::from_toml(r#"
/// [[integration]]
/// id = "snowflake:warehouse"
/// kind = "snowflake"
/// [integration.settings]
/// account = "acme-prod"
/// user = "LOADER"
/// password = "env:SNOWFLAKE_PASSWORD"
/// private_key = "secret:snowflake/key"
/// "#).unwrap();
/// let err = registry.validate(&config).unwrap_err().to_string();
/// assert!(err.contains("2 credentials are given"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SnowflakeFactory;

impl SnowflakeFactory {
    /// The session pool `ctx` describes (no login yet).
    ///
    /// # Errors
    /// The settings' problems, all at once ([`Config`](moodbridge_core::ErrorKind::Config)).
    pub fn pool(ctx: &BuildContext) -> Result<SessionPool> {
        let s: SnowflakeSettings = ctx.settings()?;
        let credential = s
            .credential()
            .ok_or_else(|| Error::internal("validated settings without one credential"))?;
        let mut config =
            SnowflakeConfig::stored(&s.account, &s.user, credential, ctx.credentials.clone())
                .shared_policy(ctx.policy.clone())
                .prefetch(s.prefetch)
                .timeout(Duration::from_secs(s.request_timeout_secs));
        for (value, set) in [
            (
                &s.url,
                SnowflakeConfig::url as fn(SnowflakeConfig, String) -> SnowflakeConfig,
            ),
            (&s.database, SnowflakeConfig::database),
            (&s.schema, SnowflakeConfig::schema),
            (&s.warehouse, SnowflakeConfig::warehouse),
            (&s.role, SnowflakeConfig::role),
            (&s.query_tag, SnowflakeConfig::query_tag),
        ] {
            if let Some(value) = value {
                config = set(config, value.clone());
            }
        }
        if let Some(secs) = s.statement_timeout_secs {
            config = config.statement_timeout(Duration::from_secs(secs));
        }
        Ok(SessionPool::new(config, s.pool.settings()))
    }
}

/// A `snowflake` integration: its [`SessionPool`] and a [`SnowflakeSink`] over it (both
/// among its interfaces, the sink as `dyn SyncSink`).
#[derive(Debug, Clone)]
pub struct SnowflakeIntegration {
    id: String,
    pool: SessionPool,
    sink: Arc<SnowflakeSink>,
}

impl SnowflakeIntegration {
    /// An integration named `id` over `pool`.
    pub fn new(id: impl Into<String>, pool: SessionPool) -> Self {
        SnowflakeIntegration {
            id: id.into(),
            sink: Arc::new(SnowflakeSink::pooled(pool.clone())),
            pool,
        }
    }

    /// The session pool.
    pub fn pool(&self) -> &SessionPool {
        &self.pool
    }

    /// The sink loading the sync engine's batches through the pool.
    pub fn sink(&self) -> Arc<SnowflakeSink> {
        self.sink.clone()
    }
}

#[async_trait]
impl PlatformIntegration for SnowflakeIntegration {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none()
            .with(Capability::Query)
            .with(Capability::Read)
            .with(Capability::Write))
    }

    /// A session from the pool (a login when there is none) and a heartbeat.
    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        let outcome = async {
            let session = self.pool.get().await?;
            session.heartbeat().await
        }
        .await;
        match outcome {
            Ok(()) => {
                let open: usize = self.pool.status().iter().map(|s| s.open).sum();
                HealthReport::new(
                    HealthStatus::Up,
                    started.elapsed(),
                    format!("session alive; {open} open"),
                )
            }
            Err(e) => HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new()
            .with::<SessionPool>(Arc::new(self.pool.clone()))
            .with::<dyn SyncSink>(self.sink.clone())
    }
}

#[async_trait]
impl IntegrationFactory for SnowflakeFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<SnowflakeSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let pool = Self::pool(&ctx)?;
        Ok(Arc::new(SnowflakeIntegration::new(ctx.config.id, pool)))
    }
}
