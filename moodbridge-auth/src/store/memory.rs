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

/// The versions of one key: numbered from 1 by their place, with the current one and a
/// pending one.
#[derive(Default)]
struct Versions {
    all: Vec<Version>,
    /// Index of the current version.
    current: usize,
    /// Index of the pending version.
    pending: Option<usize>,
}

/// Versioned secrets in a map, with pending versions ([`stage`](CredentialStore::stage)).
///
/// ```
/// use moodbridge_auth::store::MemoryStore;
/// use moodbridge_core::{CredentialStore, SecretVersion};
/// use secrecy::SecretString;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// assert_eq!(store.put("a/token", SecretString::from("one")).await.unwrap(), SecretVersion::from(1));
/// assert_eq!(store.put("a/token", SecretString::from("two")).await.unwrap(), SecretVersion::from(2));
/// assert_eq!(store.get("a/token").await.unwrap().version, SecretVersion::from(2));
/// # });
/// ```
#[derive(Default)]
pub struct MemoryStore {
    secrets: RwLock<BTreeMap<String, Versions>>,
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

fn version_of(index: usize) -> SecretVersion {
    SecretVersion::from(index as u64 + 1)
}

/// The index of `version` among `count` versions.
fn index_of(version: &SecretVersion, count: usize) -> Option<usize> {
    version
        .as_str()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .filter(|i| *i < count)
}

fn secret(key: &str, index: usize, v: &Version) -> Result<Secret> {
    let version = version_of(index);
    match &v.value {
        Some(value) => Ok(Secret {
            key: key.to_owned(),
            version,
            value: SecretString::from(value.expose_secret().to_owned()),
            created_at: v.created_at,
        }),
        None => Err(
            Error::not_found(format!("secret {key} {version} was retired"))
                .with_hint("read the current version, or a version not yet retired"),
        ),
    }
}

fn no_version(key: &str, version: &SecretVersion) -> Error {
    Error::not_found(format!("no secret {key} {version}"))
}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Secret> {
        check_secret_key(key)?;
        let secrets = self.secrets.read().await;
        let versions = secrets
            .get(key)
            .ok_or_else(|| Error::not_found(format!("no secret {key}")))?;
        secret(key, versions.current, &versions.all[versions.current])
    }

    async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret> {
        check_secret_key(key)?;
        let secrets = self.secrets.read().await;
        let versions = secrets.get(key).ok_or_else(|| no_version(key, version))?;
        let i = index_of(version, versions.all.len()).ok_or_else(|| no_version(key, version))?;
        secret(key, i, &versions.all[i])
    }

    async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        check_secret_key(key)?;
        let mut secrets = self.secrets.write().await;
        let versions = secrets.entry(key.to_owned()).or_default();
        versions.all.push(Version {
            value: Some(value),
            created_at: SystemTime::now(),
        });
        versions.current = versions.all.len() - 1;
        Ok(version_of(versions.current))
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
            .map(|(k, versions)| SecretMetadata {
                key: k.clone(),
                current: version_of(versions.current),
                pending: versions.pending.map(version_of),
                readable: versions
                    .all
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.value.is_some())
                    .map(|(i, _)| version_of(i))
                    .collect(),
                updated_at: versions.all[versions.current].created_at,
            })
            .collect())
    }

    async fn retire(&self, key: &str, keep_from: &SecretVersion) -> Result<usize> {
        check_secret_key(key)?;
        let mut secrets = self.secrets.write().await;
        let versions = secrets
            .get_mut(key)
            .ok_or_else(|| no_version(key, keep_from))?;
        let keep =
            index_of(keep_from, versions.all.len()).ok_or_else(|| no_version(key, keep_from))?;
        let (current, pending) = (versions.current, versions.pending);
        let mut retired = 0;
        for (i, v) in versions.all.iter_mut().enumerate().take(keep) {
            if i != current && Some(i) != pending && v.value.take().is_some() {
                retired += 1;
            }
        }
        Ok(retired)
    }

    fn can_stage(&self) -> bool {
        true
    }

    async fn stage(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        check_secret_key(key)?;
        let mut secrets = self.secrets.write().await;
        let versions = secrets.get_mut(key).ok_or_else(|| {
            Error::not_found(format!("no secret {key} to stage a version of"))
                .with_hint("put the first version; stage the ones that replace it")
        })?;
        if let Some(old) = versions.pending {
            versions.all[old].value = None;
        }
        versions.all.push(Version {
            value: Some(value),
            created_at: SystemTime::now(),
        });
        let i = versions.all.len() - 1;
        versions.pending = Some(i);
        Ok(version_of(i))
    }

    async fn promote(&self, key: &str, version: &SecretVersion) -> Result<()> {
        check_secret_key(key)?;
        let mut secrets = self.secrets.write().await;
        let versions = secrets
            .get_mut(key)
            .ok_or_else(|| no_version(key, version))?;
        let i = index_of(version, versions.all.len())
            .filter(|i| versions.all[*i].value.is_some())
            .ok_or_else(|| no_version(key, version))?;
        versions.current = i;
        if versions.pending == Some(i) {
            versions.pending = None;
        }
        Ok(())
    }
}
