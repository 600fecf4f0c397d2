//! Where and as whom a [`SnowflakeClient`](crate::SnowflakeClient) logs in.

use std::fmt;
use std::time::Duration;

use std::sync::Arc;

use moodbridge_auth::token_manager::TokenManager;
use moodbridge_core::credential::CredentialStore;
use moodbridge_core::resilience::{Policy, PolicyConfig, RetryConfig};
use moodbridge_core::{Error, Result, SecretRef};
use secrecy::{ExposeSecret, SecretString};

use crate::PLATFORM;

/// A credential kept in a credential store (or the environment) and read at every login,
/// so a rotated password or key is used by the next login without a restart.
///
/// ```
/// use connector_snowflake::StoredCredential;
/// use moodbridge_core::SecretRef;
/// let key: SecretRef = "secret:snowflake/loader-key".parse().unwrap();
/// let credential = StoredCredential::KeyPair { private_key: key, passphrase: None };
/// # let _ = credential;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredCredential {
    /// A password.
    Password(SecretRef),
    /// An RSA private key (PKCS#8 PEM) and its passphrase when encrypted. During a key
    /// rotation the user has both `RSA_PUBLIC_KEY` and `RSA_PUBLIC_KEY_2`: store the new
    /// private key and the next login uses it.
    KeyPair {
        /// The private key.
        private_key: SecretRef,
        /// Its passphrase.
        passphrase: Option<SecretRef>,
    },
    /// An OAuth access token (the `OAUTH` authenticator).
    OAuth(SecretRef),
    /// A programmatic access token.
    ProgrammaticAccessToken(SecretRef),
}

/// How the user proves who it is.
#[derive(Clone)]
pub(crate) enum Credential {
    /// Read from a store at every login.
    Stored {
        credential: StoredCredential,
        store: Option<Arc<dyn CredentialStore>>,
    },
    Password(SecretString),
    /// An RSA private key (PKCS#8 PEM, encrypted or not) for a JWT.
    KeyPair {
        pem: SecretString,
        passphrase: Option<SecretString>,
    },
    /// A bearer token: `OAUTH` or `PROGRAMMATIC_ACCESS_TOKEN`.
    Token {
        authenticator: String,
        token: SecretString,
    },
    /// An OAuth access token from a token manager, asked for at every login.
    Managed {
        manager: TokenManager,
        provider: String,
        principal: String,
    },
}

impl Credential {
    /// The secrets it holds (to scrub from errors).
    pub(crate) fn secrets(&self) -> Vec<&str> {
        match self {
            Credential::Password(p) => vec![p.expose_secret()],
            Credential::KeyPair { pem, passphrase } => {
                let mut out = vec![pem.expose_secret()];
                out.extend(passphrase.as_ref().map(|p| p.expose_secret()));
                out
            }
            Credential::Token { token, .. } => vec![token.expose_secret()],
            Credential::Stored { .. } | Credential::Managed { .. } => Vec::new(),
        }
    }

    /// The credential to log in with now: a stored one read from its store.
    pub(crate) async fn current(&self) -> Result<Credential> {
        let Credential::Stored { credential, store } = self else {
            return Ok(self.clone());
        };
        let store = store.as_deref();
        Ok(match credential {
            StoredCredential::Password(secret) => {
                Credential::Password(secret.resolve(store).await?)
            }
            StoredCredential::KeyPair {
                private_key,
                passphrase,
            } => Credential::KeyPair {
                pem: private_key.resolve(store).await?,
                passphrase: match passphrase {
                    Some(p) => Some(p.resolve(store).await?),
                    None => None,
                },
            },
            StoredCredential::OAuth(secret) => Credential::Token {
                authenticator: "OAUTH".to_owned(),
                token: secret.resolve(store).await?,
            },
            StoredCredential::ProgrammaticAccessToken(secret) => Credential::Token {
                authenticator: "PROGRAMMATIC_ACCESS_TOKEN".to_owned(),
                token: secret.resolve(store).await?,
            },
        })
    }
}

/// A Snowflake login: the account, the user and its password or key pair, and the
/// session's context. Its `Debug` form hides the password and the key.
///
/// ```
/// use connector_snowflake::SnowflakeConfig;
/// use secrecy::{ExposeSecret, SecretString};
/// let config = SnowflakeConfig::new("acme-prod", "LOADER", SecretString::from("s3cret"))
///     .database("CASES")
///     .role("LOADER_ROLE");
/// assert_eq!(config.base_url(), "https://acme-prod.snowflakecomputing.com");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct SnowflakeConfig {
    pub(crate) account: String,
    pub(crate) user: String,
    pub(crate) credential: Credential,
    pub(crate) url: Option<String>,
    pub(crate) database: Option<String>,
    pub(crate) schema: Option<String>,
    pub(crate) warehouse: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) policy: Option<PolicyConfig>,
    pub(crate) shared_policy: Option<Policy>,
    pub(crate) prefetch: usize,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) query_tag: Option<String>,
}

impl fmt::Debug for SnowflakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnowflakeConfig")
            .field("account", &self.account)
            .field("user", &self.user)
            .field(
                "credential",
                &match self.credential {
                    Credential::Password(_) => "password <redacted>",
                    Credential::KeyPair { .. } => "key pair <redacted>",
                    Credential::Token { .. } => "token <redacted>",
                    Credential::Stored { .. } => "stored <read at login>",
                    Credential::Managed { .. } => "OAuth token manager <asked at login>",
                },
            )
            .field("url", &self.base_url())
            .field("database", &self.database)
            .field("schema", &self.schema)
            .field("warehouse", &self.warehouse)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl SnowflakeConfig {
    /// Log in to `account` (the account identifier, `orgname-account` or a locator) as
    /// `user` with `password`.
    pub fn new(
        account: impl Into<String>,
        user: impl Into<String>,
        password: SecretString,
    ) -> Self {
        Self::with(account.into(), user.into(), Credential::Password(password))
    }

    /// Log in to `account` as `user` with key-pair authentication: a JWT signed with
    /// `private_key_pem` (an RSA key in PKCS#8 PEM; with `passphrase`, encrypted PKCS#8),
    /// whose public key is the user's `RSA_PUBLIC_KEY` (or `RSA_PUBLIC_KEY_2`, during a
    /// rotation).
    ///
    /// ```
    /// use connector_snowflake::SnowflakeConfig;
    /// use secrecy::SecretString;
    /// let config = SnowflakeConfig::key_pair(
    ///     "acme-prod",
    ///     "LOADER",
    ///     SecretString::from("-----BEGIN PRIVATE KEY-----\n…"),
    ///     None,
    /// );
    /// assert!(!format!("{config:?}").contains("BEGIN PRIVATE KEY"));
    /// ```
    pub fn key_pair(
        account: impl Into<String>,
        user: impl Into<String>,
        private_key_pem: SecretString,
        passphrase: Option<SecretString>,
    ) -> Self {
        Self::with(
            account.into(),
            user.into(),
            Credential::KeyPair {
                pem: private_key_pem,
                passphrase,
            },
        )
    }

    fn with(account: String, user: String, credential: Credential) -> Self {
        SnowflakeConfig {
            account,
            user,
            credential,
            url: None,
            database: None,
            schema: None,
            warehouse: None,
            role: None,
            timeout: Duration::from_secs(120),
            policy: None,
            shared_policy: None,
            prefetch: 4,
            statement_timeout: None,
            query_tag: None,
        }
    }

    /// Log in to `account` as `user` with `credential`, read from `store` (or the
    /// environment, for `env:` references) at every login: a rotated secret is picked up
    /// by the next login.
    pub fn stored(
        account: impl Into<String>,
        user: impl Into<String>,
        credential: StoredCredential,
        store: Option<Arc<dyn CredentialStore>>,
    ) -> Self {
        Self::with(
            account.into(),
            user.into(),
            Credential::Stored { credential, store },
        )
    }

    /// Log in to `account` as `user` with an OAuth access token (from the host's token
    /// manager; Snowflake's `OAUTH` authenticator). A session outlives the token; a new
    /// login needs a fresh one.
    pub fn oauth(
        account: impl Into<String>,
        user: impl Into<String>,
        access_token: SecretString,
    ) -> Self {
        Self::with(
            account.into(),
            user.into(),
            Credential::Token {
                authenticator: "OAUTH".to_owned(),
                token: access_token,
            },
        )
    }

    /// Log in to `account` as `user` with an OAuth access token that `manager` keeps
    /// fresh: asked for at every login (a session outlives its token, and a new login
    /// after the master token expires needs a valid one). When Snowflake refuses the
    /// token (expired early, revoked), it is rejected to the manager, a fresh one is
    /// fetched, and the login is tried once more.
    ///
    /// ```
    /// use connector_snowflake::SnowflakeConfig;
    /// use moodbridge_auth::token_manager::TokenManager;
    /// let tokens = TokenManager::new();
    /// // tokens.register("okta", "loader", source) — client credentials, a refresh token …
    /// let config = SnowflakeConfig::oauth_managed("acme-prod", "LOADER", tokens, "okta", "loader");
    /// assert!(format!("{config:?}").contains("OAuth token manager"));
    /// ```
    pub fn oauth_managed(
        account: impl Into<String>,
        user: impl Into<String>,
        manager: TokenManager,
        provider: impl Into<String>,
        principal: impl Into<String>,
    ) -> Self {
        Self::with(
            account.into(),
            user.into(),
            Credential::Managed {
                manager,
                provider: provider.into(),
                principal: principal.into(),
            },
        )
    }

    /// Log in to `account` as `user` with a programmatic access token
    /// (`PROGRAMMATIC_ACCESS_TOKEN`).
    ///
    /// ```
    /// use connector_snowflake::SnowflakeConfig;
    /// use secrecy::SecretString;
    /// let config = SnowflakeConfig::programmatic_access_token(
    ///     "acme-prod",
    ///     "LOADER",
    ///     SecretString::from("pat-secret"),
    /// );
    /// assert!(!format!("{config:?}").contains("pat-secret"));
    /// ```
    pub fn programmatic_access_token(
        account: impl Into<String>,
        user: impl Into<String>,
        token: SecretString,
    ) -> Self {
        Self::with(
            account.into(),
            user.into(),
            Credential::Token {
                authenticator: "PROGRAMMATIC_ACCESS_TOKEN".to_owned(),
                token,
            },
        )
    }

    /// How many result chunks are downloaded ahead of the reader (default 4). Memory
    /// held by a result stream is about this many decoded chunks.
    #[must_use]
    pub fn prefetch(mut self, chunks: usize) -> Self {
        self.prefetch = chunks.max(1);
        self
    }

    /// Cancel a statement that has not answered after `limit` and fail it with
    /// [`Timeout`](moodbridge_core::ErrorKind::Timeout) (default: no limit beyond
    /// Snowflake's own `STATEMENT_TIMEOUT_IN_SECONDS`).
    #[must_use]
    pub fn statement_timeout(mut self, limit: Duration) -> Self {
        self.statement_timeout = Some(limit);
        self
    }

    /// The session's `QUERY_TAG`: every statement carries it unless a
    /// [`tagged`](crate::SnowflakeClient::tagged) handle gives its own.
    #[must_use]
    pub fn query_tag(mut self, tag: impl Into<String>) -> Self {
        self.query_tag = Some(tag.into());
        self
    }

    /// The server's base URL (default `https://<account>.snowflakecomputing.com`; a
    /// local server such as fakesnow: `http://127.0.0.1:<port>`).
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The session's database.
    #[must_use]
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// The session's schema.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The session's warehouse.
    #[must_use]
    pub fn warehouse(mut self, warehouse: impl Into<String>) -> Self {
        self.warehouse = Some(warehouse.into());
        self
    }

    /// The session's role.
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// How long one request may take (default 120 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The policy every request runs through (default: [`default_policy_config`]).
    #[must_use]
    pub fn policy(mut self, policy: PolicyConfig) -> Self {
        self.policy = Some(policy);
        self
    }

    /// A built policy that every request of every session from this config runs
    /// through, so its breaker and rate limit see all of them (an integration's policy).
    #[must_use]
    pub fn shared_policy(mut self, policy: Policy) -> Self {
        self.shared_policy = Some(policy);
        self
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> String {
        self.url.clone().map_or_else(
            || format!("https://{}.snowflakecomputing.com", self.account),
            |u| u.trim_end_matches('/').to_owned(),
        )
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.account.trim().is_empty() || self.user.trim().is_empty() {
            return Err(
                Error::config("a Snowflake login needs an account and a user")
                    .with_connector(PLATFORM)
                    .with_hint("give the account identifier (orgname-account) and the login name"),
            );
        }
        if let Some(url) = &self.url
            && url::Url::parse(url).is_err()
        {
            return Err(
                Error::config(format!("the Snowflake URL {url:?} is not a URL"))
                    .with_connector(PLATFORM)
                    .with_hint("use https://<account>.snowflakecomputing.com, or leave it out"),
            );
        }
        Ok(())
    }
}

/// The default policy of Snowflake requests: up to 5 attempts with backoff from 500 ms
/// (429, 5xx and dropped connections are temporary; a retried statement keeps its
/// request id, so Snowflake runs it once).
pub fn default_policy_config() -> PolicyConfig {
    PolicyConfig {
        retry: Some(RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(16),
            max_elapsed: Duration::from_secs(300),
            budget: None,
        }),
        ..Default::default()
    }
}
