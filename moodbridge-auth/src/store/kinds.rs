//! The credential stores as integrations built from config: kinds `memory`, `env` and
//! `encrypted-sqlite`. A host names one of them in its config's `credentials` key, and
//! the `secret:` references of every other integration resolve through it.
//!
//! ```toml
//! [[integration]]
//! id = "vault"
//! kind = "encrypted-sqlite"
//! # master_key: an `env:` reference (a credential store cannot read its own key from
//! # itself), or master_key_file: a file readable by its owner only, created if missing.
//! settings = { path = "secrets.db", master_key = "env:MOODBRIDGE_MASTER_KEY" }
//!
//! [[integration]]
//! id = "process-env"
//! kind = "env"
//! settings = { prefix = "MOODBRIDGE_" }   # secret:salesforce/prod/client_secret → MOODBRIDGE_SALESFORCE_PROD_CLIENT_SECRET
//!
//! [[integration]]
//! id = "scratch"
//! kind = "memory"                          # empty at start; for tests and ephemeral hosts
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
#[cfg(feature = "sqlite")]
use moodbridge_core::Error;
use moodbridge_core::config::{SecretRef, Validate, Validator};
use moodbridge_core::integration::{
    Capabilities, Capability, HealthReport, HealthStatus, Interfaces, PlatformIntegration,
};
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::{CredentialStore, IntegrationConfig, Result};
#[cfg(feature = "sqlite")]
use secrecy::ExposeSecret;
use serde::Deserialize;

#[cfg(feature = "sqlite")]
use super::{EncryptedStore, Keyring, MasterKey};
use super::{EnvStore, MemoryStore};

/// Kind of [`MemoryStore`] integrations.
pub const MEMORY: &str = "memory";
/// Kind of [`EnvStore`] integrations.
pub const ENV: &str = "env";
/// Kind of [`EncryptedStore`] integrations.
pub const ENCRYPTED_SQLITE: &str = "encrypted-sqlite";

/// A credential store as an integration: health is a `list` of no prefix.
pub struct StoreIntegration<S> {
    id: String,
    kind: &'static str,
    store: Arc<S>,
}

impl<S> std::fmt::Debug for StoreIntegration<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreIntegration")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<S: CredentialStore + 'static> StoreIntegration<S> {
    /// `store` as integration `id` of `kind`.
    pub fn new(id: impl Into<String>, kind: &'static str, store: S) -> Self {
        StoreIntegration {
            id: id.into(),
            kind,
            store: Arc::new(store),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

#[async_trait]
impl<S: CredentialStore + 'static> PlatformIntegration for StoreIntegration<S> {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        self.kind
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::Secrets))
    }

    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        match self.store.list("").await {
            Ok(secrets) => HealthReport::new(
                HealthStatus::Up,
                started.elapsed(),
                format!("{} secrets", secrets.len()),
            ),
            // The environment store cannot list; it is up when it answers at all.
            Err(e) if e.kind() == moodbridge_core::ErrorKind::Unsupported => {
                HealthReport::new(HealthStatus::Up, started.elapsed(), "ok")
            }
            Err(e) => HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new().with::<dyn CredentialStore>(self.store.clone())
    }
}

/// Settings of a `memory` store: none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySettings {}

impl Validate for MemorySettings {
    fn validate_into(&self, _: &mut Validator) {}
}

/// Settings of an `env` store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSettings {
    /// The variables' prefix (default `MOODBRIDGE_`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "MOODBRIDGE_".into()
}

impl Validate for EnvSettings {
    fn validate_into(&self, v: &mut Validator) {
        if !self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            v.problem(
                "prefix",
                format!("{:?} is not a variable name prefix", self.prefix),
                "use letters, digits and '_' only, e.g. \"MOODBRIDGE_\"",
            );
        }
    }
}

/// Settings of an `encrypted-sqlite` store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedSettings {
    /// The store's file, created if missing.
    pub path: PathBuf,
    /// The master key (base64 or hex), as an `env:` reference.
    #[serde(default)]
    pub master_key: Option<SecretRef>,
    /// A file holding the master key, created with a new random key if missing.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// Keys of an interrupted master-key rotation, still accepted for reading.
    #[serde(default)]
    pub previous_master_keys: Vec<SecretRef>,
}

impl Validate for EncryptedSettings {
    fn validate_into(&self, v: &mut Validator) {
        if self.path.as_os_str().is_empty() {
            v.problem(
                "path",
                "is empty",
                "name the store's file, e.g. \"secrets.db\"",
            );
        }
        match (&self.master_key, &self.master_key_file) {
            (None, None) => v.problem(
                "master_key",
                "is missing",
                "set master_key = \"env:VAR\" or master_key_file = \"path\"",
            ),
            (Some(_), Some(_)) => v.problem(
                "master_key_file",
                "is set together with master_key",
                "keep one of them",
            ),
            _ => {}
        }
        let env_only = |v: &mut Validator, field: String, r: &SecretRef| {
            if matches!(r, SecretRef::Store(_)) {
                v.problem(
                    field,
                    "is a secret: reference, which the store would have to read from itself",
                    "use an env: reference or master_key_file",
                );
            }
        };
        if let Some(r) = &self.master_key {
            env_only(v, "master_key".into(), r);
        }
        for (i, r) in self.previous_master_keys.iter().enumerate() {
            env_only(v, format!("previous_master_keys[{i}]"), r);
        }
    }
}

#[cfg(feature = "sqlite")]
async fn master_key(r: &SecretRef) -> Result<MasterKey> {
    let text = r.resolve(None).await?;
    MasterKey::parse(text.expose_secret())
        .map_err(|e| Error::config(format!("{r}: {}", e.message())).with_hint(e.hint().to_owned()))
}

/// Builds `memory`, `env` or `encrypted-sqlite` integrations (one factory per kind).
#[derive(Debug, Clone, Copy)]
pub struct StoreFactory {
    kind: &'static str,
}

impl StoreFactory {
    /// The `memory` factory.
    pub fn memory() -> Self {
        StoreFactory { kind: MEMORY }
    }

    /// The `env` factory.
    pub fn env() -> Self {
        StoreFactory { kind: ENV }
    }

    /// The `encrypted-sqlite` factory (feature `sqlite`).
    #[cfg(feature = "sqlite")]
    pub fn encrypted_sqlite() -> Self {
        StoreFactory {
            kind: ENCRYPTED_SQLITE,
        }
    }

    /// Every kind this build has: `memory`, `env` and, with feature `sqlite`,
    /// `encrypted-sqlite`.
    pub fn all() -> Vec<Self> {
        vec![
            Self::memory(),
            Self::env(),
            #[cfg(feature = "sqlite")]
            Self::encrypted_sqlite(),
        ]
    }
}

#[async_trait]
impl IntegrationFactory for StoreFactory {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        match self.kind {
            MEMORY => drop(config.check_settings::<MemorySettings>(v)),
            ENV => drop(config.check_settings::<EnvSettings>(v)),
            #[cfg(feature = "sqlite")]
            _ => drop(config.check_settings::<EncryptedSettings>(v)),
            #[cfg(not(feature = "sqlite"))]
            _ => {}
        }
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let id = ctx.config.id.clone();
        Ok(match self.kind {
            MEMORY => {
                let _: MemorySettings = ctx.settings()?;
                Arc::new(StoreIntegration::new(id, MEMORY, MemoryStore::new()))
            }
            ENV => {
                let s: EnvSettings = ctx.settings()?;
                Arc::new(StoreIntegration::new(id, ENV, EnvStore::new(s.prefix)))
            }
            #[cfg(not(feature = "sqlite"))]
            _ => unreachable!("the encrypted-sqlite factory exists with feature sqlite only"),
            #[cfg(feature = "sqlite")]
            _ => {
                let s: EncryptedSettings = ctx.settings()?;
                let primary = match (&s.master_key, &s.master_key_file) {
                    (Some(r), _) => master_key(r).await?,
                    (None, Some(file)) => MasterKey::load_or_create(file).await?,
                    (None, None) => return Err(Error::config("no master key configured")),
                };
                let mut keyring = Keyring::new(primary);
                for r in &s.previous_master_keys {
                    keyring = keyring.with_previous(master_key(r).await?);
                }
                if let Some(dir) = s.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir).await.map_err(|e| {
                        Error::config(format!("cannot create {}", dir.display())).with_source(e)
                    })?;
                }
                let store = EncryptedStore::open_or_create(&s.path, keyring).await?;
                Arc::new(StoreIntegration::new(id, ENCRYPTED_SQLITE, store))
            }
        })
    }
}
