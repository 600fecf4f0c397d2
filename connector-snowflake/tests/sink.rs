//! `SnowflakeSink` against fakesnow: the sync engine's sink contract (append durable at
//! flush, upsert by key with per-record actions, a re-delivered batch, a bad record
//! failing alone, overwrite swapped in at commit), an append delivered again after a
//! crash loaded once (by Snowflake's load metadata, or by the load ledger for a stream
//! with JSON fields), typed columns (a value a typed column would reject failing alone),
//! staged files removed, schema evolution, per-run snapshots, and lineage events.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use connector_snowflake::{SnowflakeClient, SnowflakeSink};
use moodbridge_core::testing::{SinkContract, sync_sink_contract};
use moodbridge_core::{Record, RecordBatch, SyncSink, WriteAction, WriteMode};
use support::FakeSnow;

async fn client(server: &FakeSnow) -> SnowflakeClient {
    let client = SnowflakeClient::login(server.config()).await.unwrap();
    for sql in [
        "create database if not exists CASES",
        "create schema if not exists CASES.PUBLIC",
    ] {
        client.execute(sql, &[]).await.unwrap();
    }
    client
}

/// How many rows table `Matter` holds.
async fn matters(client: &SnowflakeClient) -> u64 {
    client
        .execute(r#"SELECT COUNT(*) AS N FROM "Matter""#, &[])
        .await
        .unwrap()
        .json_rows()
        .unwrap()[0]["N"]
        .as_u64()
        .unwrap()
}

async fn read_back(client: &SnowflakeClient, stream: &str) -> moodbridge_core::Result<Vec<Record>> {
    let result = client
        .execute(&format!("SELECT * FROM \"{stream}\""), &[])
        .await?;
    result
        .json_rows()?
        .into_iter()
        .map(Record::from_json)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_meets_the_contract_on_fakesnow() {
    let server = FakeSnow::start();
    let client = client(&server).await;
    let sink = SnowflakeSink::new(client.clone());
    let case = SinkContract::matters(true);
    sync_sink_contract(&sink, &case, async |stream| {
        read_back(&client, stream).await
    })
    .await;
    // Every staged file was removed after its load.
    let staged = client.execute("LIST @MOODBRIDGE_LOAD", &[]).await.unwrap();
    assert_eq!(staged.json_rows().unwrap(), Vec::<serde_json::Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_delivered_again_is_loaded_once() {
    let server = FakeSnow::start();
    let client = client(&server).await;
    let sink = SnowflakeSink::new(client.clone());
    let case = SinkContract::matters(false);
    sink.begin_stream(&case.stream, &WriteMode::Append)
        .await
        .unwrap();
    let batch = RecordBatch::new("Matter", (0..50).map(|i| (case.record)(i, 1)).collect());
    let first = sink.write(&batch, &WriteMode::Append).await.unwrap();
    assert_eq!(first.succeeded(), 50);
    assert!(
        first
            .outcomes
            .iter()
            .all(|o| o.result == Ok(WriteAction::Created))
    );
    // The process died before its checkpoint: the engine delivers the batch again, to a
    // new sink.
    let again = SnowflakeSink::new(client.clone());
    again
        .begin_stream(&case.stream, &WriteMode::Append)
        .await
        .unwrap();
    let second = again.write(&batch, &WriteMode::Append).await.unwrap();
    assert!(
        second
            .outcomes
            .iter()
            .all(|o| o.result == Ok(WriteAction::Unchanged)),
        "{:?}",
        &second.outcomes[..2]
    );
    let held = read_back(&client, "Matter").await.unwrap();
    assert_eq!(held.len(), 50);
    assert!(
        held.iter()
            .all(|r| r.get("Docket").is_some_and(|d| d.is_string())),
        "{held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_with_json_fields_delivered_again_is_loaded_once_by_the_ledger() {
    use moodbridge_core::{FieldDescriptor, FieldType, StreamDescriptor};
    let server = FakeSnow::start();
    let client = client(&server).await;
    let stream = StreamDescriptor::new("Event")
        .field(FieldDescriptor::new("Id", FieldType::String).required())
        .field(FieldDescriptor::new("Payload", FieldType::Json));
    let batch = RecordBatch::new(
        "Event",
        (0..20)
            .map(|i| {
                Record::from_json(serde_json::json!({"Id": format!("E-{i}"), "Payload": {"i": i}}))
                    .unwrap()
            })
            .collect(),
    );
    for expected in [WriteAction::Created, WriteAction::Unchanged] {
        // A new sink each time: the process died before its checkpoint.
        let sink = SnowflakeSink::new(client.clone());
        sink.begin_stream(&stream, &WriteMode::Append)
            .await
            .unwrap();
        let report = sink.write(&batch, &WriteMode::Append).await.unwrap();
        assert!(
            report.outcomes.iter().all(|o| o.result == Ok(expected)),
            "{report:?}"
        );
    }
    let rows = client
        .execute("SELECT \"Payload\":i AS I FROM \"Event\"", &[])
        .await
        .unwrap()
        .json_rows()
        .unwrap();
    assert_eq!(rows.len(), 20);
    let ledger = client
        .execute("SELECT ROW_COUNT FROM MOODBRIDGE_LOAD_LEDGER", &[])
        .await
        .unwrap()
        .json_rows()
        .unwrap();
    assert_eq!(ledger, [serde_json::json!({"ROW_COUNT": 20})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_fields_land_in_typed_columns() {
    use moodbridge_core::{FieldDescriptor, FieldType, StreamDescriptor};
    let server = FakeSnow::start();
    let client = client(&server).await;
    let sink = SnowflakeSink::new(client.clone());
    let stream = StreamDescriptor::new("Invoice")
        .field(FieldDescriptor::new("Id", FieldType::String).required())
        .field(FieldDescriptor::new("Amount", FieldType::Integer))
        .field(FieldDescriptor::new("Rate", FieldType::Number))
        .field(FieldDescriptor::new("Paid", FieldType::Boolean))
        .field(FieldDescriptor::new("Due", FieldType::Date))
        .field(FieldDescriptor::new("Lines", FieldType::Json))
        .primary_key(["Id"]);
    let mode = WriteMode::Upsert {
        key: vec!["Id".into()],
    };
    sink.begin_stream(&stream, &mode).await.unwrap();
    let invoice = |id: &str, amount: i64| {
        Record::from_json(serde_json::json!({
            "Id": id, "Amount": amount, "Rate": 0.25, "Paid": amount > 100,
            "Due": "2026-12-31", "Lines": {"n": amount, "items": ["fee"]},
        }))
        .unwrap()
    };
    // A date Snowflake would reject fails alone, before anything is staged; the
    // statement loading the rest does not fail for it.
    let mut bad = invoice("INV-3", 10);
    bad.set("Due", serde_json::json!("2026-02-30"));
    let report = sink
        .write(
            &RecordBatch::new(
                "Invoice",
                vec![invoice("INV-1", 90), bad, invoice("INV-2", 250)],
            ),
            &mode,
        )
        .await
        .unwrap();
    assert_eq!(report.succeeded(), 2);
    let failure = report.outcomes[1].result.as_ref().unwrap_err();
    assert!(
        failure
            .message
            .contains("Due cannot hold \"2026-02-30\" (DATE)"),
        "{}",
        failure.message
    );
    let rows = client
        .execute(
            "SELECT \"Id\", \"Amount\", \"Rate\", \"Paid\", TO_VARCHAR(\"Due\") AS \"Due\", \"Lines\":n AS N FROM \"Invoice\" ORDER BY \"Id\"",
            &[],
        )
        .await
        .unwrap()
        .json_rows()
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["Id"], "INV-2");
    assert_eq!(rows[1]["Amount"], 250);
    assert_eq!(rows[1]["Rate"], 0.25);
    assert_eq!(rows[1]["Paid"], true);
    assert_eq!(rows[1]["Due"], "2026-12-31");
    assert_eq!(rows[1]["N"].to_string().trim_matches('"'), "250");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_of_a_config_built_integration_meets_the_contract() {
    let server = FakeSnow::start();
    let reader = client(&server).await;
    let built = server
        .build("database = \"CASES\"\nschema = \"PUBLIC\"\n")
        .await;
    let sink = built.interfaces.get::<dyn SyncSink>().unwrap();
    let case = SinkContract::matters(true);
    sync_sink_contract(sink.as_ref(), &case, async |stream| {
        read_back(&reader, stream).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_rows_are_loaded_without_records_and_checked_alike() {
    use moodbridge_core::{Column, ColumnKind, RowBatch};
    let server = FakeSnow::start();
    let client = client(&server).await;
    let sink = SnowflakeSink::new(client.clone());
    let case = SinkContract::matters(false);
    let mode = WriteMode::Upsert {
        key: vec!["Docket".into()],
    };
    sink.begin_stream(&case.stream, &mode).await.unwrap();
    let mut rows = RowBatch::new(
        "Matter",
        vec![
            Column::new("Docket", ColumnKind::Text),
            Column::new("Title", ColumnKind::Text),
            Column::new("Extra", ColumnKind::Integer),
        ],
    );
    rows.push_row([Some("D-0001"), Some("First"), Some("1")])
        .unwrap();
    rows.push_row([None, Some("No docket"), None]).unwrap();
    rows.push_row([Some("D-0002"), Some("Second"), None])
        .unwrap();
    let report = sink.write_rows(&rows, &mode).await.unwrap();
    report.check_complete(3).unwrap();
    assert_eq!(report.outcomes[0].result, Ok(WriteAction::Created));
    assert!(report.outcomes[1].result.is_err(), "{report:?}");
    assert_eq!(report.outcomes[2].result, Ok(WriteAction::Created));

    let mut again = RowBatch::new("Matter", rows.columns().to_vec());
    again
        .push_row([Some("D-0002"), Some("Second, amended"), None])
        .unwrap();
    let report = sink.write_rows(&again, &mode).await.unwrap();
    assert_eq!(report.outcomes[0].result, Ok(WriteAction::Updated));
    let mut held = read_back(&client, "Matter").await.unwrap();
    held.sort_by_key(|r| r.get("Docket").map(ToString::to_string));
    let titles: Vec<_> = held.iter().map(|r| r.get("Title").cloned()).collect();
    assert_eq!(
        titles,
        [
            Some(serde_json::json!("First")),
            Some(serde_json::json!("Second, amended"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_evolves_to_the_stream_and_a_lossy_change_stops_the_load() {
    use connector_snowflake::evolution::{Evolution, SchemaPlan};
    use moodbridge_core::{FieldDescriptor, FieldType, StreamDescriptor};
    let server = FakeSnow::start();
    let client = client(&server).await;
    // A table made by hand earlier: a short name, a NOT NULL status, a column the
    // source has since dropped.
    client
        .execute(
            r#"CREATE TABLE "Contact" ("Id" VARCHAR(18) NOT NULL, "Name" VARCHAR(40), "Status" VARCHAR(10) NOT NULL, "Score" NUMBER(5,0), "Fax" VARCHAR(40))"#,
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            r#"INSERT INTO "Contact" VALUES ('003A', 'Ada', 'open', 7, '555')"#,
            &[],
        )
        .await
        .unwrap();
    let stream = StreamDescriptor::new("Contact")
        .field(FieldDescriptor::new("Id", FieldType::String).required())
        .field(FieldDescriptor::new("Name", FieldType::String))
        .field(FieldDescriptor::new("Status", FieldType::String))
        .field(FieldDescriptor::new("Score", FieldType::Integer))
        .field(FieldDescriptor::new("Email", FieldType::String))
        .field(FieldDescriptor::new("Birthdate", FieldType::Date))
        .primary_key(["Id"]);
    let mode = WriteMode::Upsert {
        key: vec!["Id".into()],
    };

    // A dry run: the plan, read from INFORMATION_SCHEMA, changes nothing.
    let plan = SchemaPlan::plan(&client, "Contact", &stream).await.unwrap();
    assert!(plan.is_safe(), "{plan}");
    assert_eq!(plan.retained, ["Fax"]);
    assert_eq!(plan.statements().len(), 7, "{plan}");
    // A frozen table refuses the stream, naming what it would take.
    let frozen = SnowflakeSink::new(client.clone()).evolution(Evolution::Freeze);
    let err = frozen.begin_stream(&stream, &mode).await.unwrap_err();
    assert!(err.to_string().contains("schema is frozen"), "{err}");
    assert!(
        err.to_string()
            .contains(r#"ADD COLUMN IF NOT EXISTS "Email" VARCHAR"#),
        "{err}"
    );

    // The default sink applies it, then loads the new fields.
    let sink = SnowflakeSink::new(client.clone());
    sink.begin_stream(&stream, &mode).await.unwrap();
    let after = SchemaPlan::plan(&client, "Contact", &stream).await.unwrap();
    assert!(after.is_empty(), "{after}");
    let record = Record::from_json(serde_json::json!({
        "Id": "003B", "Name": "Grace Brewster Murray Hopper of the United States Navy", "Status": null,
        "Score": 12345678901_i64, "Email": "grace@example.com", "Birthdate": "1906-12-09",
    }))
    .unwrap();
    let report = sink
        .write(&RecordBatch::new("Contact", vec![record]), &mode)
        .await
        .unwrap();
    assert_eq!(report.succeeded(), 1, "{:?}", report.outcomes);
    let rows = client
        .execute(
            r#"SELECT "Id", "Name", "Status", "Score", "Email", TO_VARCHAR("Birthdate") AS "Birthdate", "Fax" FROM "Contact" ORDER BY "Id""#,
            &[],
        )
        .await
        .unwrap()
        .json_rows()
        .unwrap();
    assert_eq!(rows[0]["Fax"], "555", "the retained column kept its data");
    assert_eq!(rows[1]["Email"], "grace@example.com");
    assert_eq!(rows[1]["Birthdate"], "1906-12-09");
    assert_eq!(rows[1]["Score"], 12345678901_i64);
    assert!(rows[1]["Status"].is_null());

    // A change that would lose data stops the stream before anything is loaded.
    let scale = StreamDescriptor::new("Contact")
        .field(FieldDescriptor::new("Id", FieldType::String).required())
        .field(FieldDescriptor::new(
            "Score",
            FieldType::Decimal { scale: 2 },
        ))
        .primary_key(["Id"]);
    let err = SnowflakeSink::new(client.clone())
        .begin_stream(&scale, &mode)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), moodbridge_core::ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .contains("column Score is NUMBER(38,0) where the stream needs NUMBER(38,2)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_snapshots_the_table_and_a_bad_run_is_restored_from_it() {
    use connector_snowflake::timetravel::Snapshots;
    use moodbridge_core::observe::{RunScope, with_run_scope};
    let server = FakeSnow::start();
    let client = client(&server).await;
    let sink = SnowflakeSink::new(client.clone()).snapshot_runs(2);
    let case = SinkContract::matters(false);
    let mode = WriteMode::Upsert {
        key: case.stream.primary_key.clone(),
    };
    // Run 1 creates the table: nothing to snapshot yet.
    for (run, records) in [(1_i64, 0..10), (2, 10..15), (3, 15..18), (4, 18..40)] {
        let batch = RecordBatch::new("Matter", records.map(|i| (case.record)(i, 1)).collect());
        with_run_scope(RunScope::new("matters", run), async {
            sink.begin_stream(&case.stream, &mode).await.unwrap();
            let report = sink.write(&batch, &mode).await.unwrap();
            assert_eq!(report.succeeded(), batch.len());
            sink.commit_stream("Matter", &mode).await.unwrap();
        })
        .await;
    }
    assert_eq!(matters(&client).await, 40);
    let snapshots = Snapshots::new(client.clone());
    // Runs 2, 3 and 4 each took one before writing; the newest two are kept.
    assert_eq!(snapshots.list("Matter").await.unwrap(), [3, 4]);
    // Run 4 was bad: the table goes back to what it was before it.
    snapshots.restore("Matter", 4).await.unwrap();
    assert_eq!(matters(&client).await, 18);
    let err = snapshots.restore("Matter", 2).await.unwrap_err();
    assert_eq!(err.kind(), moodbridge_core::ErrorKind::NotFound);
    // Outside a run no snapshot is taken.
    sink.begin_stream(&case.stream, &mode).await.unwrap();
    assert_eq!(snapshots.list("Matter").await.unwrap(), [3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_is_recorded_as_openlineage_events_the_openlineage_client_reads() {
    use moodbridge_core::lineage::{EventType, JsonLinesLineage, LineageRecorder, MemoryLineage};
    use moodbridge_core::observe::{RunScope, with_run_scope};
    use std::sync::Arc;

    /// Both recorders: one to look at, one file for the Python client.
    #[derive(Debug)]
    struct Both(Arc<MemoryLineage>, JsonLinesLineage);
    impl LineageRecorder for Both {
        fn record(&self, event: moodbridge_core::lineage::RunEvent) {
            self.0.record(event.clone());
            self.1.record(event);
        }
    }

    let server = FakeSnow::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lineage.jsonl");
    let memory = Arc::new(MemoryLineage::new());
    let sink = SnowflakeSink::new(client.clone())
        .lineage(Arc::new(Both(memory.clone(), JsonLinesLineage::new(&file))));
    let case = SinkContract::matters(false);
    let upsert = WriteMode::Upsert {
        key: case.stream.primary_key.clone(),
    };
    let batch = |r: std::ops::Range<u64>| {
        RecordBatch::new("Matter", r.map(|i| (case.record)(i, 1)).collect())
    };
    // Run 12 reads from an org the source names; run 13's source names none.
    let org = "salesforce://acme.my.salesforce.com";
    with_run_scope(
        RunScope::new("matters", 12).with_source(Some(org.into())),
        async {
            sink.begin_stream(&case.stream, &upsert).await.unwrap();
            sink.write(&batch(0..30), &upsert).await.unwrap();
            sink.write(&batch(30..40), &upsert).await.unwrap();
            sink.commit_stream("Matter", &upsert).await.unwrap();
        },
    )
    .await;
    // An append delivered twice: the second file is skipped by the load metadata.
    with_run_scope(RunScope::new("matters", 13), async {
        sink.begin_stream(&case.stream, &WriteMode::Append)
            .await
            .unwrap();
        for _ in 0..2 {
            sink.write(&batch(40..45), &WriteMode::Append)
                .await
                .unwrap();
        }
        sink.commit_stream("Matter", &WriteMode::Append)
            .await
            .unwrap();
    })
    .await;

    let events = memory.events();
    let types: Vec<EventType> = events.iter().map(|e| e.event_type).collect();
    use EventType::{Complete, Running, Start};
    assert_eq!(
        types,
        [
            Start, Running, Running, Complete, Start, Running, Running, Complete
        ]
    );
    assert_eq!(events[0].job.name, "matters.Matter");
    assert!(
        events[..4]
            .iter()
            .all(|e| e.run.run_id == events[0].run.run_id)
    );
    assert_ne!(events[4].run.run_id, events[0].run.run_id);
    let start = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(start["inputs"][0]["namespace"], org);
    assert_eq!(start["inputs"][0]["name"], "Matter");
    let json = serde_json::to_value(&events[1]).unwrap();
    assert_eq!(
        json["inputs"][0]["namespace"], org,
        "the batch came from the org"
    );
    let output = &json["outputs"][0];
    assert_eq!(output["outputFacets"]["outputStatistics"]["rowCount"], 30);
    let load = &output["facets"]["moodbridge_load"];
    // The query ids are the statements' own: the COPY into staging and the MERGE.
    let queries = client.execute("SELECT 1", &[]).await.unwrap();
    assert_ne!(load["copyQueryId"], load["applyQueryId"]);
    for id in [&load["copyQueryId"], &load["applyQueryId"]] {
        assert_eq!(id.as_str().unwrap().len(), queries.query_id.len(), "{load}");
    }
    assert!(
        json["inputs"][1]["name"]
            .as_str()
            .unwrap()
            .ends_with(load["stageFile"].as_str().unwrap())
    );
    let skipped = serde_json::to_value(&events[6]).unwrap();
    assert_eq!(
        skipped["outputs"][0]["facets"]["moodbridge_load"]["loaded"],
        false
    );
    assert_eq!(
        skipped["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"],
        0
    );

    // The OpenLineage project's client reads every event as it is.
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/openlineage_check.py");
    let out = std::process::Command::new(moodbridge_core::testing::venv_python())
        .arg(script)
        .arg(&file)
        .args(["acme", "test", "CASES", "PUBLIC", "Matter"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openlineage-python refused the events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "COMPLETE=2 RUNNING=4 START=2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_a_file_is_cut_into_files_loaded_once_together() {
    use moodbridge_core::lineage::MemoryLineage;
    use std::sync::Arc;
    let server = FakeSnow::start();
    let client = client(&server).await;
    let lineage = Arc::new(MemoryLineage::new());
    let sink = SnowflakeSink::new(client.clone())
        .max_file_bytes(16 << 10)
        .lineage(lineage.clone());
    let case = SinkContract::matters(false);
    sink.begin_stream(&case.stream, &WriteMode::Append)
        .await
        .unwrap();
    let batch = RecordBatch::new("Matter", (0..3000).map(|i| (case.record)(i, 1)).collect());
    for round in 0..2 {
        let report = sink.write(&batch, &WriteMode::Append).await.unwrap();
        let expected = if round == 0 {
            // Every file was loaded, and purged by its COPY.
            let staged = client.execute("LIST @MOODBRIDGE_LOAD", &[]).await.unwrap();
            assert_eq!(staged.json_rows().unwrap(), Vec::<serde_json::Value>::new());
            WriteAction::Created
        } else {
            WriteAction::Unchanged
        };
        assert!(report.outcomes.iter().all(|o| o.result == Ok(expected)));
    }
    assert_eq!(matters(&client).await, 3000);
    let event = serde_json::to_value(&lineage.events()[1]).unwrap();
    let files = event["outputs"][0]["outputFacets"]["outputStatistics"]["fileCount"]
        .as_u64()
        .unwrap();
    assert!(
        files > 1,
        "one file for 3,000 records under 16 KiB files: {event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_stage_is_written_through_the_s3_connector_and_loaded_once() {
    use moodbridge_core::storage::ObjectStoreExt;
    use std::sync::Arc;
    let server = FakeSnow::start();
    let client = client(&server).await;
    // The bucket of an S3-compatible server that keeps plain files, and a stage over
    // the same files (fakesnow reads stages from file:// URLs).
    let s3 = support::S3sFs::start("landing");
    let store = Arc::new(
        connector_aws::s3::S3ObjectStore::builder("landing")
            .endpoint(&s3.endpoint)
            .path_style(true)
            .region("us-east-1")
            .static_credentials(
                support::S3sFs::KEY_ID,
                secrecy::SecretString::from(support::S3sFs::SECRET.to_owned()),
            )
            .build()
            .await
            .unwrap(),
    );
    let url = format!("file://{}/landing/", s3.root.path().display());
    client
        .execute(&format!("CREATE STAGE LANDING URL = '{url}'"), &[])
        .await
        .unwrap();
    let sink = SnowflakeSink::new(client.clone())
        .external_stage("LANDING", store.clone(), "moodbridge/loads")
        .unwrap();
    let case = SinkContract::matters(false);
    // A stopped run's file is removed when the stream begins.
    store
        .put_bytes(
            &moodbridge_core::storage::ObjectKey::new("moodbridge/loads/Matter-stale-p0.parquet")
                .unwrap(),
            b"left over".to_vec(),
            moodbridge_core::storage::PutOptions::new(),
        )
        .await
        .unwrap();
    sink.begin_stream(&case.stream, &WriteMode::Append)
        .await
        .unwrap();
    assert_eq!(
        store.list_keys("moodbridge/").await.unwrap(),
        Vec::<String>::new()
    );
    let batch = RecordBatch::new("Matter", (0..40).map(|i| (case.record)(i, 1)).collect());
    for expected in [WriteAction::Created, WriteAction::Unchanged] {
        let report = sink.write(&batch, &WriteMode::Append).await.unwrap();
        assert!(
            report.outcomes.iter().all(|o| o.result == Ok(expected)),
            "{:?}",
            report.outcomes.first()
        );
        // What was loaded (or known loaded) is removed from the bucket.
        assert_eq!(
            store.list_keys("moodbridge/").await.unwrap(),
            Vec::<String>::new()
        );
    }
    // Upserts go through the staging table from the same stage.
    let upsert = WriteMode::Upsert {
        key: case.stream.primary_key.clone(),
    };
    sink.begin_stream(&case.stream, &upsert).await.unwrap();
    let changed = RecordBatch::new("Matter", (30..50).map(|i| (case.record)(i, 2)).collect());
    let report = sink.write(&changed, &upsert).await.unwrap();
    assert_eq!(report.succeeded(), 20);
    assert_eq!(matters(&client).await, 50);
    // No internal stage was made.
    let stages: Vec<String> = client
        .execute("SHOW STAGES", &[])
        .await
        .unwrap()
        .json_rows()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(stages, ["LANDING"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_read_from_salesforce_names_its_job_in_the_loads_lineage() {
    use connector_salesforce::bulk::PollOptions;
    use connector_salesforce::sync::SalesforceSource;
    use moodbridge_core::engine::{Pipeline, SyncEngine};
    use moodbridge_core::lineage::{EventType, MemoryLineage};
    use moodbridge_core::state::SqliteStateStore;
    use salesforce_sandbox::{Sandbox, SandboxConfig};
    use std::sync::Arc;
    use std::time::Duration;

    let org = Sandbox::new(SandboxConfig::default())
        .seed(120, 1, 5)
        .start()
        .await
        .unwrap();
    let salesforce = org
        .client_builder("salesforce:sandbox")
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Every read goes through a Bulk API 2.0 query job, its results in pages of 50.
    let source = SalesforceSource::new(salesforce, ["Account"])
        .bulk_threshold(0)
        .bulk_page_size(50)
        .poll(PollOptions {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
            timeout: Duration::from_secs(60),
        });
    let server = FakeSnow::start();
    let client = client(&server).await;
    let lineage = Arc::new(MemoryLineage::new());
    let sink = SnowflakeSink::new(client.clone()).lineage(lineage.clone());
    let dir = tempfile::tempdir().unwrap();
    let state = SqliteStateStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let engine = SyncEngine::new(Arc::new(state));
    let pipeline = Pipeline::from_toml(
        "name = \"accounts\"\n[[streams]]\nname = \"Account\"\nbatch_size = 50\n",
    )
    .unwrap();
    let report = engine.run(&pipeline, &source, &sink).await.unwrap();
    assert_eq!((report.counts.read, report.counts.written), (120, 120));

    // The org's one query job is the one the events name.
    let jobs: Vec<String> = org.bulk_jobs().into_iter().map(|(id, _)| id).collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let events = lineage.events();
    let namespace = format!(
        "salesforce://{}",
        org.url()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
    );
    let running: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e.event_type != EventType::Start)
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(
        running.len(),
        4,
        "three batches of 50, 50 and 20, then COMPLETE"
    );
    for event in &running {
        let input = &event["inputs"][0];
        assert_eq!(input["namespace"], namespace.as_str(), "{event}");
        assert_eq!(input["name"], "Account");
        assert_eq!(
            input["facets"]["moodbridge_extract"]["jobs"],
            serde_json::json!(jobs),
            "{event}"
        );
        assert!(
            input["facets"]["moodbridge_extract"]["_schemaURL"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://")),
            "{event}"
        );
    }
    assert_eq!(running[3]["eventType"], "COMPLETE");
    org.stop().await;
}
