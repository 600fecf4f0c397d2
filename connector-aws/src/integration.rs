//! The `s3` kind: a bucket built from config ([`S3Settings`]) as an [`ObjectStore`](moodbridge_core::ObjectStore)
//! integration, every request through the integration's `Policy`.

use std::sync::Arc;

use async_trait::async_trait;
use moodbridge_core::config::Validator;
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::{Error, IntegrationConfig, PlatformIntegration, PolicyConfig, Result};

use crate::config::{EncryptionSetting, S3CredentialSettings, S3Settings};
use crate::s3::{Encryption, S3Credentials, S3ObjectStore};

/// The kind name.
pub const KIND: &str = "s3";

/// Builds `s3` integrations from [`S3Settings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct S3Factory;

impl S3Factory {
    /// The store `ctx` describes (no request is made).
    pub async fn store(ctx: &BuildContext) -> Result<S3ObjectStore> {
        let s: S3Settings = ctx.settings()?;
        let mut builder = S3ObjectStore::builder(&s.bucket)
            .id(&ctx.config.id)
            .policy(ctx.policy.clone())
            .path_style(s.path_style)
            .part_size(s.part_size_mib * 1024 * 1024)
            .concurrency(s.concurrency)
            .download_concurrency(s.download_concurrency)
            .download_buffer(s.download_buffer_mib.saturating_mul(1024 * 1024))
            .parallel_downloads(s.parallel_downloads);
        if let Some(region) = &s.region {
            builder = builder.region(region);
        }
        if let Some(endpoint) = &s.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if let Some(class) = &s.storage_class {
            builder = builder.storage_class(class);
        }
        match s.encryption {
            None => {}
            Some(EncryptionSetting::S3) => builder = builder.encryption(Encryption::S3Managed),
            Some(EncryptionSetting::Kms) => {
                builder = builder.encryption(Encryption::Kms {
                    key_id: s.kms_key_id.clone(),
                });
            }
        }
        builder = builder.credentials(match &s.credentials {
            S3CredentialSettings::Chain => S3Credentials::DefaultChain,
            S3CredentialSettings::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => S3Credentials::Static {
                access_key_id: access_key_id.clone(),
                secret_access_key: ctx.resolve(secret_access_key).await?,
                session_token: match session_token {
                    Some(r) => Some(ctx.resolve(r).await?),
                    None => None,
                },
            },
            S3CredentialSettings::Store { prefix, refresh } => S3Credentials::Store {
                store: ctx.credentials.clone().ok_or_else(|| {
                    Error::config("credentials.source = \"store\" needs a credential store")
                        .with_hint("name one in the config's `credentials` key")
                })?,
                prefix: prefix.clone(),
                refresh: *refresh,
            },
        });
        builder.build().await
    }
}

#[async_trait]
impl IntegrationFactory for S3Factory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        crate::s3::default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<S3Settings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        Ok(Arc::new(Self::store(&ctx).await?))
    }
}
