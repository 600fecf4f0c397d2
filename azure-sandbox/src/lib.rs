//! # azure-sandbox
//!
//! Local fakes of Azure services that have no emulator one can run here, written from
//! Microsoft's published references, for MoodBridge's tests and local development. Each
//! is trusted only for what Microsoft's own clients accept from it unchanged: the tests of
//! this crate drive them with the Python SDKs (`azure-keyvault-secrets`,
//! `azure-servicebus`).
//!
//! [`KeyVault`]: the Key Vault secrets API (api-version 7.x) over HTTPS on loopback —
//! the bearer challenge of an unauthenticated request, secrets and their versions,
//! attributes (enabled, not-before, expiry), tags and content types, paged lists, soft
//! delete, recover and purge, and names that are case-insensitive.
//!
//! [`ServiceBus`]: a Service Bus namespace over AMQP 1.0 (plain AMQP on a loopback port,
//! as the Service Bus emulator serves it): claims-based security with SAS tokens on
//! `$cbs`; queues with peek-lock deliveries, lock tokens, lock renewal and expiry,
//! complete / abandon / dead-letter / defer, delivery counts and the `$DeadLetterQueue`
//! sub-queue after `MaxDeliveryCount`; scheduled messages (and their cancellation);
//! duplicate detection by message id; sessions with session locks and state; peek and
//! receive-by-sequence-number on `$management`; batches; fault hooks (dropped
//! connections, throttling).
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use azure_sandbox::{KeyVault, KeyVaultConfig};
//!
//! let vault = KeyVault::start(KeyVaultConfig::default()).await.unwrap();
//! assert!(vault.url().starts_with("https://127.0.0.1:"));
//! assert!(vault.ca_pem().contains("BEGIN CERTIFICATE"));
//! vault.stop().await;
//! # });
//! ```

mod keyvault;
mod servicebus;
mod tls;

pub use keyvault::{KeyVault, KeyVaultConfig};
pub use servicebus::{
    CorrelationFilter, QueueOptions, RuleFilter, ServiceBus, ServiceBusConfig, TopicOptions,
};
