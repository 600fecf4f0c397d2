//! [`CredentialStore`]: versioned secrets.
//!
//! A secret lives under a key (`salesforce/prod/client_secret`). `put` of an existing key
//! makes a new version — that is rotation — and older versions stay readable until they
//! are retired, so a process still holding the old value keeps working during a rollover.
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

use crate::error::{Error, Result};

/// A version number of a secret; the first `put` makes version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretVersion(pub u64);

impl fmt::Display for SecretVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A secret value with its key and version. `Debug` shows the key and version only.
///
/// ```
/// use moodbridge_core::{Secret, SecretVersion};
/// use secrecy::{ExposeSecret, SecretString};
///
/// let s = Secret::new("salesforce/prod/client_secret", SecretVersion(2), SecretString::from("hunter2"));
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
    /// The newest version.
    pub latest: SecretVersion,
    /// Versions still readable (not retired), oldest first.
    pub readable: Vec<SecretVersion>,
    /// When the newest version was written.
    pub updated_at: SystemTime,
}

/// A store of versioned secrets.
///
/// Errors: an unknown key or version is [`ErrorKind::NotFound`](crate::ErrorKind::NotFound);
/// a retired version is `NotFound` too, with a hint that it was retired; an invalid key is
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput).
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// The newest version of `key`.
    async fn get(&self, key: &str) -> Result<Secret>;

    /// One version of `key`.
    async fn get_version(&self, key: &str, version: SecretVersion) -> Result<Secret>;

    /// Store `value` as the new newest version of `key` (creating the key if needed) and
    /// return its version. Older versions stay readable.
    async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion>;

    /// Delete `key` and all its versions. Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Metadata of every key that starts with `prefix` (`""` lists all), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>>;

    /// Make every version of `key` older than `keep_from` unreadable; return how many
    /// versions were retired. The newest version can never be retired.
    async fn retire(&self, key: &str, keep_from: SecretVersion) -> Result<usize>;
}

/// A shared store is a store.
#[async_trait]
impl<T: CredentialStore + ?Sized> CredentialStore for std::sync::Arc<T> {
    async fn get(&self, key: &str) -> Result<Secret> {
        (**self).get(key).await
    }

    async fn get_version(&self, key: &str, version: SecretVersion) -> Result<Secret> {
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

    async fn retire(&self, key: &str, keep_from: SecretVersion) -> Result<usize> {
        (**self).retire(key, keep_from).await
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
