//! Settings of a `snowflake` integration, read from its config's `settings` table.
//!
//! ```toml
//! [[integration]]
//! id = "snowflake:warehouse"
//! kind = "snowflake"
//!
//! [integration.settings]
//! account = "acme-prod"                        # orgname-account, or a locator
//! user = "MOODBRIDGE_LOADER"
//! private_key = "secret:snowflake/loader-key"  # or password / oauth_token /
//!                                              # programmatic_access_token (one of them)
//! # private_key_passphrase = "secret:snowflake/loader-key-passphrase"
//! warehouse = "LOAD_WH"
//! database = "CASES"
//! schema = "PUBLIC"
//! role = "LOADER"
//! query_tag = "moodbridge"
//! prefetch = 4                    # result chunks downloaded ahead of the reader
//! statement_timeout_secs = 600    # cancel statements running longer (default: none)
//! request_timeout_secs = 120
//! # url = "http://127.0.0.1:8080" # a local server instead of <account>.snowflakecomputing.com
//! # lineage_file = "/var/lib/moodbridge/lineage.jsonl"  # the sink's OpenLineage events
//!
//! [integration.settings.pool]
//! max_sessions_per_key = 8
//! max_lifetime_secs = 3600
//! idle_timeout_secs = 600
//! health_check_after_secs = 60
//! wait_timeout_secs = 30
//!
//! # Credits of the sync runs, checked by the health check (from ACCOUNT_USAGE).
//! [integration.settings.cost]
//! per_run_credits = 2.0
//! total_credits = 20.0
//! window_hours = 24              # the runs of the last day (default)
//! check_every_secs = 900         # the views are queried at most this often (default)
//!
//! least_privilege = true        # the health check compares the role's grants with loading's needs
//!
//! # Warehouses reconciled by SnowflakeIntegration::reconcile_warehouses, under a guard.
//! [[integration.settings.warehouses]]
//! name = "LOAD_WH"
//! size = "small"
//! auto_suspend_secs = 60
//!
//! [integration.settings.warehouse_guard]
//! max_auto_suspend_secs = 600
//! max_size = "large"
//!
//! # Policies and tags reconciled by SnowflakeIntegration::reconcile_governance.
//! [[integration.settings.governance.masking_policies]]
//! name = "SSN_MASK"
//! signature = "VAL STRING"
//! returns = "STRING"
//! body = "CASE WHEN IS_ROLE_IN_SESSION('PII_READER') THEN VAL ELSE '***' END"
//! columns = ["Contact.SSN__c"]
//! ```
//!
//! Secrets are references (`secret:` in the host's credential store, `env:`), read at
//! every login: a rotated password or key is used by the next login.

use std::time::Duration;

use moodbridge_core::SecretRef;
use moodbridge_core::config::{Validate, Validator};
use serde::Deserialize;

use crate::config::StoredCredential;
use crate::cost::CostBudget;
use crate::governance::GovernanceSpec;
use crate::pool::PoolSettings;
use crate::warehouse::{Guard, WarehouseSpec};

/// Settings of a `snowflake` integration. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeSettings {
    /// The account identifier.
    pub account: String,
    /// The login name.
    pub user: String,
    /// A password.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// An RSA private key (PKCS#8 PEM) for key-pair authentication.
    #[serde(default)]
    pub private_key: Option<SecretRef>,
    /// The private key's passphrase, when it is encrypted.
    #[serde(default)]
    pub private_key_passphrase: Option<SecretRef>,
    /// An OAuth access token.
    #[serde(default)]
    pub oauth_token: Option<SecretRef>,
    /// A programmatic access token.
    #[serde(default)]
    pub programmatic_access_token: Option<SecretRef>,
    /// The server's base URL (default `https://<account>.snowflakecomputing.com`).
    #[serde(default)]
    pub url: Option<String>,
    /// The sessions' database.
    #[serde(default)]
    pub database: Option<String>,
    /// The sessions' schema.
    #[serde(default)]
    pub schema: Option<String>,
    /// The sessions' warehouse.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// The sessions' role.
    #[serde(default)]
    pub role: Option<String>,
    /// The sessions' `QUERY_TAG`.
    #[serde(default)]
    pub query_tag: Option<String>,
    /// Result chunks downloaded ahead of the reader (default 4).
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Cancel a statement that runs longer, seconds (default: no limit of ours).
    #[serde(default)]
    pub statement_timeout_secs: Option<u64>,
    /// One HTTP request at most, seconds (default 120).
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// The session pool.
    #[serde(default)]
    pub pool: PoolTable,
    /// The sync runs' credits, watched by the health check.
    #[serde(default)]
    pub cost: Option<CostTable>,
    /// Warehouses declared for
    /// [`reconcile_warehouses`](crate::SnowflakeIntegration::reconcile_warehouses).
    #[serde(default)]
    pub warehouses: Vec<WarehouseSpec>,
    /// The rules declared warehouses must meet.
    #[serde(default)]
    pub warehouse_guard: Guard,
    /// Append the sink's OpenLineage events to this file, one JSON object per line.
    #[serde(default)]
    pub lineage_file: Option<std::path::PathBuf>,
    /// Masking and row access policies and tags, reconciled by
    /// [`reconcile_governance`](crate::SnowflakeIntegration::reconcile_governance).
    #[serde(default)]
    pub governance: GovernanceSpec,
    /// Hold the role to least privilege for loading: the health check reports what it
    /// lacks (down) and what it has beyond that (degraded). Needs `warehouse`,
    /// `database` and `schema`.
    #[serde(default)]
    pub least_privilege: bool,
}

/// The `cost` table of [`SnowflakeSettings`]: the budget the health check holds the
/// sync runs to (see [`cost`](crate::cost)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostTable {
    /// Most credits one run may use.
    #[serde(default)]
    pub per_run_credits: Option<f64>,
    /// Most credits the window's runs may use together.
    #[serde(default)]
    pub total_credits: Option<f64>,
    /// The window, hours back from now (default 24).
    #[serde(default = "default_window_hours")]
    pub window_hours: u32,
    /// The runs' tags start with this (default `moodbridge:`; `moodbridge:cases:` for
    /// one pipeline).
    #[serde(default = "default_tag_prefix")]
    pub tag_prefix: String,
    /// Query the usage views at most this often, seconds (default 900).
    #[serde(default = "default_check_every_secs")]
    pub check_every_secs: u64,
}

fn default_window_hours() -> u32 {
    24
}

fn default_tag_prefix() -> String {
    "moodbridge:".to_owned()
}

fn default_check_every_secs() -> u64 {
    900
}

impl CostTable {
    /// The thresholds.
    pub fn budget(&self) -> CostBudget {
        CostBudget {
            per_run_credits: self.per_run_credits,
            total_credits: self.total_credits,
        }
    }
}

fn default_prefetch() -> usize {
    4
}

fn default_request_timeout_secs() -> u64 {
    120
}

/// The `pool` table of [`SnowflakeSettings`] (see [`PoolSettings`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolTable {
    /// Sessions per context at most.
    pub max_sessions_per_key: usize,
    /// A session older than this is retired, seconds.
    pub max_lifetime_secs: u64,
    /// Idle sessions are evicted after this long, seconds.
    pub idle_timeout_secs: u64,
    /// A heartbeat before reusing a session idle this long, seconds.
    pub health_check_after_secs: u64,
    /// How long to wait for a free session, seconds.
    pub wait_timeout_secs: u64,
}

impl Default for PoolTable {
    fn default() -> Self {
        let d = PoolSettings::default();
        PoolTable {
            max_sessions_per_key: d.max_sessions_per_key,
            max_lifetime_secs: d.max_lifetime.as_secs(),
            idle_timeout_secs: d.idle_timeout.as_secs(),
            health_check_after_secs: d.health_check_after.as_secs(),
            wait_timeout_secs: d.wait_timeout.as_secs(),
        }
    }
}

impl PoolTable {
    /// As [`PoolSettings`].
    pub fn settings(&self) -> PoolSettings {
        PoolSettings {
            max_sessions_per_key: self.max_sessions_per_key,
            max_lifetime: Duration::from_secs(self.max_lifetime_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            health_check_after: Duration::from_secs(self.health_check_after_secs),
            wait_timeout: Duration::from_secs(self.wait_timeout_secs),
        }
    }
}

impl SnowflakeSettings {
    /// The one credential the settings give, `None` when they give none or several
    /// (which [`Validate`] reports).
    pub fn credential(&self) -> Option<StoredCredential> {
        let given = [
            self.password.clone().map(StoredCredential::Password),
            self.private_key
                .clone()
                .map(|private_key| StoredCredential::KeyPair {
                    private_key,
                    passphrase: self.private_key_passphrase.clone(),
                }),
            self.oauth_token.clone().map(StoredCredential::OAuth),
            self.programmatic_access_token
                .clone()
                .map(StoredCredential::ProgrammaticAccessToken),
        ];
        let mut found = given.into_iter().flatten();
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }
}

impl Validate for SnowflakeSettings {
    fn validate_into(&self, v: &mut Validator) {
        if self.account.trim().is_empty() {
            v.problem(
                "account",
                "is empty",
                "give the account identifier (orgname-account, or the account locator)",
            );
        }
        if self.user.trim().is_empty() {
            v.problem("user", "is empty", "give the login name");
        }
        let credentials = [
            self.password.is_some(),
            self.private_key.is_some(),
            self.oauth_token.is_some(),
            self.programmatic_access_token.is_some(),
        ]
        .into_iter()
        .filter(|given| *given)
        .count();
        if credentials != 1 {
            v.problem(
                "password",
                format!("{credentials} credentials are given"),
                "give exactly one of password, private_key, oauth_token and programmatic_access_token (a secret: or env: reference)",
            );
        }
        if self.private_key_passphrase.is_some() && self.private_key.is_none() {
            v.problem(
                "private_key_passphrase",
                "is given without a private_key",
                "remove it, or give the encrypted private_key it opens",
            );
        }
        if let Some(url) = &self.url
            && url::Url::parse(url).is_err()
        {
            v.problem(
                "url",
                format!("{url:?} is not a URL"),
                "use https://<account>.snowflakecomputing.com, or leave it out",
            );
        }
        if self.prefetch == 0 {
            v.problem("prefetch", "is 0", "use at least 1 (default 4)");
        }
        if self.request_timeout_secs == 0 {
            v.problem(
                "request_timeout_secs",
                "is 0",
                "use a number of seconds (default 120)",
            );
        }
        if self.statement_timeout_secs == Some(0) {
            v.problem(
                "statement_timeout_secs",
                "is 0",
                "leave it out for no limit, or give seconds",
            );
        }
        if let Some(cost) = &self.cost {
            for (name, limit) in [
                ("cost.per_run_credits", cost.per_run_credits),
                ("cost.total_credits", cost.total_credits),
            ] {
                if limit.is_some_and(|l| !(l.is_finite() && l > 0.0)) {
                    v.problem(name, "is not a positive number", "give credits, e.g. 2.5");
                }
            }
            if cost.window_hours == 0 {
                v.problem("cost.window_hours", "is 0", "use at least 1 (default 24)");
            }
        }
        if let Err(e) = self.governance.check() {
            v.problem("governance", e.message(), e.hint());
        }
        if self.least_privilege {
            for (name, given) in [
                ("warehouse", &self.warehouse),
                ("database", &self.database),
                ("schema", &self.schema),
            ] {
                if given.is_none() {
                    v.problem(
                        name,
                        "is not given, and least_privilege checks grants on it",
                        format!("give the {name} the loads use, or turn least_privilege off"),
                    );
                }
            }
        }
        for (i, spec) in self.warehouses.iter().enumerate() {
            if let Err(e) = spec.check(&self.warehouse_guard) {
                v.problem(format!("warehouses[{i}]"), e.message(), e.hint());
            }
        }
        if self.pool.max_sessions_per_key == 0 {
            v.problem(
                "pool.max_sessions_per_key",
                "is 0",
                "use at least 1 (default 8)",
            );
        }
    }
}
