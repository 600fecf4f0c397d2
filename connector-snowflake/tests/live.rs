//! The warehouse features against a real Snowflake account: opt-in, for anyone with
//! one. Nothing here runs unless `MOODBRIDGE_SNOWFLAKE_LIVE=1`; each test then prints
//! why it is skipped and passes.
//!
//! ```text
//! MOODBRIDGE_SNOWFLAKE_LIVE=1 \
//! SNOWFLAKE_ACCOUNT=myorg-myaccount SNOWFLAKE_USER=MOODBRIDGE_TEST \
//! SNOWFLAKE_PASSWORD=… (or SNOWFLAKE_PRIVATE_KEY_FILE=/path/key.p8) \
//! SNOWFLAKE_ROLE=MOODBRIDGE_TEST SNOWFLAKE_WAREHOUSE=TEST_WH SNOWFLAKE_DATABASE=TEST_DB \
//! cargo test -p connector-snowflake --test live -- --nocapture --test-threads 1
//! ```
//!
//! Each test works in a schema of its own (`MOODBRIDGE_LIVE_<random>`), dropped at the
//! end; the warehouse test creates and drops `MOODBRIDGE_LIVE_WH_<random>` (the role
//! needs `CREATE WAREHOUSE`); the governance test needs Enterprise edition (masking and
//! row access policies) and says so when the account lacks it.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use connector_snowflake::evolution::SchemaPlan;
use connector_snowflake::governance::{
    Governance, GovernanceSpec, PrivilegeReport, grants_to_role,
};
use connector_snowflake::timetravel::{Droppable, Snapshots, TimeTravel, retention, undrop};
use connector_snowflake::warehouse::{Guard, WarehouseSpec, Warehouses};
use connector_snowflake::{SnowflakeClient, SnowflakeConfig, SnowflakeSink};
use moodbridge_core::observe::{RunScope, with_run_scope};
use moodbridge_core::{
    FieldDescriptor, FieldType, Record, RecordBatch, StreamDescriptor, SyncSink, WriteMode,
};
use secrecy::SecretString;

/// The account's settings, or why the test is skipped.
fn settings() -> Result<(SnowflakeConfig, String, String, String), String> {
    if std::env::var("MOODBRIDGE_SNOWFLAKE_LIVE").as_deref() != Ok("1") {
        return Err("MOODBRIDGE_SNOWFLAKE_LIVE is not 1 (see the file's docs)".into());
    }
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let (account, user) = (var("SNOWFLAKE_ACCOUNT")?, var("SNOWFLAKE_USER")?);
    let (role, warehouse, database) = (
        var("SNOWFLAKE_ROLE")?,
        var("SNOWFLAKE_WAREHOUSE")?,
        var("SNOWFLAKE_DATABASE")?,
    );
    let config = match (var("SNOWFLAKE_PASSWORD"), var("SNOWFLAKE_PRIVATE_KEY_FILE")) {
        (Ok(password), _) => SnowflakeConfig::new(&account, &user, SecretString::from(password)),
        (_, Ok(path)) => {
            let pem = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            SnowflakeConfig::key_pair(&account, &user, SecretString::from(pem), None)
        }
        _ => return Err("neither SNOWFLAKE_PASSWORD nor SNOWFLAKE_PRIVATE_KEY_FILE is set".into()),
    };
    Ok((
        config
            .role(&role)
            .warehouse(&warehouse)
            .database(&database)
            .query_tag("moodbridge:live-test"),
        role,
        warehouse,
        database,
    ))
}

/// A session in a fresh schema of its own; the schema's name.
async fn session() -> Option<(SnowflakeClient, String)> {
    let (config, ..) = match settings() {
        Ok(s) => s,
        Err(why) => {
            println!("skipped: {why}");
            return None;
        }
    };
    let schema = format!(
        "MOODBRIDGE_LIVE_{}",
        uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    );
    let client = SnowflakeClient::login(config).await.unwrap();
    client
        .execute(&format!("CREATE SCHEMA {schema}"), &[])
        .await
        .unwrap();
    client
        .execute(&format!("USE SCHEMA {schema}"), &[])
        .await
        .unwrap();
    Some((client, schema))
}

async fn drop_schema(client: &SnowflakeClient, schema: &str) {
    client
        .execute(&format!("DROP SCHEMA IF EXISTS {schema}"), &[])
        .await
        .unwrap();
}

fn contacts(range: std::ops::Range<u32>, email: bool) -> RecordBatch {
    RecordBatch::new(
        "Contact",
        range
            .map(|i| {
                let mut r =
                    serde_json::json!({"Id": format!("003{i:06}"), "Name": format!("Contact {i}")});
                if email {
                    r["Email"] = serde_json::json!(format!("c{i}@example.com"));
                }
                Record::from_json(r).unwrap()
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_loads_evolve_travel_in_time_and_restore_snapshots() {
    let Some((client, schema)) = session().await else {
        return;
    };
    let stream = StreamDescriptor::new("Contact")
        .field(FieldDescriptor::new("Id", FieldType::String).required())
        .field(FieldDescriptor::new("Name", FieldType::String))
        .primary_key(["Id"]);
    let mode = WriteMode::Upsert {
        key: vec!["Id".into()],
    };
    let sink = SnowflakeSink::new(client.clone()).snapshot_runs(3);
    with_run_scope(RunScope::new("live", 1), async {
        sink.begin_stream(&stream, &mode).await.unwrap();
        sink.write(&contacts(0..100, false), &mode).await.unwrap();
    })
    .await;
    // A new field becomes a column, and run 2's snapshot is taken first.
    let wider = stream
        .clone()
        .field(FieldDescriptor::new("Email", FieldType::String));
    let plan = SchemaPlan::plan(&client, "Contact", &wider).await.unwrap();
    assert_eq!(plan.statements().len(), 1, "{plan}");
    with_run_scope(RunScope::new("live", 2), async {
        sink.begin_stream(&wider, &mode).await.unwrap();
        sink.write(&contacts(100..150, true), &mode).await.unwrap();
    })
    .await;
    let count = async |sql: &str| {
        client.execute(sql, &[]).await.unwrap().json_rows().unwrap()[0]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_u64()
            .unwrap()
    };
    assert_eq!(count(r#"SELECT COUNT(*) FROM "Contact""#).await, 150);
    // Time travel: the table before run 2's MERGE, by its query id.
    let merge = client
        .execute(
            "SELECT QUERY_ID FROM TABLE(INFORMATION_SCHEMA.QUERY_HISTORY_BY_SESSION()) WHERE QUERY_TEXT ILIKE 'MERGE INTO%' ORDER BY START_TIME DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .json_rows()
        .unwrap()[0]["QUERY_ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = TimeTravel::before_statement(&merge).unwrap();
    let sql = before
        .select("Contact", &[])
        .replacen("SELECT *", "SELECT COUNT(*)", 1);
    assert_eq!(count(&sql).await, 100);
    // Run 2 is undone from its snapshot.
    let snapshots = Snapshots::new(client.clone());
    assert_eq!(snapshots.list("Contact").await.unwrap(), [2]);
    snapshots.restore("Contact", 2).await.unwrap();
    assert_eq!(count(r#"SELECT COUNT(*) FROM "Contact""#).await, 100);
    // Retention, drop and undrop.
    client
        .execute(&retention("Contact", 1).unwrap(), &[])
        .await
        .unwrap();
    client
        .execute(r#"DROP TABLE "Contact""#, &[])
        .await
        .unwrap();
    client
        .execute(&undrop(Droppable::Table, "Contact"), &[])
        .await
        .unwrap();
    assert_eq!(count(r#"SELECT COUNT(*) FROM "Contact""#).await, 100);
    drop_schema(&client, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_warehouses_are_created_altered_suspended_and_audited() {
    let Some((client, schema)) = session().await else {
        return;
    };
    let name = format!("{schema}_WH").replace("MOODBRIDGE_LIVE_", "MOODBRIDGE_LIVE_WH_");
    let warehouses = Warehouses::new(client.clone());
    let mut spec = WarehouseSpec::new(&name);
    spec.comment = Some("MoodBridge live test; safe to drop".into());
    let guard = Guard::default();
    let created = warehouses.apply(&spec, &guard).await.unwrap();
    assert!(created[0].starts_with("CREATE WAREHOUSE"), "{created:?}");
    assert_eq!(
        warehouses.plan(&spec, &guard).await.unwrap(),
        Vec::<String>::new()
    );
    spec.auto_suspend_secs = Some(120);
    let altered = warehouses.apply(&spec, &guard).await.unwrap();
    assert_eq!(altered.len(), 1, "{altered:?}");
    warehouses.resume(&name).await.unwrap();
    warehouses.suspend(&name).await.unwrap();
    let findings = warehouses.audit(&guard).await.unwrap();
    assert!(
        !findings.iter().any(|f| f.warehouse == name),
        "{findings:?}"
    );
    client
        .execute(&format!("DROP WAREHOUSE IF EXISTS {name}"), &[])
        .await
        .unwrap();
    drop_schema(&client, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_governance_is_reconciled_and_the_role_checked() {
    let Some((client, schema)) = session().await else {
        return;
    };
    let (_, role, warehouse, database) = settings().unwrap();
    let grants = grants_to_role(&client, &role).await.unwrap();
    let report = PrivilegeReport::of(&role, &grants, &warehouse, &database, &schema);
    println!("least privilege: {:?}", report.health());
    let until = chrono::Utc::now();
    match connector_snowflake::cost::run_costs(
        &client,
        "moodbridge:",
        until - chrono::Duration::days(1),
        until,
    )
    .await
    {
        Ok(runs) => println!("runs with credits in the last day: {}", runs.len()),
        Err(e) => println!("ACCOUNT_USAGE not readable by {role}: {e}"),
    }

    client
        .execute(
            r#"CREATE TABLE "Contact" ("Id" VARCHAR, "SSN__c" VARCHAR)"#,
            &[],
        )
        .await
        .unwrap();
    let spec: GovernanceSpec = toml::from_str(&format!(
        r#"
[[masking_policies]]
name = "{schema}.SSN_MASK"
signature = "VAL STRING"
returns = "STRING"
body = "CASE WHEN IS_ROLE_IN_SESSION('ACCOUNTADMIN') THEN VAL ELSE '***' END"
columns = ["Contact.SSN__c"]
[[tags]]
name = "{schema}.SENSITIVITY"
allowed_values = ["pii"]
assignments = [{{ target = "Contact.SSN__c", value = "pii" }}]
"#
    ))
    .unwrap();
    let governance = Governance::new(client.clone());
    match governance.apply(&spec).await {
        Ok(plan) => {
            println!("{plan}");
            let again = governance.plan(&spec).await.unwrap();
            assert!(again.statements.is_empty(), "not reconciled: {again}");
        }
        Err(e)
            if e.to_string()
                .to_ascii_lowercase()
                .contains("unsupported feature") =>
        {
            println!("skipped governance: the account's edition has no policies ({e})");
        }
        Err(e) => panic!("{e}"),
    }
    drop_schema(&client, &schema).await;
}
