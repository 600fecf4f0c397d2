//! Configuration: integration configs, secret references, and validation that reports
//! every problem at once.
//!
//! A host describes its integrations in TOML (or any serde format):
//!
//! ```toml
//! [[integration]]
//! id = "salesforce:prod"
//! kind = "salesforce"
//!
//! [integration.settings]
//! instance = "https://acme.my.salesforce.com"
//! client_secret = "secret:salesforce/prod/client_secret"
//!
//! [integration.policy.retry]
//! max_attempts = 5
//! ```
//!
//! Secrets never appear in config: only references to them ([`SecretRef`]) that are
//! resolved through a [`CredentialStore`](crate::CredentialStore) or the environment when
//! the integration is built.

mod secret_ref;

pub use crate::validate::{ConfigProblem, ConfigProblems, Validate, Validator};
pub use secret_ref::SecretRef;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::resilience::PolicyConfig;

/// The configuration of every integration of a host.
///
/// ```
/// use moodbridge_core::SdkConfig;
///
/// let cfg = SdkConfig::from_toml(r#"
///     [[integration]]
///     id = "demo:local"
///     kind = "demo"
/// "#).unwrap();
/// assert_eq!(cfg.integrations[0].id, "demo:local");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdkConfig {
    /// The integrations, each `[[integration]]` table of the file.
    #[serde(default, rename = "integration")]
    pub integrations: Vec<IntegrationConfig>,
}

impl SdkConfig {
    /// Parse TOML. Syntax and type errors name the line and the field.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            Error::config(format!("invalid integration config: {}", e.message()))
                .with_context("at", span_of(text, e.span()))
                .with_hint("fix the TOML at the position shown")
        })
    }
}

pub(crate) fn span_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        }
        None => "unknown position".to_owned(),
    }
}

impl Validate for SdkConfig {
    fn validate_into(&self, v: &mut Validator) {
        validate_integrations(&self.integrations, v, |_, _| {});
    }
}

/// Every problem of `integrations` under `integration[i]` paths: each one's own
/// (`IntegrationConfig::validate_into`), ids used twice, then `more` (what a caller knows
/// beyond the config itself, such as the registry's kinds).
pub(crate) fn validate_integrations(
    integrations: &[IntegrationConfig],
    v: &mut Validator,
    mut more: impl FnMut(&IntegrationConfig, &mut Validator),
) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, integration) in integrations.iter().enumerate() {
        v.nested(format!("integration[{i}]"), |v| {
            integration.validate_into(v);
            if !seen.insert(integration.id.as_str()) {
                v.problem(
                    "id",
                    format!("{:?} is used by more than one integration", integration.id),
                    "give every integration a unique id",
                );
            }
            more(integration, v);
        });
    }
}

/// One integration: its id, kind, resilience policy and connector-specific settings.
///
/// `Debug` is safe to log: it prints numbers, booleans and secret *references*
/// (`secret:…`, `env:…`) of the settings, and of any other text only its length — a
/// literal secret put where a reference belongs is never printed.
///
/// ```
/// use moodbridge_core::IntegrationConfig;
///
/// let mut cfg = IntegrationConfig::new("salesforce:prod", "salesforce");
/// cfg.settings.insert("client_secret".into(), "hunter2-literal".into());
/// cfg.settings.insert("token_ref".into(), "secret:salesforce/prod/token".into());
/// let debug = format!("{cfg:?}");
/// assert!(!debug.contains("hunter2"));
/// assert!(debug.contains("secret:salesforce/prod/token"));
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Unique id, `"<kind>:<name>"`.
    pub id: String,
    /// The connector kind, e.g. `"salesforce"`; must be registered in the
    /// [`Registry`](crate::Registry).
    pub kind: String,
    /// Whether to build it. Disabled integrations are validated but not built.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// The resilience policy wrapped around every call.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Connector-specific settings, read by the connector with
    /// [`IntegrationConfig::settings`].
    #[serde(default)]
    pub settings: toml::Table,
}

fn enabled_default() -> bool {
    true
}

impl std::fmt::Debug for IntegrationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("enabled", &self.enabled)
            .field("policy", &self.policy)
            .field("settings", &SafeTable(&self.settings))
            .finish()
    }
}

/// Settings as `Debug` shows them: no text that is not a secret reference.
struct SafeTable<'a>(&'a toml::Table);

struct SafeValue<'a>(&'a toml::Value);

impl std::fmt::Debug for SafeTable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, SafeValue(v))))
            .finish()
    }
}

impl std::fmt::Debug for SafeValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            toml::Value::String(s) if s.parse::<SecretRef>().is_ok() => write!(f, "{s:?}"),
            toml::Value::String(s) => write!(f, "<text, {} chars>", s.chars().count()),
            toml::Value::Integer(i) => write!(f, "{i}"),
            toml::Value::Float(x) => write!(f, "{x}"),
            toml::Value::Boolean(b) => write!(f, "{b}"),
            toml::Value::Datetime(d) => write!(f, "{d}"),
            toml::Value::Array(items) => {
                f.debug_list().entries(items.iter().map(SafeValue)).finish()
            }
            toml::Value::Table(t) => SafeTable(t).fmt(f),
        }
    }
}

impl IntegrationConfig {
    /// A config with default policy and no settings.
    pub fn new(id: impl Into<String>, kind: impl Into<String>) -> Self {
        IntegrationConfig {
            id: id.into(),
            kind: kind.into(),
            enabled: true,
            policy: PolicyConfig::default(),
            settings: toml::Table::new(),
        }
    }

    /// The settings as the connector's typed struct. A mismatch is a
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) error naming the field.
    ///
    /// ```
    /// use moodbridge_core::IntegrationConfig;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct DemoSettings { endpoint: String }
    ///
    /// let mut cfg = IntegrationConfig::new("demo:a", "demo");
    /// cfg.settings.insert("endpoint".into(), "http://127.0.0.1:9".into());
    /// let s: DemoSettings = cfg.settings().unwrap();
    /// assert_eq!(s.endpoint, "http://127.0.0.1:9");
    /// ```
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        toml::Value::Table(self.settings.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                Error::config(format!("invalid settings for {}: {}", self.id, e.message()))
                    .with_hint("see the connector's setup guide in docs/ for the settings it takes")
            })
    }

    /// Check the settings against the connector's typed settings `T`: a shape error (an
    /// unknown or missing field, a wrong type, a literal where a secret reference belongs)
    /// and every problem `T`'s own [`Validate`] finds are added to `v` under `settings`.
    /// Returns the settings when they parsed.
    ///
    /// ```
    /// use moodbridge_core::config::{Validate, Validator};
    /// use moodbridge_core::{IntegrationConfig, SecretRef};
    ///
    /// #[derive(serde::Deserialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct DemoSettings { endpoint: String, password: SecretRef }
    /// impl Validate for DemoSettings {
    ///     fn validate_into(&self, v: &mut Validator) {
    ///         if !self.endpoint.starts_with("https://") {
    ///             v.problem("endpoint", "is not https", "use an https:// URL");
    ///         }
    ///     }
    /// }
    ///
    /// let mut cfg = IntegrationConfig::new("demo:a", "demo");
    /// cfg.settings.insert("endpoint".into(), "https://example.com".into());
    /// cfg.settings.insert("password".into(), "hunter2".into());
    /// let mut v = Validator::new();
    /// assert!(cfg.check_settings::<DemoSettings>(&mut v).is_none());
    /// let problems = v.finish().unwrap_err();
    /// let problem = problems.iter().next().unwrap();
    /// assert_eq!(problem.path, "settings");
    /// assert!(problem.problem.contains("reference"), "{problem}");
    /// assert!(!problem.to_string().contains("hunter2"));
    /// ```
    pub fn check_settings<T>(&self, v: &mut Validator) -> Option<T>
    where
        T: serde::de::DeserializeOwned + Validate,
    {
        match toml::Value::Table(self.settings.clone()).try_into::<T>() {
            Ok(settings) => {
                v.nested("settings", |v| settings.validate_into(v));
                Some(settings)
            }
            Err(e) => {
                v.problem(
                    "settings",
                    settings_problem(&e),
                    format!(
                        "see the settings of kind {:?} in its setup guide (docs/)",
                        self.kind
                    ),
                );
                None
            }
        }
    }
}

/// A settings shape error as a problem line. A literal in a secret field is reported by
/// `SecretRef`'s own message, which never repeats the value; toml's messages only name
/// fields and types.
fn settings_problem(e: &toml::de::Error) -> String {
    e.message().trim().to_owned()
}

impl Validate for IntegrationConfig {
    fn validate_into(&self, v: &mut Validator) {
        if self.kind.is_empty() {
            v.problem(
                "kind",
                "is empty",
                "set it to a connector kind such as \"salesforce\"",
            );
        } else if let Err(e) = crate::integration::check_id(&self.id, &self.kind) {
            v.problem("id", e.message().to_owned(), e.hint().to_owned());
        }
        v.nested("policy", |v| self.policy.validate_into(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_the_line() {
        let err = SdkConfig::from_toml("[[integration]]\nid = \"a:b\"\nkind = 3\n").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert_eq!(err.context_value("at"), Some("line 3"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            SdkConfig::from_toml("[[integration]]\nid = \"a:b\"\nkind = \"a\"\nretries = 3\n")
                .unwrap_err();
        assert!(err.message().contains("unknown field"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let cfg = SdkConfig::from_toml(
            r#"
            [[integration]]
            id = "sales force"
            kind = "salesforce"
            [integration.policy.retry]
            max_attempts = 0

            [[integration]]
            id = "s3:docs"
            kind = "s3"

            [[integration]]
            id = "s3:docs"
            kind = "s3"
            "#,
        )
        .unwrap();
        let problems = cfg.validate().unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "integration[0].id",
                "integration[0].policy.retry.max_attempts",
                "integration[2].id"
            ]
        );
    }
}
