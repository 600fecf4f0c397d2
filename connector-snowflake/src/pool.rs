//! A pool of logged-in sessions, one [deadpool](deadpool::managed) per session context
//! (role, warehouse, database, schema): a login costs a round trip and a session keeps
//! its context, so statements borrow a session that already has the right one.
//!
//! Before a session is handed out again it is checked:
//! 1. older than `max_lifetime`: logged out, a new one made;
//! 2. changed by its last user ([`session_changed`](crate::SnowflakeClient::session_changed):
//!    `USE`, `ALTER SESSION`, `SET`, a transaction left open): logged out, a new one made
//!    — the state is reset by never reusing it;
//! 3. idle longer than `health_check_after`: a heartbeat (which renews or logs in again
//!    if the server forgot it); a failed heartbeat retires it.
//!
//! [`evict_idle`](SessionPool::evict_idle) logs out the sessions idle longer than
//! `idle_timeout`; a host calls it from its scheduler.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use moodbridge_core::{Error, ErrorKind, Result};

use crate::PLATFORM;
use crate::client::SnowflakeClient;
use crate::config::SnowflakeConfig;

/// The context a pooled session is opened with; sessions are pooled per context.
///
/// ```
/// use connector_snowflake::SessionKey;
/// let key = SessionKey::default().role("LOADER").warehouse("LOAD_WH");
/// assert_eq!(key.role.as_deref(), Some("LOADER"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The role (the login's default when `None`).
    pub role: Option<String>,
    /// The warehouse.
    pub warehouse: Option<String>,
    /// The database.
    pub database: Option<String>,
    /// The schema.
    pub schema: Option<String>,
}

impl SessionKey {
    /// With `role`.
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// With `warehouse`.
    #[must_use]
    pub fn warehouse(mut self, warehouse: impl Into<String>) -> Self {
        self.warehouse = Some(warehouse.into());
        self
    }

    /// With `database`.
    #[must_use]
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// With `schema`.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The context of `config`.
    fn of(config: &SnowflakeConfig) -> Self {
        SessionKey {
            role: config.role.clone(),
            warehouse: config.warehouse.clone(),
            database: config.database.clone(),
            schema: config.schema.clone(),
        }
    }

    /// `config` with this context.
    fn apply(&self, mut config: SnowflakeConfig) -> SnowflakeConfig {
        config.role.clone_from(&self.role);
        config.warehouse.clone_from(&self.warehouse);
        config.database.clone_from(&self.database);
        config.schema.clone_from(&self.schema);
        config
    }
}

/// Sizes and ages of a [`SessionPool`].
///
/// ```
/// use std::time::Duration;
/// use connector_snowflake::PoolSettings;
/// let settings = PoolSettings::default();
/// assert_eq!(settings.max_sessions_per_key, 8);
/// assert_eq!(settings.idle_timeout, Duration::from_secs(600));
/// ```
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Sessions per context at most (default 8).
    pub max_sessions_per_key: usize,
    /// A session older than this is retired (default 1 h; Snowflake's own limit is 4 h
    /// without keep-alive).
    pub max_lifetime: Duration,
    /// [`evict_idle`](SessionPool::evict_idle) retires idle sessions last handed out
    /// (or made) this long ago (default 10 min).
    pub idle_timeout: Duration,
    /// A session last handed out (or made) this long ago gets a heartbeat before it is
    /// handed out again (default 60 s).
    pub health_check_after: Duration,
    /// How long [`get`](SessionPool::get) waits for a free session (default 30 s).
    pub wait_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_sessions_per_key: 8,
            max_lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(600),
            health_check_after: Duration::from_secs(60),
            wait_timeout: Duration::from_secs(30),
        }
    }
}

/// Makes and checks the sessions of one context.
struct Manager {
    config: SnowflakeConfig,
    settings: PoolSettings,
}

/// Log `client` out in the background (best effort: an unreachable server expires the
/// session by itself).
fn retire(client: SnowflakeClient) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(e) = client.logout().await {
                tracing::debug!(error = %e, "logging out a retired Snowflake session");
            }
        });
    }
}

impl managed::Manager for Manager {
    type Type = SnowflakeClient;
    type Error = Error;

    async fn create(&self) -> Result<SnowflakeClient> {
        SnowflakeClient::login(self.config.clone()).await
    }

    async fn recycle(
        &self,
        client: &mut SnowflakeClient,
        metrics: &Metrics,
    ) -> RecycleResult<Error> {
        if metrics.age() > self.settings.max_lifetime {
            retire(client.clone());
            return Err(RecycleError::message("the session reached its lifetime"));
        }
        if client.session_changed() {
            retire(client.clone());
            return Err(RecycleError::message(
                "a statement changed the session's state",
            ));
        }
        if metrics.last_used() >= self.settings.health_check_after {
            client.heartbeat().await.map_err(RecycleError::Backend)?;
        }
        Ok(())
    }
}

type Pool = managed::Pool<Manager>;

/// A pool of Snowflake sessions keyed by context (role, warehouse, database, schema).
/// Before a session is handed out again it is retired (logged out, a new one made) when
/// past `max_lifetime` or when a statement changed its state
/// ([`session_changed`](SnowflakeClient::session_changed)), and gets a heartbeat when
/// last handed out longer than `health_check_after` ago. Cheap to clone: clones share
/// the pool.
///
/// ```no_run
/// use connector_snowflake::{PoolSettings, SessionKey, SessionPool, SnowflakeConfig};
/// use secrecy::SecretString;
///
/// # async fn run() -> moodbridge_core::Result<()> {
/// let config = SnowflakeConfig::new("acme-prod", "LOADER", SecretString::from("…"))
///     .warehouse("LOAD_WH")
///     .database("CASES")
///     .schema("PUBLIC");
/// let pool = SessionPool::new(config, PoolSettings::default());
/// let session = pool.get().await?; // the config's own context
/// session.execute("select 1", &[]).await?;
/// drop(session); // back to the pool
/// let staging = pool.get_for(&SessionKey::default().database("CASES").schema("STAGING")).await?;
/// staging.execute("select 1", &[]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: SnowflakeConfig,
    settings: PoolSettings,
    pools: Mutex<HashMap<SessionKey, Pool>>,
}

impl fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPool")
            .field("config", &self.inner.config)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// A session borrowed from a [`SessionPool`]; it goes back when dropped. Derefs to the
/// [`SnowflakeClient`].
pub struct PooledSession {
    object: managed::Object<Manager>,
}

impl fmt::Debug for PooledSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PooledSession").field(&*self.object).finish()
    }
}

impl Deref for PooledSession {
    type Target = SnowflakeClient;

    fn deref(&self) -> &SnowflakeClient {
        &self.object
    }
}

/// How many sessions a context's pool holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// The context.
    pub key: SessionKey,
    /// Sessions open (in use or idle).
    pub open: usize,
    /// Sessions idle, ready to hand out.
    pub idle: usize,
}

impl SessionPool {
    /// A pool of sessions logged in with `config` (its credential and account; each
    /// context's role, warehouse, database and schema replace the config's). No session
    /// is opened until one is asked for.
    pub fn new(config: SnowflakeConfig, settings: PoolSettings) -> Self {
        SessionPool {
            inner: Arc::new(PoolInner {
                config,
                settings,
                pools: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn pool(&self, key: &SessionKey) -> Result<Pool> {
        let mut pools = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(key) {
            return Ok(pool.clone());
        }
        let settings = &self.inner.settings;
        let manager = Manager {
            config: key.apply(self.inner.config.clone()),
            settings: settings.clone(),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(settings.max_sessions_per_key.max(1))
            .wait_timeout(Some(settings.wait_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::internal(format!("the Snowflake session pool: {e}")))?;
        pools.insert(key.clone(), pool.clone());
        Ok(pool)
    }

    /// A session with the config's own context.
    ///
    /// # Errors
    /// As [`get_for`](SessionPool::get_for).
    pub async fn get(&self) -> Result<PooledSession> {
        self.get_for(&SessionKey::of(&self.inner.config)).await
    }

    /// A session with context `key`: an idle one that passes its checks, else a new
    /// login.
    ///
    /// # Errors
    /// The login's errors; [`Timeout`](ErrorKind::Timeout) when every session of the
    /// context stays busy past `wait_timeout`.
    pub async fn get_for(&self, key: &SessionKey) -> Result<PooledSession> {
        let pool = self.pool(key)?;
        pool.get()
            .await
            .map(|object| PooledSession { object })
            .map_err(|e| match e {
                managed::PoolError::Backend(e) => e,
                managed::PoolError::Timeout(_) => Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "every Snowflake session of {key:?} stayed busy for {:?}",
                        self.inner.settings.wait_timeout
                    ),
                )
                .with_connector(PLATFORM)
                .with_hint(
                    "raise max_sessions_per_key or wait_timeout, or hold sessions for less time",
                ),
                other => Error::internal(format!("the Snowflake session pool: {other}")),
            })
    }

    /// Log out the idle sessions unused for `idle_timeout` or older than
    /// `max_lifetime`; how many.
    pub fn evict_idle(&self) -> usize {
        let settings = &self.inner.settings;
        let pools: Vec<Pool> = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut evicted = 0;
        for pool in pools {
            let removed = pool
                .retain(|_, metrics| {
                    metrics.last_used() < settings.idle_timeout
                        && metrics.age() < settings.max_lifetime
                })
                .removed;
            evicted += removed.len();
            removed.into_iter().for_each(retire);
        }
        evicted
    }

    /// The sessions of every context.
    pub fn status(&self) -> Vec<PoolStatus> {
        self.inner
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, pool)| {
                let status = pool.status();
                PoolStatus {
                    key: key.clone(),
                    open: status.size,
                    idle: status.available,
                }
            })
            .collect()
    }

    /// Log out every idle session and refuse new ones. A session still in use is dropped
    /// when it comes back, without a logout (Snowflake expires it).
    pub async fn close(&self) {
        let pools: Vec<Pool> = self
            .inner
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, pool)| pool)
            .collect();
        for pool in pools {
            let removed = pool.retain(|_, _| false).removed;
            pool.close();
            for client in removed {
                if let Err(e) = client.logout().await {
                    tracing::debug!(error = %e, "logging out a pooled Snowflake session");
                }
            }
        }
    }
}
