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
mod validate;

pub use secret_ref::SecretRef;
pub use validate::{ConfigProblem, ConfigProblems, Validate, Validator};

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

fn span_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
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
        let mut seen = std::collections::BTreeSet::new();
        for (i, integration) in self.integrations.iter().enumerate() {
            v.nested(format!("integration[{i}]"), |v| {
                integration.validate_into(v);
                if !seen.insert(integration.id.as_str()) {
                    v.problem(
                        "id",
                        format!("{:?} is used by more than one integration", integration.id),
                        "give every integration a unique id",
                    );
                }
            });
        }
    }
}

/// One integration: its id, kind, resilience policy and connector-specific settings.
///
/// `Debug` is safe to log: settings may only hold secret *references*, never secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
            id = "prod"
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
