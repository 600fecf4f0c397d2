//! The local filesystem object store: the shared contract plus what is particular to it
//! (path traversal, atomic commits, leftovers of a crash).

use moodbridge_core::ErrorKind;
use moodbridge_core::storage::{
    LocalObjectStore, ObjectKey, ObjectStore, ObjectStoreExt, PutOptions,
};
use moodbridge_core::testing::{
    ObjectStoreContract, object_store_contract, object_store_round_trip,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalObjectStore::open(dir.path()).await.unwrap();
    object_store_contract(
        &store,
        "contract",
        &ObjectStoreContract {
            part_size: 256 * 1024,
            list_keys: 1001,
        },
    )
    .await;
    // Nothing is left in the staging directory.
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0,
        "no staged upload left"
    );
}

#[tokio::test]
async fn keys_that_would_leave_the_root_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalObjectStore::open(dir.path().join("store"))
        .await
        .unwrap();
    for bad in [
        "../outside",
        "a/../../outside",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "trailing/",
        "..",
        ".",
    ] {
        let key = ObjectKey::new(bad).unwrap();
        let err = store
            .put_bytes(&key, b"x".to_vec(), PutOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
        assert!(
            err.to_string().contains(bad),
            "the error names the key: {err}"
        );
        assert_eq!(
            store.head(&key).await.unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    // Nothing was written outside the store.
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["store"]);
    // A backslash is an ordinary character on this platform, encoded in the file name.
    let key = ObjectKey::new("..\\x").unwrap();
    store
        .put_bytes(&key, b"x".to_vec(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(store.list_keys("").await.unwrap(), ["..\\x"]);
}

#[tokio::test]
async fn a_key_and_its_prefix_directory_coexist() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalObjectStore::open(dir.path()).await.unwrap();
    for k in ["a", "a/b", "a%meta", "a%d1", "a/b/c"] {
        store
            .put_bytes(
                &ObjectKey::new(k).unwrap(),
                k.as_bytes().to_vec(),
                PutOptions::new(),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.list_keys("").await.unwrap(),
        ["a", "a%d1", "a%meta", "a/b", "a/b/c"]
    );
    for k in ["a", "a/b", "a%meta", "a%d1", "a/b/c"] {
        assert_eq!(
            store.get_bytes(&ObjectKey::new(k).unwrap()).await.unwrap(),
            k.as_bytes()
        );
    }
    store
        .delete(&ObjectKey::new("a/b/c").unwrap())
        .await
        .unwrap();
    assert_eq!(store.list_keys("a/").await.unwrap(), ["a/b"]);
}

#[tokio::test]
async fn a_crashed_upload_is_invisible_and_cleaned_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalObjectStore::open(dir.path()).await.unwrap();
    let key = ObjectKey::new("doc.pdf").unwrap();
    store
        .put_bytes(&key, b"version 1".to_vec(), PutOptions::new())
        .await
        .unwrap();
    // What a process killed mid-upload leaves: a staged file.
    std::fs::write(
        dir.path().join("tmp/0123456789abcdef.part"),
        b"half of version 2",
    )
    .unwrap();
    drop(store);
    let store = LocalObjectStore::open(dir.path()).await.unwrap();
    assert_eq!(store.get_bytes(&key).await.unwrap(), b"version 1");
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    // An overwrite removes the old data file: one data file and one sidecar remain.
    store
        .put_bytes(&key, b"version 2".to_vec(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("objects"))
            .unwrap()
            .count(),
        2
    );
    assert_eq!(store.get_bytes(&key).await.unwrap(), b"version 2");
}

#[tokio::test]
async fn bad_metadata_is_rejected_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalObjectStore::open(dir.path()).await.unwrap();
    let key = ObjectKey::new("x").unwrap();
    for options in [
        PutOptions::new().metadata("Case Id", "1"),
        PutOptions::new().metadata("case-id", "1"),
        PutOptions::new().metadata("case", "naïve"),
        PutOptions::new().content_type("text/plain\n"),
    ] {
        let err = store
            .put_bytes(&key, b"x".to_vec(), options)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    assert!(store.list_keys("").await.unwrap().is_empty());
}

/// 1 GiB streamed up and down with SHA-256 compared end to end (the size can be lowered
/// with MOODBRIDGE_TEST_BIG_OBJECT_MIB for a quick run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gibibyte_round_trip() {
    let mib: u64 = std::env::var("MOODBRIDGE_TEST_BIG_OBJECT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let store = LocalObjectStore::open(dir.path()).await.unwrap();
    let key = ObjectKey::new("scans/big scan.tiff").unwrap();
    object_store_round_trip(&store, &key, mib << 20, 42).await;
    store.delete(&key).await.unwrap();
}
