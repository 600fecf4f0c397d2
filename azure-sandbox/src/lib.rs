//! # azure-sandbox
//!
//! Local fakes of Azure services that have no emulator one can run here, written from
//! Microsoft's published REST references, for MoodBridge's tests and local development.
//! Each is trusted only for what Microsoft's own clients accept from it unchanged: the
//! tests of this crate drive it with the Python SDK (`azure-keyvault-secrets`).
//!
//! [`KeyVault`]: the Key Vault secrets API (api-version 7.x) over HTTPS on loopback —
//! the bearer challenge of an unauthenticated request, secrets and their versions,
//! attributes (enabled, not-before, expiry), tags and content types, paged lists, soft
//! delete, recover and purge, and names that are case-insensitive.
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
mod tls;

pub use keyvault::{KeyVault, KeyVaultConfig};
