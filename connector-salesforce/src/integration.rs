//! The `salesforce` kind: an org built from config ([`SalesforceSettings`]) as one
//! integration that is both a [`SyncSource`] and a [`SyncSink`], every call through the
//! integration's `Policy`.
//!
//! Building connects: it gets a token by the configured flow, checks the instance
//! against the allow-list and chooses the API version, so a wrong secret or login URL
//! fails at start-up, not at the first sync.
//!
//! ```no_run
//! # async fn run() -> moodbridge_core::Result<()> {
//! use connector_salesforce::integration::SalesforceFactory;
//! use moodbridge_core::{Registry, SdkConfig};
//! use std::sync::Arc;
//!
//! let mut registry = Registry::new();
//! registry.register(Arc::new(SalesforceFactory))?;
//! let config = SdkConfig::from_toml(r#"
//!     [[integration]]
//!     id = "salesforce:prod"
//!     kind = "salesforce"
//!     settings = { auth = { flow = "client_credentials", client_id = "3MVG9…", client_secret = "env:SF_SECRET" } }
//! "#)?;
//! let integrations = registry.build_all(&config, None).await?;
//! # let _ = integrations; Ok(()) }
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use moodbridge_auth::oauth::{OAuthClient, Provider, TokenSet};
use moodbridge_auth::token_manager::{
    ClientCredentialsSource, JwtBearerSource, RefreshSource, TokenManager,
};
use moodbridge_core::config::Validator;
use moodbridge_core::integration::{Capabilities, HealthReport, Interfaces, PlatformIntegration};
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::{IntegrationConfig, Result, SyncSink, SyncSource};
use secrecy::SecretString;

use crate::client::SalesforceClient;
use crate::config::{AuthSettings, SalesforceSettings};
use crate::instance::InstanceAllowList;
use crate::sync::{SalesforceSink, SalesforceSource};

/// The kind name.
pub const KIND: &str = "salesforce";

/// A Salesforce org as an integration: its client, and the client as a source and a sink.
#[derive(Clone)]
pub struct SalesforceIntegration {
    client: SalesforceClient,
    source: Arc<SalesforceSource>,
    sink: Arc<SalesforceSink>,
}

impl std::fmt::Debug for SalesforceIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceIntegration")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl SalesforceIntegration {
    /// `client` as an integration offering `objects` to `discover()`, moving batches above
    /// `bulk_threshold` records through Bulk API 2.0.
    pub fn new(client: SalesforceClient, objects: Vec<String>, bulk_threshold: u64) -> Self {
        SalesforceIntegration {
            source: Arc::new(
                SalesforceSource::new(client.clone(), objects).bulk_threshold(bulk_threshold),
            ),
            sink: Arc::new(
                SalesforceSink::new(client.clone())
                    .bulk_threshold(usize::try_from(bulk_threshold).unwrap_or(usize::MAX)),
            ),
            client,
        }
    }

    /// The typed client, for everything beyond the common contracts (SOQL, composite,
    /// Bulk API 2.0, streaming).
    pub fn client(&self) -> &SalesforceClient {
        &self.client
    }
}

#[async_trait]
impl PlatformIntegration for SalesforceIntegration {
    fn id(&self) -> &str {
        self.client.id()
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        self.client.capabilities().await
    }

    async fn health_check(&self) -> HealthReport {
        self.client.health_check().await
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new()
            .with::<dyn SyncSource>(self.source.clone())
            .with::<dyn SyncSink>(self.sink.clone())
            .with::<SalesforceClient>(Arc::new(self.client.clone()))
    }
}

/// Builds `salesforce` integrations from [`SalesforceSettings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SalesforceFactory;

impl SalesforceFactory {
    /// Connect the client `ctx` describes.
    pub async fn connect(ctx: &BuildContext) -> Result<(SalesforceClient, SalesforceSettings)> {
        let settings: SalesforceSettings = ctx.settings()?;
        let id = &ctx.config.id;
        let provider = Provider::salesforce_at(id, &settings.login_url)?;
        let secret = |r| ctx.resolve(r);
        let source: Arc<dyn moodbridge_auth::token_manager::TokenSource> = match &settings.auth {
            AuthSettings::ClientCredentials {
                client_id,
                client_secret,
            } => {
                let app = Arc::new(OAuthClient::new(
                    provider,
                    client_id,
                    Some(secret(client_secret).await?),
                )?);
                Arc::new(ClientCredentialsSource {
                    client: app,
                    scopes: Vec::new(),
                    resource: None,
                })
            }
            AuthSettings::JwtBearer {
                client_id,
                username,
                private_key,
            } => {
                let app = Arc::new(OAuthClient::new(provider, client_id, None)?);
                Arc::new(JwtBearerSource {
                    client: app,
                    subject: username.clone(),
                    private_key_pem: secret(private_key).await?,
                })
            }
            AuthSettings::RefreshToken {
                client_id,
                client_secret,
                refresh_token: _,
            } => {
                let client_secret = match client_secret {
                    Some(r) => Some(secret(r).await?),
                    None => None,
                };
                let app = Arc::new(OAuthClient::new(provider, client_id, client_secret)?);
                Arc::new(RefreshSource { client: app })
            }
        };
        let tokens = TokenManager::new();
        tokens.register(id, "integration", source);
        if let AuthSettings::RefreshToken { refresh_token, .. } = &settings.auth {
            // An expired, empty access token: the first call refreshes it.
            tokens
                .seed(
                    id,
                    "integration",
                    TokenSet {
                        access_token: SecretString::from(String::new()),
                        token_type: "Bearer".into(),
                        expires_at: Some(std::time::UNIX_EPOCH),
                        refresh_token: Some(secret(refresh_token).await?),
                        scopes: Vec::new(),
                        id_token: None,
                        instance_url: None,
                    },
                )
                .await?;
        }
        let mut allow = InstanceAllowList::default();
        for domain in &settings.allowed_domains {
            allow = allow.with_domain(domain);
        }
        if settings.allow_loopback {
            allow = allow.with_loopback();
        }
        let client = SalesforceClient::builder(id, tokens, id, "integration")
            .api_version(settings.api_version_choice())
            .allow_instances(allow)
            .policy(ctx.policy.clone())
            .connect()
            .await?;
        Ok((client, settings))
    }
}

#[async_trait]
impl IntegrationFactory for SalesforceFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn default_policy(&self) -> moodbridge_core::PolicyConfig {
        crate::client::default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<SalesforceSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let (client, settings) = Self::connect(&ctx).await?;
        Ok(Arc::new(SalesforceIntegration::new(
            client,
            settings.objects,
            settings.bulk_threshold,
        )))
    }
}
