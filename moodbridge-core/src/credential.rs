//! [`CredentialStore`]: versioned secrets.
//!
//! A secret lives under a key (`salesforce/prod/client_secret`). Each value written is a
//! version with an opaque id ([`SecretVersion`]: the store's own) and a creation time.
//! One version is **current** (what [`get`](CredentialStore::get) returns). `put` makes a
//! new current version; the one it replaces becomes **previous** and stays readable —
//! with every older version — until it is retired, so a process still holding the old
//! value keeps working during a rollover. Stores that can also hold a **pending** version
//! (written, not yet current: [`stage`](CredentialStore::stage) then
//! [`promote`](CredentialStore::promote)) let a rotation verify a new value in place
//! before any reader sees it; [`crate::rotation`] drives rotations over any store.
//! Values are [`SecretString`]s from the moment they are read until the moment they are
//! used, so they never reach a log or a `Debug` string.
//!
//! Implementations live where their backend lives: in-memory, environment and encrypted
//! SQLite stores in `moodbridge-auth`, AWS Secrets Manager in `connector-aws`, Azure Key
//! Vault in `connector-azure`. All of them check keys with [`check_secret_key`].

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The id of one version of a secret: opaque, the store's own — a counter in the local
/// stores (`"1"`, `"2"` …), a UUID in AWS Secrets Manager, 32 hex digits in Azure Key
/// Vault. Compare versions for equality only; their order is their
/// [`created_at`](Secret::created_at), which every store keeps.
///
/// ```
/// use moodbridge_core::SecretVersion;
/// let v = SecretVersion::new("a1b2c3");
/// assert_eq!(v.as_str(), "a1b2c3");
/// assert_eq!(v.to_string(), "version a1b2c3");
/// assert_eq!(SecretVersion::from(3), SecretVersion::new("3"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretVersion(String);

impl SecretVersion {
    /// The version with id `id`.
    pub fn new(id: impl Into<String>) -> Self {
        SecretVersion(id.into())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<u64> for SecretVersion {
    /// A counter's version (the local stores number versions from 1).
    fn from(n: u64) -> Self {
        SecretVersion(n.to_string())
    }
}

impl fmt::Display for SecretVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {}", self.0)
    }
}

/// A secret value with its key and version. `Debug` shows the key and version only.
///
/// ```
/// use moodbridge_core::{Secret, SecretVersion};
/// use secrecy::{ExposeSecret, SecretString};
///
/// let s = Secret::new("salesforce/prod/client_secret", SecretVersion::from(2), SecretString::from("hunter2"));
/// assert!(!format!("{s:?}").contains("hunter2"));
/// assert_eq!(s.value.expose_secret(), "hunter2");
/// ```
pub struct Secret {
    /// The key.
    pub key: String,
    /// The version.
    pub version: SecretVersion,
    /// The value.
    pub value: SecretString,
    /// When this version was written.
    pub created_at: SystemTime,
}

impl Secret {
    /// A secret created now.
    pub fn new(key: impl Into<String>, version: SecretVersion, value: SecretString) -> Self {
        Secret {
            key: key.into(),
            version,
            value,
            created_at: SystemTime::now(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("key", &self.key)
            .field("version", &self.version)
            .field("value", &"[REDACTED]")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// What a store tells about a secret without revealing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMetadata {
    /// The key.
    pub key: String,
    /// The current version: what [`CredentialStore::get`] returns.
    pub current: SecretVersion,
    /// A staged version waiting for [`CredentialStore::promote`], if any.
    pub pending: Option<SecretVersion>,
    /// Versions still readable (not retired), oldest first: the current one, the ones
    /// it replaced, and a pending one.
    pub readable: Vec<SecretVersion>,
    /// When the current version was written.
    pub updated_at: SystemTime,
}

/// A store of versioned secrets. See the [module docs](self) for current, previous and
/// pending versions.
///
/// Errors: an unknown key or version is [`ErrorKind::NotFound`];
/// a retired version is `NotFound` too, with a hint that it was retired; an invalid key is
/// [`ErrorKind::InvalidInput`]; staging on a store that
/// cannot is [`ErrorKind::Unsupported`].
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// The current version of `key`.
    async fn get(&self, key: &str) -> Result<Secret>;

    /// One version of `key`.
    async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret>;

    /// Store `value` as the new current version of `key` (creating the key if needed)
    /// and return its version. The version it replaces, and older ones, stay readable.
    async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion>;

    /// Delete `key` and all its versions. Deleting a missing key is not an error. Cloud
    /// stores delete softly (a recovery window); see each store for recovery.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Metadata of every key that starts with `prefix` (`""` lists all), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>>;

    /// Make every version of `key` created before `keep_from` unreadable; return how many
    /// versions were retired. The current and the pending version are never retired.
    ///
    /// # Errors
    /// `NotFound` when `keep_from` is not a version of `key`.
    async fn retire(&self, key: &str, keep_from: &SecretVersion) -> Result<usize>;

    /// Whether the store holds pending versions ([`stage`](Self::stage) and
    /// [`promote`](Self::promote) work).
    fn can_stage(&self) -> bool {
        false
    }

    /// Store `value` as the pending version of `key`, not current: [`get`](Self::get)
    /// still returns the current one until [`promote`](Self::promote). A pending version
    /// staged before is no longer pending.
    ///
    /// # Errors
    /// `Unsupported` on a store that cannot (the default); `NotFound` for a key with no
    /// current version yet (`put` the first one).
    async fn stage(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        let _ = value;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("this credential store cannot hold a pending version of {key}"),
        )
        .with_hint(
            "verify the new value before writing it, then put it (moodbridge_core::rotation does)",
        ))
    }

    /// Make `version` (the pending one, or any readable one) current; the version it
    /// replaces stays readable. Promoting the current version changes nothing.
    ///
    /// # Errors
    /// `Unsupported` on a store that cannot (the default); `NotFound` for a version
    /// that is not readable.
    async fn promote(&self, key: &str, version: &SecretVersion) -> Result<()> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("this credential store cannot promote {version} of {key}"),
        ))
    }
}

/// A shared store is a store.
#[async_trait]
impl<T: CredentialStore + ?Sized> CredentialStore for std::sync::Arc<T> {
    async fn get(&self, key: &str) -> Result<Secret> {
        (**self).get(key).await
    }

    async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret> {
        (**self).get_version(key, version).await
    }

    async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        (**self).put(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>> {
        (**self).list(prefix).await
    }

    async fn retire(&self, key: &str, keep_from: &SecretVersion) -> Result<usize> {
        (**self).retire(key, keep_from).await
    }

    fn can_stage(&self) -> bool {
        (**self).can_stage()
    }

    async fn stage(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        (**self).stage(key, value).await
    }

    async fn promote(&self, key: &str, version: &SecretVersion) -> Result<()> {
        (**self).promote(key, version).await
    }
}

/// The longest key a store accepts.
pub const MAX_SECRET_KEY_LEN: usize = 256;

/// Check a secret key: 1–256 characters of ASCII letters, digits and `/ _ - .`, no empty
/// path segment, no `.` or `..` segment, not starting or ending with `/`.
///
/// ```
/// use moodbridge_core::credential::check_secret_key;
/// assert!(check_secret_key("salesforce/prod/client_secret").is_ok());
/// assert!(check_secret_key("../etc/passwd").is_err());
/// assert!(check_secret_key("").is_err());
/// ```
pub fn check_secret_key(key: &str) -> Result<()> {
    let problem = if key.is_empty() {
        Some("is empty")
    } else if key.len() > MAX_SECRET_KEY_LEN {
        Some("is longer than 256 characters")
    } else if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.'))
    {
        Some("has a character other than ASCII letters, digits, '/', '_', '-' and '.'")
    } else if key
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        Some("has an empty, '.' or '..' path segment")
    } else {
        None
    };
    match problem {
        // The key is not a secret, but it may be long or odd: show a bounded prefix.
        Some(p) => Err(Error::invalid_input(format!(
            "secret key {:?} {p}",
            key.chars().take(64).collect::<String>()
        ))
        .with_hint("use keys like \"salesforce/prod/client_secret\"")),
        None => Ok(()),
    }
}
