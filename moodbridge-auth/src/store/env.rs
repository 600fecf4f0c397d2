//! A read-only credential store over environment variables.
//!
//! A key maps to a variable name: the prefix, then the key upper-cased with `/`, `.` and
//! `-` turned into `_`. With prefix `MOODBRIDGE_`, `salesforce/prod/client_secret` is read
//! from `MOODBRIDGE_SALESFORCE_PROD_CLIENT_SECRET`. Values are wrapped as secrets the
//! moment they are read and never logged. There is one version, 1; writes are refused.

use std::time::SystemTime;

use async_trait::async_trait;
use moodbridge_core::credential::check_secret_key;
use moodbridge_core::{
    CredentialStore, Error, ErrorKind, Result, Secret, SecretMetadata, SecretVersion,
};
use secrecy::SecretString;

/// Secrets from environment variables. See the module docs.
///
/// ```
/// use moodbridge_auth::store::EnvStore;
/// let store = EnvStore::new("MOODBRIDGE_");
/// assert_eq!(store.variable("salesforce/prod/client_secret"), "MOODBRIDGE_SALESFORCE_PROD_CLIENT_SECRET");
/// ```
#[derive(Debug, Clone)]
pub struct EnvStore {
    prefix: String,
}

impl EnvStore {
    /// A store reading variables that start with `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        EnvStore {
            prefix: prefix.into(),
        }
    }

    /// The variable `key` is read from.
    pub fn variable(&self, key: &str) -> String {
        let mut name = self.prefix.clone();
        name.extend(key.chars().map(|c| match c {
            '/' | '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        }));
        name
    }

    fn read_only(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!("the environment store cannot {what}"),
        )
        .with_hint("set the variable in the process environment, or use a writable store")
    }
}

#[async_trait]
impl CredentialStore for EnvStore {
    async fn get(&self, key: &str) -> Result<Secret> {
        check_secret_key(key)?;
        let var = self.variable(key);
        match std::env::var(&var) {
            Ok(value) => Ok(Secret::new(
                key,
                SecretVersion::from(1),
                SecretString::from(value),
            )),
            Err(std::env::VarError::NotPresent) => Err(Error::not_found(format!(
                "no secret {key}: environment variable {var} is not set"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::config(format!(
                "environment variable {var} is not valid UTF-8"
            ))),
        }
    }

    async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret> {
        if *version != SecretVersion::from(1) {
            return Err(Error::not_found(format!(
                "no secret {key} {version}: environment secrets have only version 1"
            )));
        }
        self.get(key).await
    }

    async fn put(&self, _key: &str, _value: SecretString) -> Result<SecretVersion> {
        Err(self.read_only("store secrets"))
    }

    async fn delete(&self, _key: &str) -> Result<()> {
        Err(self.read_only("delete secrets"))
    }

    /// Lists variables under the prefix. Keys are shown in variable form, lower-cased
    /// (`salesforce_prod_client_secret`), since `/` and `_` cannot be told apart.
    async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>> {
        let mut keys: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter_map(|name| name.strip_prefix(&self.prefix).map(str::to_ascii_lowercase))
            .filter(|key| {
                key.starts_with(&self.variable(prefix)[self.prefix.len()..].to_ascii_lowercase())
            })
            .collect();
        keys.sort();
        Ok(keys
            .into_iter()
            .map(|key| SecretMetadata {
                key,
                current: SecretVersion::from(1),
                pending: None,
                readable: vec![SecretVersion::from(1)],
                updated_at: SystemTime::UNIX_EPOCH,
            })
            .collect())
    }

    async fn retire(&self, key: &str, keep_from: &SecretVersion) -> Result<usize> {
        self.get_version(key, keep_from).await.map(|_| 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[tokio::test]
    async fn reads_the_mapped_variable() {
        // PATH is set wherever tests run; map a key onto it.
        let store = EnvStore::new("");
        let secret = store.get("path").await.unwrap();
        assert_eq!(secret.value.expose_secret(), std::env::var("PATH").unwrap());
        assert_eq!(secret.version, SecretVersion::from(1));
    }

    #[tokio::test]
    async fn a_missing_variable_names_the_variable() {
        let store = EnvStore::new("MOODBRIDGE_TEST_NOPE_");
        let err = store.get("sf/prod/secret").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(
            err.to_string()
                .contains("MOODBRIDGE_TEST_NOPE_SF_PROD_SECRET")
        );
    }

    #[tokio::test]
    async fn writes_are_refused() {
        let store = EnvStore::new("X_");
        let err = store.put("a", SecretString::from("v")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert_eq!(
            store.delete("a").await.unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }

    #[tokio::test]
    async fn a_secret_value_never_shows_in_debug() {
        let store = EnvStore::new("");
        let secret = store.get("path").await.unwrap();
        let path = std::env::var("PATH").unwrap();
        assert!(!format!("{secret:?}").contains(&path));
    }
}
