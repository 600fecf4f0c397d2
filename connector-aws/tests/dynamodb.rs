//! DynamoDB tables as a sync sink and source, and a state table as a cursor store,
//! against moto (a local server speaking DynamoDB's JSON protocol as aws-sdk-dynamodb
//! sends it): the core data-movement and cursor contracts, conditional upserts, records
//! DynamoDB cannot hold, items the service leaves unprocessed (a proxy doing what
//! DynamoDB documents under throttling), and an integration built from config.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use connector_aws::dynamodb::{DynamoDb, StreamTable};
use connector_aws::sdk::AwsCredentials;
use moodbridge_core::state::{CursorStore, LeaseStore};
use moodbridge_core::testing::{
    SinkContract, SourceContract, cursor_store_contract, lease_store_contract, sync_sink_contract,
    sync_sink_deletes_contract, sync_source_contract,
};
use moodbridge_core::{
    ErrorKind, FailureKind, ReadRequest, Record, RecordBatch, RecordKey, SourceMessage,
    StreamDescriptor, SyncMode, SyncSink, SyncSource, WriteAction, WriteMode,
};
use serde_json::json;
use support::Moto;

fn keys() -> AwsCredentials {
    AwsCredentials::Static {
        access_key_id: "AKIDTESTDYNAMO".into(),
        secret_access_key: "dynamo-secret-key-never-shown-0077".to_owned().into(),
        session_token: None,
    }
}

/// An independent client: the SDK, nothing of ours.
fn admin(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .build(),
    )
}

fn db(endpoint: &str) -> connector_aws::dynamodb::DynamoDbBuilder {
    DynamoDb::builder()
        .region("us-east-1")
        .endpoint(endpoint)
        .credentials(keys())
}

/// Every item of `table`, as records (strings and numbers only: what the tests write).
async fn scan(endpoint: &str, table: &str) -> Vec<Record> {
    let out = admin(endpoint)
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        .map(|item| {
            let mut r = Record::new();
            for (k, v) in item {
                let v = match v {
                    AttributeValue::S(s) => json!(s),
                    AttributeValue::N(n) => json!(n.parse::<f64>().unwrap()),
                    AttributeValue::Bool(b) => json!(b),
                    other => panic!("unexpected {other:?}"),
                };
                r.set(k, v);
            }
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_meets_the_sink_contracts() {
    let moto = Moto::start();
    let sink = db(&moto.endpoint)
        .table_prefix("contract-")
        .create_tables(true)
        .build()
        .await
        .unwrap();
    let case = SinkContract::matters(false);
    sync_sink_contract(&sink, &case, async |stream| {
        Ok(scan(&moto.endpoint, &format!("contract-{stream}")).await)
    })
    .await;

    let deletes = db(&moto.endpoint)
        .table_prefix("deletes-")
        .create_tables(true)
        .build()
        .await
        .unwrap();
    sync_sink_deletes_contract(&deletes, &case, true, async |stream| {
        Ok(scan(&moto.endpoint, &format!("deletes-{stream}")).await)
    })
    .await;
}

/// A table of cases with a cursor index (partition `entity`, sort `updated_at`), made
/// with the SDK.
async fn cases_table(endpoint: &str, table: &str) {
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    let def = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    admin(endpoint)
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("Id", KeyType::Hash))
        .attribute_definitions(def("Id"))
        .attribute_definitions(def("entity"))
        .attribute_definitions(def("updated_at"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by_updated")
                .key_schema(key("entity", KeyType::Hash))
                .key_schema(key("updated_at", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

async fn put_case(endpoint: &str, table: &str, id: &str, updated: &str, subject: &str) {
    admin(endpoint)
        .put_item()
        .table_name(table)
        .item("Id", AttributeValue::S(id.into()))
        .item("entity", AttributeValue::S("Case".into()))
        .item("updated_at", AttributeValue::S(updated.into()))
        .item("Subject", AttributeValue::S(subject.into()))
        .item("Priority", AttributeValue::N("2".into()))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_meets_the_source_contract_with_ties_on_the_cursor() {
    let moto = Moto::start();
    cases_table(&moto.endpoint, "cases").await;
    // Three cases share one update time: pages of 2 split them, and the checkpoint
    // between them must neither lose nor repeat one.
    for (id, at) in [
        ("500A", "2026-12-01T09:00:00.000Z"),
        ("500B", "2026-12-01T10:00:00.000Z"),
        ("500C", "2026-12-01T10:00:00.000Z"),
        ("500D", "2026-12-01T10:00:00.000Z"),
        ("500E", "2026-12-01T11:00:00.000Z"),
    ] {
        put_case(&moto.endpoint, "cases", id, at, "first").await;
    }
    let source = db(&moto.endpoint)
        .stream(
            "Case",
            StreamTable::new("cases")
                .cursor("updated_at")
                .index("by_updated", "entity", "Case"),
        )
        .build()
        .await
        .unwrap();
    let case = SourceContract {
        stream: "Case",
        batch_size: 2,
    };
    let endpoint = moto.endpoint.clone();
    sync_source_contract(&source, &case, async || {
        put_case(
            &endpoint,
            "cases",
            "500B",
            "2026-12-02T08:00:00.000Z",
            "changed",
        )
        .await;
        put_case(
            &endpoint,
            "cases",
            "500F",
            "2026-12-02T08:00:00.000Z",
            "new",
        )
        .await;
        Ok(vec![
            RecordKey::new(vec!["500B".into()]),
            RecordKey::new(vec!["500F".into()]),
        ])
    })
    .await;

    // Values come back typed; a full read is a scan.
    let mut messages = source
        .read(ReadRequest::new("Case", SyncMode::FullRefresh))
        .await
        .unwrap();
    let mut records = Vec::new();
    while let Some(m) = futures::TryStreamExt::try_next(&mut messages)
        .await
        .unwrap()
    {
        if let SourceMessage::Records(b) = m {
            records.extend(b.records);
        }
    }
    assert_eq!(records.len(), 6);
    assert!(
        records.iter().all(|r| r.get("Priority") == Some(&json!(2))),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_cursor_index_is_read_in_full_only_and_a_wrong_index_is_named() {
    let moto = Moto::start();
    cases_table(&moto.endpoint, "cases").await;
    put_case(
        &moto.endpoint,
        "cases",
        "500A",
        "2026-12-01T09:00:00.000Z",
        "x",
    )
    .await;
    let plain = db(&moto.endpoint)
        .stream("Case", StreamTable::new("cases"))
        .build()
        .await
        .unwrap();
    let catalog = plain.discover().await.unwrap();
    let stream = catalog.stream("Case").unwrap();
    assert_eq!(stream.primary_key, ["Id"]);
    assert!(!stream.supports(SyncMode::Incremental));
    let err = plain
        .read(ReadRequest::new("Case", SyncMode::Incremental))
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.hint().contains("index"), "{err:?}");

    let wrong = db(&moto.endpoint)
        .stream(
            "Case",
            StreamTable::new("cases")
                .cursor("Subject")
                .index("by_updated", "entity", "Case"),
        )
        .build()
        .await
        .unwrap();
    let err = wrong.discover().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.message().contains("by_updated"), "{err}");

    // A bad mapping is refused when built, with every problem at once.
    let err = db(&moto.endpoint)
        .stream("Case", StreamTable::new("c").only_newer(true))
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("only_newer"), "{err}");
    assert!(err.to_string().contains("3 to 255"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_newer_upserts_never_overwrite_a_newer_item_and_appends_never_touch_one() {
    let moto = Moto::start();
    cases_table(&moto.endpoint, "cases").await;
    let sink = db(&moto.endpoint)
        .stream(
            "Case",
            StreamTable::new("cases")
                .cursor("updated_at")
                .index("by_updated", "entity", "Case")
                .only_newer(true),
        )
        .build()
        .await
        .unwrap();
    let upsert = WriteMode::Upsert {
        key: vec!["Id".into()],
    };
    let case = |id: &str, at: &str, subject: &str| {
        Record::from_json(json!({"Id": id, "entity": "Case", "updated_at": at, "Subject": subject}))
            .unwrap()
    };
    let stream = StreamDescriptor::new("Case").primary_key(["Id"]);
    sink.begin_stream(&stream, &upsert).await.unwrap();
    let batch = |records| RecordBatch::new("Case", records);
    let report = sink
        .write(
            &batch(vec![case("500A", "2026-12-02T00:00:00Z", "newer")]),
            &upsert,
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes[0].result, Ok(WriteAction::Created));
    // A late replay of an older version, and a newer one of another record.
    let report = sink
        .write(
            &batch(vec![
                case("500A", "2026-12-01T00:00:00Z", "older"),
                Record::from_json(json!({"Id": "500B", "Subject": "no cursor"})).unwrap(),
            ]),
            &upsert,
        )
        .await
        .unwrap();
    assert_eq!(
        report.outcomes[0].result,
        Ok(WriteAction::Unchanged),
        "{report:?}"
    );
    let failure = report.outcomes[1].result.clone().unwrap_err();
    assert_eq!(failure.kind, FailureKind::InvalidInput, "{failure:?}");
    assert!(failure.message.contains("updated_at"), "{failure:?}");
    let stored = scan(&moto.endpoint, "cases").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].get("Subject"), Some(&json!("newer")));
    let report = sink
        .write(
            &batch(vec![case("500A", "2026-12-03T00:00:00Z", "newest")]),
            &upsert,
        )
        .await
        .unwrap();
    assert_eq!(report.outcomes[0].result, Ok(WriteAction::Updated));
    let before = report.outcomes[0].before.as_ref().unwrap();
    assert_eq!(
        before.get("Subject"),
        Some(&json!("newer")),
        "the before image is kept"
    );

    // An append never changes an existing item; writing the same record again (a
    // retried append whose answer was lost) is not a conflict.
    let report = sink
        .write(
            &batch(vec![
                case("500A", "2026-12-04T00:00:00Z", "appended"),
                case("500C", "2026-12-04T00:00:00Z", "appended"),
            ]),
            &WriteMode::Append,
        )
        .await
        .unwrap();
    let conflict = report.outcomes[0].result.clone().unwrap_err();
    assert_eq!(conflict.kind, FailureKind::Conflict, "{conflict:?}");
    assert_eq!(report.outcomes[1].result, Ok(WriteAction::Created));
    let again = sink
        .write(
            &batch(vec![case("500C", "2026-12-04T00:00:00Z", "appended")]),
            &WriteMode::Append,
        )
        .await
        .unwrap();
    assert_eq!(
        again.outcomes[0].result,
        Ok(WriteAction::Unchanged),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_dynamodb_cannot_hold_fail_alone_and_a_missing_table_says_how_to_make_it() {
    let moto = Moto::start();
    let sink = db(&moto.endpoint)
        .table_prefix("t-")
        .create_tables(true)
        .build()
        .await
        .unwrap();
    let stream = StreamDescriptor::new("Matter").primary_key(["Docket"]);
    let upsert = WriteMode::Upsert {
        key: vec!["Docket".into()],
    };
    sink.begin_stream(&stream, &upsert).await.unwrap();
    let huge = "x".repeat(410 * 1024);
    let records = vec![
        Record::from_json(json!({"Docket": "D-1", "Title": "fine"})).unwrap(),
        Record::from_json(json!({"Docket": "D-2", "Title": huge})).unwrap(),
        Record::from_json(json!({"Docket": "", "Title": "empty key"})).unwrap(),
        Record::from_json(json!({"Docket": {"nested": true}, "Title": "object key"})).unwrap(),
        // The same key twice in one batch: DynamoDB refuses such a batch; both are
        // written, in order.
        Record::from_json(json!({"Docket": "D-1", "Title": "fine, again"})).unwrap(),
    ];
    let report = sink
        .write(&RecordBatch::new("Matter", records), &upsert)
        .await
        .unwrap();
    assert_eq!(
        report.outcomes[0].result,
        Ok(WriteAction::Created),
        "{report:?}"
    );
    for (i, says) in [(1, "400 KB"), (2, "empty"), (3, "string")] {
        let f = report.outcomes[i].result.clone().unwrap_err();
        assert_eq!(f.kind, FailureKind::InvalidInput, "{f:?}");
        assert!(f.message.contains(says), "{f:?}");
    }
    assert_eq!(
        report.outcomes[4].result,
        Ok(WriteAction::Updated),
        "{report:?}"
    );
    let stored = scan(&moto.endpoint, "t-Matter").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].get("Title"), Some(&json!("fine, again")));

    // A key other than the table's is a config error; overwrite is unsupported.
    let err = sink
        .begin_stream(
            &stream,
            &WriteMode::Upsert {
                key: vec!["Title".into()],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let err = sink
        .begin_stream(&stream, &WriteMode::Overwrite)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");

    let strict = db(&moto.endpoint)
        .table_prefix("absent-")
        .build()
        .await
        .unwrap();
    let err = strict.begin_stream(&stream, &upsert).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.hint().contains("create_tables"), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("never-shown"), "{text}");
    }
}

/// A proxy in front of moto that does what DynamoDB documents under load: a
/// `BatchWriteItem` call writes only some of its items and returns the rest as
/// `UnprocessedItems`. `hold(n, items)` says how many of the call's items to hold back.
async fn unprocessing_proxy(
    upstream: String,
    hold: Arc<dyn Fn(usize, usize) -> usize + Send + Sync>,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, upstream, hold, counter) = (
            client.clone(),
            upstream.clone(),
            hold.clone(),
            counter.clone(),
        );
        async move {
            let headers = req.headers().clone();
            let target = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            let mut held = serde_json::Map::new();
            let mut body = body.to_vec();
            if target.ends_with(".BatchWriteItem") {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let mut doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let tables = doc["RequestItems"].as_object_mut().unwrap();
                for (table, requests) in tables.iter_mut() {
                    let list = requests.as_array_mut().unwrap();
                    let keep = list.len() - hold(n, list.len()).min(list.len());
                    let back: Vec<_> = list.drain(keep..).collect();
                    if !back.is_empty() {
                        held.insert(table.clone(), serde_json::Value::Array(back));
                    }
                }
                tables.retain(|_, requests| !requests.as_array().unwrap().is_empty());
                if tables.is_empty() {
                    // Nothing of the call is processed: DynamoDB answers with all of it.
                    let answer = serde_json::json!({ "UnprocessedItems": held });
                    return axum::response::Response::builder()
                        .status(200)
                        .header("content-type", "application/x-amz-json-1.0")
                        .body(axum::body::Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap();
                }
                body = serde_json::to_vec(&doc).unwrap();
            }
            // moto does not check signatures, so the shortened body is accepted as sent.
            let mut forward = client.post(format!("{upstream}/"));
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    forward = forward.header(name, value);
                }
            }
            let answer = forward.body(body).send().await.unwrap();
            let status = answer.status().as_u16();
            let bytes = answer.bytes().await.unwrap();
            let bytes = if held.is_empty() || status != 200 {
                bytes.to_vec()
            } else {
                let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                doc["UnprocessedItems"] = serde_json::Value::Object(held);
                serde_json::to_vec(&doc).unwrap()
            };
            axum::response::Response::builder()
                .status(status)
                .header("content-type", "application/x-amz-json-1.0")
                .body(axum::body::Body::from(bytes))
                .unwrap()
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (endpoint, calls, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprocessed_items_are_written_again_and_what_stays_unprocessed_fails_alone() {
    let moto = Moto::start();
    let setup = db(&moto.endpoint)
        .table_prefix("u-")
        .create_tables(true)
        .build()
        .await
        .unwrap();
    let stream = StreamDescriptor::new("Matter").primary_key(["Docket"]);
    let upsert = WriteMode::Upsert {
        key: vec!["Docket".into()],
    };
    setup.begin_stream(&stream, &upsert).await.unwrap();
    let matters = |from: usize, n: usize| {
        RecordBatch::new(
            "Matter",
            (from..from + n)
                .map(|i| {
                    Record::from_json(json!({"Docket": format!("D-{i:03}"), "Title": "t"})).unwrap()
                })
                .collect(),
        )
    };

    // Every call holds back a third of its items: 60 records take several calls per
    // chunk of 25, and all are written.
    let (endpoint, calls, task) =
        unprocessing_proxy(moto.endpoint.clone(), Arc::new(|_, len| len / 3)).await;
    let sink = db(&endpoint).table_prefix("u-").build().await.unwrap();
    let report = sink.write(&matters(0, 60), &upsert).await.unwrap();
    assert_eq!(report.succeeded(), 60, "{report:?}");
    assert!(
        calls.load(Ordering::SeqCst) > 3,
        "the proxy held items back"
    );
    assert_eq!(scan(&moto.endpoint, "u-Matter").await.len(), 60);
    task.abort();

    // One item that is never processed fails alone, as temporary; the rest is written.
    let (endpoint, _, task) = unprocessing_proxy(
        moto.endpoint.clone(),
        Arc::new(|_, len| usize::from(len > 0)),
    )
    .await;
    let sink = db(&endpoint).table_prefix("u-").build().await.unwrap();
    let report = sink.write(&matters(100, 5), &upsert).await.unwrap();
    assert_eq!(report.succeeded(), 4, "{report:?}");
    let failed: Vec<_> = report.failures().collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1.kind, FailureKind::Temporary, "{failed:?}");
    assert_eq!(
        failed[0].0.index, 4,
        "the held-back item is the last one sent"
    );
    assert_eq!(scan(&moto.endpoint, "u-Matter").await.len(), 64);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_table_meets_the_cursor_and_lease_store_contracts() {
    let moto = Moto::start();
    let state = db(&moto.endpoint)
        .build()
        .await
        .unwrap()
        .state_table("moodbridge-state");
    state.ensure().await.unwrap();
    state.ensure().await.unwrap();
    cursor_store_contract(
        Arc::new(state.clone()) as Arc<dyn CursorStore>,
        "case-changes",
    )
    .await;
    lease_store_contract(Arc::new(state.clone()) as Arc<dyn LeaseStore>, "contract").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_integration_is_built_from_config_with_its_state_table() {
    let moto = Moto::start();
    cases_table(&moto.endpoint, "cases").await;
    put_case(
        &moto.endpoint,
        "cases",
        "500A",
        "2026-12-01T09:00:00.000Z",
        "x",
    )
    .await;
    let store = moodbridge_auth::store::MemoryStore::new();
    moodbridge_core::CredentialStore::put(
        &store,
        "aws/test/secret_access_key",
        "dynamo-config-secret-never-shown-9".to_owned().into(),
    )
    .await
    .unwrap();
    let toml = format!(
        r#"
        [[integration]]
        id = "dynamo"
        kind = "aws-dynamodb"
        [integration.settings]
        region = "us-east-1"
        endpoint = "{}"
        state_table = "moodbridge-state"
        credentials = {{ source = "static", access_key_id = "AKIDCONFIG", secret_access_key = "secret:aws/test/secret_access_key" }}
        [integration.settings.streams.Case]
        table = "cases"
        cursor = "updated_at"
        index = "by_updated"
        partition = {{ attribute = "entity", value = "Case" }}
        "#,
        moto.endpoint
    );
    let config = moodbridge_core::SdkConfig::from_toml(&toml).unwrap();
    let mut registry = moodbridge_core::Registry::new();
    registry
        .register(Arc::new(connector_aws::dynamodb::DynamoDbFactory))
        .unwrap();
    let built = registry
        .build_all(&config, Some(Arc::new(store)))
        .await
        .unwrap();
    let built = built.get("dynamo").unwrap();
    assert_eq!(built.integration.kind(), "aws-dynamodb");
    let source = built.interfaces.get::<dyn SyncSource>().unwrap();
    let catalog = source.discover().await.unwrap();
    assert!(
        catalog
            .stream("Case")
            .unwrap()
            .supports(SyncMode::Incremental)
    );
    assert!(built.interfaces.get::<dyn SyncSink>().is_some());
    let state = built
        .interfaces
        .get::<connector_aws::dynamodb::DynamoStateTable>()
        .unwrap();
    state.ensure().await.unwrap();
    let cursors = built.interfaces.get::<dyn CursorStore>().unwrap();
    assert_eq!(cursors.commit_cursor("c", "p", "1").await.unwrap(), 1);
    let leases = built.interfaces.get::<dyn LeaseStore>().unwrap();
    let lease = leases
        .acquire_lease("case-changes", "host-a", std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.token, 1);
    let health = built.integration.health_check().await;
    assert!(health.detail.contains("answers"), "{health:?}");

    // Every problem of a bad config at once, each with its path.
    let bad = r#"
        [[integration]]
        id = "dynamo"
        kind = "aws-dynamodb"
        [integration.settings]
        table_prefix = "bad prefix"
        [integration.settings.streams.Case]
        index = "by_updated"
        "#;
    let config = moodbridge_core::SdkConfig::from_toml(bad).unwrap();
    let err = registry.build_all(&config, None).await.err().unwrap();
    let text = err.to_string();
    for path in ["table_prefix", "streams.Case.index", "streams.Case.cursor"] {
        assert!(text.contains(path), "{path} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_one_singleton_subscriber_through_the_state_table() {
    use moodbridge_core::state::{LeasedRun, run_leased};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let moto = Moto::start();
    let state = db(&moto.endpoint)
        .build()
        .await
        .unwrap()
        .state_table("moodbridge-state");
    state.ensure().await.unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let host = |name: &'static str| {
        let (state, active, most) = (state.clone(), active.clone(), most.clone());
        tokio::spawn(async move {
            let leases: Arc<dyn LeaseStore> = Arc::new(state.clone());
            run_leased(
                leases.as_ref(),
                "case-changes",
                name,
                std::time::Duration::from_secs(2),
                std::future::pending::<()>(),
                |_lease| async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // The subscriber's work: replay ids committed, fenced on the
                    // sequence read, while the lease is renewed.
                    for _ in 0..3 {
                        let at = state
                            .cursor("case-changes", "/data/CaseChangeEvent")
                            .await
                            .unwrap();
                        let seq = at.as_ref().map_or(0, |c| c.sequence);
                        state
                            .commit_cursor_if(
                                "case-changes",
                                "/data/CaseChangeEvent",
                                &format!("{name}-{seq}"),
                                seq,
                            )
                            .await
                            .unwrap();
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                },
            )
            .await
            .unwrap()
        })
    };
    let (a, b) = (host("host-a"), host("host-b"));
    for h in [a, b] {
        assert!(matches!(h.await.unwrap(), LeasedRun::Done(())));
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "one subscriber at a time");
    let at = state
        .cursor("case-changes", "/data/CaseChangeEvent")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at.sequence, 6, "every commit of both turns landed");
}
