//! The `airflow` kind: an [`AirflowClient`] built from config, every request through the
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

use super::{AirflowClient, AirflowConfig, default_policy_config};

/// The kind name.
pub const KIND: &str = "airflow";

/// Settings of an `airflow` integration.
///
/// ```toml
/// [[integration]]
/// id = "airflow:prod"
/// kind = "airflow"
/// [integration.settings]
/// url = "https://airflow.example.com"
/// username = "moodbridge"
/// password = "secret:airflow/moodbridge-password"   # or: token = "secret:airflow/token"
/// request_timeout_secs = 30
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirflowSettings {
    /// The API server's address.
    pub url: String,
    /// A user of Airflow's auth manager (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// Its password, by reference.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// A token Airflow issued, by reference (instead of a username and password; not
    /// renewed).
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// The time one request may take.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

impl Validate for AirflowSettings {
    fn validate_into(&self, v: &mut Validator) {
        if let Err(e) = AirflowConfig::token(&self.url, secrecy::SecretString::from("")) {
            v.problem("url", e.message().to_owned(), e.hint().to_owned());
        }
        match (&self.username, &self.password, &self.token) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            (Some(_), None, None) => v.problem(
                "password",
                "a username is given without a password",
                "give password = \"secret:<key>\" (or env:<VAR>)",
            ),
            (None, Some(_), None) => v.problem(
                "username",
                "a password is given without a username",
                "give the Airflow user's name",
            ),
            (None, None, None) => v.problem(
                "username",
                "no credential is given",
                "give username and password, or token (each secret as a secret: or env: reference)",
            ),
            _ => v.problem(
                "token",
                "both a token and a username/password are given",
                "give either token, or username and password",
            ),
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

/// Builds `airflow` integrations from [`AirflowSettings`].
///
/// ```
/// use connector_etl::airflow::AirflowFactory;
/// use moodbridge_core::{Registry, SdkConfig};
///
/// let mut registry = Registry::new();
/// registry.register(std::sync::Arc::new(AirflowFactory)).unwrap();
/// let config = SdkConfig::from_toml(r#"
/// [[integration]]
/// id = "airflow:prod"
/// kind = "airflow"
/// [integration.settings]
/// url = "airflow.example.com"
/// username = "moodbridge"
/// "#).unwrap();
/// let err = registry.validate(&config).unwrap_err().to_string();
/// assert!(err.contains("settings.url"), "{err}");
/// assert!(err.contains("without a password"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AirflowFactory;

/// An `airflow` integration: its [`AirflowClient`] (an interface too).
#[derive(Debug, Clone)]
pub struct AirflowIntegration {
    id: String,
    client: AirflowClient,
}

impl AirflowIntegration {
    /// The integration `id` around `client`.
    pub fn new(id: impl Into<String>, client: AirflowClient) -> Self {
        AirflowIntegration {
            id: id.into(),
            client,
        }
    }

    /// The client.
    pub fn client(&self) -> &AirflowClient {
        &self.client
    }
}

#[async_trait]
impl PlatformIntegration for AirflowIntegration {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::JobOrchestration))
    }

    /// Airflow's own health (`Down` when the database or the scheduler is not healthy,
    /// `Degraded` when the DAG processor or a deployed triggerer is not), then one
    /// authenticated request (`Down` when the credentials are refused).
    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        let health = match self.client.health().await {
            Ok(h) => h,
            Err(e) => return HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        };
        if let Err(e) = self.client.check_access().await {
            return HealthReport::from_result(started.elapsed(), Err::<(), _>(e));
        }
        let problems = health.problems();
        let required = health.metadatabase.is_healthy() && health.scheduler.is_healthy();
        let (status, detail) = match (problems.is_empty(), required) {
            (true, _) => (
                HealthStatus::Up,
                "scheduler and database healthy".to_owned(),
            ),
            (false, true) => (HealthStatus::Degraded, problems.join(", ")),
            (false, false) => (HealthStatus::Down, problems.join(", ")),
        };
        HealthReport::new(status, started.elapsed(), detail)
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new()
            .with::<AirflowClient>(Arc::new(self.client.clone()))
            .with::<AirflowIntegration>(self)
    }
}

#[async_trait]
impl IntegrationFactory for AirflowFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<AirflowSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let s: AirflowSettings = ctx.settings()?;
        let config = match (&s.username, &s.password, &s.token) {
            (Some(user), Some(password), _) => {
                AirflowConfig::password(&s.url, user, ctx.resolve(password).await?)?
            }
            (_, _, Some(token)) => AirflowConfig::token(&s.url, ctx.resolve(token).await?)?,
            _ => {
                return Err(moodbridge_core::Error::internal(
                    "validated airflow settings without a credential",
                ));
            }
        }
        .id(ctx.config.id.clone())
        .policy(ctx.policy.clone())
        .timeout(Duration::from_secs(s.request_timeout_secs));
        let client = AirflowClient::new(config)?;
        Ok(Arc::new(AirflowIntegration::new(ctx.config.id, client)))
    }
}
