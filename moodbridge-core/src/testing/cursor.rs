//! The contract every [`CursorStore`] passes.

use std::sync::Arc;

use crate::error::ErrorKind;
use crate::state::CursorStore;

/// The [`CursorStore`] contract, for consumers named `consumer` and `consumer-other`:
///
/// 1. No cursor before the first commit; commits return sequences 1, 2, …; the last
///    commit wins; partitions and consumers are independent.
/// 2. `cursors` lists a consumer's partitions in order; `reset_cursors` forgets them
///    all (and only them).
/// 3. A fenced commit (`commit_cursor_if`) succeeds on the sequence read and is a
///    `Conflict`, changing nothing, on any other — also for a first commit (`0`) racing
///    another; of concurrent fenced commits on one sequence exactly one wins.
pub async fn cursor_store_contract(store: Arc<dyn CursorStore>, consumer: &str) {
    let other = format!("{consumer}-other");
    let (a, b) = ("/data/CaseChangeEvent", "/data/AccountChangeEvent");

    // 1. Commits.
    assert!(
        store.cursor(consumer, a).await.expect("cursor").is_none(),
        "no cursor before the first commit"
    );
    assert_eq!(
        store
            .commit_cursor(consumer, a, "100")
            .await
            .expect("commit"),
        1
    );
    assert_eq!(
        store
            .commit_cursor(consumer, a, "105")
            .await
            .expect("commit"),
        2
    );
    let at = store
        .cursor(consumer, a)
        .await
        .expect("cursor")
        .expect("committed");
    assert_eq!(
        (
            at.consumer.as_str(),
            at.partition.as_str(),
            at.position.as_str(),
            at.sequence
        ),
        (consumer, a, "105", 2),
        "the last commit wins"
    );
    store.commit_cursor(consumer, b, "7").await.expect("commit");
    store.commit_cursor(&other, a, "1").await.expect("commit");
    assert_eq!(
        store
            .cursor(consumer, a)
            .await
            .expect("cursor")
            .map(|c| c.position),
        Some("105".to_owned()),
        "partitions and consumers are independent"
    );

    // 2. Listing and reset.
    let all: Vec<(String, String)> = store
        .cursors(consumer)
        .await
        .expect("cursors")
        .into_iter()
        .map(|c| (c.partition, c.position))
        .collect();
    assert_eq!(
        all,
        [
            (b.to_owned(), "7".to_owned()),
            (a.to_owned(), "105".to_owned())
        ],
        "cursors lists every partition of the consumer, by partition"
    );

    // 3. Fenced commits.
    let err = store
        .commit_cursor_if(consumer, a, "110", 1)
        .await
        .expect_err("a commit fenced on an old sequence");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        store
            .cursor(consumer, a)
            .await
            .expect("cursor")
            .map(|c| c.position),
        Some("105".to_owned()),
        "a refused commit changes nothing"
    );
    assert_eq!(
        store
            .commit_cursor_if(consumer, a, "110", 2)
            .await
            .expect("fenced commit"),
        3
    );
    let err = store
        .commit_cursor_if(consumer, b, "8", 0)
        .await
        .expect_err("a first commit where a cursor exists");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let fresh = "/event/Matter_Closed__e";
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let consumer = consumer.to_owned();
            tokio::spawn(async move {
                store
                    .commit_cursor_if(&consumer, fresh, &format!("racer-{i}"), 0)
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.expect("racer task") {
            Ok(sequence) => {
                won += 1;
                assert_eq!(sequence, 1);
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(won, 1, "exactly one of concurrent first commits wins");

    assert_eq!(store.reset_cursors(consumer).await.expect("reset"), 3);
    assert!(store.cursors(consumer).await.expect("cursors").is_empty());
    assert_eq!(
        store.cursors(&other).await.expect("cursors").len(),
        1,
        "a reset forgets one consumer only"
    );
    store.reset_cursors(&other).await.expect("reset");
}
