//! The contract every [`EventLog`] passes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::state::{Appended, EventLog, NewEvent};

fn event(source: &str, id: &str, body: &str, at: SystemTime) -> NewEvent {
    let mut e = NewEvent::new(source, id, "case.updated", body).partition(format!("500{id}"));
    e.received_at = at;
    e
}

/// The [`EventLog`] contract, on an empty log:
///
/// 1. An empty log has sequence 0 and no events.
/// 2. Appends get gapless sequences in order; an event appended again (same source and
///    id, in the same call or a later one) is a duplicate of the first, which keeps its
///    body; the same id from another source is another event.
/// 3. Everything appended reads back as appended (the time to the millisecond), from any
///    position, in pages.
/// 4. Concurrent appends from many tasks get unique, gapless sequences, and each id is
///    stored once however many tasks append it.
/// 5. `sequence_before` finds where a replay from a time starts.
/// 6. Purging deletes only old events at or below the position given; a purged id may
///    be appended again, as a new event; sequences are never reused.
pub async fn event_log_contract(log: Arc<dyn EventLog>) {
    let t0 = UNIX_EPOCH + Duration::from_millis(1_765_000_000_123);
    let t1 = t0 + Duration::from_secs(60);

    // 1. Empty.
    assert_eq!(log.last_sequence().await.expect("last"), 0);
    assert!(log.events_after(0, 10).await.expect("read").is_empty());
    assert_eq!(log.sequence_before(t0).await.expect("before"), 0);
    assert!(
        log.append_events(&[])
            .await
            .expect("empty append")
            .is_empty()
    );

    // 2. Appends and duplicates.
    let a = event("webhook:apex", "1", r#"{"n":1}"#, t0);
    let b = event("webhook:apex", "2", r#"{"n":2}"#, t0);
    let a_again = event("webhook:apex", "1", r#"{"n":"again"}"#, t1);
    let c = event("outbound:00D", "1", r#"{"n":3}"#, t1);
    let out = log
        .append_events(&[a.clone(), b.clone(), a_again, c.clone()])
        .await
        .expect("append");
    assert_eq!(
        out,
        [
            Appended::Stored(1),
            Appended::Stored(2),
            Appended::Duplicate(1),
            Appended::Stored(3)
        ],
        "sequences in order; a repeated id in one call is a duplicate of the first"
    );
    assert_eq!(
        log.append_events(std::slice::from_ref(&b))
            .await
            .expect("again"),
        [Appended::Duplicate(2)],
        "a later append of a stored id is a duplicate"
    );
    assert_eq!(log.last_sequence().await.expect("last"), 3);

    // 3. Read back.
    let all = log.events_after(0, 10).await.expect("read");
    let got: Vec<(i64, &NewEvent)> = all.iter().map(|e| (e.sequence, &e.event)).collect();
    assert_eq!(got, [(1, &a), (2, &b), (3, &c)], "read back as appended");
    let page = log.events_after(1, 1).await.expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].sequence, 2);
    assert!(log.events_after(3, 10).await.expect("past").is_empty());

    // 4. Concurrent appends.
    let mut tasks = Vec::new();
    for task in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..10 {
                let own = event("load", &format!("{task}-{i}"), "{}", t1);
                // Every task also appends the same shared ids.
                let shared = event("load", &format!("shared-{i}"), "{}", t1);
                let out = log.append_events(&[own, shared]).await.expect("append");
                seen.push(out);
            }
            seen
        }));
    }
    let mut stored = BTreeSet::new();
    let mut shared_stored = 0;
    for task in tasks {
        for out in task.await.expect("task") {
            if let Appended::Stored(s) = out[0] {
                assert!(stored.insert(s), "sequence {s} handed out twice");
            } else {
                panic!("a task's own id was taken for a duplicate: {out:?}");
            }
            if let Appended::Stored(s) = out[1] {
                assert!(stored.insert(s), "sequence {s} handed out twice");
                shared_stored += 1;
            }
        }
    }
    assert_eq!(shared_stored, 10, "each shared id stored once");
    assert_eq!(
        stored.iter().copied().collect::<Vec<_>>(),
        (4..4 + 90).collect::<Vec<i64>>(),
        "unique, gapless sequences"
    );
    let read = log.events_after(3, 1_000).await.expect("read");
    assert_eq!(read.len(), 90);
    assert!(read.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));

    // 5. Replay from a time.
    assert_eq!(log.sequence_before(t0).await.expect("before"), 0);
    assert_eq!(
        log.sequence_before(t0 + Duration::from_millis(1))
            .await
            .expect("before"),
        2,
        "events 1 and 2 came before t1"
    );
    assert_eq!(
        log.sequence_before(t1 + Duration::from_secs(1))
            .await
            .expect("before"),
        93,
        "nothing after: the last sequence"
    );

    // 6. Purge.
    let far = t1 + Duration::from_secs(3_600);
    assert_eq!(
        log.purge_events(t0, 100).await.expect("purge"),
        0,
        "none before t0"
    );
    assert_eq!(
        log.purge_events(far, 1).await.expect("purge"),
        1,
        "only at or below the position"
    );
    let left = log.events_after(0, 1).await.expect("read");
    assert_eq!(left[0].sequence, 2);
    assert_eq!(
        log.append_events(&[a]).await.expect("again"),
        [Appended::Stored(94)],
        "a purged id is new again; sequences are not reused"
    );
}
