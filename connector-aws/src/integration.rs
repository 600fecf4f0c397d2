//! The kinds of the crate, built from config, every request through the integration's
//! `Policy`: `s3`, a bucket ([`S3Settings`]) as an
//! [`ObjectStore`](moodbridge_core::ObjectStore); `sqs`, a queue
//! ([`SqsSettings`](crate::sqs::SqsSettings)) as a
//! [`MessageQueue`](moodbridge_core::queue::MessageQueue).

use std::sync::Arc;

use async_trait::async_trait;
use moodbridge_core::config::Validator;
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::{IntegrationConfig, PlatformIntegration, PolicyConfig, Result};

#[cfg(feature = "s3")]
use crate::config::{EncryptionSetting, S3Settings};
#[cfg(feature = "s3")]
use crate::s3::{Encryption, S3ObjectStore};

/// The kind name of S3 buckets.
#[cfg(feature = "s3")]
pub const KIND: &str = "s3";

#[cfg(feature = "sqs")]
pub use crate::sqs::SQS_KIND;

#[cfg(feature = "sns")]
pub use crate::sns::SNS_KIND;

/// Builds `s3` integrations from [`S3Settings`].
#[cfg(feature = "s3")]
#[derive(Debug, Clone, Copy, Default)]
pub struct S3Factory;

#[cfg(feature = "s3")]
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
        builder = builder.credentials(s.credentials.resolve(ctx).await?);
        builder.build().await
    }
}

#[cfg(feature = "s3")]
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

/// Builds `sqs` integrations from [`SqsSettings`](crate::sqs::SqsSettings): the queue is
/// looked up and its attributes read when it is built.
#[cfg(feature = "sqs")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SqsFactory;

#[cfg(feature = "sqs")]
#[async_trait]
impl IntegrationFactory for SqsFactory {
    fn kind(&self) -> &'static str {
        SQS_KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        crate::sqs::default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<crate::sqs::SqsSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let s: crate::sqs::SqsSettings = ctx.settings()?;
        let mut builder = crate::sqs::SqsQueue::builder(&s.queue)
            .id(&ctx.config.id)
            .policy(ctx.policy.clone())
            .credentials(s.credentials.resolve(&ctx).await?);
        if let Some(region) = &s.region {
            builder = builder.region(region);
        }
        if let Some(endpoint) = &s.endpoint {
            builder = builder.endpoint(endpoint);
        }
        Ok(Arc::new(builder.build().await?))
    }
}

/// Builds `sns` integrations from [`SnsSettings`](crate::sns::SnsSettings): the topic is
/// looked up when it is built.
#[cfg(feature = "sns")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SnsFactory;

#[cfg(feature = "sns")]
#[async_trait]
impl IntegrationFactory for SnsFactory {
    fn kind(&self) -> &'static str {
        SNS_KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        crate::sns::default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<crate::sns::SnsSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let s: crate::sns::SnsSettings = ctx.settings()?;
        let mut builder = crate::sns::SnsTopic::builder(&s.topic)
            .id(&ctx.config.id)
            .policy(ctx.policy.clone())
            .credentials(s.credentials.resolve(&ctx).await?);
        if let Some(region) = &s.region {
            builder = builder.region(region);
        }
        if let Some(endpoint) = &s.endpoint {
            builder = builder.endpoint(endpoint);
        }
        Ok(Arc::new(builder.build().await?))
    }
}
