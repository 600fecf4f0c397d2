//! The sync engine with Salesforce at either end, against the sandbox: sandbox → SQLite
//! table sink (full, incremental with timestamp ties, bulk above the threshold, faults
//! injected), SQLite-shaped records → sandbox (upsert by external id and by Id, per-record
//! failures as dead letters), and a bidirectional run with conflicts on both sides.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;
use support::{connect, fast_poll, patient};

use std::sync::Arc;
use std::time::Duration;

use connector_salesforce::sync::{SalesforceSink, SalesforceSource};
use connector_sqlite::SqliteTableSink;
use moodbridge_core::engine::{Pipeline, SyncEngine};
use moodbridge_core::state::{SqliteStateStore, StateStore};
use moodbridge_core::testing::MemorySource;
use moodbridge_core::{
    FieldDescriptor, FieldType, Policy, ReadRequest, Record, RetryConfig, StreamDescriptor,
    SyncMode, SyncSource,
};
use salesforce_sandbox::{Faults, Sandbox, SandboxConfig};
use serde_json::{Value, json};

struct Env {
    dir: tempfile::TempDir,
    engine: SyncEngine,
    state: Arc<dyn StateStore>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateStore> = Arc::new(
        SqliteStateStore::open(&dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    let fast = RetryConfig {
        max_attempts: 8,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_elapsed: Duration::from_secs(30),
        budget: None,
    };
    let engine = SyncEngine::new(state.clone()).with_policies(
        Policy::builder("src").retry(fast.clone()).build(),
        Policy::builder("dst").retry(fast).build(),
    );
    Env { dir, engine, state }
}

const TO_WAREHOUSE: &str = r#"
name = "sf-to-warehouse"
[[streams]]
name = "Account"
batch_size = 700
[[streams]]
name = "Contact"
batch_size = 700
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_org_lands_in_the_warehouse_fully_then_incrementally_with_ties_and_faults() {
    let sb = Sandbox::new(SandboxConfig::default())
        .seed(1_500, 2, 21)
        .start()
        .await
        .unwrap();
    let sf = connect(&sb, Some(patient())).await;
    let e = env().await;
    let warehouse = SqliteTableSink::open(&e.dir.path().join("warehouse.db"))
        .await
        .unwrap();
    // Accounts (1,500) go through REST; Contacts (3,000) through Bulk API 2.0.
    let source = SalesforceSource::new(sf.clone(), ["Account", "Contact"])
        .bulk_threshold(2_000)
        .bulk_page_size(1_000)
        .poll(fast_poll());
    let pipeline = Pipeline::from_toml(TO_WAREHOUSE).unwrap();
    sb.set_faults(Faults {
        error_rate: 0.1,
        drop_rate: 0.05,
        seed: 4,
        ..Faults::default()
    });
    let first = e.engine.run(&pipeline, &source, &warehouse).await.unwrap();
    sb.set_faults(Faults::default());
    assert_eq!(
        (first.counts.read, first.counts.written, first.counts.failed),
        (4_500, 4_500, 0)
    );
    assert_eq!(warehouse.count("Account").await.unwrap(), 1_500);
    assert_eq!(warehouse.count("Contact").await.unwrap(), 3_000);
    // The Contacts' Bulk API 2.0 job went without ORDER BY (which would turn off
    // Salesforce's PK chunking); Accounts, under the threshold, needed no job.
    let jobs = sb.bulk_queries();
    assert!(
        !jobs.is_empty(),
        "the Contacts were read by a bulk query job"
    );
    for soql in &jobs {
        assert!(soql.contains("FROM Contact"), "{soql}");
        assert!(!soql.to_ascii_uppercase().contains("ORDER BY"), "{soql}");
    }
    let rows = warehouse.rows("Contact").await.unwrap();
    let sample = rows.iter().find(|r| r.get("LastName").is_some()).unwrap();
    assert!(
        sample
            .get("Id")
            .and_then(Value::as_str)
            .is_some_and(|id| id.starts_with("003"))
    );

    // Changes in Salesforce: 3 Accounts updated at once (same SystemModstamp second or
    // not), 1 created; the next run reads exactly those.
    let ids: Vec<String> = rows_ids(&warehouse, "Account").await[..3].to_vec();
    for id in &ids {
        sf.update("Account", id, &json!({"Name": format!("Renamed {id}")}))
            .await
            .unwrap();
    }
    let created = sf
        .create("Account", &json!({"Name": "Fresh Firm"}))
        .await
        .unwrap();
    let second = e.engine.run(&pipeline, &source, &warehouse).await.unwrap();
    assert_eq!(
        second.counts.read, 4,
        "only the changes: {:?}",
        second.counts
    );
    assert_eq!(warehouse.count("Account").await.unwrap(), 1_501);
    let rows = warehouse.rows("Account").await.unwrap();
    let renamed = rows
        .iter()
        .find(|r| r.get("Id") == Some(&json!(ids[0])))
        .unwrap();
    assert_eq!(
        renamed.get("Name"),
        Some(&json!(format!("Renamed {}", ids[0])))
    );
    assert!(rows.iter().any(|r| r.get("Id") == Some(&json!(created))));
    let third = e.engine.run(&pipeline, &source, &warehouse).await.unwrap();
    assert_eq!(third.counts.read, 0, "nothing new");
    drop(e.state);
    sb.stop().await;
}

async fn rows_ids(sink: &SqliteTableSink, table: &str) -> Vec<String> {
    sink.rows(table)
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.get("Id").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_checkpoints_split_records_sharing_a_timestamp_without_loss_or_repeat() {
    let sb = Sandbox::new(SandboxConfig::default())
        .seed(30, 0, 2)
        .start()
        .await
        .unwrap();
    let sf = connect(&sb, Some(patient())).await;
    // Every Account gets the very same SystemModstamp: only the Id breaks the tie.
    sb.with_org(|org| {
        let ids: Vec<String> = org
            .rows("Account", false)
            .iter()
            .filter_map(|r| r["Id"].as_str().map(str::to_owned))
            .collect();
        for id in ids {
            org.set_raw(
                "Account",
                &id,
                "SystemModstamp",
                json!("2026-11-20T10:00:00.000+0000"),
            );
        }
    });
    let source = SalesforceSource::new(sf, ["Account"]).bulk_threshold(u64::MAX);
    let mut seen = Vec::new();
    let mut checkpoint = None;
    // Read 7 at a time, resuming from each checkpoint as a restarted engine would.
    loop {
        let mut req = ReadRequest::new("Account", SyncMode::Incremental).batch_size(7);
        if let Some(cp) = checkpoint.take() {
            req = req.resume_from(cp);
        }
        let mut stream = source.read(req).await.unwrap();
        use futures::StreamExt;
        let mut got = 0;
        let mut last_cp = None;
        while let Some(m) = stream.next().await {
            match m.unwrap() {
                moodbridge_core::SourceMessage::Records(b) => {
                    got += b.len();
                    seen.extend(
                        b.records
                            .iter()
                            .map(|r| r.get("Id").unwrap().as_str().unwrap().to_owned()),
                    );
                }
                moodbridge_core::SourceMessage::Checkpoint(cp) => {
                    last_cp = Some(cp);
                    break; // "crash" after the first checkpoint
                }
                other => panic!("a REST read yields records, got {other:?}"),
            }
        }
        if got == 0 {
            break;
        }
        checkpoint = last_cp;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (30, 30), "each record once");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_back_into_the_org_by_external_id_and_failures_become_dead_letters() {
    let sb = Sandbox::new(SandboxConfig::default())
        .seed(10, 0, 3)
        .start()
        .await
        .unwrap();
    let sf = connect(&sb, Some(patient())).await;
    let e = env().await;
    // The host's contacts (as a warehouse table would give them), keyed by external id.
    let source = MemorySource::new();
    source.add_stream(
        StreamDescriptor::new("Contact")
            .field(FieldDescriptor::new("External_Id__c", FieldType::String))
            .primary_key(["External_Id__c"]),
    );
    let contacts: Vec<Record> = (0..2_500)
        .map(|i| {
            let last = if i % 500 == 250 { Value::Null } else { json!(format!("Client {i}")) };
            Record::from_json(json!({"External_Id__c": format!("MB-{i}"), "LastName": last, "Email": format!("c{i}@firm.test")})).unwrap()
        })
        .collect();
    for c in contacts {
        source.put("Contact", c);
    }
    let pipeline = Pipeline::from_toml(
        "name = \"warehouse-to-sf\"\n[[streams]]\nname = \"Contact\"\nmode = \"full_refresh\"\nbatch_size = 2500\nwrite = { mode = \"upsert\", key = [\"External_Id__c\"] }\n",
    )
    .unwrap();
    // Batches of 2,500 > the sink's threshold: Bulk API 2.0 ingest.
    let sink = SalesforceSink::new(sf.clone())
        .bulk_threshold(2_000)
        .ingest_options(connector_salesforce::bulk::IngestOptions {
            poll: fast_poll(),
            ..Default::default()
        });
    let first = e.engine.run(&pipeline, &source, &sink).await.unwrap();
    assert_eq!((first.counts.written, first.counts.failed), (2_495, 5));
    let letters = e
        .state
        .dead_letters("warehouse-to-sf", None, 100)
        .await
        .unwrap();
    assert_eq!(letters.len(), 5);
    assert!(
        letters
            .iter()
            .all(|l| l.reason.contains("REQUIRED_FIELD_MISSING")),
        "{letters:?}"
    );
    assert_eq!(sb.with_org(|org| org.rows("Contact", false).len()), 2_495);

    // The same again, smaller batches (sObject Collections): updates, no duplicates.
    let small = Pipeline::from_toml(
        "name = \"warehouse-to-sf-2\"\n[[streams]]\nname = \"Contact\"\nmode = \"full_refresh\"\nbatch_size = 400\nwrite = { mode = \"upsert\", key = [\"External_Id__c\"] }\n",
    )
    .unwrap();
    let second = e.engine.run(&small, &source, &sink).await.unwrap();
    assert_eq!((second.counts.written, second.counts.failed), (2_495, 5));
    assert_eq!(sb.with_org(|org| org.rows("Contact", false).len()), 2_495);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_run_syncs_both_ways_drops_echoes_and_resolves_conflicts() {
    use moodbridge_core::engine::{BidirectionalConfig, ConflictPolicy, Side};
    use moodbridge_core::testing::MemorySystem;
    let sb = Sandbox::new(SandboxConfig::default())
        .start()
        .await
        .unwrap();
    let sf = connect(&sb, Some(patient())).await;
    let e = env().await;
    for i in 0..20 {
        sf.create(
            "Contact",
            &json!({"LastName": format!("Org {i}"), "External_Id__c": format!("K-{i}")}),
        )
        .await
        .unwrap();
    }
    // The host's side: its own contacts, keyed by the same external id.
    let host = MemorySystem::new();
    host.add_stream(
        StreamDescriptor::new("Contact")
            .primary_key(["External_Id__c"])
            .cursor("SystemModstamp"),
    );
    for i in 0..5 {
        host.edit(
            "Contact",
            Record::from_json(json!({"External_Id__c": format!("M-{i}"), "LastName": format!("Host {i}"), "Email": format!("h{i}@firm.test")})).unwrap(),
        );
    }
    let source = SalesforceSource::new(sf.clone(), ["Contact"]);
    let sink = SalesforceSink::new(sf.clone());
    let config = |conflicts| BidirectionalConfig {
        name: "contacts-two-way".into(),
        stream: "Contact".into(),
        key: vec!["External_Id__c".into()],
        ignore: [
            "Id",
            "SystemModstamp",
            "CreatedDate",
            "LastModifiedDate",
            "IsDeleted",
        ]
        .map(String::from)
        .to_vec(),
        conflicts,
        batch_size: None,
    };
    let org = Side {
        source: &source,
        sink: &sink,
    };
    let mine = Side {
        source: &host,
        sink: &host,
    };
    let first = e
        .engine
        .run_bidirectional(&config(ConflictPolicy::SourceWins), org, mine)
        .await
        .unwrap();
    assert_eq!(
        (first.left_to_right, first.right_to_left, first.failed),
        (20, 5, 0)
    );
    assert_eq!(host.records("Contact").len(), 25);
    assert_eq!(sb.with_org(|o| o.rows("Contact", false).len()), 25);
    // Settles: own writes come back as echoes (the org fills in nulls once), then quiet.
    for _ in 0..3 {
        e.engine
            .run_bidirectional(&config(ConflictPolicy::SourceWins), org, mine)
            .await
            .unwrap();
    }
    let quiet = e
        .engine
        .run_bidirectional(&config(ConflictPolicy::SourceWins), org, mine)
        .await
        .unwrap();
    assert_eq!(
        (quiet.left_to_right, quiet.right_to_left, quiet.conflicts),
        (0, 0, 0)
    );

    // K-1 changed on both sides (the org wins), K-2 only on the host, K-3 only in the org.
    let id_of = |key: &str| {
        sb.with_org(|o| {
            o.rows("Contact", false)
                .iter()
                .find(|r| r["External_Id__c"] == json!(key))
                .and_then(|r| r["Id"].as_str().map(str::to_owned))
                .unwrap()
        })
    };
    sf.update("Contact", &id_of("K-1"), &json!({"LastName": "Org edit"}))
        .await
        .unwrap();
    sf.update("Contact", &id_of("K-3"), &json!({"Email": "k3@org.test"}))
        .await
        .unwrap();
    host.edit(
        "Contact",
        Record::from_json(json!({"External_Id__c": "K-1", "LastName": "Host edit"})).unwrap(),
    );
    host.edit(
        "Contact",
        Record::from_json(json!({"External_Id__c": "K-2", "LastName": "Host only"})).unwrap(),
    );
    let third = e
        .engine
        .run_bidirectional(&config(ConflictPolicy::SourceWins), org, mine)
        .await
        .unwrap();
    assert_eq!(third.conflicts, 1, "{third:?}");
    let host_name = |key: &str| {
        host.get("Contact", key)
            .unwrap()
            .get("LastName")
            .cloned()
            .unwrap()
    };
    // The id first: `with_org` holds the org's lock, and `id_of` takes it too.
    let org_field = |key: &str, f: &str| {
        let id = id_of(key);
        sb.with_org(|o| o.get("Contact", &id).unwrap()[f].clone())
    };
    assert_eq!(host_name("K-1"), json!("Org edit"));
    assert_eq!(org_field("K-1", "LastName"), json!("Org edit"));
    assert_eq!(org_field("K-2", "LastName"), json!("Host only"));
    assert_eq!(
        host.get("Contact", "K-3").unwrap().get("Email"),
        Some(&json!("k3@org.test"))
    );

    // The same with parking: both sides keep their edit, the conflict waits for a person.
    sf.update("Contact", &id_of("K-4"), &json!({"LastName": "Org again"}))
        .await
        .unwrap();
    host.edit(
        "Contact",
        Record::from_json(json!({"External_Id__c": "K-4", "LastName": "Host again"})).unwrap(),
    );
    let parked = e
        .engine
        .run_bidirectional(&config(ConflictPolicy::Park), org, mine)
        .await
        .unwrap();
    assert_eq!((parked.conflicts, parked.parked), (1, 1));
    assert_eq!(host_name("K-4"), json!("Host again"));
    assert_eq!(org_field("K-4", "LastName"), json!("Org again"));
    assert_eq!(
        e.state
            .conflicts("contacts-two-way", 10)
            .await
            .unwrap()
            .len(),
        1
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_driven_incremental_runs_move_exactly_the_changes_and_fall_back_when_the_window_passed()
{
    let sb = Sandbox::new(SandboxConfig {
        cometd_timeout: Duration::from_millis(100),
        cdc_retention: 20,
        ..SandboxConfig::default()
    })
    .seed(200, 0, 8)
    .start()
    .await
    .unwrap();
    let sf = connect(&sb, Some(patient())).await;
    let e = env().await;
    let warehouse = SqliteTableSink::open(&e.dir.path().join("warehouse.db"))
        .await
        .unwrap();
    let source = SalesforceSource::new(sf.clone(), ["Account"])
        .cdc_incremental(Duration::from_millis(400), 10_000);
    let pipeline = Pipeline::from_toml(
        "name = \"cdc\"\n[[streams]]\nname = \"Account\"\nmode = \"incremental\"\nbatch_size = 100\ndeletes = \"soft\"\n",
    )
    .unwrap();
    let first = e.engine.run(&pipeline, &source, &warehouse).await.unwrap();
    assert_eq!(first.counts.read, 200, "the first read is by query");

    // Three changes: read from the change events, then quiet.
    let ids = rows_ids(&warehouse, "Account").await;
    sf.update("Account", &ids[0], &json!({"Name": "Changed Zero"}))
        .await
        .unwrap();
    sf.update("Account", &ids[1], &json!({"Name": "Changed One"}))
        .await
        .unwrap();
    let fresh = sf
        .create("Account", &json!({"Name": "Brand New"}))
        .await
        .unwrap();
    let second = e.engine.run(&pipeline, &source, &warehouse).await.unwrap();
    assert_eq!(second.counts.read, 3, "{:?}", second.counts);
    let stored = e.state.checkpoint("cdc", "Account").await.unwrap().unwrap();
    assert!(
        stored.checkpoint.state["replay_id"].as_i64().is_some(),
        "{:?}",
        stored.checkpoint.state
    );
    let rows = warehouse.rows("Account").await.unwrap();
    assert!(rows.iter().any(|r| r.get("Id") == Some(&json!(fresh))));
    assert!(
        rows.iter()
            .any(|r| r.get("Name") == Some(&json!("Changed One")))
    );
    let quiet = e.engine.run(&pipeline, &source, &warehouse).await.unwrap();
    assert_eq!(quiet.counts.read, 0);

    // Proof the change events drive the read: a change whose SystemModstamp is then set
    // back (a query by cursor would miss it) still arrives.
    sf.update("Account", &ids[2], &json!({"Name": "Via CDC"}))
        .await
        .unwrap();
    sb.with_org(|o| {
        o.set_raw(
            "Account",
            &ids[2],
            "SystemModstamp",
            json!("2020-01-01T00:00:00.000+0000"),
        )
    });
    let by_event = e.engine.run(&pipeline, &source, &warehouse).await.unwrap();
    assert_eq!(by_event.counts.read, 1);
    let rows = warehouse.rows("Account").await.unwrap();
    assert!(
        rows.iter()
            .any(|r| r.get("Name") == Some(&json!("Via CDC")))
    );

    // A delete event is a tombstone: the row stays, marked.
    sf.delete("Account", &ids[5]).await.unwrap();
    let deleted = e.engine.run(&pipeline, &source, &warehouse).await.unwrap();
    assert_eq!(deleted.counts.read, 1, "{:?}", deleted.counts);
    assert_eq!(deleted.counts.written, 1, "{:?}", deleted.counts);
    let rows = warehouse.rows("Account").await.unwrap();
    let row = rows
        .iter()
        .find(|r| r.get("Id") == Some(&json!(ids[5])))
        .unwrap();
    assert_eq!(row.get("_deleted"), Some(&json!(true)), "{row:?}");

    // More changes than the window keeps: the stored replay id is gone, and the run falls
    // back to SystemModstamp — every change still arrives.
    for (i, id) in ids[10..40].iter().enumerate() {
        sf.update("Account", id, &json!({"Name": format!("Burst {i}")}))
            .await
            .unwrap();
    }
    let caught_up = e.engine.run(&pipeline, &source, &warehouse).await.unwrap();
    // The query since the last cursor also meets the deleted record again (its
    // SystemModstamp moved when it was deleted): a tombstone already applied, unchanged.
    assert_eq!(caught_up.counts.read, 31, "{:?}", caught_up.counts);
    assert_eq!(caught_up.counts.written, 30, "{:?}", caught_up.counts);
    let rows = warehouse.rows("Account").await.unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r
                .get("Name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("Burst")))
            .count(),
        30
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salesforce_source_meets_the_source_contract() {
    use moodbridge_core::record::RecordKey;
    use moodbridge_core::testing::{SourceContract, sync_source_contract};
    let sb = Sandbox::new(SandboxConfig::default())
        .seed(7, 0, 5)
        .start()
        .await
        .unwrap();
    let sf = connect(&sb, None).await;
    let source = SalesforceSource::new(sf.clone(), ["Account"]);
    // Lineage names the org by its instance's host.
    let host = sb
        .url()
        .split("://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    assert_eq!(
        moodbridge_core::SyncSource::lineage_namespace(&source).await,
        Some(format!("salesforce://{host}"))
    );
    let case = SourceContract {
        stream: "Account",
        batch_size: 2,
    };
    sync_source_contract(&source, &case, async || {
        let first: Vec<Value> = futures::TryStreamExt::try_collect(
            sf.query("SELECT Id FROM Account ORDER BY Id LIMIT 1"),
        )
        .await?;
        let id = first[0]["Id"].as_str().unwrap().to_owned();
        sf.update("Account", &id, &json!({"Name": "Renamed by the contract"}))
            .await?;
        let added = sf
            .create("Account", &json!({"Name": "Added by the contract"}))
            .await?;
        Ok(vec![RecordKey::new(vec![id]), RecordKey::new(vec![added])])
    })
    .await;
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salesforce_sink_meets_the_sink_contract() {
    use moodbridge_core::testing::{SinkContract, sync_sink_contract};
    use salesforce_sandbox::org::{FieldDef, ObjectDef};
    let sb = Sandbox::new(SandboxConfig::default())
        .define(ObjectDef::new(
            "Matter__c",
            "a01",
            vec![
                FieldDef::new("Name", "string").required(),
                FieldDef::new("Docket__c", "string").external(),
            ],
        ))
        .start()
        .await
        .unwrap();
    let sf = connect(&sb, None).await;
    let sink = SalesforceSink::new(sf.clone());
    let matter = |i: u64, version: u32| {
        Record::from_json(json!({
            "Docket__c": format!("D-{i:04}"),
            "Name": format!("Matter {i}, version {version}"),
        }))
        .unwrap()
    };
    let case = SinkContract {
        stream: StreamDescriptor::new("Matter__c")
            .field(FieldDescriptor::new("Docket__c", FieldType::String).required())
            .field(FieldDescriptor::new("Name", FieldType::String).required())
            .primary_key(["Docket__c"]),
        record: &matter,
        // Name is required: REQUIRED_FIELD_MISSING.
        bad_record: Record::from_json(json!({"Docket__c": "D-BAD"})).unwrap(),
        overwrite: false,
    };
    sync_sink_contract(&sink, &case, async |object: &str| {
        let rows: Vec<Value> = futures::TryStreamExt::try_collect(
            sf.query(&format!("SELECT Docket__c, Name FROM {object}")),
        )
        .await?;
        rows.into_iter().map(Record::from_json).collect()
    })
    .await;
    sb.stop().await;
}

/// Reads `source`'s `Account` stream from `checkpoint`, stopping after `stop_after`
/// checkpoints (a crash) or at the end: the ids read and the last checkpoint.
async fn read_accounts(
    source: &SalesforceSource,
    checkpoint: Option<moodbridge_core::Checkpoint>,
    stop_after: usize,
) -> (Vec<String>, Option<moodbridge_core::Checkpoint>) {
    use futures::StreamExt;
    let mut req = ReadRequest::new("Account", SyncMode::Incremental).batch_size(100);
    if let Some(cp) = checkpoint {
        req = req.resume_from(cp);
    }
    let mut stream = source.read(req).await.unwrap();
    let (mut ids, mut last, mut checkpoints) = (Vec::new(), None, 0);
    while let Some(m) = stream.next().await {
        match m.unwrap() {
            moodbridge_core::SourceMessage::Rows(rows) => {
                let id = rows.column_index("Id").unwrap();
                ids.extend(rows.rows().map(|r| r.text(id).unwrap().to_owned()));
            }
            moodbridge_core::SourceMessage::Records(b) => ids.extend(
                b.records
                    .iter()
                    .map(|r| r.get("Id").unwrap().as_str().unwrap().to_owned()),
            ),
            moodbridge_core::SourceMessage::Deletes(d) => {
                panic!("nothing was deleted, yet {} tombstones came", d.len())
            }
            moodbridge_core::SourceMessage::Checkpoint(cp) => {
                last = Some(cp);
                checkpoints += 1;
                if checkpoints == stop_after {
                    break;
                }
            }
        }
    }
    (ids, last)
}

/// The query jobs the org has.
fn query_jobs(sb: &salesforce_sandbox::RunningSandbox) -> usize {
    let url = format!("{}/services/data/v62.0/jobs/query", sb.url());
    let token = sb.issue_token();
    let body: Value = std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap()
            })
    })
    .join()
    .unwrap();
    body["records"].as_array().unwrap().len()
}

/// A bulk read cut off after its first result page resumes the same job's remaining
/// pages; when Salesforce no longer has the job, or the read asks for other fields, a
/// new job reads everything. Either way each record arrives, and the final checkpoint is
/// the largest position read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_read_cut_off_resumes_its_job_or_starts_a_new_one() {
    let sb = Sandbox::new(SandboxConfig::default())
        .seed(50, 0, 5)
        .start()
        .await
        .unwrap();
    let sf = connect(&sb, None).await;
    let source = SalesforceSource::new(sf.clone(), ["Account"])
        .bulk_threshold(0)
        .bulk_page_size(10)
        .poll(fast_poll());
    let all = {
        let (mut ids, last) = read_accounts(&source, None, usize::MAX).await;
        ids.sort();
        let state = last.unwrap().state;
        assert!(state.get("bulk").is_none(), "{state}");
        (ids, state)
    };
    assert_eq!(all.0.len(), 50);
    assert_eq!(query_jobs(&sb), 1);

    // Cut off after the first page: the checkpoint names the job and the next page.
    let (first, cut) = read_accounts(&source, None, 1).await;
    assert_eq!(first.len(), 10);
    let cut = cut.unwrap();
    let job = cut.state["bulk"]["job_id"].as_str().unwrap().to_owned();
    assert!(cut.state["bulk"]["locator"].is_string(), "{}", cut.state);
    assert_eq!(query_jobs(&sb), 2);

    // Resumed: the 40 records not read yet, from the same job.
    let (rest, end) = read_accounts(&source, Some(cut.clone()), usize::MAX).await;
    assert_eq!(query_jobs(&sb), 2, "no new job");
    assert_eq!(rest.len(), 40);
    let mut both: Vec<String> = first.iter().chain(&rest).cloned().collect();
    both.sort();
    assert_eq!(both, all.0, "each record once");
    assert_eq!(
        end.unwrap().state,
        all.1,
        "the final position is the largest read"
    );

    // The job gone (Salesforce keeps results 7 days): a new job reads all 50.
    let deleted = reqwest::Client::new()
        .delete(format!("{}/services/data/v62.0/jobs/query/{job}", sb.url()))
        .bearer_auth(sb.issue_token())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    let (again, end) = read_accounts(&source, Some(cut.clone()), usize::MAX).await;
    assert_eq!(again.len(), 50);
    assert_eq!(end.unwrap().state, all.1);

    // A read asking for other fields does not take over the job's pages.
    let (_, cut) = read_accounts(&source, None, 1).await;
    let jobs_before = query_jobs(&sb);
    let narrower = SalesforceSource::new(sf, ["Account"])
        .bulk_threshold(0)
        .bulk_page_size(10)
        .poll(fast_poll());
    let mut req = ReadRequest::new("Account", SyncMode::Incremental).batch_size(100);
    req.fields = vec!["Id".into(), "Name".into(), "SystemModstamp".into()];
    req = req.resume_from(cut.unwrap());
    use futures::TryStreamExt;
    let messages: Vec<_> = narrower
        .read(req)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let read: usize = messages
        .iter()
        .map(|m| match m {
            moodbridge_core::SourceMessage::Rows(r) => r.len(),
            moodbridge_core::SourceMessage::Records(b) => b.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(read, 50, "a new job, from the start");
    assert_eq!(query_jobs(&sb), jobs_before + 1);
    sb.stop().await;
}

/// Records deleted in Salesforce come as tombstones from an incremental read, whether it
/// pages the REST query (queryAll) or runs a Bulk API 2.0 queryAll job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salesforce_source_reports_deletes_by_rest_and_by_bulk() {
    use moodbridge_core::record::RecordKey;
    use moodbridge_core::testing::{SourceContract, sync_source_deletes_contract};
    for bulk_threshold in [u64::MAX, 0] {
        let sb = Sandbox::new(SandboxConfig::default())
            .seed(9, 0, 5)
            .start()
            .await
            .unwrap();
        let sf = connect(&sb, None).await;
        let source = SalesforceSource::new(sf.clone(), ["Account"])
            .bulk_threshold(bulk_threshold)
            .bulk_page_size(4)
            .poll(fast_poll());
        let case = SourceContract {
            stream: "Account",
            batch_size: 3,
        };
        sync_source_deletes_contract(&source, &case, async || {
            let some: Vec<Value> = futures::TryStreamExt::try_collect(
                sf.query("SELECT Id FROM Account ORDER BY Id LIMIT 2"),
            )
            .await?;
            let mut keys = Vec::new();
            for record in some {
                let id = record["Id"].as_str().unwrap().to_owned();
                sf.delete("Account", &id).await?;
                keys.push(RecordKey::new(vec![id]));
            }
            Ok(keys)
        })
        .await;
        sb.stop().await;
    }
}

/// Sandbox → SQLite with `deletes = "soft"`: a record deleted in Salesforce stays in the
/// warehouse marked `_deleted` with its time of deletion; undeleted, it is live again.
/// With `deletes = "hard"` it is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_in_the_org_reach_the_warehouse() {
    for how in ["soft", "hard"] {
        let sb = Sandbox::new(SandboxConfig::default())
            .seed(12, 0, 5)
            .start()
            .await
            .unwrap();
        let e = env().await;
        let sf = connect(&sb, None).await;
        let source = SalesforceSource::new(sf.clone(), ["Account"]).poll(fast_poll());
        let sink = SqliteTableSink::open(&e.dir.path().join("warehouse.db"))
            .await
            .unwrap();
        let pipeline = Pipeline::from_toml(&format!(
            "name = \"mirror\"\n[[streams]]\nname = \"Account\"\ndeletes = \"{how}\"\n"
        ))
        .unwrap();
        e.engine.run(&pipeline, &source, &sink).await.unwrap();
        let ids = rows_ids(&sink, "Account").await;
        assert_eq!(ids.len(), 12);
        sf.delete("Account", &ids[3]).await.unwrap();
        let report = e.engine.run(&pipeline, &source, &sink).await.unwrap();
        assert_eq!(report.counts.written, 1, "{how}: {report:?}");
        let rows = sink.rows("Account").await.unwrap();
        let row = rows
            .iter()
            .find(|r| r.get("Id").and_then(Value::as_str) == Some(ids[3].as_str()));
        if how == "hard" {
            assert!(row.is_none(), "removed");
            assert_eq!(rows.len(), 11);
            sb.stop().await;
            continue;
        }
        let row = row.expect("kept, marked");
        assert_eq!(row.get("_deleted"), Some(&json!(true)), "{row:?}");
        assert!(
            row.get("_deleted_at").and_then(Value::as_str).is_some(),
            "{row:?}"
        );
        assert_eq!(
            rows.iter()
                .filter(|r| r.get("_deleted") == Some(&json!(true)))
                .count(),
            1
        );
        // Undeleted in the org (the sandbox's recycle bin): live again.
        sb.with_org(|org| {
            assert!(org.set_raw("Account", &ids[3], "IsDeleted", json!(false)));
            org.set_raw(
                "Account",
                &ids[3],
                "SystemModstamp",
                json!("2099-01-01T00:00:00.000+0000"),
            );
        });
        e.engine.run(&pipeline, &source, &sink).await.unwrap();
        let rows = sink.rows("Account").await.unwrap();
        let row = rows
            .iter()
            .find(|r| r.get("Id").and_then(Value::as_str) == Some(ids[3].as_str()))
            .unwrap();
        assert_ne!(row.get("_deleted"), Some(&json!(true)), "{row:?}");
        sb.stop().await;
    }
}

/// A record deleted for good (no longer in the Recycle Bin, so queryAll no longer
/// returns it) reaches the warehouse through `sObject Get Deleted`; the checkpoint keeps
/// where the window ended, and a window older than the delete log is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_for_good_reach_the_warehouse_through_get_deleted() {
    let sb = Sandbox::new(SandboxConfig {
        // Salesforce ignores seconds; the sandbox's log is exact, so the test need not
        // wait for the minute to turn.
        delete_log_granularity: Duration::from_millis(1),
        ..SandboxConfig::default()
    })
    .seed(8, 0, 5)
    .start()
    .await
    .unwrap();
    let e = env().await;
    let sf = connect(&sb, None).await;
    let source = SalesforceSource::new(sf.clone(), ["Account"]);
    let sink = SqliteTableSink::open(&e.dir.path().join("warehouse.db"))
        .await
        .unwrap();
    let pipeline = Pipeline::from_toml(
        "name = \"mirror\"\n[[streams]]\nname = \"Account\"\ndeletes = \"hard\"\n",
    )
    .unwrap();
    e.engine.run(&pipeline, &source, &sink).await.unwrap();
    let ids = rows_ids(&sink, "Account").await;
    assert_eq!(ids.len(), 8);
    // Deleted half a minute ago: before the window's end, which is sent in whole seconds.
    let earlier = std::time::SystemTime::now() - Duration::from_secs(30);
    sb.with_org(|org| org.hard_delete_at("Account", &ids[2], earlier).unwrap());
    let report = e.engine.run(&pipeline, &source, &sink).await.unwrap();
    assert_eq!(report.counts.written, 1, "{:?}", report.counts);
    let left = rows_ids(&sink, "Account").await;
    assert_eq!(left.len(), 7);
    assert!(!left.contains(&ids[2]));
    let cp = e
        .state
        .checkpoint("mirror", "Account")
        .await
        .unwrap()
        .unwrap();
    assert!(
        cp.checkpoint.state["deleted_through"].is_string(),
        "{:?}",
        cp.checkpoint.state
    );
    let quiet = e.engine.run(&pipeline, &source, &sink).await.unwrap();
    assert_eq!(quiet.counts.written, 0, "{:?}", quiet.counts);

    let now = std::time::SystemTime::now();
    let err = sf
        .deleted("Account", now - Duration::from_secs(20 * 86_400), now)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        moodbridge_core::ErrorKind::InvalidInput,
        "{err}"
    );
    assert_eq!(
        err.context_value("error_code"),
        Some("INVALID_REPLICATION_DATE")
    );
    let found = sf
        .deleted("Account", now - Duration::from_secs(3_600), now)
        .await
        .unwrap();
    assert_eq!(
        found
            .records
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        [ids[2].as_str()]
    );
    sb.stop().await;
}
