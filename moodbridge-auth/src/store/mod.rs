//! Credential stores implementing [`moodbridge_core::CredentialStore`]:
//!
//! - [`MemoryStore`] — in memory, for tests and ephemeral hosts;
//! - [`EnvStore`] — read-only, from environment variables under a prefix;
//! - `EncryptedStore` (feature `sqlite`, on by default) — AES-256-GCM on SQLite, the
//!   embedded default, with versioned secrets and interruptible master-key rotation.
//!
//! Each is also a kind built from config ([`kinds`]: `memory`, `env`,
//! `encrypted-sqlite`). Cloud stores (AWS Secrets Manager, Azure Key Vault) come with
//! their connectors.

#[cfg(feature = "sqlite")]
mod encrypted;
mod env;
pub mod kinds;
mod memory;

#[cfg(feature = "sqlite")]
pub use encrypted::{
    EncryptedStore, KEY_LEN, Keyring, MasterKey, ROTATION_BATCH, RotationProgress,
};
pub use env::EnvStore;
pub use memory::MemoryStore;
