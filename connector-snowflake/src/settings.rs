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
//!
//! [integration.settings.pool]
//! max_sessions_per_key = 8
//! max_lifetime_secs = 3600
//! idle_timeout_secs = 600
//! health_check_after_secs = 60
//! wait_timeout_secs = 30
//! ```
//!
//! Secrets are references (`secret:` in the host's credential store, `env:`), read at
//! every login: a rotated password or key is used by the next login.

use std::time::Duration;

use moodbridge_core::SecretRef;
use moodbridge_core::config::{Validate, Validator};
use serde::Deserialize;

use crate::config::StoredCredential;
use crate::pool::PoolSettings;

/// Settings of a `snowflake` integration. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
        if self.pool.max_sessions_per_key == 0 {
            v.problem(
                "pool.max_sessions_per_key",
                "is 0",
                "use at least 1 (default 8)",
            );
        }
    }
}
