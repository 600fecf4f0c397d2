//! Master keys of the encrypted store: 256-bit AES keys from an environment variable, a
//! key file, or freshly generated; and the keyring a store is opened with.
//!
//! A key is identified by its *key id*: the first 8 bytes of HMAC-SHA256(key,
//! "moodbridge master key id"), in hex. The id tells which key encrypted a row without
//! revealing anything about the key, so a store can say "this row needs key 3fa9…" when
//! opened with the wrong one.

use std::fmt;
use std::path::Path;

use aws_lc_rs::{hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use moodbridge_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

/// Length of a master key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// A 256-bit master key. The bytes are wiped from memory on drop and never shown by
/// `Debug` or `Display`.
///
/// ```
/// use moodbridge_auth::store::MasterKey;
///
/// let key = MasterKey::generate().unwrap();
/// assert_eq!(key.id().len(), 16);
/// assert!(!format!("{key:?}").contains(&key.to_base64()[..8]));
/// ```
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {}, [REDACTED])", self.id)
    }
}

impl MasterKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, bytes.as_ref()),
            b"moodbridge master key id",
        );
        let id = mac.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        MasterKey { bytes, id }
    }

    /// A new random key from the system's secure random source.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; KEY_LEN];
        rand::fill(&mut bytes).map_err(|_| {
            Error::internal("the system random source failed while generating a master key")
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Parse a key written as base64 (44 characters) or hex (64 characters). Surrounding
    /// whitespace is ignored. Errors never echo the input.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let decoded = if text.len() == 2 * KEY_LEN && text.chars().all(|c| c.is_ascii_hexdigit()) {
            (0..KEY_LEN)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<std::result::Result<Vec<u8>, _>>()
                .ok()
        } else {
            STANDARD.decode(text).ok()
        };
        let decoded = Zeroizing::new(decoded.unwrap_or_default());
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            Error::config("the master key is not 32 bytes in base64 or hex").with_hint(
                "generate one with `openssl rand -base64 32` (or MasterKey::generate) and store it safely",
            )
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Read a key from the environment variable `var` (base64 or hex).
    pub fn from_env(var: &str) -> Result<Self> {
        let value = Zeroizing::new(std::env::var(var).map_err(|_| {
            Error::config(format!(
                "environment variable {var} holding the master key is not set"
            ))
            .with_hint(format!(
                "export {var} with a base64 key, e.g. from `openssl rand -base64 32`"
            ))
        })?);
        Self::parse(&value).map_err(|e| {
            Error::config(format!("environment variable {var}: {}", e.message()))
                .with_hint(e.hint().to_owned())
        })
    }

    /// Read a key from a file holding it in base64 or hex. The file should be readable
    /// by its owner only; a file readable by others is refused.
    pub async fn from_file(path: &Path) -> Result<Self> {
        check_private(path).await?;
        let text = Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(|e| {
            Error::config(format!("cannot read master key file {}", path.display())).with_source(e)
        })?);
        Self::parse(&text).map_err(|e| {
            Error::config(format!(
                "master key file {}: {}",
                path.display(),
                e.message()
            ))
            .with_hint(e.hint().to_owned())
        })
    }

    /// Read the key file at `path`, or create it (mode 0600) with a new random key if it
    /// does not exist. The embedded default for hosts without a key management system.
    pub async fn load_or_create(path: &Path) -> Result<Self> {
        match tokio::fs::try_exists(path).await {
            Ok(true) => return Self::from_file(path).await,
            Ok(false) => {}
            Err(e) => {
                return Err(
                    Error::config(format!("cannot check {}", path.display())).with_source(e)
                );
            }
        }
        let key = Self::generate()?;
        let text = Zeroizing::new(format!("{}\n", key.to_base64()));
        write_private(path, text.as_bytes()).await?;
        tracing::info!(path = %path.display(), key_id = %key.id, "created a new master key file");
        Ok(key)
    }

    /// The key id (16 hex characters), safe to log.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as base64, for writing it to a key management system. Handle the result
    /// as a secret.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes.as_ref())
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

/// Refuse a file others can read (Unix), so a key or database is not left world-readable.
pub(crate) async fn check_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::config(format!("cannot read {}", path.display())).with_source(e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{} is accessible to other users (mode {mode:o})",
                    path.display()
                ),
            )
            .with_hint(format!("run `chmod 600 {}`", path.display())));
        }
    }
    Ok(())
}

/// Create `path` with mode 0600 and write `data`; fails if it already exists.
pub(crate) async fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .await
        .map_err(|e| Error::config(format!("cannot create {}", path.display())).with_source(e))?;
    file.write_all(data)
        .await
        .map_err(|e| Error::config(format!("cannot write {}", path.display())).with_source(e))?;
    file.sync_all()
        .await
        .map_err(|e| Error::config(format!("cannot sync {}", path.display())).with_source(e))?;
    Ok(())
}

/// The keys a store is opened with: the primary key encrypts every write; previous keys
/// only decrypt rows not yet re-encrypted by an interrupted rotation.
///
/// ```
/// use moodbridge_auth::store::{Keyring, MasterKey};
///
/// let old = MasterKey::generate().unwrap();
/// let new = MasterKey::generate().unwrap();
/// let keyring = Keyring::new(new.clone()).with_previous(old.clone());
/// assert_eq!(keyring.primary().id(), new.id());
/// assert!(keyring.find(old.id()).is_some());
/// ```
#[derive(Debug, Clone)]
pub struct Keyring {
    primary: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring of one key.
    pub fn new(primary: MasterKey) -> Self {
        Keyring {
            primary,
            previous: Vec::new(),
        }
    }

    /// Also accept `key` for reading (an interrupted rotation's old key).
    pub fn with_previous(mut self, key: MasterKey) -> Self {
        if key.id() != self.primary.id() {
            self.previous.push(key);
        }
        self
    }

    /// The key every write uses.
    pub fn primary(&self) -> &MasterKey {
        &self.primary
    }

    /// The keys other than the primary.
    pub(crate) fn previous_keys(&self) -> impl Iterator<Item = &MasterKey> {
        self.previous.iter()
    }

    /// This keyring plus every key of `other` (as previous keys).
    pub(crate) fn with_all_of(mut self, other: &Keyring) -> Self {
        for key in std::iter::once(other.primary()).chain(other.previous_keys()) {
            self = self.with_previous(key.clone());
        }
        self
    }

    /// The key with this id, if the keyring holds it.
    pub fn find(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.primary)
            .chain(&self.previous)
            .find(|k| k.id() == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base64_and_hex_to_the_same_key() {
        let key = MasterKey::generate().unwrap();
        let hex: String = key.bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(MasterKey::parse(&key.to_base64()).unwrap().id(), key.id());
        assert_eq!(
            MasterKey::parse(&format!("  {hex}\n")).unwrap().id(),
            key.id()
        );
    }

    #[test]
    fn a_wrong_length_key_is_refused_without_echoing_it() {
        let err = MasterKey::parse("c2hvcnQta2V5LXNlY3JldA==").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.to_string().contains("c2hvcnQta2V5LXNlY3JldA"));
    }

    #[test]
    fn different_keys_have_different_ids() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        assert_ne!(a.id(), b.id());
    }

    #[tokio::test]
    async fn load_or_create_writes_a_private_file_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let created = MasterKey::load_or_create(&path).await.unwrap();
        let loaded = MasterKey::load_or_create(&path).await.unwrap();
        assert_eq!(created.id(), loaded.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, MasterKey::generate().unwrap().to_base64()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::from_file(&path).await.unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
