//! An in-memory credential store: for tests and ephemeral hosts. Nothing survives the
//! process.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use moodbridge_core::credential::check_secret_key;
use moodbridge_core::{CredentialStore, Error, Result, Secret, SecretMetadata, SecretVersion};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::RwLock;

struct Version {
    /// `None` once retired.
    value: Option<SecretString>,
    created_at: SystemTime,
}

/// Versioned secrets in a map.
///
/// ```
/// use moodbridge_auth::store::MemoryStore;
/// use moodbridge_core::{CredentialStore, SecretVersion};
/// use secrecy::SecretString;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// assert_eq!(store.put("a/token", SecretString::from("one")).await.unwrap(), SecretVersion(1));
/// assert_eq!(store.put("a/token", SecretString::from("two")).await.unwrap(), SecretVersion(2));
/// assert_eq!(store.get("a/token").await.unwrap().version, SecretVersion(2));
/// # });
/// ```
#[derive(Default)]
pub struct MemoryStore {
    secrets: RwLock<BTreeMap<String, Vec<Version>>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn secret(key: &str, index: usize, v: &Version) -> Result<Secret> {
    let version = SecretVersion(index as u64 + 1);
    match &v.value {
        Some(value) => Ok(Secret {
            key: key.to_owned(),
            version,
            value: SecretString::from(value.expose_secret().to_owned()),
            created_at: v.created_at,
        }),
        None => Err(
            Error::not_found(format!("secret {key} {version} was retired"))
                .with_hint("read the latest version, or a version not yet retired"),
        ),
    }
}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Secret> {
        check_secret_key(key)?;
        let secrets = self.secrets.read().await;
        let versions = secrets
            .get(key)
            .ok_or_else(|| Error::not_found(format!("no secret {key}")))?;
        let (index, v) = versions
            .iter()
            .enumerate()
            .next_back()
            .ok_or_else(|| Error::not_found(format!("no secret {key}")))?;
        secret(key, index, v)
    }

    async fn get_version(&self, key: &str, version: SecretVersion) -> Result<Secret> {
        check_secret_key(key)?;
        let secrets = self.secrets.read().await;
        let index = usize::try_from(version.0)
            .ok()
            .and_then(|v| v.checked_sub(1));
        match (secrets.get(key), index) {
            (Some(versions), Some(i)) if i < versions.len() => secret(key, i, &versions[i]),
            _ => Err(Error::not_found(format!("no secret {key} {version}"))),
        }
    }

    async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        check_secret_key(key)?;
        let mut secrets = self.secrets.write().await;
        let versions = secrets.entry(key.to_owned()).or_default();
        versions.push(Version {
            value: Some(value),
            created_at: SystemTime::now(),
        });
        Ok(SecretVersion(versions.len() as u64))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_secret_key(key)?;
        self.secrets.write().await.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>> {
        let secrets = self.secrets.read().await;
        Ok(secrets
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, versions)| {
                let last = versions.last()?;
                Some(SecretMetadata {
                    key: k.clone(),
                    latest: SecretVersion(versions.len() as u64),
                    readable: versions
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.value.is_some())
                        .map(|(i, _)| SecretVersion(i as u64 + 1))
                        .collect(),
                    updated_at: last.created_at,
                })
            })
            .collect())
    }

    async fn retire(&self, key: &str, keep_from: SecretVersion) -> Result<usize> {
        check_secret_key(key)?;
        let mut secrets = self.secrets.write().await;
        let Some(versions) = secrets.get_mut(key) else {
            return Ok(0);
        };
        let newest = versions.len();
        let mut retired = 0;
        for (i, v) in versions.iter_mut().enumerate() {
            let number = i as u64 + 1;
            if number < keep_from.0 && i + 1 < newest && v.value.take().is_some() {
                retired += 1;
            }
        }
        Ok(retired)
    }
}
