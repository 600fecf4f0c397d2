//! Contract test suites every implementation of a core trait must pass (feature
//! `testing`). Each suite panics with a message naming the broken rule.
//!
//! ```ignore
//! #[tokio::test]
//! async fn my_store_meets_the_contract() {
//!     moodbridge_core::testing::credential_store_contract(&MyStore::new(), "contract").await;
//! }
//! ```

use secrecy::{ExposeSecret, SecretString};

use crate::credential::{CredentialStore, SecretVersion};
use crate::error::ErrorKind;

fn s(v: &str) -> SecretString {
    SecretString::from(v.to_owned())
}

/// The [`CredentialStore`] contract, run under keys starting with `prefix/` (so a shared
/// service can be used; the suite deletes what it wrote).
pub async fn credential_store_contract(store: &dyn CredentialStore, prefix: &str) {
    let a = format!("{prefix}/app/client_secret");
    let b = format!("{prefix}/app/refresh_token");
    let other = format!("{prefix}-other/x");

    // A missing key is NotFound.
    let err = store
        .get(&a)
        .await
        .expect_err("get of a missing key must fail");
    assert_eq!(err.kind(), ErrorKind::NotFound, "missing key: {err}");

    // put makes versions 1, 2, 3; get returns the newest.
    for (i, v) in ["one", "two", "three"].into_iter().enumerate() {
        let version = store.put(&a, s(v)).await.expect("put");
        assert_eq!(
            version,
            SecretVersion(i as u64 + 1),
            "versions count from 1"
        );
    }
    let latest = store.get(&a).await.expect("get latest");
    assert_eq!(latest.version, SecretVersion(3));
    assert_eq!(latest.value.expose_secret(), "three");
    assert_eq!(latest.key, a);

    // Older versions stay readable (rotation).
    let first = store
        .get_version(&a, SecretVersion(1))
        .await
        .expect("get v1");
    assert_eq!(first.value.expose_secret(), "one");
    let err = store
        .get_version(&a, SecretVersion(9))
        .await
        .expect_err("a version that does not exist");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Values round-trip exactly, unicode and empty included.
    store
        .put(&b, s("ключ 🔑 \n\t\"'"))
        .await
        .expect("put unicode");
    assert_eq!(
        store.get(&b).await.expect("get").value.expose_secret(),
        "ключ 🔑 \n\t\"'"
    );
    store.put(&b, s("")).await.expect("put empty");
    assert_eq!(store.get(&b).await.expect("get").value.expose_secret(), "");
    store.put(&other, s("x")).await.expect("put other");

    // list by prefix, sorted, with versions; other prefixes excluded.
    let listed = store.list(&format!("{prefix}/")).await.expect("list");
    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        [a.as_str(), b.as_str()],
        "list is by prefix, sorted by key"
    );
    assert_eq!(listed[0].latest, SecretVersion(3));
    assert_eq!(
        listed[0].readable,
        [SecretVersion(1), SecretVersion(2), SecretVersion(3)]
    );

    // retire: versions before keep_from become unreadable; the newest never.
    let retired = store.retire(&a, SecretVersion(3)).await.expect("retire");
    assert_eq!(retired, 2);
    let err = store
        .get_version(&a, SecretVersion(1))
        .await
        .expect_err("a retired version must not be readable");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        store.get(&a).await.expect("latest survives").version,
        SecretVersion(3)
    );
    assert_eq!(
        store
            .retire(&a, SecretVersion(100))
            .await
            .expect("retire all"),
        0,
        "the newest is never retired"
    );
    assert_eq!(
        store.get(&a).await.expect("latest survives").version,
        SecretVersion(3)
    );
    let listed = store.list(&a).await.expect("list one");
    assert_eq!(listed[0].readable, [SecretVersion(3)]);

    // A new version after retiring continues the numbering.
    assert_eq!(
        store.put(&a, s("four")).await.expect("put"),
        SecretVersion(4)
    );

    // Invalid keys are InvalidInput and never reach the backend.
    for bad in ["", "../etc/passwd", "a//b", "/abs", "sp ace"] {
        let err = store.get(bad).await.expect_err("invalid key");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "key {bad:?}: {err}");
        let err = store.put(bad, s("v")).await.expect_err("invalid key");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "key {bad:?}: {err}");
    }

    // delete removes every version; deleting again is fine.
    for key in [&a, &b, &other] {
        store.delete(key).await.expect("delete");
        store.delete(key).await.expect("delete twice");
        assert_eq!(
            store.get(key).await.expect_err("deleted").kind(),
            ErrorKind::NotFound
        );
    }
    assert!(store.list(prefix).await.expect("list").is_empty());

    // Secrets never show in Debug.
    store.put(&a, s("canary-7f3a9c")).await.expect("put");
    let secret = store.get(&a).await.expect("get");
    assert!(!format!("{secret:?}").contains("canary-7f3a9c"));
    store.delete(&a).await.expect("delete");
}
