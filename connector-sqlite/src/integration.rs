//! The `sqlite-warehouse` kind: the embedded SQLite warehouse ([`SqliteTableSink`]) as an
//! integration built from config.
//!
//! ```toml
//! [[integration]]
//! id = "warehouse"
//! kind = "sqlite-warehouse"
//! settings = { path = "warehouse.db", durability = "full" }
//! ```
//!
//! `durability = "full"` (the default) commits every write with `synchronous = FULL`
//! (survives a power cut); `"normal"` with `synchronous = NORMAL` (survives a crash of the
//! process, not of the machine; faster bulk loads).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::Deserialize;

use crate::sink::SqliteTableSink;
use moodbridge_core::config::{Validate, Validator};
use moodbridge_core::error::Result;
use moodbridge_core::integration::{
    Capabilities, Capability, HealthReport, HealthStatus, Interfaces, PlatformIntegration,
};
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::sync::SyncSink;

/// The kind name.
pub const KIND: &str = "sqlite-warehouse";

/// Settings of a `sqlite-warehouse` integration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteWarehouseSettings {
    /// The database file, created if missing (its directory too).
    pub path: PathBuf,
    /// How durable each committed write is (default `full`).
    #[serde(default)]
    pub durability: Durability,
}

/// How durable a committed write of the SQLite warehouse is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `synchronous = FULL`: survives a power cut.
    #[default]
    Full,
    /// `synchronous = NORMAL`: survives a crash of the process.
    Normal,
}

impl Validate for SqliteWarehouseSettings {
    fn validate_into(&self, v: &mut Validator) {
        if self.path.as_os_str().is_empty() {
            v.problem(
                "path",
                "is empty",
                "name the warehouse file, e.g. \"warehouse.db\"",
            );
        }
    }
}

/// A [`SqliteTableSink`] as an integration.
#[derive(Debug, Clone)]
pub struct SqliteWarehouse {
    id: String,
    sink: Arc<SqliteTableSink>,
}

impl SqliteWarehouse {
    /// Open the warehouse of integration `id` with `settings`.
    pub async fn open(id: impl Into<String>, settings: &SqliteWarehouseSettings) -> Result<Self> {
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                moodbridge_core::Error::config(format!("cannot create {}", dir.display()))
                    .with_hint("make the directory writable, or set settings.path elsewhere")
                    .with_source(e)
            })?;
        }
        let full = settings.durability == Durability::Full;
        Ok(SqliteWarehouse {
            id: id.into(),
            sink: Arc::new(SqliteTableSink::open_with(&settings.path, full).await?),
        })
    }

    /// The sink.
    pub fn sink(&self) -> &Arc<SqliteTableSink> {
        &self.sink
    }
}

#[async_trait]
impl PlatformIntegration for SqliteWarehouse {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none()
            .with(Capability::Write)
            .with(Capability::Bulk))
    }

    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        match tokio::fs::metadata(self.sink.path()).await {
            Ok(_) => HealthReport::new(
                HealthStatus::Up,
                started.elapsed(),
                format!("{}", self.sink.path().display()),
            ),
            Err(e) => HealthReport::new(
                HealthStatus::Down,
                started.elapsed(),
                format!("{}: {e}", self.sink.path().display()),
            ),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new().with::<dyn SyncSink>(self.sink.clone())
    }
}

/// Builds `sqlite-warehouse` integrations.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteWarehouseFactory;

#[async_trait]
impl IntegrationFactory for SqliteWarehouseFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn validate(&self, config: &moodbridge_core::IntegrationConfig, v: &mut Validator) {
        config.check_settings::<SqliteWarehouseSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let settings: SqliteWarehouseSettings = ctx.settings()?;
        Ok(Arc::new(
            SqliteWarehouse::open(ctx.config.id, &settings).await?,
        ))
    }
}
