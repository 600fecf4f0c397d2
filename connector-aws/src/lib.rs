//! # connector-aws
//!
//! The AWS connector of MoodBridge Integrations. Feature `sqs`: [`SqsQueue`], Amazon SQS
//! behind the core [`MessageQueue`](moodbridge_core::queue::MessageQueue) capability
//! (kind `sqs`). Feature `sns`: [`SnsTopic`], SNS topics that fan messages out to SQS
//! queues with filter policies (kind `sns`). Feature `secrets`:
//! [`SecretsManagerStore`], AWS Secrets Manager as a MoodBridge
//! [`CredentialStore`](moodbridge_core::CredentialStore) with current, previous and
//! pending versions (kind `aws-secrets-manager`). Feature `logs`: [`logs::CloudWatchLogs`],
//! a `tracing` layer shipping scrubbed structured logs to CloudWatch Logs in batches.
//! Feature `dynamodb`: [`DynamoDb`], DynamoDB tables as a sync source and sink, and a
//! state table of cursors and leases (kind `aws-dynamodb`).
//! Feature `s3` (on by default):
//! [`S3ObjectStore`], Amazon S3 and S3-compatible stores behind the
//! core [`ObjectStore`](moodbridge_core::ObjectStore) capability, on the official
//! `aws-sdk-s3` — multipart uploads with parts in parallel and aborted on failure or
//! cancellation, parallel ranged downloads, SHA-256 checksums verified by the service,
//! server-side encryption, storage classes, presigned URLs, and credentials from the
//! standard AWS chain or from a MoodBridge [`CredentialStore`](moodbridge_core::CredentialStore).
//!
//! ```no_run
//! use connector_aws::s3::S3ObjectStore;
//! use moodbridge_core::storage::{ObjectKey, ObjectStoreExt, PutOptions};
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let store = S3ObjectStore::builder("moodbridge-documents").region("eu-west-1").build().await?;
//! let key = ObjectKey::new("cases/500Ax/complaint.pdf")?;
//! let file = tokio::fs::File::open("complaint.pdf").await.expect("file");
//! store.put_reader(&key, file, PutOptions::new().content_type("application/pdf")).await?;
//! # Ok(()) }
//! ```

#[cfg(feature = "s3")]
pub mod config;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(any(feature = "s3", feature = "sqs", feature = "sns"))]
pub mod integration;
#[cfg(feature = "logs")]
pub mod logs;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "sdk")]
pub mod sdk;
#[cfg(feature = "secrets")]
pub mod secrets;
#[cfg(feature = "sns")]
pub mod sns;
#[cfg(feature = "sqs")]
pub mod sqs;

#[cfg(feature = "s3")]
pub use config::S3Settings;
#[cfg(feature = "dynamodb")]
pub use dynamodb::{DYNAMODB_KIND, DynamoDb, DynamoDbFactory, DynamoSettings};
#[cfg(feature = "s3")]
pub use integration::{KIND, S3Factory};
#[cfg(feature = "sns")]
pub use integration::{SNS_KIND, SnsFactory};
#[cfg(feature = "sqs")]
pub use integration::{SQS_KIND, SqsFactory};
#[cfg(feature = "s3")]
pub use s3::S3ObjectStore;
#[cfg(feature = "secrets")]
pub use secrets::{
    SECRETS_KIND, SecretsManagerFactory, SecretsManagerSettings, SecretsManagerStore,
};
#[cfg(feature = "sns")]
pub use sns::{SnsSettings, SnsTopic};
#[cfg(feature = "sqs")]
pub use sqs::{SqsQueue, SqsSettings};
