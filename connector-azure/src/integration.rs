//! The `azure-blob` kind: a container built from config ([`AzureBlobSettings`]) as an
//! [`ObjectStore`](moodbridge_core::ObjectStore) integration, every request through the
//! integration's `Policy`.

use std::sync::Arc;

use async_trait::async_trait;
use moodbridge_core::config::Validator;
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::{IntegrationConfig, PlatformIntegration, PolicyConfig, Result};

use crate::blob::AzureBlobStore;
use crate::config::AzureBlobSettings;

/// The kind name.
pub const KIND: &str = "azure-blob";

/// Builds `azure-blob` integrations from [`AzureBlobSettings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AzureBlobFactory;

impl AzureBlobFactory {
    /// The store `ctx` describes (no request is made).
    pub async fn store(ctx: &BuildContext) -> Result<AzureBlobStore> {
        let s: AzureBlobSettings = ctx.settings()?;
        let mut builder = AzureBlobStore::builder(&s.container)
            .id(&ctx.config.id)
            .policy(ctx.policy.clone())
            .block_size(s.block_size_mib * 1024 * 1024)
            .concurrency(s.concurrency)
            .download_concurrency(s.download_concurrency)
            .download_buffer(s.download_buffer_mib.saturating_mul(1024 * 1024));
        if let Some(version) = &s.api_version {
            builder = builder.api_version(version);
        }
        let access = crate::config::resolve_access(
            ctx,
            s.connection_string.as_ref(),
            s.credentials.as_ref(),
        )
        .await?;
        if let Some(cs) = &access.connection_string {
            builder = builder.connection_string(cs);
        }
        if let Some(endpoint) = &s.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if let Some(credentials) = access.credentials {
            builder = builder.credentials(credentials);
        }
        builder.build()
    }
}

#[async_trait]
impl IntegrationFactory for AzureBlobFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        crate::blob::default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<AzureBlobSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        Ok(Arc::new(Self::store(&ctx).await?))
    }
}
