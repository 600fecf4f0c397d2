//! Bulk API 2.0 through the client against the sandbox: ingest split across parallel
//! jobs with every record's outcome matched back, upsert / delete / hardDelete, a job that
//! fails as a whole, a poll timeout that reports the job still running, cancellation that
//! aborts the job, faults retried to the exact result, and multi-page typed queries.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;
use support::{connect, fast_poll, patient};

use std::time::Duration;

use connector_salesforce::bulk::{BulkQueryOptions, IngestOperation, IngestOptions, RecordState};
use futures::TryStreamExt;
use moodbridge_core::ErrorKind;
use salesforce_sandbox::{Faults, RunningSandbox, Sandbox, SandboxConfig};
use serde_json::{Value, json};

fn options(max_job_bytes: u64, parallel_jobs: usize) -> IngestOptions {
    IngestOptions {
        max_job_bytes,
        parallel_jobs,
        poll: fast_poll(),
        columns: None,
    }
}

async fn start(config: SandboxConfig) -> RunningSandbox {
    Sandbox::new(config).start().await.unwrap()
}

fn count(sb: &RunningSandbox, object: &str) -> usize {
    sb.with_org(|org| org.rows(object, false).len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_is_split_across_parallel_jobs_and_every_record_gets_its_outcome() {
    let sb = start(SandboxConfig::default()).await;
    let sf = connect(&sb, None).await;
    let n = 12_000u64;
    // Every 1000th record has no Name (Salesforce refuses it); record 7 holds a nested
    // value (the SDK refuses it before sending); names carry quotes, commas, newlines.
    let records = futures::stream::iter((0..n).map(|i| {
        let name = if i % 1000 == 999 {
            Value::Null
        } else {
            json!(format!("Firm \"{i}\", LLP\nline 2 — ü"))
        };
        let industry = if i == 7 {
            json!({"nested": true})
        } else {
            json!("Legal")
        };
        json!({"Name": name, "Industry": industry, "AnnualRevenue": i})
    }));
    let report = sf
        .bulk_ingest(
            "Account",
            IngestOperation::Insert,
            records,
            &options(200_000, 2),
        )
        .await
        .unwrap();
    assert!(
        report.jobs.len() >= 3,
        "split into {} jobs",
        report.jobs.len()
    );
    assert!(report.jobs.iter().all(|j| j.state == "JobComplete"));
    assert_eq!(report.outcomes.len() as u64, n);
    for (i, o) in report.outcomes.iter().enumerate() {
        assert_eq!(o.index, i as u64, "one outcome per input record, in order");
    }
    let bad: Vec<u64> = report
        .outcomes
        .iter()
        .filter(|o| o.state == RecordState::Failed)
        .map(|o| o.index)
        .collect();
    let mut expected: Vec<u64> = (0..n).filter(|i| i % 1000 == 999).collect();
    expected.push(7);
    expected.sort_unstable();
    assert_eq!(bad, expected);
    let o7 = &report.outcomes[7];
    assert!(
        o7.job_id.is_none() && o7.error.as_deref().unwrap().contains("nested"),
        "{o7:?}"
    );
    let o999 = &report.outcomes[999];
    assert!(
        o999.error
            .as_deref()
            .unwrap()
            .starts_with("REQUIRED_FIELD_MISSING"),
        "{o999:?}"
    );
    assert_eq!(report.succeeded, n - 13);
    assert_eq!(report.failed, 13);
    assert_eq!(report.unprocessed, 0);
    // The ids are the records created, with the exact values sent.
    assert_eq!(count(&sb, "Account"), (n - 13) as usize);
    let o42 = &report.outcomes[42];
    assert!(o42.created);
    let stored = sb
        .with_org(|org| org.get("Account", o42.id.as_deref().unwrap()).cloned())
        .unwrap();
    assert_eq!(stored["Name"], json!("Firm \"42\", LLP\nline 2 — ü"));
    assert_eq!(stored["AnnualRevenue"], json!(42.0));
    sb.stop().await;
}

/// Outcomes handed over one by one: each input record's exactly once (identical records
/// included), across parallel jobs, with the counts of the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_is_handed_over_once_as_the_results_are_read() {
    let sb = start(SandboxConfig::default()).await;
    let sf = connect(&sb, None).await;
    let n = 5_000u64;
    // Every third record is the same as the others of its kind; every 500th has no Name.
    let records = futures::stream::iter((0..n).map(|i| {
        let name = match i {
            i if i % 500 == 499 => Value::Null,
            i if i % 3 == 0 => json!("Same Firm"),
            i => json!(format!("Firm {i}")),
        };
        json!({"Name": name, "Industry": "Legal"})
    }));
    let mut seen = vec![0u8; n as usize];
    let mut failed = Vec::new();
    let report = sf
        .bulk_ingest_each(
            "Account",
            IngestOperation::Insert,
            records,
            &options(60_000, 3),
            |o| {
                seen[o.index as usize] += 1;
                if o.state != RecordState::Succeeded {
                    failed.push(o.index);
                }
            },
        )
        .await
        .unwrap();
    assert!(report.jobs.len() >= 2, "{} jobs", report.jobs.len());
    assert!(report.outcomes.is_empty(), "handed over, not collected");
    assert!(seen.iter().all(|&c| c == 1), "every record exactly once");
    failed.sort_unstable();
    assert_eq!(
        failed,
        (0..n).filter(|i| i % 500 == 499).collect::<Vec<_>>()
    );
    assert_eq!(
        (report.succeeded, report.failed, report.unprocessed),
        (n - 10, 10, 0)
    );
    assert_eq!(count(&sb, "Account"), (n - 10) as usize);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_update_what_exists_and_deletes_remove_it() {
    let sb = start(SandboxConfig::default()).await;
    let sf = connect(&sb, None).await;
    let contacts = |suffix: &'static str| {
        futures::stream::iter((0..300).map(move |i| json!({"LastName": format!("Doe {i}{suffix}"), "External_Id__c": format!("C-{i}")})))
    };
    let upsert = IngestOperation::Upsert {
        external_id: "External_Id__c".into(),
    };
    let first = sf
        .bulk_ingest("Contact", upsert.clone(), contacts(""), &options(10_000, 3))
        .await
        .unwrap();
    assert_eq!(first.succeeded, 300);
    assert!(first.outcomes.iter().all(|o| o.created));
    let second = sf
        .bulk_ingest(
            "Contact",
            upsert,
            contacts(" (updated)"),
            &options(10_000, 3),
        )
        .await
        .unwrap();
    assert_eq!(second.succeeded, 300);
    assert!(second.outcomes.iter().all(|o| !o.created));
    assert_eq!(
        first.outcomes.iter().map(|o| &o.id).collect::<Vec<_>>(),
        second.outcomes.iter().map(|o| &o.id).collect::<Vec<_>>()
    );
    assert_eq!(count(&sb, "Contact"), 300);

    // Delete half (soft: queryAll still sees them), hard-delete the rest.
    let ids: Vec<String> = first
        .outcomes
        .iter()
        .map(|o| o.id.clone().unwrap())
        .collect();
    let as_records = |ids: &[String]| {
        futures::stream::iter(ids.iter().map(|id| json!({"Id": id})).collect::<Vec<_>>())
    };
    let soft = sf
        .bulk_ingest(
            "Contact",
            IngestOperation::Delete,
            as_records(&ids[..150]),
            &options(100_000, 1),
        )
        .await
        .unwrap();
    assert_eq!(soft.succeeded, 150);
    let hard = sf
        .bulk_ingest(
            "Contact",
            IngestOperation::HardDelete,
            as_records(&ids[150..]),
            &options(100_000, 1),
        )
        .await
        .unwrap();
    assert_eq!(hard.succeeded, 150);
    assert_eq!(count(&sb, "Contact"), 0);
    assert_eq!(sb.with_org(|org| org.rows("Contact", true).len()), 150);
    // Deleting again: each record fails on its own (already deleted / not found).
    let again = sf
        .bulk_ingest(
            "Contact",
            IngestOperation::Delete,
            as_records(&ids[..3]),
            &options(100_000, 1),
        )
        .await
        .unwrap();
    assert_eq!(again.failed, 3);
    assert!(
        again.outcomes[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("ENTITY_IS_DELETED"),
        "{:?}",
        again.outcomes[0]
    );
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_as_a_whole_leaves_every_record_unprocessed_with_the_reason() {
    let sb = start(SandboxConfig::default()).await;
    let sf = connect(&sb, None).await;
    let records = futures::stream::iter(
        (0..50).map(|i| json!({"Name": format!("A {i}"), "Colour__c": "red"})),
    );
    let report = sf
        .bulk_ingest(
            "Account",
            IngestOperation::Insert,
            records,
            &options(1_000_000, 1),
        )
        .await
        .unwrap();
    assert_eq!(report.jobs[0].state, "Failed");
    assert_eq!(report.unprocessed, 50);
    let why = report.outcomes[0].error.as_deref().unwrap();
    assert!(why.contains("Field name not found : Colour__c"), "{why}");
    assert_eq!(count(&sb, "Account"), 0);
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_timeout_reports_the_job_as_still_running_and_a_dropped_ingest_aborts_its_job() {
    let sb = start(SandboxConfig {
        bulk_processing_delay: Duration::from_secs(3),
        ..SandboxConfig::default()
    })
    .await;
    let sf = connect(&sb, None).await;
    let records = || futures::stream::iter((0..10).map(|i| json!({"Name": format!("Slow {i}")})));
    let mut opts = options(1_000_000, 1);
    opts.poll.timeout = Duration::from_millis(300);
    let err = sf
        .bulk_ingest("Account", IngestOperation::Insert, records(), &opts)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("still running"), "{err}");
    let job = err.context_value("job_id").unwrap().to_owned();
    let info = sf.bulk_job(&job).await.unwrap();
    assert!(
        !info.is_finished(),
        "the job goes on at Salesforce: {info:?}"
    );

    // Cancelled by dropping the future: the open job is aborted.
    let before: Vec<String> = sb.bulk_jobs().into_iter().map(|(id, _)| id).collect();
    let one_job = options(1_000_000, 1);
    let slow = sf.bulk_ingest("Account", IngestOperation::Insert, records(), &one_job);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), slow)
            .await
            .is_err()
    );
    let mut aborted = false;
    for _ in 0..100 {
        aborted = sb
            .bulk_jobs()
            .iter()
            .any(|(id, state)| !before.contains(id) && state == "Aborted");
        if aborted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(aborted, "jobs: {:?}", sb.bulk_jobs());
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailability_and_dropped_connections_are_retried_to_the_exact_result() {
    let sb = start(SandboxConfig::default()).await;
    let patient = patient();
    let sf = connect(&sb, Some(patient)).await;
    sb.set_faults(Faults {
        error_rate: 0.25,
        drop_rate: 0.1,
        seed: 99,
        ..Faults::default()
    });
    let records = futures::stream::iter((0..3_000).map(|i| json!({"Name": format!("Faulty {i}")})));
    let report = sf
        .bulk_ingest(
            "Account",
            IngestOperation::Insert,
            records,
            &options(30_000, 2),
        )
        .await
        .unwrap();
    sb.set_faults(Faults::default());
    assert_eq!(report.succeeded, 3_000, "{:?}", report.jobs);
    assert_eq!(count(&sb, "Account"), 3_000, "no record lost or doubled");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_query_streams_typed_pages_and_query_all_sees_deleted_records() {
    let sb = Sandbox::new(SandboxConfig {
        bulk_processing_delay: Duration::from_millis(30),
        ..SandboxConfig::default()
    })
    .seed(2_500, 1, 5)
    .start()
    .await
    .unwrap();
    let sf = connect(&sb, None).await;
    let opts = |all_rows| BulkQueryOptions {
        all_rows,
        max_records: Some(1_000),
        poll: fast_poll(),
    };
    let accounts: Vec<Value> = sf
        .bulk_query(
            "SELECT Id, Name, AnnualRevenue, NumberOfEmployees FROM Account ORDER BY Name",
            opts(false),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(accounts.len(), 2_500);
    // One page ahead at most: while the first page is consumed the second is fetched,
    // the third only once the first is done.
    let mut pages = std::pin::pin!(sf.bulk_query("SELECT Id FROM Account", opts(false)));
    pages.try_next().await.unwrap().unwrap();
    let at_first = sb.api_calls();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ahead = sb.api_calls();
    assert!(
        ahead - at_first <= 1,
        "at most the next page is fetched ahead"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sb.api_calls(),
        ahead,
        "no third page while the first is consumed"
    );
    let mut rest_of_it = 1;
    while pages.try_next().await.unwrap().is_some() {
        rest_of_it += 1;
    }
    assert_eq!(rest_of_it, 2_500);
    let rest: Vec<Value> = sf
        .query("SELECT Id, Name, AnnualRevenue, NumberOfEmployees FROM Account ORDER BY Name")
        .try_collect()
        .await
        .unwrap();
    for (b, r) in accounts.iter().zip(&rest) {
        for f in ["Id", "Name", "AnnualRevenue", "NumberOfEmployees"] {
            assert_eq!(b[f], r[f], "{f}: bulk and REST agree (types included)");
        }
    }
    let contacts: Vec<Value> = sf
        .bulk_query(
            "SELECT Id, LastName, Account.Name FROM Contact",
            opts(false),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(contacts.len(), 2_500);
    assert!(contacts.iter().all(|c| c["Account"]["Name"].is_string()));

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Account {
        id: String,
        annual_revenue: Option<f64>,
        number_of_employees: Option<i64>,
    }
    let typed: Vec<Account> = sf
        .bulk_query_as(
            "SELECT Id, AnnualRevenue, NumberOfEmployees FROM Account",
            opts(false),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(typed.len(), 2_500);
    assert!(
        typed
            .iter()
            .any(|a| a.annual_revenue.is_some() && a.number_of_employees.is_some())
    );
    assert!(typed.iter().all(|a| a.id.starts_with("001")));

    let gone = accounts[0]["Id"].as_str().unwrap().to_owned();
    sf.delete("Account", &gone).await.unwrap();
    let live: Vec<Value> = sf
        .bulk_query("SELECT Id FROM Account", opts(false))
        .try_collect()
        .await
        .unwrap();
    let all: Vec<Value> = sf
        .bulk_query("SELECT Id, IsDeleted FROM Account", opts(true))
        .try_collect()
        .await
        .unwrap();
    assert_eq!((live.len(), all.len()), (2_499, 2_500));
    assert!(
        all.iter()
            .any(|a| a["Id"] == json!(gone) && a["IsDeleted"] == json!(true))
    );

    let err = sf
        .bulk_query("SELECT Nope FROM Account", opts(false))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    sb.stop().await;
}

/// Bulk API 2.0's per-field and per-upload limits are checked before anything is sent:
/// the record over a limit is refused with the limit and the way around it, the others
/// go; an upload size Salesforce cannot take is a settings error at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_uploads_over_bulk_limits_are_refused_before_sending() {
    use connector_salesforce::bulk::{MAX_FIELD_CHARS, MAX_JOB_BYTES};
    let sb = start(SandboxConfig::default()).await;
    let sf = connect(&sb, None).await;
    let long = "x".repeat(MAX_FIELD_CHARS + 1);
    let records = futures::stream::iter([
        json!({"Name": "Short", "Description": "fine"}),
        json!({"Name": "Long", "Description": long}),
        json!({"Name": "Exactly", "Description": "y".repeat(MAX_FIELD_CHARS)}),
    ]);
    let report = sf
        .bulk_ingest(
            "Account",
            IngestOperation::Insert,
            records,
            &options(MAX_JOB_BYTES, 1),
        )
        .await
        .unwrap();
    let states: Vec<RecordState> = report.outcomes.iter().map(|o| o.state.clone()).collect();
    assert_eq!(
        states,
        [
            RecordState::Succeeded,
            RecordState::Failed,
            RecordState::Succeeded
        ]
    );
    let why = report.outcomes[1].error.as_deref().unwrap_or_default();
    assert!(why.contains("32000 per field"), "{why}");
    assert!(why.contains("sObject Collections"), "{why}");
    assert_eq!(count(&sb, "Account"), 2);

    let jobs = sb.bulk_jobs().len();
    for max_job_bytes in [0, MAX_JOB_BYTES + 1] {
        let err = sf
            .bulk_ingest(
                "Account",
                IngestOperation::Insert,
                futures::stream::iter([json!({"Name": "Never sent"})]),
                &options(max_job_bytes, 1),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("max_job_bytes"), "{err}");
    }
    assert_eq!(sb.bulk_jobs().len(), jobs, "no job was created");
    sb.stop().await;
}
