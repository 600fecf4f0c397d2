//! The Pub/Sub API client against the sandbox's Pub/Sub service (gRPC on its port):
//! topics and schemas, change events decoded from Avro with their header's bitmap fields
//! as names, replay from the earliest event and after a replay id, flow control at the
//! protocol level (no event beyond what was asked for), keepalives, and the errors a
//! bad replay id, an unknown topic and a refused token give — none carrying the token;
//! and a topic ingested into the durable event log, each event once, resuming after the
//! last replay id appended; a managed subscription resuming after its commit; and platform
//! events published (one call, or batches on a publish stream) and delivered, with the
//! bus's refusals.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use connector_salesforce::pubsub::proto::pub_sub_client::PubSubClient as Raw;
use connector_salesforce::pubsub::proto::{
    FetchRequest, ProducerEvent, PublishRequest, PublishResponse, ReplayPreset,
};
use connector_salesforce::pubsub::{
    PubSubClient, PubSubConfig, PubSubEvent, PubSubIngest, ReplayFrom,
};
use futures::{SinkExt, Stream, StreamExt};
use moodbridge_core::{ErrorKind, Result};
use salesforce_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use serde_json::{Map, Value, json};

const ORG: &str = "00D8d0000000001EAA";

async fn sandbox() -> RunningSandbox {
    Sandbox::new(SandboxConfig {
        pubsub_keepalive: Duration::from_millis(200),
        cdc_retention: 1_000,
        ..SandboxConfig::default()
    })
    .start()
    .await
    .unwrap()
}

fn config(sb: &RunningSandbox, token: String) -> PubSubConfig {
    PubSubConfig::new(sb.url(), ORG, token.into()).endpoint(sb.url())
}

/// The sandbox's user (what its tokens belong to).
const USER: &str = "0058d000000001AAAA";

fn define_case_update(sb: &RunningSandbox) {
    use salesforce_sandbox::org::FieldDef;
    sb.define_platform_event(
        "Case_Update__e",
        vec![
            FieldDef::new("Case_Id__c", "string"),
            FieldDef::new("Status__c", "string"),
            FieldDef::new("Hours__c", "double"),
        ],
    );
}

/// `request` with the sandbox's authentication headers.
fn authed<T>(sb: &RunningSandbox, token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("accesstoken", token.parse().unwrap());
    metadata.insert("instanceurl", sb.url().parse().unwrap());
    metadata.insert("tenantid", ORG.parse().unwrap());
    request
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

async fn take(
    stream: &mut (impl Stream<Item = Result<PubSubEvent>> + Unpin),
    n: usize,
) -> Vec<PubSubEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .expect("no error");
        out.push(next);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_events_arrive_decoded_with_replay_and_named_bitmaps() {
    let sb = sandbox().await;
    let ids: Vec<String> = (0..250)
        .map(|i| {
            sb.with_org(|org| {
                org.create(
                    "Account",
                    &fields(json!({"Name": format!("Firm {i}"), "Industry": "Legal"})),
                )
                .unwrap()
            })
        })
        .collect();
    let client = PubSubClient::connect(config(&sb, sb.issue_token()))
        .await
        .unwrap();

    let topic = client.topic("/data/AccountChangeEvent").await.unwrap();
    assert!(topic.can_subscribe && !topic.can_publish);
    let schema = client.schema(&topic.schema_id).await.unwrap();
    let names = schema.field_names();
    assert_eq!(names[0], "ChangeEventHeader");
    assert!(
        names.contains(&"Name") && names.contains(&"Phone"),
        "{names:?}"
    );

    // Every event kept, in batches of 100, in order, decoded.
    let mut all = Box::pin(
        client
            .subscribe("/data/AccountChangeEvent", ReplayFrom::Earliest, 100)
            .await
            .unwrap(),
    );
    let events = take(&mut all, 250).await;
    let numbers: Vec<u64> = events.iter().map(|e| e.replay_number().unwrap()).collect();
    assert_eq!(numbers, (1..=250).collect::<Vec<u64>>());
    let first = &events[0].payload;
    assert_eq!(first["Name"], "Firm 0");
    assert_eq!(first["Industry"], "Legal");
    assert_eq!(first["Phone"], Value::Null, "unchanged fields are null");
    let header = &first["ChangeEventHeader"];
    assert_eq!(header["changeType"], "CREATE");
    assert_eq!(header["entityName"], "Account");
    assert_eq!(header["recordIds"], json!([ids[0]]));
    assert!(
        first["CreatedDate"].as_i64().unwrap() > 1_700_000_000_000,
        "epoch ms"
    );

    // An update: its bitmaps come back as the changed and nulled field names.
    sb.with_org(|org| {
        org.update(
            "Account",
            &ids[7],
            &fields(json!({"Phone": "(415) 555-0100", "Industry": null})),
        )
        .unwrap()
    });
    let last = events.last().unwrap().replay_id.clone();
    let mut after = Box::pin(
        client
            .subscribe("/data/AccountChangeEvent", ReplayFrom::After(last), 10)
            .await
            .unwrap(),
    );
    let update = take(&mut after, 1).await.remove(0);
    let header = &update.payload["ChangeEventHeader"];
    assert_eq!(header["changeType"], "UPDATE");
    let changed: Vec<&str> = header["changedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        changed.contains(&"Phone") && changed.contains(&"Industry"),
        "{changed:?}"
    );
    assert_eq!(header["nulledFields"], json!(["Industry"]));
    assert_eq!(update.payload["Phone"], "(415) 555-0100");
    assert_eq!(update.replay_number(), Some(251));

    // Another entity's changes are not on this topic; they are on the all-entity one.
    sb.with_org(|org| {
        org.create("Contact", &fields(json!({"LastName": "Okafor"})))
            .unwrap();
    });
    let mut every = Box::pin(
        client
            .subscribe(
                "/data/ChangeEvents",
                ReplayFrom::After(251u64.to_be_bytes().to_vec()),
                10,
            )
            .await
            .unwrap(),
    );
    let contact = take(&mut every, 1).await.remove(0);
    assert_eq!(
        contact.payload["ChangeEventHeader"]["entityName"],
        "Contact"
    );
    assert_eq!(contact.payload["LastName"], "Okafor");
    assert!(
        tokio::time::timeout(Duration::from_millis(400), after.next())
            .await
            .is_err(),
        "nothing more on the Account topic"
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sends_no_more_than_was_asked_for_and_keeps_the_stream_alive() {
    let sb = sandbox().await;
    for i in 0..30 {
        sb.with_org(|org| {
            org.create("Account", &fields(json!({"Name": format!("Firm {i}")})))
                .unwrap()
        });
    }
    let token = sb.issue_token();
    let mut raw = Raw::connect(sb.url().to_owned()).await.unwrap();
    let (mut requests, outbound) = futures::channel::mpsc::channel::<FetchRequest>(4);
    requests
        .send(FetchRequest {
            topic_name: "/data/AccountChangeEvent".into(),
            replay_preset: ReplayPreset::Earliest as i32,
            num_requested: 5,
            ..FetchRequest::default()
        })
        .await
        .unwrap();
    let mut request = tonic::Request::new(outbound);
    request
        .metadata_mut()
        .insert("accesstoken", token.parse().unwrap());
    request
        .metadata_mut()
        .insert("instanceurl", sb.url().parse().unwrap());
    request
        .metadata_mut()
        .insert("tenantid", ORG.parse().unwrap());
    let mut inbound = raw.subscribe(request).await.unwrap().into_inner();
    let mut received = 0;
    let mut pending = -1;
    while received < 5 {
        let r = inbound.message().await.unwrap().unwrap();
        received += r.events.len();
        pending = r.pending_num_requested;
    }
    assert_eq!((received, pending), (5, 0));
    // Nothing more until asked: the next message is a keepalive with no events.
    let keepalive = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(keepalive.events.is_empty());
    assert_eq!(keepalive.latest_replay_id, 30i64.to_be_bytes().to_vec());
    // Asking for 200 gets 25 (what is left), the request capped at 100.
    requests
        .send(FetchRequest {
            num_requested: 200,
            ..FetchRequest::default()
        })
        .await
        .unwrap();
    let mut more = 0;
    while more < 25 {
        let r = inbound.message().await.unwrap().unwrap();
        more += r.events.len();
        if more == 25 {
            assert_eq!(r.pending_num_requested, 75);
        }
    }
    // Another topic on the same stream is refused.
    requests
        .send(FetchRequest {
            topic_name: "/data/ContactChangeEvent".into(),
            num_requested: 1,
            ..FetchRequest::default()
        })
        .await
        .unwrap();
    let refused = loop {
        match inbound.message().await {
            Ok(Some(r)) => assert!(r.events.is_empty()),
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replay_ids_unknown_topics_and_refused_tokens_are_clear_errors() {
    let sb = sandbox().await;
    sb.with_org(|org| {
        org.create("Account", &fields(json!({"Name": "Acme"})))
            .unwrap();
    });
    let client = PubSubClient::connect(config(&sb, sb.issue_token()))
        .await
        .unwrap();
    let err = client.topic("/data/NoSuchChangeEvent").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = client
        .subscribe(
            "/data/AccountChangeEvent",
            ReplayFrom::After(9_999u64.to_be_bytes().to_vec()),
            10,
        )
        .await;
    let err = match err {
        Err(e) => e,
        Ok(stream) => Box::pin(stream).next().await.unwrap().unwrap_err(),
    };
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.hint().contains("Earliest"), "{err:?}");

    let token = "00D8d0000000001!forged-token-value-123".to_owned();
    let refused = PubSubClient::connect(config(&sb, token.clone()))
        .await
        .unwrap();
    let err = refused.topic("/data/AccountChangeEvent").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthExpired, "{err}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("forged-token-value"), "{text}");
    }
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_is_ingested_into_the_event_log_once_and_resumed() {
    use moodbridge_core::state::{CursorStore, EventLog, SqliteStateStore};
    use std::sync::Arc;
    let sb = sandbox().await;
    let create = |name: &str| {
        sb.with_org(|org| {
            org.create("Account", &fields(json!({"Name": name})))
                .unwrap()
        })
    };
    let ids: Vec<String> = ["A", "B", "C", "D", "E"]
        .iter()
        .map(|n| create(n))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStateStore::open(&dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    let client = PubSubClient::connect(config(&sb, sb.issue_token()))
        .await
        .unwrap();
    let ingest = |client: PubSubClient| {
        PubSubIngest::new(
            client,
            "/data/AccountChangeEvent",
            store.clone(),
            store.clone(),
        )
        .start(ReplayFrom::Earliest)
        .batch(2)
    };
    // Until the log holds `n` events.
    let until = |n: i64| {
        let store = store.clone();
        async move {
            while store.last_sequence().await.unwrap() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let first = ingest(client.clone());
    assert_eq!(first.run_until(until(5)).await.unwrap(), 5);
    assert_eq!(
        first.position().await.unwrap(),
        Some(5u64.to_be_bytes().to_vec())
    );
    let events = store.events_after(0, 10).await.unwrap();
    assert_eq!(events[0].event.source, "pubsub:/data/AccountChangeEvent");
    assert_eq!(events[0].event.event_type, "Account");
    assert_eq!(
        events[0].event.partition_key.as_deref(),
        Some(ids[0].as_str())
    );
    let body: Value = serde_json::from_str(&events[4].event.body).unwrap();
    assert_eq!(body["Name"], "E");

    // Two more changes; a new ingest resumes after replay id 5.
    sb.with_org(|org| {
        org.update("Account", &ids[0], &fields(json!({"Name": "A2"})))
            .unwrap();
        org.update("Account", &ids[1], &fields(json!({"Name": "B2"})))
            .unwrap();
    });
    let again = ingest(client.clone());
    assert_eq!(again.run_until(until(7)).await.unwrap(), 2);

    // A crash between an append and its commit: the position is behind the log. The
    // events redelivered are duplicates: nothing is stored twice.
    store
        .commit_cursor("pubsub:/data/AccountChangeEvent", "pubsub-replay", &hex(3))
        .await
        .unwrap();
    sb.with_org(|org| {
        org.update("Account", &ids[2], &fields(json!({"Name": "C2"})))
            .unwrap();
    });
    let resumed = ingest(client);
    assert_eq!(
        resumed.run_until(until(8)).await.unwrap(),
        1,
        "only event 8 is new"
    );
    let all = store.events_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 8);
    let replays: Vec<&str> = all.iter().map(|e| e.event.event_id.as_str()).collect();
    let mut unique = replays.clone();
    unique.dedup();
    assert_eq!(unique.len(), 8, "{replays:?}");
    sb.stop().await;
}

fn hex(n: u64) -> String {
    n.to_be_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_subscription_resumes_after_its_commit() {
    let sb = sandbox().await;
    let id = sb.define_managed_subscription("Account_Sync", "/data/AccountChangeEvent", true);
    assert_eq!(id.len(), 18);
    for name in ["A", "B", "C", "D", "E"] {
        sb.with_org(|org| {
            org.create("Account", &fields(json!({"Name": name})))
                .unwrap()
        });
    }
    let client = PubSubClient::connect(config(&sb, sb.issue_token()))
        .await
        .unwrap();
    let mut first = client.managed_subscribe("Account_Sync", 2).await.unwrap();
    let events = take(&mut first, 3).await;
    assert_eq!(events[2].replay_number(), Some(3));
    first.commit(&events[2].replay_id).await.unwrap();
    // The bus keeps it; read on until its answer has come back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while first.committed().is_none() {
        assert!(std::time::Instant::now() < deadline, "no commit answer");
        let _ = tokio::time::timeout(Duration::from_millis(100), first.next()).await;
    }
    assert_eq!(first.committed(), Some(3u64.to_be_bytes().to_vec()));
    assert_eq!(sb.managed_committed("Account_Sync"), Some(3));
    drop(first);

    // Another subscriber (by id this time) starts after the commit.
    let mut second = client.managed_subscribe(&id, 10).await.unwrap();
    let next = take(&mut second, 1).await.remove(0);
    assert_eq!(next.replay_number(), Some(4));
    assert_eq!(next.payload["Name"], "D");

    // A replay id the bus does not hold is refused, on the stream.
    second.commit(&999_999u64.to_be_bytes()).await.unwrap();
    let refused = loop {
        match tokio::time::timeout(Duration::from_secs(10), second.next())
            .await
            .unwrap()
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("the stream ended without the refusal"),
        }
    };
    assert_eq!(refused.kind(), ErrorKind::Rejected, "{refused}");
    assert_eq!(sb.managed_committed("Account_Sync"), Some(3));

    let err = client.managed_subscribe("No_Such", 1).await;
    let err = match err {
        Err(e) => e,
        Ok(mut s) => s.next().await.unwrap().unwrap_err(),
    };
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_events_are_published_and_delivered() {
    let sb = sandbox().await;
    define_case_update(&sb);
    let client = PubSubClient::connect(config(&sb, sb.issue_token()).user(USER))
        .await
        .unwrap();
    let topic = client.topic("/event/Case_Update__e").await.unwrap();
    assert!(topic.can_publish && topic.can_subscribe);
    let mut events = client
        .subscribe("/event/Case_Update__e", ReplayFrom::Latest, 10)
        .await
        .unwrap();
    let replay_ids = client
        .publish(
            "/event/Case_Update__e",
            &[
                json!({"Case_Id__c": "500A", "Status__c": "Closed", "Hours__c": 2.5}),
                json!({"Case_Id__c": "500B", "Status__c": "Working"}),
            ],
        )
        .await
        .unwrap();
    assert_eq!(replay_ids.len(), 2);
    let got = take(&mut events, 2).await;
    assert_eq!(got[0].replay_id, replay_ids[0]);
    assert_eq!(got[0].payload["Case_Id__c"], "500A");
    assert_eq!(got[0].payload["Hours__c"], 2.5);
    assert_eq!(got[1].payload["Hours__c"], Value::Null);
    assert_eq!(
        got[1].payload["CreatedById"], USER,
        "filled in from the configured user"
    );
    assert!(got[1].payload["CreatedDate"].as_i64().unwrap() > 1_700_000_000_000);

    // Without a configured user, an event must carry CreatedById itself.
    let anonymous = PubSubClient::connect(config(&sb, sb.issue_token()))
        .await
        .unwrap();
    let err = anonymous
        .publish("/event/Case_Update__e", &[json!({"Case_Id__c": "500C"})])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.hint().contains("PubSubConfig::user"), "{err:?}");
    anonymous
        .publish(
            "/event/Case_Update__e",
            &[json!({"Case_Id__c": "500C", "CreatedById": "005000000000042AAA"})],
        )
        .await
        .unwrap();
    assert_eq!(
        take(&mut events, 1).await[0].payload["CreatedById"],
        "005000000000042AAA"
    );

    // A field the schema does not have is refused before anything is sent; change
    // event topics cannot be published to.
    let err = client
        .publish("/event/Case_Update__e", &[json!({"Case_Id__c": 5})])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = client
        .publish("/data/AccountChangeEvent", &[json!({})])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    // Account changes do not reach the platform event's subscribers.
    sb.with_org(|org| {
        org.create("Account", &fields(json!({"Name": "X"})))
            .unwrap()
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.next())
            .await
            .is_err()
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_sends_batches_without_waiting_and_every_event_is_answered() {
    let sb = sandbox().await;
    define_case_update(&sb);
    let client = PubSubClient::connect(config(&sb, sb.issue_token()).user(USER))
        .await
        .unwrap();
    let mut events = client
        .subscribe("/event/Case_Update__e", ReplayFrom::Latest, 100)
        .await
        .unwrap();
    let mut publisher = client.publisher("/event/Case_Update__e").await.unwrap();
    let mut sent = Vec::new();
    for batch in 0..5 {
        let payloads: Vec<Value> = (0..20)
            .map(|i| json!({"Case_Id__c": format!("500-{batch}-{i}"), "Hours__c": f64::from(i)}))
            .collect();
        sent.extend(publisher.send(&payloads).await.unwrap());
    }
    assert_eq!(sent.len(), 100);
    assert!(
        sent.iter().all(|k| k.len() == 36),
        "UUIDs: {:?}",
        &sent[..2]
    );
    // An event that does not fit the schema is refused before anything is sent.
    let err = publisher
        .send(&[json!({"Case_Id__c": 5})])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let outcomes = publisher.close().await.unwrap();
    assert_eq!(outcomes.len(), 100);
    let mut answered: Vec<String> = outcomes.iter().map(|o| o.correlation_key.clone()).collect();
    answered.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(answered, expected, "one outcome per event sent");
    let replay_of: std::collections::HashMap<String, Vec<u8>> = outcomes
        .into_iter()
        .map(|o| (o.correlation_key, o.result.unwrap()))
        .collect();
    // Delivered in the order sent, under the replay ids the bus answered with.
    let got = take(&mut events, 100).await;
    for (i, (event, key)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(event.replay_id, replay_of[key]);
        assert_eq!(
            event.payload["Case_Id__c"],
            format!("500-{}-{}", i / 20, i % 20)
        );
        assert_eq!(event.payload["CreatedById"], USER);
    }
    // A change event topic takes no publisher.
    let err = client
        .publisher("/data/AccountChangeEvent")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_refuses_bad_events_and_bad_publish_streams_and_closes_idle_ones() {
    let sb = Sandbox::new(SandboxConfig {
        pubsub_keepalive: Duration::from_millis(200),
        pubsub_publish_idle: Duration::from_millis(1_500),
        ..SandboxConfig::default()
    })
    .start()
    .await
    .unwrap();
    define_case_update(&sb);
    let token = sb.issue_token();
    let client = PubSubClient::connect(config(&sb, token.clone()).user(USER))
        .await
        .unwrap();
    let info = client.topic("/event/Case_Update__e").await.unwrap();
    let schema = client.schema(&info.schema_id).await.unwrap();
    let payload = schema
        .encode(&json!({"CreatedDate": 1_700_000_000_000i64, "CreatedById": USER, "Case_Id__c": "500A"}))
        .unwrap();
    let event = |id: &str, schema_id: &str| ProducerEvent {
        id: id.to_owned(),
        schema_id: schema_id.to_owned(),
        payload: payload.clone(),
        headers: Vec::new(),
    };
    let mut raw = Raw::connect(sb.url().to_owned()).await.unwrap();
    let response = raw
        .publish(authed(
            &sb,
            &token,
            PublishRequest {
                topic_name: "/event/Case_Update__e".into(),
                events: vec![
                    event("", &info.schema_id),
                    event(&"x".repeat(37), &info.schema_id),
                    event("mine-1", "not-the-schema"),
                    event("mine-2", &info.schema_id),
                ],
                ..PublishRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let r = &response.results;
    assert_eq!(r.len(), 4);
    assert!(r[0].error.is_none());
    assert_eq!(r[0].correlation_key.len(), 36, "a generated UUID");
    assert!(r[1].error.as_ref().unwrap().msg.contains("36"), "{r:?}");
    assert!(r[2].error.as_ref().unwrap().msg.contains("schema"), "{r:?}");
    assert_eq!(r[2].correlation_key, "mine-1");
    assert!(r[3].error.is_none());
    assert_eq!(r[3].correlation_key, "mine-2");
    assert_eq!(r[3].replay_id.len(), 8);

    // A publish stream: an answer per request, keepalives while quiet, a refusal for a
    // request naming another topic.
    let (mut requests, outbound) = futures::channel::mpsc::channel::<PublishRequest>(4);
    let mut inbound = raw
        .publish_stream(authed(&sb, &token, outbound))
        .await
        .unwrap()
        .into_inner();
    let publish = |topic: &str, id: &str| PublishRequest {
        topic_name: topic.to_owned(),
        events: vec![event(id, &info.schema_id)],
        ..PublishRequest::default()
    };
    requests
        .send(publish("/event/Case_Update__e", "s-1"))
        .await
        .unwrap();
    requests.send(publish("", "s-2")).await.unwrap();
    let mut keys = Vec::new();
    let mut keepalives = 0;
    while keepalives == 0 {
        let r: PublishResponse = tokio::time::timeout(Duration::from_secs(5), inbound.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if r.results.is_empty() {
            keepalives += 1;
        }
        keys.extend(r.results.into_iter().map(|x| x.correlation_key));
    }
    assert_eq!(keys, ["s-1", "s-2"]);
    requests
        .send(publish("/event/Other__e", "s-3"))
        .await
        .unwrap();
    let status = loop {
        match inbound.message().await {
            Ok(Some(r)) => assert!(r.results.is_empty(), "{r:?}"),
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A stream's first request must name a topic, and a platform event's.
    for (topic, code) in [
        ("", tonic::Code::InvalidArgument),
        ("/data/AccountChangeEvent", tonic::Code::PermissionDenied),
    ] {
        let (mut requests, outbound) = futures::channel::mpsc::channel::<PublishRequest>(4);
        let mut inbound = raw
            .publish_stream(authed(&sb, &token, outbound))
            .await
            .unwrap()
            .into_inner();
        requests.send(publish(topic, "s")).await.unwrap();
        let status = inbound.message().await.unwrap_err();
        assert_eq!(status.code(), code, "{topic}: {status:?}");
    }

    // A stream publishing nothing is closed by the bus; the publisher says so.
    let mut publisher = client.publisher("/event/Case_Update__e").await.unwrap();
    publisher
        .send(&[json!({"Case_Id__c": "500Z"})])
        .await
        .unwrap();
    assert_eq!(publisher.flush().await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let err = match publisher.send(&[json!({"Case_Id__c": "500Y"})]).await {
        Err(err) => err,
        Ok(_) => publisher.next().await.unwrap().unwrap_err(),
    };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains("no events were published"),
        "{err}"
    );
    sb.stop().await;
}
