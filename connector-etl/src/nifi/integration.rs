//! The `nifi` kind: a [`NifiClient`] built from config, every request through the
//! integration's `Policy`, the password (or token) read from the host's credential store
//! when the integration is built.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moodbridge_core::config::{Validate, Validator};
use moodbridge_core::integration::Interfaces;
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::{
    Capabilities, Capability, HealthReport, HealthStatus, IntegrationConfig, PlatformIntegration,
    PolicyConfig, Result, SecretRef,
};
use serde::Deserialize;

use super::{NifiClient, NifiConfig, default_policy_config};

/// The kind name.
pub const KIND: &str = "nifi";

/// Settings of a `nifi` integration.
///
/// ```toml
/// [[integration]]
/// id = "nifi:prod"
/// kind = "nifi"
/// [integration.settings]
/// url = "https://nifi.example.com:8443"
/// username = "moodbridge"
/// password = "secret:nifi/moodbridge-password"   # or token = "secret:…", or anonymous = true
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NifiSettings {
    /// NiFi's address (with or without `/nifi-api`).
    pub url: String,
    /// A user of NiFi's login identity provider (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// Its password, by reference.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// A token NiFi issued, by reference (not renewed).
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// No login at all (a NiFi without a login provider); must be said explicitly.
    #[serde(default)]
    pub anonymous: bool,
    /// The time one request may take.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

impl Validate for NifiSettings {
    fn validate_into(&self, v: &mut Validator) {
        if let Err(e) = NifiConfig::anonymous(&self.url) {
            v.problem("url", e.message().to_owned(), e.hint().to_owned());
        }
        let password = self.username.is_some() || self.password.is_some();
        let ways = [password, self.token.is_some(), self.anonymous]
            .into_iter()
            .filter(|w| *w)
            .count();
        if ways != 1 {
            v.problem(
                "username",
                format!("{ways} ways to log in are given"),
                "give username and password, or token (as secret: or env: references), or anonymous = true",
            );
        } else if password && (self.username.is_none() || self.password.is_none()) {
            v.problem(
                if self.username.is_none() {
                    "username"
                } else {
                    "password"
                },
                "a username and a password go together",
                "give both username and password = \"secret:<key>\"",
            );
        }
        if self.request_timeout_secs == 0 {
            v.problem(
                "request_timeout_secs",
                "is 0",
                "give the seconds one request may take, such as 30",
            );
        }
    }
}

/// Builds `nifi` integrations from [`NifiSettings`].
///
/// ```
/// use connector_etl::nifi::NifiFactory;
/// use moodbridge_core::{Registry, SdkConfig};
///
/// let mut registry = Registry::new();
/// registry.register(std::sync::Arc::new(NifiFactory)).unwrap();
/// let config = SdkConfig::from_toml(r#"
/// [[integration]]
/// id = "nifi:prod"
/// kind = "nifi"
/// [integration.settings]
/// url = "https://nifi.example.com:8443"
/// "#).unwrap();
/// let err = registry.validate(&config).unwrap_err().to_string();
/// assert!(err.contains("0 ways to log in"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NifiFactory;

/// A `nifi` integration: its [`NifiClient`] (an interface too).
#[derive(Debug, Clone)]
pub struct NifiIntegration {
    id: String,
    client: NifiClient,
}

impl NifiIntegration {
    /// The integration `id` around `client`.
    pub fn new(id: impl Into<String>, client: NifiClient) -> Self {
        NifiIntegration {
            id: id.into(),
            client,
        }
    }

    /// The client.
    pub fn client(&self) -> &NifiClient {
        &self.client
    }
}

#[async_trait]
impl PlatformIntegration for NifiIntegration {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::JobOrchestration))
    }

    /// NiFi's version and the flow's status: `Degraded` when components are invalid,
    /// `Down` when NiFi cannot be reached or refuses the credentials.
    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        let checked = async {
            let about = self.client.about().await?;
            let status = self.client.controller_status().await?;
            Ok::<_, moodbridge_core::Error>((about, status))
        }
        .await;
        let (about, status) = match checked {
            Ok(found) => found,
            Err(e) => return HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        };
        let detail = format!(
            "NiFi {}: {} running, {} stopped, {} invalid, {} flow files queued",
            about.version,
            status.running_count,
            status.stopped_count,
            status.invalid_count,
            status.flow_files_queued
        );
        let health = if status.invalid_count > 0 {
            HealthStatus::Degraded
        } else {
            HealthStatus::Up
        };
        HealthReport::new(health, started.elapsed(), detail)
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new()
            .with::<NifiClient>(Arc::new(self.client.clone()))
            .with::<NifiIntegration>(self)
    }
}

#[async_trait]
impl IntegrationFactory for NifiFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<NifiSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let s: NifiSettings = ctx.settings()?;
        let config = match (&s.username, &s.password, &s.token) {
            (Some(user), Some(password), _) => {
                NifiConfig::password(&s.url, user, ctx.resolve(password).await?)?
            }
            (_, _, Some(token)) => NifiConfig::token(&s.url, ctx.resolve(token).await?)?,
            _ => NifiConfig::anonymous(&s.url)?,
        }
        .id(ctx.config.id.clone())
        .policy(ctx.policy.clone())
        .timeout(Duration::from_secs(s.request_timeout_secs));
        let client = NifiClient::new(config)?;
        Ok(Arc::new(NifiIntegration::new(ctx.config.id, client)))
    }
}
