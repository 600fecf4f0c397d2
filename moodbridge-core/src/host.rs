//! A host's whole setup from one config file: its integrations, the pipelines between
//! them (named by integration id), and the state store — validated in one pass and built
//! in one call.
//!
//! ```toml
//! credentials = "vault"                 # the integration `secret:` references resolve through
//!
//! [state]
//! backend = "sqlite"                    # or "postgres" with url = "env:DATABASE_URL"
//! path = "state.db"
//!
//! [[integration]]
//! id = "vault"
//! kind = "encrypted-sqlite"
//! settings = { path = "secrets.db", master_key = "env:MOODBRIDGE_MASTER_KEY" }
//!
//! [[integration]]
//! id = "salesforce:prod"
//! kind = "salesforce"
//! [integration.settings]
//! login_url = "https://acme.my.salesforce.com"
//! auth = { flow = "client_credentials", client_id = "3MVG9…", client_secret = "secret:salesforce/prod/client_secret" }
//!
//! [[integration]]
//! id = "warehouse"
//! kind = "sqlite-warehouse"
//! settings = { path = "warehouse.db" }
//!
//! [[pipeline]]
//! name = "crm-to-warehouse"
//! source = "salesforce:prod"
//! sink = "warehouse"
//! [[pipeline.streams]]
//! name = "Account"
//! ```
//!
//! The order of building: validation of everything ([`HostConfig::check`]: the file's
//! structure, every integration's policy and settings through its kind's factory, the
//! pipelines and the ids they name — every problem at once, each with its path and fix);
//! then the credential store named by `credentials` (whose own settings may only use
//! `env:` references); then every other enabled integration, with that store resolving
//! their `secret:` references; then the pipelines, each checked to read from a
//! [`SyncSource`] and write to a [`SyncSink`]; then the state store.
//!
//! ```
//! use moodbridge_core::host::{Host, HostConfig};
//! use moodbridge_core::registry::Registry;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let config = HostConfig::from_toml(r#"
//!     [[pipeline]]
//!     name = "crm-to-warehouse"
//!     source = "salesforce:prod"
//!     sink = "warehouse"
//!     [[pipeline.streams]]
//!     name = "Account"
//! "#).unwrap();
//! let err = Host::build(&config, &Registry::new()).await.unwrap_err();
//! // Both ids are named, with the fix.
//! assert!(err.message().contains("pipeline[0].source"), "{err}");
//! assert!(err.message().contains("pipeline[0].sink"), "{err}");
//! # });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{IntegrationConfig, SecretRef, Validate, Validator};
use crate::credential::CredentialStore;
use crate::engine::{Pipeline, PipelineConfig, RunReport, SyncEngine};
use crate::error::{Error, Result};
use crate::registry::{Integrations, Registry};
use crate::state::StateStore;
use crate::sync::{SyncSink, SyncSource};

/// The state store default when a config has no `[state]` table: SQLite at this path
/// (relative to the working directory).
pub const DEFAULT_STATE_PATH: &str = "moodbridge-state.db";

/// A host's config file: `[[integration]]`, `[[pipeline]]`, `[state]` and `credentials`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The id of the integration (a credential store kind) that `secret:` references of
    /// the other integrations resolve through. Without it only `env:` references work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// Where the sync engine keeps its state (default: SQLite at [`DEFAULT_STATE_PATH`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateConfig>,
    /// The integrations, each `[[integration]]` table.
    #[serde(default, rename = "integration")]
    pub integrations: Vec<IntegrationConfig>,
    /// The pipelines, each `[[pipeline]]` table, naming its `source` and `sink` by id.
    #[serde(default, rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
}

/// Where the sync engine's state lives.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StateConfig {
    /// The embedded SQLite store (cargo feature `sqlite`).
    Sqlite {
        /// The database file, created if missing.
        path: PathBuf,
    },
    /// PostgreSQL, shared by several workers (cargo feature `postgres`).
    Postgres {
        /// The connection URL, as a secret reference (it usually holds a password).
        url: SecretRef,
        /// Connections in the pool (default 10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool_size: Option<u32>,
    },
}

impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateConfig::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            StateConfig::Postgres { url, pool_size } => f
                .debug_struct("Postgres")
                .field("url", url)
                .field("pool_size", pool_size)
                .finish(),
        }
    }
}

impl HostConfig {
    /// Parse TOML. Syntax and type errors name the line.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let line = crate::config::span_of(text, e.span());
            Error::config(format!("invalid config: {}", e.message().trim()))
                .with_context("at", line)
                .with_hint("fix the TOML at the position shown")
        })
    }

    /// Check everything that can be checked without connecting, reporting every problem
    /// at once: structure, policies, each integration's settings (through `registry`),
    /// the pipelines and the ids they name, the state store and the credential store.
    pub fn check(&self, registry: &Registry) -> Result<()> {
        let mut v = Validator::new();
        self.check_into(registry, &mut v);
        v.finish().map_err(Error::from)
    }

    fn check_into(&self, registry: &Registry, v: &mut Validator) {
        registry.validate_into(&self.integrations, v);
        let ids: BTreeMap<&str, &IntegrationConfig> = self
            .integrations
            .iter()
            .map(|i| (i.id.as_str(), i))
            .collect();
        let known = || ids.keys().copied().collect::<Vec<_>>().join(", ");
        let check_ref = |v: &mut Validator, field: &str, id: Option<&str>, role: &str| match id {
            None => v.problem(
                field,
                format!("is missing: the pipeline needs its {role}"),
                format!(
                    "set {field} to the id of an [[integration]] ([{}])",
                    known()
                ),
            ),
            Some(id) => match ids.get(id) {
                None => v.problem(
                    field,
                    format!("names {id:?}, which no [[integration]] has as its id"),
                    format!("use one of [{}], or add that integration", known()),
                ),
                Some(i) if !i.enabled => v.problem(
                    field,
                    format!("names {id:?}, which is disabled"),
                    "enable that integration or point the pipeline elsewhere",
                ),
                Some(_) => {}
            },
        };
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            v.nested(format!("pipeline[{i}]"), |v| {
                p.validate_into(v);
                if !names.insert(p.name.as_str()) {
                    v.problem(
                        "name",
                        format!("{:?} is used by more than one pipeline", p.name),
                        "give every pipeline a unique name",
                    );
                }
                check_ref(v, "source", p.source.as_deref(), "source");
                check_ref(v, "sink", p.sink.as_deref(), "sink");
            });
        }
        if let Some(id) = &self.credentials {
            match ids.get(id.as_str()) {
                None => v.problem(
                    "credentials",
                    format!("names {id:?}, which no [[integration]] has as its id"),
                    "add a credential store integration (kind memory, env or encrypted-sqlite) with that id",
                ),
                Some(i) if !i.enabled => v.problem(
                    "credentials",
                    format!("names {id:?}, which is disabled"),
                    "enable the credential store",
                ),
                Some(_) => {}
            }
        }
        match &self.state {
            None | Some(StateConfig::Sqlite { .. }) if !cfg!(feature = "sqlite") => v.problem(
                "state",
                "needs the SQLite state store, which this build leaves out",
                "enable the moodbridge cargo feature \"sqlite\", or set backend = \"postgres\"",
            ),
            Some(StateConfig::Sqlite { path }) if path.as_os_str().is_empty() => v.problem(
                "state.path",
                "is empty",
                "name the state database file, e.g. \"state.db\"",
            ),
            Some(StateConfig::Postgres { .. }) if !cfg!(feature = "postgres") => v.problem(
                "state.backend",
                "is \"postgres\", which this build leaves out",
                "enable the moodbridge cargo feature \"postgres\"",
            ),
            Some(StateConfig::Postgres {
                pool_size: Some(0), ..
            }) => v.problem("state.pool_size", "is 0", "set it to 1 or more"),
            _ => {}
        }
    }
}

/// A pipeline with its source and sink, ready to run.
#[derive(Clone)]
struct Wired {
    pipeline: Pipeline,
    source: Arc<dyn SyncSource>,
    sink: Arc<dyn SyncSink>,
}

/// Everything a [`HostConfig`] describes, built: the integrations, the wired pipelines,
/// the state store and a sync engine over it. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    integrations: Integrations,
    pipelines: Arc<BTreeMap<String, Wired>>,
    state: Arc<dyn StateStore>,
    engine: SyncEngine,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("integrations", &self.integrations)
            .field("pipelines", &self.pipelines.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Check `config` ([`HostConfig::check`]), then build it with `registry`'s factories.
    /// Nothing is built unless the whole config is valid.
    pub async fn build(config: &HostConfig, registry: &Registry) -> Result<Host> {
        Self::build_with(config, registry, None).await
    }

    /// [`Host::build`], with `secret:` references resolved through a credential store the
    /// host made itself (its own vault client, a store it filled at start-up) instead of
    /// one named in the config. Naming one in the config's `credentials` as well is a
    /// [`Config`](crate::ErrorKind::Config) error.
    pub async fn build_with(
        config: &HostConfig,
        registry: &Registry,
        credentials: Option<Arc<dyn CredentialStore>>,
    ) -> Result<Host> {
        config.check(registry)?;
        let mut integrations = Integrations::default();
        let credentials: Option<Arc<dyn CredentialStore>> = match (&config.credentials, credentials)
        {
            (None, given) => given,
            (Some(id), Some(_)) => {
                return Err(Error::config(format!(
                    "credentials names {id:?}, and the host gave a credential store too"
                ))
                .with_hint("remove `credentials` from the config, or build with Host::build"));
            }
            (Some(id), None) => {
                let cfg = config
                    .integrations
                    .iter()
                    .find(|i| &i.id == id)
                    .ok_or_else(|| Error::internal("the credential store left the config"))?;
                integrations.insert(registry.build_one(cfg, None).await?);
                Some(integrations.get_as::<dyn CredentialStore>(id)?)
            }
        };
        for cfg in config.integrations.iter().filter(|c| c.enabled) {
            if integrations.get(&cfg.id).is_none() {
                integrations.insert(registry.build_one(cfg, credentials.clone()).await?);
            }
        }
        let mut pipelines = BTreeMap::new();
        for (i, p) in config.pipelines.iter().enumerate() {
            let at = |e: Error| e.with_context("at", format!("pipeline[{i}]"));
            let (source, sink) = (
                p.source.as_deref().unwrap_or_default(),
                p.sink.as_deref().unwrap_or_default(),
            );
            let wired = Wired {
                source: integrations.get_as::<dyn SyncSource>(source).map_err(at)?,
                sink: integrations.get_as::<dyn SyncSink>(sink).map_err(at)?,
                pipeline: Pipeline::new(p.clone()).map_err(at)?,
            };
            pipelines.insert(p.name.clone(), wired);
        }
        let state = open_state(config.state.as_ref(), credentials.as_deref()).await?;
        Ok(Host {
            engine: SyncEngine::new(Arc::clone(&state)),
            integrations,
            pipelines: Arc::new(pipelines),
            state,
        })
    }

    /// Run pipeline `name` once: every stream, incremental where its checkpoint allows.
    pub async fn run(&self, name: &str) -> Result<RunReport> {
        let wired = self.pipelines.get(name).ok_or_else(|| {
            Error::config(format!("no pipeline is named {name:?}")).with_hint(format!(
                "use one of [{}]",
                self.pipelines
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        self.engine
            .run(&wired.pipeline, &*wired.source, &*wired.sink)
            .await
    }

    /// The pipelines' names, sorted.
    pub fn pipelines(&self) -> impl Iterator<Item = &str> {
        self.pipelines.keys().map(String::as_str)
    }

    /// The built integrations (for health, and typed lookups with
    /// [`Integrations::get_as`]).
    pub fn integrations(&self) -> &Integrations {
        &self.integrations
    }

    /// The sync engine the pipelines run on (to subscribe to progress, replay dead
    /// letters, roll back a run).
    pub fn engine(&self) -> &SyncEngine {
        &self.engine
    }

    /// The state store.
    pub fn state(&self) -> Arc<dyn StateStore> {
        Arc::clone(&self.state)
    }
}

async fn open_state(
    config: Option<&StateConfig>,
    credentials: Option<&dyn CredentialStore>,
) -> Result<Arc<dyn StateStore>> {
    let _ = credentials;
    match config {
        #[cfg(feature = "sqlite")]
        None => open_sqlite(std::path::Path::new(DEFAULT_STATE_PATH)).await,
        #[cfg(feature = "sqlite")]
        Some(StateConfig::Sqlite { path }) => open_sqlite(path).await,
        #[cfg(feature = "postgres")]
        Some(StateConfig::Postgres { url, pool_size }) => {
            use secrecy::ExposeSecret;
            let url = url.resolve(credentials).await?;
            let store = crate::state::PostgresStateStore::connect_with(
                url.expose_secret(),
                pool_size.unwrap_or(10),
            )
            .await?;
            Ok(Arc::new(store))
        }
        #[allow(
            unreachable_patterns,
            reason = "which arms exist depends on the features"
        )]
        _ => Err(
            Error::config("the configured state store backend is not in this build").with_hint(
                "enable the moodbridge cargo feature of that backend (sqlite, postgres)",
            ),
        ),
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(path: &std::path::Path) -> Result<Arc<dyn StateStore>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(|e| {
            Error::config(format!("cannot create {}", dir.display()))
                .with_hint("make the state directory writable, or set [state] path elsewhere")
                .with_source(e)
        })?;
    }
    Ok(Arc::new(crate::state::SqliteStateStore::open(path).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = HostConfig::from_toml(
            r#"
            credentials = "vault"
            [[integration]]
            id = "warehouse"
            kind = "nope"
            enabled = false
            [[pipeline]]
            name = "a"
            source = "salesforce:prod"
            sink = "warehouse"
            streams = []
            [[pipeline]]
            name = "a"
            [[pipeline.streams]]
            name = "Account"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let Err(err) = config.check(&Registry::new()) else {
            panic!("invalid config accepted")
        };
        let text = err.message();
        for path in [
            "integration[0].kind",
            "pipeline[0].streams",
            "pipeline[0].source",
            "pipeline[0].sink: names \"warehouse\", which is disabled",
            "pipeline[1].name",
            "pipeline[1].source: is missing",
            "pipeline[1].sink: is missing",
            "credentials: names \"vault\"",
        ] {
            assert!(text.contains(path), "{path} not in {text}");
        }
    }

    #[test]
    fn unknown_top_level_keys_name_the_line() {
        let err = HostConfig::from_toml("\n\nstates = 1\n").unwrap_err();
        assert!(err.message().contains("unknown field"), "{err}");
        assert_eq!(err.context_value("at"), Some("line 3"));
    }

    #[test]
    fn the_postgres_url_is_a_reference() {
        let err = HostConfig::from_toml(
            "[state]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@db/x\"\n",
        )
        .unwrap_err();
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        assert!(err.message().contains("reference"), "{err}");
    }
}
