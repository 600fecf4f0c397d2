//! [`SecretRef`]: how a configuration points at a secret without containing it.

use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::credential::{CredentialStore, check_secret_key};
use crate::error::{Error, ErrorKind, Result};

/// A reference to a secret: `secret:<key>` in a [`CredentialStore`], or `env:<VAR>` in the
/// process environment. A literal value is refused, so a secret cannot end up in a config
/// file (or in its `Debug` output) by accident.
///
/// ```
/// use moodbridge_core::SecretRef;
///
/// let r: SecretRef = "secret:salesforce/prod/client_secret".parse().unwrap();
/// assert_eq!(r.to_string(), "secret:salesforce/prod/client_secret");
/// let r: SecretRef = "env:SF_CLIENT_SECRET".parse().unwrap();
/// assert!(matches!(r, SecretRef::Env(_)));
///
/// let err = "hunter2".parse::<SecretRef>().unwrap_err();
/// assert!(!err.to_string().contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum SecretRef {
    /// A key in the credential store.
    Store(String),
    /// An environment variable name.
    Env(String),
}

impl SecretRef {
    /// Fetch the secret. `Store` references need a `store`.
    ///
    /// ```
    /// use moodbridge_core::SecretRef;
    /// use secrecy::ExposeSecret;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// // PATH is set in any environment this doc test runs in.
    /// let r: SecretRef = "env:PATH".parse().unwrap();
    /// let value = r.resolve(None).await.unwrap();
    /// assert!(!value.expose_secret().is_empty());
    /// # });
    /// ```
    pub async fn resolve(&self, store: Option<&dyn CredentialStore>) -> Result<SecretString> {
        match self {
            SecretRef::Env(var) => match std::env::var(var) {
                Ok(v) => Ok(SecretString::from(v)),
                Err(std::env::VarError::NotPresent) => Err(Error::config(format!(
                    "environment variable {var} is not set"
                ))
                .with_hint(format!("export {var} before starting the process"))),
                Err(std::env::VarError::NotUnicode(_)) => Err(Error::config(format!(
                    "environment variable {var} is not valid UTF-8"
                ))),
            },
            SecretRef::Store(key) => {
                let Some(store) = store else {
                    return Err(Error::config(format!(
                        "secret:{key} needs a credential store, and none was given"
                    ))
                    .with_hint("pass a CredentialStore when building the integrations"));
                };
                store.get(key).await.map(|s| s.value).map_err(|e| {
                    if e.kind() == ErrorKind::NotFound {
                        Error::config(format!("secret {key} is not in the credential store"))
                            .with_hint(format!("store it first, e.g. under the key {key}"))
                            .with_source(e)
                    } else {
                        e
                    }
                })
            }
        }
    }
}

impl FromStr for SecretRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(key) = s.strip_prefix("secret:") {
            check_secret_key(key).map_err(|e| {
                Error::config(format!("invalid secret reference: {}", e.message()))
                    .with_hint(e.hint().to_owned())
            })?;
            Ok(SecretRef::Store(key.to_owned()))
        } else if let Some(var) = s.strip_prefix("env:") {
            let valid = !var.is_empty()
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !var.starts_with(|c: char| c.is_ascii_digit());
            if valid {
                Ok(SecretRef::Env(var.to_owned()))
            } else {
                Err(Error::config(format!(
                    "{s:?} is not a valid environment variable reference"
                ))
                .with_hint("use env:NAME with letters, digits and '_' only"))
            }
        } else {
            // Never echo the value: it may be the secret itself.
            Err(Error::config("a secret must be given as a reference, not a literal value")
                .with_hint(
                    "store the value and write \"secret:<key>\", or export it and write \"env:<VAR>\"",
                ))
        }
    }
}

/// A reference in a config file: a bad one is reported with what is wrong and the fix,
/// never with the value (it may be the secret itself).
impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e: Error| serde::de::Error::custom(format!("{}; {}", e.message(), e.hint())))
    }
}

impl TryFrom<String> for SecretRef {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<SecretRef> for String {
    fn from(r: SecretRef) -> String {
        r.to_string()
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Store(k) => write!(f, "secret:{k}"),
            SecretRef::Env(v) => write!(f, "env:{v}"),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{Secret, SecretMetadata, SecretVersion};
    use async_trait::async_trait;
    use mockall::mock;
    use mockall::predicate::eq;
    use secrecy::ExposeSecret;

    mock! {
        Store {}
        #[async_trait]
        impl CredentialStore for Store {
            async fn get(&self, key: &str) -> Result<Secret>;
            async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret>;
            async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion>;
            async fn delete(&self, key: &str) -> Result<()>;
            async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>>;
            async fn retire(&self, key: &str, keep_from: &SecretVersion) -> Result<usize>;
        }
    }

    #[tokio::test]
    async fn store_references_resolve_through_the_store() {
        let mut store = MockStore::new();
        store
            .expect_get()
            .with(eq("sf/prod/secret"))
            .times(1)
            .returning(|k| {
                Ok(Secret::new(
                    k,
                    SecretVersion::from(3),
                    SecretString::from("v3"),
                ))
            });
        let r: SecretRef = "secret:sf/prod/secret".parse().unwrap();
        let value = r.resolve(Some(&store)).await.unwrap();
        assert_eq!(value.expose_secret(), "v3");
    }

    #[tokio::test]
    async fn a_missing_stored_secret_is_a_config_error_naming_the_key() {
        let mut store = MockStore::new();
        store
            .expect_get()
            .returning(|_| Err(Error::not_found("no such secret")));
        let r: SecretRef = "secret:sf/prod/secret".parse().unwrap();
        let err = r.resolve(Some(&store)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("sf/prod/secret"), "{err}");
    }

    #[tokio::test]
    async fn store_reference_without_a_store_says_so() {
        let r: SecretRef = "secret:a/b".parse().unwrap();
        let err = r.resolve(None).await.unwrap_err();
        assert!(err.message().contains("needs a credential store"), "{err}");
    }

    #[tokio::test]
    async fn unset_env_var_names_the_variable() {
        let r: SecretRef = "env:MOODBRIDGE_TEST_SURELY_UNSET_VAR".parse().unwrap();
        let err = r.resolve(None).await.unwrap_err();
        assert!(err.to_string().contains("MOODBRIDGE_TEST_SURELY_UNSET_VAR"));
    }

    #[test]
    fn literal_values_and_bad_references_are_refused_without_echoing_them() {
        for bad in ["p@ssw0rd-literal", "secret:../escape", "env:1BAD", "env:"] {
            let err = bad.parse::<SecretRef>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
        let err = "p@ssw0rd-literal".parse::<SecretRef>().unwrap_err();
        assert!(!format!("{err} {err:?}").contains("p@ssw0rd"));
    }

    #[test]
    fn deserializes_from_a_string_in_config() {
        #[derive(Deserialize)]
        struct S {
            client_secret: SecretRef,
        }
        let s: S = toml::from_str("client_secret = \"secret:sf/x\"").unwrap();
        assert_eq!(s.client_secret, SecretRef::Store("sf/x".into()));
        assert!(toml::from_str::<S>("client_secret = \"plain\"").is_err());
    }
}
