//! # MoodBridge Integrations
//!
//! One SDK to connect a host application to enterprise platforms — Salesforce, AWS,
//! Azure, Snowflake, Airflow/NiFi — through one set of traits, one error model, one
//! resilience toolkit and one sync engine, linking only the platforms it enables.
//!
//! This is the umbrella crate a host adds. It re-exports [`moodbridge_core`] (the
//! contracts, errors, policies and configuration) at its root, [`moodbridge_auth`] as
//! [`auth`], and each connector behind a cargo feature named after it as the connector
//! crates land.
//!
//! ```
//! use moodbridge::{Policy, RetryConfig};
//!
//! let policy = Policy::builder("salesforce:prod").retry(RetryConfig::default()).build();
//! assert_eq!(policy.platform(), "salesforce:prod");
//! ```

pub use moodbridge_core::*;

/// Tokens and secrets: credential stores (in-memory, environment, encrypted SQLite).
pub use moodbridge_auth as auth;

/// Salesforce (feature `salesforce`): SOQL builder, error mapping.
#[cfg(feature = "salesforce")]
pub use connector_salesforce as salesforce;

/// AWS (feature `aws`): S3 object storage ([`aws::s3::S3ObjectStore`]).
#[cfg(feature = "aws")]
pub use connector_aws as aws;

/// Azure (feature `azure`): Blob Storage ([`azure::blob::AzureBlobStore`]).
#[cfg(feature = "azure")]
pub use connector_azure as azure;

/// A [`Registry`] holding the factory of every connector this build enables.
///
/// ```
/// let registry = moodbridge::registry();
/// // With no connector feature enabled, no kind is registered.
/// assert_eq!(registry.kinds().count(), 0);
/// ```
pub fn registry() -> Registry {
    Registry::new()
}

/// The Rust examples of the guides in `docs/` are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/storage.md")]
struct StorageGuide;
