//! The `snowflake` kind: a pool of sessions built from config ([`SnowflakeSettings`]),
//! every request of every session through the integration's `Policy`, credentials read
//! from the host's credential store at every login.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moodbridge_core::config::Validator;
use moodbridge_core::integration::Interfaces;
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::{
    Capabilities, Capability, Error, HealthReport, HealthStatus, IntegrationConfig,
    PlatformIntegration, PolicyConfig, Result, SyncSink,
};

use crate::config::{SnowflakeConfig, default_policy_config};
use crate::cost::{self, CostReport};
use crate::governance::{
    Governance, GovernancePlan, GovernanceSpec, PrivilegeReport, grants_to_role,
};
use crate::pool::SessionPool;
use crate::settings::{CostTable, SnowflakeSettings};
use crate::sink::SnowflakeSink;
use crate::warehouse::{Guard, WarehouseSpec, Warehouses};
use moodbridge_core::lineage::{JsonLinesLineage, LineageRecorder};

/// The kind name.
pub const KIND: &str = "snowflake";

/// Builds `snowflake` integrations from [`SnowflakeSettings`].
///
/// ```
/// use connector_snowflake::SnowflakeFactory;
/// use moodbridge_core::{Registry, SdkConfig};
///
/// let mut registry = Registry::new();
/// registry.register(std::sync::Arc::new(SnowflakeFactory)).unwrap();
/// let config = SdkConfig::from_toml(r#"
/// [[integration]]
/// id = "snowflake:warehouse"
/// kind = "snowflake"
/// [integration.settings]
/// account = "acme-prod"
/// user = "LOADER"
/// password = "env:SNOWFLAKE_PASSWORD"
/// private_key = "secret:snowflake/key"
/// "#).unwrap();
/// let err = registry.validate(&config).unwrap_err().to_string();
/// assert!(err.contains("2 credentials are given"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SnowflakeFactory;

impl SnowflakeFactory {
    /// The session pool `ctx` describes (no login yet).
    ///
    /// # Errors
    /// The settings' problems, all at once ([`Config`](moodbridge_core::ErrorKind::Config)).
    pub fn pool(ctx: &BuildContext) -> Result<SessionPool> {
        let s: SnowflakeSettings = ctx.settings()?;
        let credential = s
            .credential()
            .ok_or_else(|| Error::internal("validated settings without one credential"))?;
        let mut config =
            SnowflakeConfig::stored(&s.account, &s.user, credential, ctx.credentials.clone())
                .shared_policy(ctx.policy.clone())
                .prefetch(s.prefetch)
                .timeout(Duration::from_secs(s.request_timeout_secs));
        for (value, set) in [
            (
                &s.url,
                SnowflakeConfig::url as fn(SnowflakeConfig, String) -> SnowflakeConfig,
            ),
            (&s.database, SnowflakeConfig::database),
            (&s.schema, SnowflakeConfig::schema),
            (&s.warehouse, SnowflakeConfig::warehouse),
            (&s.role, SnowflakeConfig::role),
            (&s.query_tag, SnowflakeConfig::query_tag),
        ] {
            if let Some(value) = value {
                config = set(config, value.clone());
            }
        }
        if let Some(secs) = s.statement_timeout_secs {
            config = config.statement_timeout(Duration::from_secs(secs));
        }
        Ok(SessionPool::new(config, s.pool.settings()))
    }
}

/// The cost watch of an integration: its settings and the last report.
#[derive(Debug)]
struct CostWatch {
    table: CostTable,
    last: tokio::sync::Mutex<Option<(Instant, std::result::Result<CostReport, String>)>>,
}

/// A `snowflake` integration: its [`SessionPool`] and a [`SnowflakeSink`] over it, the
/// cost budget its health check holds the runs to, and its declared warehouses (the
/// pool, the sink as `dyn SyncSink` and the integration itself are among its
/// interfaces).
#[derive(Debug, Clone)]
pub struct SnowflakeIntegration {
    id: String,
    pool: SessionPool,
    sink: Arc<SnowflakeSink>,
    cost: Option<Arc<CostWatch>>,
    warehouses: Arc<(Vec<WarehouseSpec>, Guard)>,
    governance: Arc<GovernanceSpec>,
    /// The warehouse, database and schema whose grants the health check checks.
    least_privilege: Option<Arc<(String, String, String)>>,
}

impl SnowflakeIntegration {
    /// An integration named `id` over `pool`.
    pub fn new(id: impl Into<String>, pool: SessionPool) -> Self {
        SnowflakeIntegration {
            id: id.into(),
            sink: Arc::new(SnowflakeSink::pooled(pool.clone())),
            pool,
            cost: None,
            warehouses: Arc::new((Vec::new(), Guard::default())),
            governance: Arc::new(GovernanceSpec::default()),
            least_privilege: None,
        }
    }

    /// Declare `spec` for [`reconcile_governance`](Self::reconcile_governance).
    #[must_use]
    pub fn with_governance(mut self, spec: GovernanceSpec) -> Self {
        self.governance = Arc::new(spec);
        self
    }

    /// Check the role's grants at every health check against what loading into
    /// `database`.`schema` on `warehouse` needs ([`PrivilegeReport`]).
    #[must_use]
    pub fn with_least_privilege(
        mut self,
        warehouse: impl Into<String>,
        database: impl Into<String>,
        schema: impl Into<String>,
    ) -> Self {
        self.least_privilege = Some(Arc::new((warehouse.into(), database.into(), schema.into())));
        self
    }

    /// Make the account hold the declared policies and tags: the plan, applied
    /// unless `dry_run`.
    ///
    /// # Errors
    /// The spec's problems; conflicts (when applying); the statements'.
    pub async fn reconcile_governance(&self, dry_run: bool) -> Result<GovernancePlan> {
        let session = self.pool.get().await?;
        let governance = Governance::new(session.clone());
        if dry_run {
            governance.plan(&self.governance).await
        } else {
            governance.apply(&self.governance).await
        }
    }

    /// The session role's grants against what loading needs (`None` when the
    /// integration was not asked to check them).
    ///
    /// # Errors
    /// The statements'.
    pub async fn privileges(&self) -> Result<Option<PrivilegeReport>> {
        let Some(needs) = &self.least_privilege else {
            return Ok(None);
        };
        let (warehouse, database, schema) = &**needs;
        let session = self.pool.get().await?;
        let role = session
            .execute("SELECT CURRENT_ROLE()", &[])
            .await?
            .json_rows()?
            .first()
            .and_then(|r| r.as_object()?.values().next()?.as_str().map(str::to_owned))
            .unwrap_or_default();
        let grants = grants_to_role(&session, &role).await?;
        Ok(Some(PrivilegeReport::of(
            &role, &grants, warehouse, database, schema,
        )))
    }

    /// Hold the sync runs to `cost`'s budget: the health check reports `Degraded`
    /// with the alerts when a threshold is crossed (the usage views queried at most
    /// every `check_every_secs`).
    #[must_use]
    pub fn with_cost(mut self, cost: CostTable) -> Self {
        self.cost = Some(Arc::new(CostWatch {
            table: cost,
            last: tokio::sync::Mutex::new(None),
        }));
        self
    }

    /// Record the sink's lineage to `recorder` (see [`SnowflakeSink::lineage`]).
    #[must_use]
    pub fn with_lineage(mut self, recorder: Arc<dyn LineageRecorder>) -> Self {
        self.sink = Arc::new(SnowflakeSink::pooled(self.pool.clone()).lineage(recorder));
        self
    }

    /// Declare `warehouses`, held to `guard`, for
    /// [`reconcile_warehouses`](Self::reconcile_warehouses).
    #[must_use]
    pub fn with_warehouses(mut self, warehouses: Vec<WarehouseSpec>, guard: Guard) -> Self {
        self.warehouses = Arc::new((warehouses, guard));
        self
    }

    /// Make the declared warehouses what config says: the statements each needs (a
    /// `CREATE`, an `ALTER` of what differs), run unless `dry_run`. Every spec is
    /// checked before any statement runs.
    ///
    /// # Errors
    /// A spec the guard refuses ([`Config`](moodbridge_core::ErrorKind::Config));
    /// a statement's error.
    pub async fn reconcile_warehouses(&self, dry_run: bool) -> Result<Vec<String>> {
        let (specs, guard) = &*self.warehouses;
        for spec in specs {
            spec.check(guard)?;
        }
        let session = self.pool.get().await?;
        let warehouses = Warehouses::new(session.clone());
        let mut statements = Vec::new();
        for spec in specs {
            statements.extend(if dry_run {
                warehouses.plan(spec, guard).await?
            } else {
                warehouses.apply(spec, guard).await?
            });
        }
        Ok(statements)
    }

    /// The cost report of the configured window (`None` without a `cost` table), at
    /// most `check_every_secs` old.
    ///
    /// # Errors
    /// The usage views' query.
    pub async fn cost_report(&self) -> Result<Option<CostReport>> {
        let Some(watch) = &self.cost else {
            return Ok(None);
        };
        let mut last = watch.last.lock().await;
        let fresh = Duration::from_secs(watch.table.check_every_secs);
        if let Some((at, report)) = &*last
            && at.elapsed() < fresh
        {
            return report
                .clone()
                .map(Some)
                .map_err(|e| Error::unavailable(e).with_connector(crate::PLATFORM));
        }
        let until = chrono::Utc::now();
        let since = until - chrono::Duration::hours(i64::from(watch.table.window_hours));
        let result = async {
            let session = self.pool.get().await?;
            cost::report(
                &session,
                &watch.table.tag_prefix,
                since,
                until,
                &watch.table.budget(),
            )
            .await
        }
        .await;
        *last = Some((
            Instant::now(),
            result.as_ref().map_err(ToString::to_string).cloned(),
        ));
        result.map(Some)
    }

    /// The session pool.
    pub fn pool(&self) -> &SessionPool {
        &self.pool
    }

    /// The sink loading the sync engine's batches through the pool.
    pub fn sink(&self) -> Arc<SnowflakeSink> {
        self.sink.clone()
    }
}

#[async_trait]
impl PlatformIntegration for SnowflakeIntegration {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &str {
        KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none()
            .with(Capability::Query)
            .with(Capability::Read)
            .with(Capability::Write))
    }

    /// A session from the pool (a login when there is none) and a heartbeat; with
    /// least privilege on, the role's grants (`Down` lacking one, `Degraded` with more);
    /// with a cost budget, the runs' credits (`Degraded` over budget).
    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        let outcome = async {
            let session = self.pool.get().await?;
            session.heartbeat().await
        }
        .await;
        if let Err(e) = outcome {
            return HealthReport::from_result(started.elapsed(), Err::<(), _>(e));
        }
        let open: usize = self.pool.status().iter().map(|s| s.open).sum();
        let mut status = HealthStatus::Up;
        let mut detail = format!("session alive; {open} open");
        // Each check's report joins the detail and can lower the status; a check that
        // cannot be read (a role without the usage views) says so and lowers nothing.
        let checks = [
            (
                "grants",
                self.privileges().await.map(|r| r.map(|r| r.health())),
            ),
            (
                "cost",
                self.cost_report().await.map(|r| r.map(|r| r.health())),
            ),
        ];
        for (what, check) in checks {
            match check {
                Ok(None) => {}
                Ok(Some(report)) => {
                    status = status.max(report.status);
                    detail = format!("{detail}; {what}: {}", report.detail);
                }
                Err(e) => detail = format!("{detail}; {what} unknown: {e}"),
            }
        }
        HealthReport::new(status, started.elapsed(), detail)
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new()
            .with::<SessionPool>(Arc::new(self.pool.clone()))
            .with::<SnowflakeIntegration>(Arc::new((*self).clone()))
            .with::<dyn SyncSink>(self.sink.clone())
    }
}

#[async_trait]
impl IntegrationFactory for SnowflakeFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<SnowflakeSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let pool = Self::pool(&ctx)?;
        let s: SnowflakeSettings = ctx.settings()?;
        let mut integration = SnowflakeIntegration::new(ctx.config.id, pool)
            .with_warehouses(s.warehouses, s.warehouse_guard);
        if let Some(cost) = s.cost {
            integration = integration.with_cost(cost);
        }
        if s.least_privilege
            && let (Some(w), Some(d), Some(sc)) = (&s.warehouse, &s.database, &s.schema)
        {
            integration = integration.with_least_privilege(w, d, sc);
        }
        integration = integration.with_governance(s.governance);
        if let Some(path) = s.lineage_file {
            integration = integration.with_lineage(Arc::new(JsonLinesLineage::new(path)));
        }
        Ok(Arc::new(integration))
    }
}
