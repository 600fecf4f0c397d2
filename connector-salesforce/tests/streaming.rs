//! Change Data Capture over the Streaming API against the sandbox: events for creates,
//! updates and deletes in order, per-entity and all-entity channels, replay ids persisted
//! in the state store so a restart resumes after the last acknowledged event, a session
//! expiry and a forgotten client survived without loss, the replay window enforced, and
//! back-pressure with a one-event buffer.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;
use support::connect;

use std::sync::Arc;
use std::time::Duration;

use connector_salesforce::streaming::{
    ChangeEvent, ChangeStream, ChangeType, ReplayFrom, SubscribeOptions,
};
use futures::StreamExt;
use moodbridge_core::ErrorKind;
use moodbridge_core::state::{CursorStore, SqliteStateStore, StateStore};
use salesforce_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use serde_json::json;

async fn sandbox(retention: usize) -> RunningSandbox {
    Sandbox::new(SandboxConfig {
        cometd_timeout: Duration::from_millis(200),
        cdc_retention: retention,
        ..SandboxConfig::default()
    })
    .start()
    .await
    .unwrap()
}

async fn next(stream: &mut ChangeStream) -> ChangeEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_updates_and_deletes_arrive_in_order_on_their_channels() {
    let sb = sandbox(1_000).await;
    let sf = connect(&sb, None).await;
    let mut accounts = sf
        .subscribe("/data/AccountChangeEvent", SubscribeOptions::default())
        .await
        .unwrap();
    let mut all = sf
        .subscribe("/data/ChangeEvents", SubscribeOptions::default())
        .await
        .unwrap();
    let id = sf
        .create("Account", &json!({"Name": "Acme", "Industry": "Legal"}))
        .await
        .unwrap();
    sf.create("Contact", &json!({"LastName": "Doe"}))
        .await
        .unwrap();
    sf.update(
        "Account",
        &id,
        &json!({"Name": "Acme Corp", "Industry": null}),
    )
    .await
    .unwrap();
    sf.delete("Account", &id).await.unwrap();

    let created = next(&mut accounts).await;
    assert_eq!(
        (created.entity.as_str(), &created.change_type),
        ("Account", &ChangeType::Create)
    );
    assert_eq!(created.record_ids, std::slice::from_ref(&id));
    assert_eq!(created.fields.get("Name"), Some(&json!("Acme")));
    assert!(created.commit_timestamp.is_some());
    let updated = next(&mut accounts).await;
    assert_eq!(updated.change_type, ChangeType::Update);
    assert!(
        updated.changed_fields.contains(&"Name".to_owned())
            && updated.changed_fields.contains(&"Industry".to_owned())
    );
    assert_eq!(updated.fields.get("Industry"), Some(&json!(null)));
    let deleted = next(&mut accounts).await;
    assert_eq!(deleted.change_type, ChangeType::Delete);
    assert!(created.replay_id < updated.replay_id && updated.replay_id < deleted.replay_id);

    let entities: Vec<String> = [
        next(&mut all).await,
        next(&mut all).await,
        next(&mut all).await,
        next(&mut all).await,
    ]
    .into_iter()
    .map(|e| e.entity)
    .collect();
    assert_eq!(entities, ["Account", "Contact", "Account", "Account"]);

    let err = sf
        .subscribe("/data/NopeChangeEvent", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_last_acknowledged_event_and_nothing_is_lost() {
    let sb = sandbox(1_000).await;
    let sf = connect(&sb, None).await;
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateStore> = Arc::new(
        SqliteStateStore::open(&dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    let options = SubscribeOptions {
        store: Some((state.clone() as Arc<dyn CursorStore>, "case-cdc".into())),
        replay: ReplayFrom::AllRetained,
        buffer: 1,
        ..SubscribeOptions::default()
    };
    for i in 0..3 {
        sf.create(
            "Case",
            &json!({"Subject": format!("Case {i}"), "Status": "New"}),
        )
        .await
        .unwrap();
    }
    let mut stream = sf
        .subscribe("/data/CaseChangeEvent", options.clone())
        .await
        .unwrap();
    let first = next(&mut stream).await;
    stream.ack(&first).await.unwrap();
    let second = next(&mut stream).await;
    stream.ack(&second).await.unwrap();
    let unacked = next(&mut stream).await; // received, not handled: the process dies
    drop(stream);

    for i in 3..6 {
        sf.create(
            "Case",
            &json!({"Subject": format!("Case {i}"), "Status": "New"}),
        )
        .await
        .unwrap();
    }
    // The session also expires, and the server forgets its streaming clients.
    sb.expire_tokens();
    let mut stream = sf
        .subscribe("/data/CaseChangeEvent", options.clone())
        .await
        .unwrap();
    let again = next(&mut stream).await;
    assert_eq!(
        again.replay_id, unacked.replay_id,
        "the unacknowledged event comes again"
    );
    stream.ack(&again).await.unwrap();
    sb.drop_streaming_clients();
    let mut subjects = Vec::new();
    for _ in 3..6 {
        let e = next(&mut stream).await;
        subjects.push(e.fields["Subject"].as_str().unwrap().to_owned());
        stream.ack(&e).await.unwrap();
    }
    assert_eq!(subjects, ["Case 3", "Case 4", "Case 5"]);
    // Back-pressure: a burst through a one-event buffer arrives whole and in order.
    for i in 6..56 {
        sf.create(
            "Case",
            &json!({"Subject": format!("Case {i}"), "Status": "New"}),
        )
        .await
        .unwrap();
    }
    for i in 6..56 {
        let e = next(&mut stream).await;
        assert_eq!(e.fields["Subject"], json!(format!("Case {i}")));
        if i % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await; // a slow host
        }
        stream.ack(&e).await.unwrap();
    }
    stream.close().await.unwrap();
    let stored = state
        .cursor("case-cdc", "/data/CaseChangeEvent")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.position.parse::<i64>().unwrap() > unacked.replay_id);
    assert!(
        state.recent_runs("case-cdc", 10).await.unwrap().is_empty(),
        "a subscription is not a sync run"
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_id_older_than_the_window_is_refused_with_the_way_out() {
    let sb = sandbox(5).await;
    let sf = connect(&sb, None).await;
    for i in 0..12 {
        sf.create("Account", &json!({"Name": format!("A {i}")}))
            .await
            .unwrap();
    }
    let options = SubscribeOptions {
        replay: ReplayFrom::After(2),
        ..SubscribeOptions::default()
    };
    let err = sf
        .subscribe("/data/AccountChangeEvent", options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("replayId"), "{err}");
    assert!(err.hint().contains("AllRetained"), "{}", err.hint());
    // Everything retained: the newest five.
    let mut s = sf
        .subscribe(
            "/data/AccountChangeEvent",
            SubscribeOptions {
                replay: ReplayFrom::AllRetained,
                ..SubscribeOptions::default()
            },
        )
        .await
        .unwrap();
    let first = next(&mut s).await;
    assert_eq!(first.fields["Name"], json!("A 7"));
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_topic_notifies_about_the_records_its_query_selects() {
    let sb = sandbox(1_000).await;
    let sf = connect(&sb, None).await;
    sf.create(
        "PushTopic",
        &json!({"Name": "NewCases", "Query": "SELECT Id, Subject, Status FROM Case WHERE Status = 'New'",
                "ApiVersion": 62.0, "NotifyForOperationCreate": true, "NotifyForOperationUpdate": true,
                "NotifyForOperationDelete": true, "NotifyForFields": "All"}),
    )
    .await
    .unwrap();
    let mut topic = sf
        .subscribe("/topic/NewCases", SubscribeOptions::default())
        .await
        .unwrap();
    let wanted = sf
        .create("Case", &json!({"Subject": "Help", "Status": "New"}))
        .await
        .unwrap();
    sf.create("Case", &json!({"Subject": "Done", "Status": "Closed"}))
        .await
        .unwrap();
    sf.update("Case", &wanted, &json!({"Subject": "Help!"}))
        .await
        .unwrap();
    sf.delete("Case", &wanted).await.unwrap();
    let created = next(&mut topic).await;
    assert_eq!(created.change_type, ChangeType::Create);
    assert_eq!(created.record_ids, std::slice::from_ref(&wanted));
    assert_eq!(created.fields["Subject"], json!("Help"));
    let updated = next(&mut topic).await;
    assert_eq!(
        (updated.change_type, updated.fields["Subject"].clone()),
        (ChangeType::Update, json!("Help!"))
    );
    let deleted = next(&mut topic).await;
    assert_eq!(deleted.change_type, ChangeType::Delete);
    assert_eq!(deleted.record_ids, std::slice::from_ref(&wanted));
    // The closed case never showed up.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), topic.next())
            .await
            .is_err()
    );

    let err = sf
        .subscribe("/topic/Nope", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    sb.stop().await;
}
