//! Warehouses against fakesnow's `SHOW WAREHOUSES` (the documented columns): listed,
//! audited by the auto-suspend guard, and reconciled with a spec into the statements a
//! dry run shows. fakesnow cannot create or alter warehouses; those statements are
//! checked as text in the crate's unit tests and run for real by the live suite.

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
