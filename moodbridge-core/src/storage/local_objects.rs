//! The `local-objects` kind: the embedded [`LocalObjectStore`] as an integration built
//! from config.
//!
//! ```toml
//! [[integration]]
//! id = "documents"
//! kind = "local-objects"
//! settings = { root = "documents" }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::Deserialize;

use super::{LocalObjectStore, ObjectStore};
use crate::config::{Validate, Validator};
use crate::error::Result;
use crate::integration::{
    Capabilities, Capability, HealthReport, HealthStatus, Interfaces, PlatformIntegration,
};
use crate::registry::{BuildContext, IntegrationFactory};

/// The kind name.
pub const KIND: &str = "local-objects";

/// Settings of a `local-objects` integration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalObjectsSettings {
    /// The store's directory, created if missing.
    pub root: PathBuf,
}

impl Validate for LocalObjectsSettings {
    fn validate_into(&self, v: &mut Validator) {
        if self.root.as_os_str().is_empty() {
            v.problem("root", "is empty", "name the store's directory");
        }
    }
}

/// A [`LocalObjectStore`] as an integration.
#[derive(Debug, Clone)]
pub struct LocalObjects {
    id: String,
    root: PathBuf,
    store: Arc<LocalObjectStore>,
}

impl LocalObjects {
    /// Open the store of integration `id` at `settings.root`.
    pub async fn open(id: impl Into<String>, settings: &LocalObjectsSettings) -> Result<Self> {
        Ok(LocalObjects {
            id: id.into(),
            root: settings.root.clone(),
            store: Arc::new(LocalObjectStore::open(&settings.root).await?),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<LocalObjectStore> {
        &self.store
    }
}

#[async_trait]
impl PlatformIntegration for LocalObjects {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::ObjectStorage))
    }

    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        match tokio::fs::metadata(&self.root).await {
            Ok(m) if m.is_dir() => HealthReport::new(
                HealthStatus::Up,
                started.elapsed(),
                self.root.display().to_string(),
            ),
            Ok(_) => HealthReport::new(
                HealthStatus::Down,
                started.elapsed(),
                format!("{} is not a directory", self.root.display()),
            ),
            Err(e) => HealthReport::new(
                HealthStatus::Down,
                started.elapsed(),
                format!("{}: {e}", self.root.display()),
            ),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new().with::<dyn ObjectStore>(self.store.clone())
    }
}

/// Builds `local-objects` integrations.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalObjectsFactory;

#[async_trait]
impl IntegrationFactory for LocalObjectsFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn validate(&self, config: &crate::IntegrationConfig, v: &mut Validator) {
        config.check_settings::<LocalObjectsSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let settings: LocalObjectsSettings = ctx.settings()?;
        Ok(Arc::new(
            LocalObjects::open(ctx.config.id, &settings).await?,
        ))
    }
}
