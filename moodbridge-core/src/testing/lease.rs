//! The contract every [`LeaseStore`] passes.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::state::LeaseStore;

const LONG: Duration = Duration::from_secs(60);

/// The [`LeaseStore`] contract, on leases named `<prefix>-…`:
///
/// 1. A free lease is taken; another holder is refused while it is held; its holder
///    re-acquiring it extends it with the same fencing token; renewing keeps the token.
/// 2. Once it lapses another holder takes it with a greater token, and the old holder's
///    renewal is a `Conflict` that says the lease was lost.
/// 3. Releasing a lost lease changes nothing; releasing a held one frees it.
/// 4. Of concurrent claims on a set of names, each name goes to exactly one worker;
///    with every name held, or none given, a claim gets nothing; a claim prefers a name
///    never leased or lapsed longest.
pub async fn lease_store_contract(store: Arc<dyn LeaseStore>, prefix: &str) {
    let name = format!("{prefix}-nightly");
    // 1. Held by one.
    let a = store
        .acquire_lease(&name, "worker-a", LONG)
        .await
        .expect("acquire")
        .expect("a free lease is taken");
    assert_eq!(
        (a.name.as_str(), a.holder.as_str()),
        (name.as_str(), "worker-a")
    );
    assert!(
        store
            .acquire_lease(&name, "worker-b", LONG)
            .await
            .expect("acquire")
            .is_none(),
        "held by another worker"
    );
    let again = store
        .acquire_lease(&name, "worker-a", LONG)
        .await
        .expect("acquire")
        .expect("one's own lease");
    assert_eq!(
        again.token, a.token,
        "re-acquiring one's own lease extends it"
    );
    let renewed = store.renew_lease(&a, LONG).await.expect("renew");
    assert_eq!(renewed.token, a.token);
    assert!(renewed.expires_at_ms >= a.expires_at_ms);

    // 2. Lapsed (a 1 ms lease: any later clock reading is past it) and taken over.
    let short = store
        .renew_lease(&a, Duration::from_millis(1))
        .await
        .expect("renew");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = store
        .acquire_lease(&name, "worker-b", LONG)
        .await
        .expect("acquire")
        .expect("a lapsed lease is taken");
    assert!(
        b.token > short.token,
        "a new holder gets a greater fencing token"
    );
    let err = store
        .renew_lease(&short, LONG)
        .await
        .expect_err("renewing a lost lease");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string().contains("lost"),
        "the error says it was lost: {err}"
    );

    // 3. Release.
    store
        .release_lease(&short)
        .await
        .expect("release a lost lease");
    assert!(
        store
            .acquire_lease(&name, "worker-c", LONG)
            .await
            .expect("acquire")
            .is_none(),
        "releasing a lost lease frees nothing"
    );
    store.release_lease(&b).await.expect("release");
    let c = store
        .acquire_lease(&name, "worker-c", LONG)
        .await
        .expect("acquire")
        .expect("a released lease is free");
    assert!(c.token > b.token, "every new holder gets a greater token");
    store.release_lease(&c).await.expect("release");

    // 4. Concurrent claims.
    let names: Vec<String> = (0..3).map(|i| format!("{prefix}-pipeline-{i}")).collect();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let (store, names) = (store.clone(), names.clone());
            tokio::spawn(async move {
                store
                    .claim_lease(&names, &format!("worker-{w}"), LONG)
                    .await
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for t in tasks {
        if let Some(lease) = t.await.expect("claim task").expect("claim") {
            claimed.push(lease.name);
        }
    }
    claimed.sort();
    assert_eq!(claimed, names, "each name claimed exactly once");
    assert!(
        store
            .claim_lease(&names, "late", LONG)
            .await
            .expect("claim")
            .is_none()
    );
    assert!(
        store
            .claim_lease(&[], "late", LONG)
            .await
            .expect("claim")
            .is_none()
    );

    let (old, new) = (
        format!("{prefix}-lapsed-long-ago"),
        format!("{prefix}-never-leased"),
    );
    let first = store
        .acquire_lease(&old, "w", Duration::from_millis(1))
        .await
        .expect("acquire")
        .expect("free");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got = store
        .claim_lease(&[old.clone(), new.clone()], "x", LONG)
        .await
        .expect("claim")
        .expect("both are free");
    assert_eq!(got.name, new, "a never-leased name comes first");
    let got = store
        .claim_lease(&[old.clone(), new.clone()], "y", LONG)
        .await
        .expect("claim")
        .expect("the lapsed one is free");
    assert_eq!(got.name, old);
    assert!(got.token > first.token);
}
