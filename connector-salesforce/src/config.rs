//! Settings of a `salesforce` integration, read from its config's `settings` table.
//!
//! ```toml
//! [[integration]]
//! id = "salesforce:prod"
//! kind = "salesforce"
//!
//! [integration.settings]
//! login_url = "https://acme.my.salesforce.com"     # default https://login.salesforce.com
//! max_api_version = "62.0"                          # or api_version = "61.0" to pin one
//! objects = ["Account", "Contact", "Case"]          # the streams offered (default: any object)
//! bulk_threshold = 2000                             # above this many records, Bulk API 2.0
//! auth = { flow = "client_credentials", client_id = "3MVG9…", client_secret = "secret:salesforce/prod/client_secret" }
//! # auth = { flow = "jwt_bearer", client_id = "3MVG9…", username = "integration@acme.com", private_key = "secret:salesforce/prod/jwt_key" }
//! # auth = { flow = "refresh_token", client_id = "3MVG9…", client_secret = "secret:…", refresh_token = "secret:salesforce/prod/refresh_token" }
//! ```
//!
//! Secrets are only ever references (`secret:<key>` in the host's credential store,
//! `env:<VAR>`): a literal in `client_secret`, `private_key` or `refresh_token` is refused
//! by validation without being echoed. Plain `http` login URLs are accepted only on
//! loopback with `allow_loopback = true` (the local sandbox).

use moodbridge_core::SecretRef;
use moodbridge_core::config::{Validate, Validator};
use serde::Deserialize;

use crate::client::ApiVersion;
use crate::sync::DEFAULT_BULK_THRESHOLD;

/// Salesforce's production login host.
pub const DEFAULT_LOGIN_URL: &str = "https://login.salesforce.com";

/// Settings of a `salesforce` integration. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceSettings {
    /// Where tokens are requested: `https://login.salesforce.com` (default),
    /// `https://test.salesforce.com`, the org's My Domain URL, or a local sandbox.
    #[serde(default = "default_login_url")]
    pub login_url: String,
    /// How the integration user signs in.
    pub auth: AuthSettings,
    /// Pin this API version (connecting fails if the org no longer offers it).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Use the newest version the org offers, not above this one.
    #[serde(default)]
    pub max_api_version: Option<String>,
    /// Accept plain-http instances on 127.0.0.1 / localhost (the local sandbox).
    #[serde(default)]
    pub allow_loopback: bool,
    /// Further domains an `instance_url` may be on (a proxy, Private Connect).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Objects the integration offers as streams. Empty (the default): any object of the
    /// org, described when a pipeline names it; `discover()` then lists none.
    #[serde(default)]
    pub objects: Vec<String>,
    /// Above this many records a read or write goes through Bulk API 2.0.
    #[serde(default = "default_bulk_threshold")]
    pub bulk_threshold: u64,
}

fn default_login_url() -> String {
    DEFAULT_LOGIN_URL.into()
}

fn default_bulk_threshold() -> u64 {
    DEFAULT_BULK_THRESHOLD
}

/// How a `salesforce` integration gets its tokens, tagged by `flow`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "flow", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSettings {
    /// The client-credentials flow of a connected app with a run-as user.
    ClientCredentials {
        /// The connected app's consumer key.
        client_id: String,
        /// The connected app's consumer secret.
        client_secret: SecretRef,
    },
    /// The JWT bearer flow (server to server, no secret sent).
    JwtBearer {
        /// The connected app's consumer key.
        client_id: String,
        /// The Salesforce username the tokens are for.
        username: String,
        /// The private key (PEM) of the connected app's certificate.
        private_key: SecretRef,
    },
    /// A refresh token from an earlier authorization-code login.
    RefreshToken {
        /// The connected app's consumer key.
        client_id: String,
        /// The consumer secret, when the app requires it for refresh.
        #[serde(default)]
        client_secret: Option<SecretRef>,
        /// The refresh token.
        refresh_token: SecretRef,
    },
}

impl AuthSettings {
    /// The connected app's consumer key.
    pub fn client_id(&self) -> &str {
        match self {
            AuthSettings::ClientCredentials { client_id, .. }
            | AuthSettings::JwtBearer { client_id, .. }
            | AuthSettings::RefreshToken { client_id, .. } => client_id,
        }
    }
}

impl SalesforceSettings {
    /// The API version choice these settings make.
    pub fn api_version_choice(&self) -> ApiVersion {
        match (&self.api_version, &self.max_api_version) {
            (Some(v), _) => ApiVersion::Pinned(v.clone()),
            (None, max) => ApiVersion::Newest { max: max.clone() },
        }
    }
}

fn is_version(v: &str) -> bool {
    v.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.chars().all(|c| c.is_ascii_digit())
            && b.chars().all(|c| c.is_ascii_digit())
    })
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

impl Validate for SalesforceSettings {
    fn validate_into(&self, v: &mut Validator) {
        match url::Url::parse(&self.login_url) {
            Err(_) => v.problem(
                "login_url",
                format!("{:?} is not a URL", self.login_url),
                "use e.g. \"https://login.salesforce.com\" or your My Domain URL",
            ),
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" && is_loopback(&u) && self.allow_loopback => {}
            Ok(u) if u.scheme() == "http" && is_loopback(&u) => v.problem(
                "login_url",
                "is plain http on loopback, and allow_loopback is not set",
                "set allow_loopback = true to use a local sandbox",
            ),
            Ok(_) => v.problem(
                "login_url",
                format!("{:?} is not https", self.login_url),
                "use the https URL of the login host",
            ),
        }
        for (field, value) in [
            ("api_version", &self.api_version),
            ("max_api_version", &self.max_api_version),
        ] {
            if let Some(version) = value
                && !is_version(version)
            {
                v.problem(
                    field,
                    format!("{version:?} is not an API version"),
                    "write it as \"62.0\"",
                );
            }
        }
        if self.api_version.is_some() && self.max_api_version.is_some() {
            v.problem(
                "max_api_version",
                "is set together with api_version",
                "keep api_version to pin one, or max_api_version to cap the newest",
            );
        }
        if self.auth.client_id().trim().is_empty() {
            v.problem(
                "auth.client_id",
                "is empty",
                "set it to the connected app's consumer key",
            );
        }
        if let AuthSettings::JwtBearer { username, .. } = &self.auth
            && username.trim().is_empty()
        {
            v.problem(
                "auth.username",
                "is empty",
                "set it to the Salesforce username the tokens are for",
            );
        }
        for (i, object) in self.objects.iter().enumerate() {
            if object.is_empty()
                || !object
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                v.problem(
                    format!("objects[{i}]"),
                    format!("{object:?} is not an object API name"),
                    "use API names such as \"Account\" or \"Matter__c\"",
                );
            }
        }
        if self.bulk_threshold == 0 {
            v.problem(
                "bulk_threshold",
                "is 0",
                "use 2000 (Salesforce's guidance), or a large number to avoid Bulk API 2.0",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;
    use moodbridge_core::IntegrationConfig;

    fn check(settings: &str) -> Vec<String> {
        let mut cfg = IntegrationConfig::new("salesforce:prod", "salesforce");
        cfg.settings = toml::from_str(settings).unwrap();
        let mut v = Validator::new();
        cfg.check_settings::<SalesforceSettings>(&mut v);
        v.finish()
            .err()
            .map(|p| p.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_literal_secret_is_refused_without_being_echoed() {
        let problems = check(
            r#"auth = { flow = "client_credentials", client_id = "x", client_secret = "hunter2" }"#,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("reference"), "{problems:?}");
        assert!(!problems[0].contains("hunter2"), "{problems:?}");
    }

    #[test]
    fn semantic_problems_are_reported_together_with_their_paths() {
        let problems = check(
            r#"
            login_url = "http://127.0.0.1:9"
            api_version = "v62"
            max_api_version = "62.0"
            objects = ["Account", "Drop Table"]
            bulk_threshold = 0
            auth = { flow = "jwt_bearer", client_id = " ", username = "", private_key = "env:KEY" }
            "#,
        );
        let paths: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "settings.login_url",
                "settings.api_version",
                "settings.max_api_version",
                "settings.auth.client_id",
                "settings.auth.username",
                "settings.objects[1]",
                "settings.bulk_threshold"
            ],
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_fields_and_flows_are_refused() {
        let problems = check(
            r#"instance = "x"
            auth = { flow = "client_credentials", client_id = "x", client_secret = "env:S" }"#,
        );
        assert!(
            problems[0].contains("unknown field `instance`"),
            "{problems:?}"
        );
        let problems = check(r#"auth = { flow = "password", client_id = "x" }"#);
        assert!(problems[0].contains("password"), "{problems:?}");
    }
}
