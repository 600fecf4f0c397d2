//! Every writable credential store meets the core contract, and the encrypted store keeps
//! its promises under corruption, wrong keys, truncation and interrupted rotation.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};

use moodbridge_auth::store::{EncryptedStore, Keyring, MasterKey, MemoryStore};
use moodbridge_core::testing::credential_store_contract;
use moodbridge_core::{CredentialStore, ErrorKind, SecretVersion};
use secrecy::{ExposeSecret, SecretString};

#[tokio::test]
async fn the_memory_store_meets_the_contract() {
    credential_store_contract(&MemoryStore::new(), "contract").await;
}

#[tokio::test]
async fn the_encrypted_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = EncryptedStore::create(&dir.path().join("s.db"), key_one())
        .await
        .unwrap();
    credential_store_contract(&store, "contract").await;
}

fn key_one() -> Keyring {
    Keyring::new(MasterKey::parse(&"11".repeat(32)).unwrap())
}

fn key_two() -> MasterKey {
    MasterKey::parse(&"22".repeat(32)).unwrap()
}

async fn store_with(path: &Path, n: usize) -> EncryptedStore {
    let store = EncryptedStore::create(path, key_one()).await.unwrap();
    for i in 0..n {
        store
            .put(
                &format!("k/{i:03}"),
                SecretString::from(format!("value-{i}")),
            )
            .await
            .unwrap();
    }
    store
}

async fn assert_all_readable(store: &EncryptedStore, n: usize) {
    for i in 0..n {
        let s = store.get(&format!("k/{i:03}")).await.unwrap();
        assert_eq!(s.value.expose_secret(), &format!("value-{i}"));
    }
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("secrets.db")
}

#[tokio::test]
async fn secrets_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(&db(&dir), 5).await);
    let store = EncryptedStore::open(&db(&dir), key_one()).await.unwrap();
    assert_all_readable(&store, 5).await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let _store = store_with(&db(&dir), 1).await;
    let mode = std::fs::metadata(db(&dir)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn the_wrong_master_key_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(&db(&dir), 2).await);
    let err = EncryptedStore::open(&db(&dir), Keyring::new(key_two()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(err.to_string().contains("does not open"), "{err}");
}

#[tokio::test]
async fn plaintext_never_reaches_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&db(&dir), 0).await;
    store
        .put("k/x", SecretString::from("plaintext-canary-91b2"))
        .await
        .unwrap();
    drop(store);
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("plaintext-canary-91b2"));
    }
}

/// Change the ciphertext of one row behind the store's back.
async fn tamper(path: &Path, sql: &'static str) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_corrupted_ciphertext_is_an_integrity_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(&db(&dir), 2).await);
    tamper(
        &db(&dir),
        "UPDATE secret_versions SET ciphertext = zeroblob(length(ciphertext)) WHERE name = 'k/000'",
    )
    .await;
    let store = EncryptedStore::open(&db(&dir), key_one()).await.unwrap();
    let err = store.get("k/000").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity);
    assert!(err.to_string().contains("k/000"), "{err}");
    // The other secret is unaffected.
    assert_eq!(
        store.get("k/001").await.unwrap().value.expose_secret(),
        "value-1"
    );
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_key_fails_to_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(&db(&dir), 2).await);
    tamper(
        &db(&dir),
        "UPDATE secret_versions SET (nonce, ciphertext) =
           (SELECT nonce, ciphertext FROM secret_versions WHERE name = 'k/001')
         WHERE name = 'k/000'",
    )
    .await;
    let store = EncryptedStore::open(&db(&dir), key_one()).await.unwrap();
    assert_eq!(
        store.get("k/000").await.unwrap_err().kind(),
        ErrorKind::Integrity
    );
}

#[tokio::test]
async fn a_truncated_or_emptied_database_is_an_error_not_an_empty_store() {
    for keep in [0usize, 1000, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&db(&dir), 20).await;
        store.close().await;
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db(&dir).display()));
        }
        let bytes = std::fs::read(db(&dir)).unwrap();
        std::fs::write(db(&dir), &bytes[..keep.min(bytes.len())]).unwrap();
        let result = match EncryptedStore::open(&db(&dir), key_one()).await {
            Err(e) => Err(e),
            Ok(store) => store.get("k/019").await.map(|_| ()),
        };
        let err = result.expect_err("a truncated store must not open as if all were well");
        assert_eq!(err.kind(), ErrorKind::Integrity, "keep {keep}: {err}");
    }
}

#[tokio::test]
async fn a_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        db(&dir),
        b"this is not a database, just some text. ".repeat(200),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(db(&dir), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let err = EncryptedStore::open(&db(&dir), key_one())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test]
async fn rotation_reencrypts_everything_under_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&db(&dir), 250).await;
    store
        .put("k/000", SecretString::from("value-0-v2"))
        .await
        .unwrap();
    store.rotate_master_key(key_two()).await.unwrap();
    drop(store);

    // Only the new key opens it now; every version is intact.
    let err = EncryptedStore::open(&db(&dir), key_one())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    let store = EncryptedStore::open(&db(&dir), Keyring::new(key_two()))
        .await
        .unwrap();
    assert_eq!(
        store.get("k/000").await.unwrap().value.expose_secret(),
        "value-0-v2"
    );
    let v1 = store
        .get_version("k/000", &SecretVersion::from(1))
        .await
        .unwrap();
    assert_eq!(v1.value.expose_secret(), "value-0");
    assert_all_readable_from(&store, 1, 250).await;
}

async fn assert_all_readable_from(store: &EncryptedStore, from: usize, n: usize) {
    for i in from..n {
        let s = store.get(&format!("k/{i:03}")).await.unwrap();
        assert_eq!(s.value.expose_secret(), &format!("value-{i}"));
    }
}

#[tokio::test]
async fn a_rotation_interrupted_midway_loses_nothing_and_can_be_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&db(&dir), 30).await;
    store.begin_rotation(key_two()).await.unwrap();
    let progress = store.rotate_batch(10).await.unwrap();
    assert_eq!((progress.reencrypted, progress.remaining), (10, 20));
    // A write during the rotation uses the new key.
    store
        .put("k/new", SecretString::from("during"))
        .await
        .unwrap();
    drop(store); // the process stops here

    // Either key alone is refused with a message saying what to do.
    for keyring in [key_one(), Keyring::new(key_two())] {
        let err = EncryptedStore::open(&db(&dir), keyring).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth);
        assert!(err.to_string().contains("resume_rotation"), "{err}");
    }

    // With both keys every secret is readable, then the rotation finishes.
    let both = Keyring::new(key_two()).with_previous(MasterKey::parse(&"11".repeat(32)).unwrap());
    let store = EncryptedStore::open(&db(&dir), both).await.unwrap();
    assert_all_readable(&store, 30).await;
    store.resume_rotation().await.unwrap();
    drop(store);

    let store = EncryptedStore::open(&db(&dir), Keyring::new(key_two()))
        .await
        .unwrap();
    assert_all_readable(&store, 30).await;
    assert_eq!(
        store.get("k/new").await.unwrap().value.expose_secret(),
        "during"
    );
}

#[tokio::test]
async fn concurrent_puts_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(store_with(&db(&dir), 0).await);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put("k/shared", SecretString::from(format!("v{i}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap().as_str().parse::<u64>().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).collect::<Vec<u64>>());
}

/// A rotation on a store with pending versions (memory) and on one without (encrypted):
/// a failed check leaves the current version untouched; a passed one promotes the new
/// value, keeps the previous readable through the grace period, then retires it; every
/// step is in the audit log, with version ids and never a value.
#[tokio::test]
async fn rotations_verify_before_promoting_and_are_audited() {
    use std::sync::Arc;
    use std::time::Duration;

    use moodbridge_core::rotation::Rotation;
    use moodbridge_core::state::{RunStatus, SqliteStateStore, StateStore};

    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(
        SqliteStateStore::open(&dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    let stores: Vec<Arc<dyn CredentialStore>> = vec![
        Arc::new(MemoryStore::new()),
        Arc::new(
            EncryptedStore::create(&dir.path().join("s.db"), key_one())
                .await
                .unwrap(),
        ),
    ];
    for store in stores {
        let key = "webhooks/apex";
        let first = store
            .put(key, SecretString::from("old-secret-never-logged"))
            .await
            .unwrap();
        let rotation = Rotation::new(store.clone(), key)
            .grace(Duration::from_millis(300))
            .audit(state.clone(), "ops:test");

        // A candidate that fails its check: nothing changes for readers.
        let err = rotation
            .rotate(
                SecretString::from("bad-candidate-never-logged"),
                async |_: &SecretString| {
                    Err(moodbridge_core::Error::new(
                        ErrorKind::Auth,
                        "test login refused",
                    ))
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
        assert!(err.hint().contains("unchanged"), "{err:?}");
        let current = store.get(key).await.unwrap();
        assert_eq!(current.version, first);
        assert_eq!(current.value.expose_secret(), "old-secret-never-logged");

        // A candidate that passes: current, the previous still readable.
        let seen = std::sync::Mutex::new(String::new());
        let rotated = rotation
            .rotate(
                SecretString::from("new-secret-never-logged"),
                async |c: &SecretString| {
                    *seen.lock().unwrap() = c.expose_secret().to_owned();
                    Ok(())
                },
            )
            .await
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), "new-secret-never-logged");
        assert_eq!(rotated.previous, first);
        let current = store.get(key).await.unwrap();
        assert_eq!(current.version, rotated.version);
        assert_eq!(current.value.expose_secret(), "new-secret-never-logged");
        assert!(store.get_version(key, &first).await.is_ok());

        // Retiring waits for the grace period.
        let early = rotation.retire(&rotated).await.unwrap_err();
        assert_eq!(early.kind(), ErrorKind::Conflict, "{early}");
        assert!(store.get_version(key, &first).await.is_ok());
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(rotation.retire(&rotated).await.unwrap() >= 1);
        assert_eq!(
            store.get_version(key, &first).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );

        // The audit: the failed rotation and the successful one, step by step.
        let run = rotated.run.unwrap();
        let steps: Vec<String> = state
            .audit(run)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                r.entry.after.as_ref().unwrap()["step"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let expected: Vec<&str> = if store.can_stage() {
            vec!["staged", "verified", "promoted", "retired"]
        } else {
            vec!["verified", "promoted", "retired"]
        };
        assert_eq!(steps, expected);
        assert_eq!(state.run(run).await.unwrap().status, RunStatus::Succeeded);
        // The failed rotation's run is the one started just before.
        let failed = moodbridge_core::state::RunId(run.0 - 1);
        let failed_steps = state.audit(failed).await.unwrap();
        assert!(
            failed_steps
                .iter()
                .any(|r| r.entry.after.as_ref().unwrap()["step"] == "verification_failed"),
            "{failed_steps:?}"
        );
        assert_eq!(state.run(failed).await.unwrap().status, RunStatus::Failed);
        let everything =
            format!("{:?}", state.audit(run).await.unwrap()) + &format!("{failed_steps:?}");
        assert!(!everything.contains("never-logged"), "{everything}");
        store.delete(key).await.unwrap();
    }
}
