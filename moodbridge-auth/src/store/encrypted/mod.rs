//! The encrypted local credential store on SQLite — the embedded default.
//!
//! - AES-256-GCM (aws-lc-rs) with a fresh random nonce per write; the secret's name and
//!   version are bound as associated data, so a ciphertext moved to another row fails.
//! - A 256-bit master key from an env var, a key file, or generated ([`MasterKey`]).
//! - The database file is created with mode 0600 (its WAL files inherit it); an existing
//!   file readable by others is refused.
//! - Versioned secrets: `put` adds a version; older versions stay readable until retired
//!   (retiring erases their ciphertext).
//! - Master-key rotation re-encrypts every row under a new key in batches, each batch one
//!   transaction; every row records the key that sealed it. If the process stops midway,
//!   reopen with [`Keyring::new(new).with_previous(old)`](Keyring) and call
//!   [`EncryptedStore::resume_rotation`]: no secret is lost.
//! - A corrupted or truncated database, a tampered row or a wrong key is a clear error —
//!   never a panic, never an empty result.
//!
//! ```
//! use moodbridge_auth::store::{EncryptedStore, Keyring, MasterKey};
//! use moodbridge_core::CredentialStore;
//! use secrecy::{ExposeSecret, SecretString};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let key = MasterKey::generate().unwrap();
//! let store = EncryptedStore::create(&dir.path().join("secrets.db"), Keyring::new(key)).await.unwrap();
//! store.put("salesforce/prod/client_secret", SecretString::from("s3cr3t")).await.unwrap();
//! let secret = store.get("salesforce/prod/client_secret").await.unwrap();
//! assert_eq!(secret.value.expose_secret(), "s3cr3t");
//! # });
//! ```

mod cipher;
pub(crate) mod master_key;

pub use master_key::{KEY_LEN, Keyring, MasterKey};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use moodbridge_core::credential::check_secret_key;
use moodbridge_core::{
    CredentialStore, Error, ErrorKind, Result, Secret, SecretMetadata, SecretVersion,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{Mutex, RwLock};

use cipher::{Cipher, secret_aad};
use master_key::{check_private, write_private};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows re-encrypted per transaction during a rotation.
pub const ROTATION_BATCH: usize = 100;

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationProgress {
    /// Rows re-encrypted by this call.
    pub reencrypted: usize,
    /// Rows still sealed with another key.
    pub remaining: usize,
}

struct Keys {
    /// The key new writes use.
    write_id: String,
    ciphers: HashMap<String, Cipher>,
}

/// The encrypted SQLite credential store. See the module docs.
pub struct EncryptedStore {
    pool: SqlitePool,
    path: PathBuf,
    keyring: RwLock<Keyring>,
    keys: RwLock<Keys>,
    /// Serializes writers in this process (versions are numbered inside a transaction;
    /// other processes are serialized by SQLite's `BEGIN IMMEDIATE`).
    writer: Mutex<()>,
}

impl std::fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl EncryptedStore {
    /// Create a new store at `path` (which must not exist), sealed with the keyring's
    /// primary key.
    pub async fn create(path: &Path, keyring: Keyring) -> Result<Self> {
        write_private(path, &[]).await.map_err(|e| {
            Error::config(format!("cannot create credential store {}", path.display()))
                .with_hint("choose a path that does not exist yet, or open the existing store")
                .with_source(e)
        })?;
        let store = Self::connect(path, keyring).await?;
        store.migrate().await?;
        store.register_primary().await?;
        Ok(store)
    }

    /// Open an existing store. A missing, empty, truncated or foreign file is an error.
    pub async fn open(path: &Path, keyring: Keyring) -> Result<Self> {
        let len = tokio::fs::metadata(path)
            .await
            .map_err(|e| {
                Error::not_found(format!("no credential store at {}", path.display()))
                    .with_hint("create it with EncryptedStore::create or open_or_create")
                    .with_source(e)
            })?
            .len();
        if len == 0 {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!("credential store {} is empty (truncated?)", path.display()),
            )
            .with_hint("restore it from a backup; delete it only if you mean to start over"));
        }
        check_private(path).await?;
        let store = Self::connect(path, keyring).await?;
        store.migrate().await?;
        store.check_keys().await?;
        Ok(store)
    }

    /// Open the store at `path`, creating it if the path does not exist.
    pub async fn open_or_create(path: &Path, keyring: Keyring) -> Result<Self> {
        match tokio::fs::try_exists(path).await {
            Ok(true) => Self::open(path, keyring).await,
            Ok(false) => Self::create(path, keyring).await,
            Err(e) => Err(Error::config(format!("cannot check {}", path.display())).with_source(e)),
        }
    }

    async fn connect(path: &Path, keyring: Keyring) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| Error::internal("invalid SQLite options").with_source(e))?
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| db_error(path, e))?;
        let keys = Self::ciphers(&keyring, keyring.primary().id())?;
        Ok(EncryptedStore {
            pool,
            path: path.to_owned(),
            keyring: RwLock::new(keyring),
            keys: RwLock::new(keys),
            writer: Mutex::new(()),
        })
    }

    fn ciphers(keyring: &Keyring, write_id: &str) -> Result<Keys> {
        let mut ciphers = HashMap::new();
        for key in std::iter::once(keyring.primary()).chain(keyring.previous_keys()) {
            ciphers.insert(key.id().to_owned(), Cipher::new(key)?);
        }
        Ok(Keys {
            write_id: write_id.to_owned(),
            ciphers,
        })
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(db) => db_error(&self.path, db),
            other => Error::new(
                ErrorKind::Integrity,
                format!(
                    "credential store {} has an unexpected schema",
                    self.path.display()
                ),
            )
            .with_hint("it was written by another program or a newer SDK version")
            .with_source(other),
        })
    }

    async fn register_primary(&self) -> Result<()> {
        let keyring = self.keyring.read().await;
        let (nonce, value) = Cipher::new(keyring.primary())?.check_value()?;
        sqlx::query(
            "INSERT INTO master_keys (key_id, role, check_nonce, check_value, created_at) VALUES (?, 'primary', ?, ?, ?)",
        )
        .bind(keyring.primary().id())
        .bind(nonce)
        .bind(value)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        Ok(())
    }

    /// Check the keyring against the keys the store knows; decide which key writes use.
    async fn check_keys(&self) -> Result<()> {
        let rows = sqlx::query("SELECT key_id, role, check_nonce, check_value FROM master_keys")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error(&self.path, e))?;
        let keyring = self.keyring.read().await;
        let mut primary = None;
        let mut next = None;
        for row in &rows {
            let id: String = row.get("key_id");
            let role: String = row.get("role");
            let nonce: Vec<u8> = row.get("check_nonce");
            let value: Vec<u8> = row.get("check_value");
            if let Some(key) = keyring.find(&id)
                && !Cipher::new(key)?.verifies(&nonce, &value)
            {
                return Err(Error::new(
                    ErrorKind::Integrity,
                    format!(
                        "the check value of master key {id} in {} does not verify",
                        self.path.display()
                    ),
                ));
            }
            match role.as_str() {
                "primary" => primary = Some(id),
                _ => next = Some(id),
            }
        }
        let Some(primary) = primary else {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "credential store {} records no master key",
                    self.path.display()
                ),
            ));
        };
        let have = |id: &str| keyring.find(id).is_some();
        let write_id = match next {
            None if have(&primary) => primary,
            None => {
                return Err(Error::new(
                    ErrorKind::Auth,
                    format!(
                        "master key {} does not open credential store {} (it was sealed with key {primary})",
                        keyring.primary().id(),
                        self.path.display()
                    ),
                )
                .with_hint("open it with the master key it was created with"));
            }
            Some(next) if have(&primary) && have(&next) => next,
            Some(next) => {
                return Err(Error::new(
                    ErrorKind::Auth,
                    format!(
                        "a master-key rotation of {} from key {primary} to key {next} was interrupted, and the keyring lacks one of them",
                        self.path.display()
                    ),
                )
                .with_hint("open it with Keyring::new(<new key>).with_previous(<old key>) and call resume_rotation()"));
            }
        };
        *self.keys.write().await = Self::ciphers(&keyring, &write_id)?;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close the store: wait for its connections to finish and fold the write-ahead log
    /// into the database file. Dropping the store also closes it, in the background.
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// Re-encrypt every secret under `new` and make it the store's only key. Progress is
    /// committed in batches of [`ROTATION_BATCH`] rows; if interrupted, see
    /// [`resume_rotation`](Self::resume_rotation).
    pub async fn rotate_master_key(&self, new: MasterKey) -> Result<()> {
        self.begin_rotation(new).await?;
        self.resume_rotation().await
    }

    /// Start a rotation to `new`: record it as the next key and use it for writes from now
    /// on. Nothing is re-encrypted yet.
    pub async fn begin_rotation(&self, new: MasterKey) -> Result<()> {
        let _writer = self.writer.lock().await;
        let (nonce, value) = Cipher::new(&new)?.check_value()?;
        let current = self.keys.read().await.write_id.clone();
        if current == new.id() {
            return Err(
                Error::invalid_input("the new master key is the key already in use")
                    .with_hint("generate a new key with MasterKey::generate"),
            );
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(&self.path, e))?;
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM master_keys WHERE role = 'next'")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db_error(&self.path, e))?;
        if pending > 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                "a master-key rotation is already in progress",
            )
            .with_hint("finish it with resume_rotation() first"));
        }
        sqlx::query(
            "INSERT INTO master_keys (key_id, role, check_nonce, check_value, created_at) VALUES (?, 'next', ?, ?, ?)",
        )
        .bind(new.id())
        .bind(nonce)
        .bind(value)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        tx.commit().await.map_err(|e| db_error(&self.path, e))?;

        let mut keyring = self.keyring.write().await;
        *keyring = Keyring::new(new.clone()).with_all_of(&keyring);
        *self.keys.write().await = Self::ciphers(&keyring, new.id())?;
        tracing::info!(store = %self.path.display(), from = %current, to = %new.id(), "master-key rotation started");
        Ok(())
    }

    /// Re-encrypt up to `max_rows` rows sealed with an older key under the write key; one
    /// transaction. Returns what was done and what remains.
    pub async fn rotate_batch(&self, max_rows: usize) -> Result<RotationProgress> {
        let _writer = self.writer.lock().await;
        let keys = self.keys.read().await;
        let write = keys
            .ciphers
            .get(&keys.write_id)
            .ok_or_else(|| Error::internal("write key missing from the keyring"))?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(&self.path, e))?;
        let rows = sqlx::query(
            "SELECT name, version, key_id, nonce, ciphertext FROM secret_versions
             WHERE key_id IS NOT NULL AND key_id <> ? LIMIT ?",
        )
        .bind(&keys.write_id)
        .bind(i64::try_from(max_rows).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        for row in &rows {
            let name: String = row.get("name");
            let version: i64 = row.get("version");
            let key_id: String = row.get("key_id");
            let old = keys
                .ciphers
                .get(&key_id)
                .ok_or_else(|| missing_key(&name, version, &key_id))?;
            let aad = secret_aad(&name, version);
            let plain = old.open(
                &aad,
                &row.get::<Vec<u8>, _>("nonce"),
                &row.get::<Vec<u8>, _>("ciphertext"),
                &format!("secret {name} v{version}"),
            )?;
            let (nonce, ciphertext) = write.seal(&aad, &plain)?;
            sqlx::query(
                "UPDATE secret_versions SET key_id = ?, nonce = ?, ciphertext = ? WHERE name = ? AND version = ?",
            )
            .bind(&keys.write_id)
            .bind(nonce)
            .bind(ciphertext)
            .bind(&name)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&self.path, e))?;
        }
        let remaining: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM secret_versions WHERE key_id IS NOT NULL AND key_id <> ?",
        )
        .bind(&keys.write_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        tx.commit().await.map_err(|e| db_error(&self.path, e))?;
        Ok(RotationProgress {
            reencrypted: rows.len(),
            remaining: usize::try_from(remaining).unwrap_or(0),
        })
    }

    /// Finish an interrupted (or just begun) rotation: re-encrypt what remains, then make
    /// the new key the store's only key. Does nothing if no rotation is in progress.
    pub async fn resume_rotation(&self) -> Result<()> {
        loop {
            let progress = self.rotate_batch(ROTATION_BATCH).await?;
            if progress.remaining == 0 {
                break;
            }
        }
        let _writer = self.writer.lock().await;
        let write_id = self.keys.read().await.write_id.clone();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(&self.path, e))?;
        let changed = sqlx::query("DELETE FROM master_keys WHERE role = 'primary' AND key_id <> ?")
            .bind(&write_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&self.path, e))?
            .rows_affected();
        sqlx::query("UPDATE master_keys SET role = 'primary' WHERE key_id = ?")
            .bind(&write_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&self.path, e))?;
        tx.commit().await.map_err(|e| db_error(&self.path, e))?;
        if changed > 0 {
            tracing::info!(store = %self.path.display(), key = %write_id, "master-key rotation finished");
        }
        Ok(())
    }

    async fn decrypt_row(&self, name: &str, row: &sqlx::sqlite::SqliteRow) -> Result<Secret> {
        let version: i64 = row.get("version");
        let Some(key_id) = row.get::<Option<String>, _>("key_id") else {
            return Err(retired(name, version));
        };
        let keys = self.keys.read().await;
        let cipher = keys
            .ciphers
            .get(&key_id)
            .ok_or_else(|| missing_key(name, version, &key_id))?;
        let plain = cipher.open(
            &secret_aad(name, version),
            &row.get::<Vec<u8>, _>("nonce"),
            &row.get::<Vec<u8>, _>("ciphertext"),
            &format!("secret {name} v{version}"),
        )?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| {
            Error::new(
                ErrorKind::Integrity,
                format!("secret {name} v{version} is not UTF-8"),
            )
        })?;
        Ok(Secret {
            key: name.to_owned(),
            version: SecretVersion::from(u64::try_from(version).unwrap_or(0)),
            value: SecretString::from(text),
            created_at: from_ms(row.get("created_at")),
        })
    }
}

fn retired(name: &str, version: i64) -> Error {
    Error::not_found(format!("secret {name} version {version} was retired"))
        .with_hint("read the current version, or a version not yet retired")
}

fn missing_key(name: &str, version: i64, key_id: &str) -> Error {
    Error::new(
        ErrorKind::Auth,
        format!("secret {name} v{version} is sealed with master key {key_id}, which is not in the keyring"),
    )
    .with_hint("a rotation was interrupted: add the old key with Keyring::with_previous and call resume_rotation()")
}

/// Map a database error, telling corruption apart from other failures.
fn db_error(path: &Path, err: sqlx::Error) -> Error {
    let corrupt = match &err {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("11" | "26"))
                || db.message().contains("malformed")
                || db.message().contains("not a database")
        }
        _ => false,
    };
    if corrupt {
        Error::new(
            ErrorKind::Integrity,
            format!(
                "credential store {} is corrupt or not a credential store",
                path.display()
            ),
        )
        .with_hint("restore it from a backup")
        .with_source(err)
    } else if let sqlx::Error::Database(db) = &err
        && matches!(db.code().as_deref(), Some("5" | "6"))
    {
        Error::unavailable(format!("credential store {} is busy", path.display())).with_source(err)
    } else {
        Error::internal(format!("credential store {} failed", path.display())).with_source(err)
    }
}

#[async_trait]
impl CredentialStore for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Secret> {
        check_secret_key(key)?;
        let row = sqlx::query(
            "SELECT version, key_id, nonce, ciphertext, created_at FROM secret_versions
             WHERE name = ? AND retired_at IS NULL ORDER BY version DESC LIMIT 1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        match row {
            Some(row) => self.decrypt_row(key, &row).await,
            None => Err(Error::not_found(format!("no secret {key}"))),
        }
    }

    async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret> {
        check_secret_key(key)?;
        // Versions are numbers here: another id is no version of this store.
        let v = version.as_str().parse::<i64>().unwrap_or(-1);
        let row = sqlx::query(
            "SELECT version, key_id, nonce, ciphertext, created_at FROM secret_versions
             WHERE name = ? AND version = ?",
        )
        .bind(key)
        .bind(v)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        match row {
            Some(row) => self.decrypt_row(key, &row).await,
            None => Err(Error::not_found(format!("no secret {key} {version}"))),
        }
    }

    async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        check_secret_key(key)?;
        let _writer = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(&self.path, e))?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM secret_versions WHERE name = ?")
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db_error(&self.path, e))?;
        let version = latest.unwrap_or(0) + 1;
        let (key_id, nonce, ciphertext) = {
            let keys = self.keys.read().await;
            let cipher = keys
                .ciphers
                .get(&keys.write_id)
                .ok_or_else(|| Error::internal("write key missing from the keyring"))?;
            let (nonce, ct) =
                cipher.seal(&secret_aad(key, version), value.expose_secret().as_bytes())?;
            (keys.write_id.clone(), nonce, ct)
        };
        sqlx::query(
            "INSERT INTO secret_versions (name, version, key_id, nonce, ciphertext, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(key)
        .bind(version)
        .bind(key_id)
        .bind(nonce)
        .bind(ciphertext)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        tx.commit().await.map_err(|e| db_error(&self.path, e))?;
        Ok(SecretVersion::from(u64::try_from(version).unwrap_or(0)))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_secret_key(key)?;
        let _writer = self.writer.lock().await;
        sqlx::query("DELETE FROM secret_versions WHERE name = ?")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(&self.path, e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>> {
        let rows = sqlx::query(
            "SELECT name, version, created_at, retired_at FROM secret_versions
             WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name, version",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        let mut out: Vec<SecretMetadata> = Vec::new();
        for row in rows {
            let name: String = row.get("name");
            let version =
                SecretVersion::from(u64::try_from(row.get::<i64, _>("version")).unwrap_or(0));
            let created = from_ms(row.get("created_at"));
            let readable = row.get::<Option<i64>, _>("retired_at").is_none();
            match out.last_mut() {
                Some(m) if m.key == name => {
                    m.current = version.clone();
                    m.updated_at = created;
                    if readable {
                        m.readable.push(version);
                    }
                }
                _ => out.push(SecretMetadata {
                    key: name,
                    current: version.clone(),
                    pending: None,
                    readable: if readable { vec![version] } else { Vec::new() },
                    updated_at: created,
                }),
            }
        }
        Ok(out)
    }

    async fn retire(&self, key: &str, keep_from: &SecretVersion) -> Result<usize> {
        check_secret_key(key)?;
        let _writer = self.writer.lock().await;
        let keep = keep_from.as_str().parse::<i64>().unwrap_or(-1);
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM secret_versions WHERE name = ? AND version = ?",
        )
        .bind(key)
        .bind(keep)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        if known.is_none() {
            return Err(Error::not_found(format!("no secret {key} {keep_from}")));
        }
        let done = sqlx::query(
            "UPDATE secret_versions SET key_id = NULL, nonce = NULL, ciphertext = NULL, retired_at = ?
             WHERE name = ? AND retired_at IS NULL AND version < ?
               AND version < (SELECT MAX(version) FROM secret_versions WHERE name = ?)",
        )
        .bind(now_ms())
        .bind(key)
        .bind(keep)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(|e| db_error(&self.path, e))?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(0))
    }
}
