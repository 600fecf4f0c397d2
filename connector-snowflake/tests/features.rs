//! The warehouse features against fakesnow:
//!
//! - warehouses from its `SHOW WAREHOUSES` (the documented columns): listed, audited by
//!   the auto-suspend guard, and reconciled with a spec into the statements a dry run
//!   shows. fakesnow cannot create or alter warehouses; those statements are checked as
//!   text in the crate's unit tests and run for real by the live suite;
//! - run costs from `SNOWFLAKE.ACCOUNT_USAGE` views seeded with their documented
//!   columns and rows whose attribution is worked out by hand below.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use connector_snowflake::SnowflakeClient;
use connector_snowflake::warehouse::{Guard, WarehouseSize, WarehouseSpec, Warehouses};
use support::FakeSnow;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouses_are_listed_audited_and_planned() {
    let server = FakeSnow::start();
    let client = SnowflakeClient::login(server.config()).await.unwrap();
    let warehouses = Warehouses::new(client);
    let listed = warehouses.list().await.unwrap();
    let fake = listed
        .iter()
        .find(|w| w.name == "FAKESNOW_WAREHOUSE")
        .unwrap();
    assert_eq!(
        WarehouseSize::parse(&fake.size),
        Some(WarehouseSize::XSmall)
    );
    assert_eq!(fake.auto_suspend_secs, Some(600));
    assert!(fake.auto_resume);

    // Ten idle minutes pass the default guard, not a five-minute one.
    assert_eq!(warehouses.audit(&Guard::default()).await.unwrap(), []);
    let strict = Guard {
        max_auto_suspend_secs: 300,
        ..Guard::default()
    };
    let findings = warehouses.audit(&strict).await.unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(
        findings[0].to_string(),
        "warehouse FAKESNOW_WAREHOUSE idles 600 s before suspending, more than the 300 s allowed"
    );

    // An existing warehouse is altered where it differs; a missing one created.
    let mut spec = WarehouseSpec::new("fakesnow_warehouse");
    spec.auto_suspend_secs = Some(60);
    assert_eq!(
        warehouses.plan(&spec, &Guard::default()).await.unwrap(),
        ["ALTER WAREHOUSE FAKESNOW_WAREHOUSE SET AUTO_SUSPEND = 60"]
    );
    let fresh = WarehouseSpec::new("LOAD_WH");
    assert_eq!(
        warehouses.plan(&fresh, &Guard::default()).await.unwrap(),
        [fresh.create_statement().unwrap()]
    );
    // A spec the guard refuses plans nothing.
    let mut always_on = WarehouseSpec::new("LOAD_WH");
    always_on.auto_suspend_secs = Some(0);
    let err = warehouses
        .plan(&always_on, &Guard::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), moodbridge_core::ErrorKind::Config);
}

/// `SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY` and `WAREHOUSE_METERING_HISTORY` with the
/// documented names and types of the columns the cost report reads (and a few it does
/// not), seeded with two runs' statements, a dashboard's, and the metered hours.
const ACCOUNT_USAGE: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS SNOWFLAKE",
    "CREATE SCHEMA IF NOT EXISTS SNOWFLAKE.ACCOUNT_USAGE",
    "CREATE TABLE SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY (QUERY_ID VARCHAR, QUERY_TEXT VARCHAR, \
     QUERY_TYPE VARCHAR, USER_NAME VARCHAR, ROLE_NAME VARCHAR, WAREHOUSE_NAME VARCHAR, \
     WAREHOUSE_SIZE VARCHAR, QUERY_TAG VARCHAR, START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, \
     TOTAL_ELAPSED_TIME NUMBER(38,0), EXECUTION_TIME NUMBER(38,0), \
     CREDITS_USED_CLOUD_SERVICES NUMBER(38,9))",
    "CREATE TABLE SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY (START_TIME TIMESTAMP_LTZ, \
     END_TIME TIMESTAMP_LTZ, WAREHOUSE_ID NUMBER(38,0), WAREHOUSE_NAME VARCHAR, \
     CREDITS_USED NUMBER(38,9), CREDITS_USED_COMPUTE NUMBER(38,9), \
     CREDITS_USED_CLOUD_SERVICES NUMBER(38,9))",
    // 10:00–11:00 on LOAD_WH: 100 s of execution, 1 credit. Run 1 ran 40 s of it (0.4),
    // run 2 20 s (0.2), a dashboard the rest. Run 1 also ran a SHOW (no warehouse).
    "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY VALUES \
     ('q1', 'COPY INTO …', 'COPY', 'LOADER', 'LOADER', 'LOAD_WH', 'X-Small', 'moodbridge:cases:run-1', '2026-12-01 10:05:00', '2026-12-01 10:05:31', 31000, 30000, 0.001), \
     ('q2', 'MERGE INTO …', 'MERGE', 'LOADER', 'LOADER', 'LOAD_WH', 'X-Small', 'moodbridge:cases:run-1', '2026-12-01 10:06:00', '2026-12-01 10:06:10', 10500, 10000, 0.001), \
     ('q3', 'SHOW WAREHOUSES', 'SHOW', 'LOADER', 'LOADER', NULL, NULL, 'moodbridge:cases:run-1', '2026-12-01 10:07:00', '2026-12-01 10:07:00', 40, 0, 0.0005), \
     ('q4', 'COPY INTO …', 'COPY', 'LOADER', 'LOADER', 'LOAD_WH', 'X-Small', 'moodbridge:cases:run-2', '2026-12-01 10:50:00', '2026-12-01 10:50:20', 20000, 20000, 0.003), \
     ('q5', 'SELECT …', 'SELECT', 'ANALYST', 'ANALYST', 'LOAD_WH', 'X-Small', 'dashboard', '2026-12-01 10:20:00', '2026-12-01 10:20:40', 40000, 40000, 0.002), \
     ('q6', 'MERGE INTO …', 'MERGE', 'LOADER', 'LOADER', 'LOAD_WH', 'X-Small', 'moodbridge:cases:run-2', '2026-12-01 11:00:10', '2026-12-01 11:01:00', 50000, 50000, 0.003), \
     ('q0', 'COPY INTO …', 'COPY', 'LOADER', 'LOADER', 'LOAD_WH', 'X-Small', 'moodbridge:cases:run-0', '2026-11-30 09:00:00', '2026-11-30 09:00:10', 10000, 10000, 0.001)",
    // 11:00–12:00: run 2's 50 s alone, 0.5 credit.
    "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY VALUES \
     ('2026-12-01 10:00:00', '2026-12-01 11:00:00', 7, 'LOAD_WH', 1.02, 1.0, 0.02), \
     ('2026-12-01 11:00:00', '2026-12-01 12:00:00', 7, 'LOAD_WH', 0.51, 0.5, 0.01), \
     ('2026-11-30 09:00:00', '2026-11-30 10:00:00', 7, 'LOAD_WH', 0.2, 0.2, 0.0)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runs_credits_are_its_share_of_the_metered_hours() {
    use chrono::TimeZone;
    use connector_snowflake::cost::{CostBudget, report};
    let server = FakeSnow::start();
    let client = SnowflakeClient::login(server.config()).await.unwrap();
    for sql in ACCOUNT_USAGE {
        client.execute(sql, &[]).await.unwrap();
    }
    let since = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let until = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
    let budget = CostBudget {
        per_run_credits: Some(0.5),
        total_credits: Some(1.0),
    };
    let report = report(&client, "moodbridge:cases:", since, until, &budget)
        .await
        .unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert_eq!(report.runs.len(), 2, "{report:?}");
    let (one, two) = (&report.runs[0], &report.runs[1]);
    assert_eq!(one.tag, "moodbridge:cases:run-1");
    assert_eq!(one.queries, 3);
    assert!(close(one.execution_secs, 40.0), "{one:?}");
    assert!(close(one.compute_credits, 0.4), "{one:?}");
    assert!(close(one.cloud_services_credits, 0.0025), "{one:?}");
    assert_eq!(two.tag, "moodbridge:cases:run-2");
    assert_eq!(two.queries, 2);
    assert!(close(two.compute_credits, 0.2 + 0.5), "{two:?}");
    assert!(close(two.cloud_services_credits, 0.006), "{two:?}");
    assert_eq!(
        report.alerts,
        [
            "run moodbridge:cases:run-2 used 0.706 credits, more than the 0.500 allowed per run",
            "the runs used 1.109 credits together, more than the 1.000 allowed"
        ]
    );
    assert_eq!(
        report.health().status,
        moodbridge_core::HealthStatus::Degraded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_built_integration_watches_its_runs_credits_and_plans_its_warehouses() {
    use connector_snowflake::SnowflakeIntegration;
    use moodbridge_core::{HealthStatus, PlatformIntegration};
    let server = FakeSnow::start();
    let dir = tempfile::tempdir().unwrap();
    let lineage = dir.path().join("lineage.jsonl");
    let built = server
        .build(&format!(
            r#"
database = "CASES"
schema = "PUBLIC"
lineage_file = "{}"
[integration.settings.cost]
per_run_credits = 0.5
window_hours = 6
[[integration.settings.warehouses]]
name = "FAKESNOW_WAREHOUSE"
auto_suspend_secs = 120
[[integration.settings.warehouses]]
name = "REPORT_WH"
size = "medium"
"#,
            lineage.display()
        ))
        .await;
    let integration = built.interfaces.get::<SnowflakeIntegration>().unwrap();

    // The usage views: one run an hour ago over budget, one within it.
    let client = SnowflakeClient::login(server.config()).await.unwrap();
    for sql in [
        "create database if not exists CASES",
        "create schema if not exists CASES.PUBLIC",
    ] {
        client.execute(sql, &[]).await.unwrap();
    }
    for sql in &ACCOUNT_USAGE[..4] {
        client.execute(sql, &[]).await.unwrap();
    }
    let hour = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%d %H:00:00")
        .to_string();
    client
        .execute(
            &format!(
                "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY (QUERY_ID, WAREHOUSE_NAME, QUERY_TAG, START_TIME, EXECUTION_TIME, CREDITS_USED_CLOUD_SERVICES) VALUES \
                 ('a', 'LOAD_WH', 'moodbridge:cases:run-8', '{hour}'::TIMESTAMP_LTZ + INTERVAL '5 MINUTES', 90000, 0), \
                 ('b', 'LOAD_WH', 'moodbridge:cases:run-9', '{hour}'::TIMESTAMP_LTZ + INTERVAL '40 MINUTES', 10000, 0)"
            ),
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            &format!("INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY (START_TIME, WAREHOUSE_NAME, CREDITS_USED_COMPUTE) VALUES ('{hour}'::TIMESTAMP_LTZ, 'LOAD_WH', 1.0)"),
            &[],
        )
        .await
        .unwrap();
    let health = integration.health_check().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{}", health.detail);
    assert!(
        health.detail.contains(
            "run moodbridge:cases:run-8 used 0.900 credits, more than the 0.500 allowed per run"
        ),
        "{}",
        health.detail
    );

    let planned = integration.reconcile_warehouses(true).await.unwrap();
    assert_eq!(
        planned,
        [
            "ALTER WAREHOUSE FAKESNOW_WAREHOUSE SET AUTO_SUSPEND = 120".to_owned(),
            "CREATE WAREHOUSE IF NOT EXISTS REPORT_WH WITH WAREHOUSE_SIZE = MEDIUM AUTO_SUSPEND = 60 AUTO_RESUME = TRUE INITIALLY_SUSPENDED = TRUE".to_owned(),
        ]
    );

    // The sink's lineage goes to the configured file.
    let sink = built
        .interfaces
        .get::<dyn moodbridge_core::SyncSink>()
        .unwrap();
    let stream = moodbridge_core::StreamDescriptor::new("Note").field(
        moodbridge_core::FieldDescriptor::new("Id", moodbridge_core::FieldType::String),
    );
    sink.begin_stream(&stream, &moodbridge_core::WriteMode::Append)
        .await
        .unwrap();
    let line = std::fs::read_to_string(&lineage).unwrap();
    let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(event["eventType"], "START");
    assert_eq!(event["outputs"][0]["name"], "CASES.PUBLIC.Note");
}
