//! The Airflow client against a real Apache Airflow 3 (PyPI `apache-airflow`, installed by
//! `scripts/test.sh`) on loopback, with the DAGs of `tests/airflow/dags`: built from
//! config, health, DAGs paused and unpaused, runs triggered and waited on (a paused DAG
//! reported at once), task instances, logs and XCom, a failed run cleared and run again
//! once a variable lets it pass, a connection whose password Airflow really holds, asset
//! events from committed streams starting the DAG scheduled on them, tokens renewed when
//! they expire, and errors that name the problem without the secrets.
//!
//! One Airflow serves every scenario (it takes ~20 s and ~900 MiB to start), so they run
//! in order inside one test.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_etl::airflow::{
    AirflowClient, AirflowConfig, AirflowFactory, AirflowIntegration, Clear, ConnectionSpec,
    PublishAssets, RunState, Trigger, WaitOptions,
};
use moodbridge_core::credential::CredentialStore;
use moodbridge_core::observe::{RunScope, with_run_scope};
use moodbridge_core::testing::MemorySink;
use moodbridge_core::{
    ErrorKind, HealthStatus, Record, RecordBatch, Registry, SdkConfig, StreamDescriptor, SyncSink,
    WriteMode,
};
use secrecy::SecretString;
use serde_json::json;
use support::airflow::{ADMIN_PASSWORD, Airflow};

const DAGS: [&str; 5] = [
    "mb_hello",
    "mb_flaky",
    "mb_connection",
    "mb_on_accounts",
    "mb_paused",
];

/// Short waits: the test DAGs take seconds.
fn quick() -> WaitOptions {
    WaitOptions {
        poll: Duration::from_millis(500),
        timeout: Duration::from_secs(120),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_drives_a_real_airflow() {
    let dags = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/airflow/dags");
    // Tokens live 4 s, so the client renews them all along.
    let airflow = Airflow::start(&dags, &DAGS, 4).await;
    let client = airflow.client();

    built_from_config(&airflow).await;
    dags_start_paused(&client).await;
    a_paused_dag_is_reported_not_waited_on(&client).await;
    a_run_is_triggered_waited_on_and_read(&client).await;
    a_failed_run_is_cleared_and_passes(&client).await;
    a_connection_holds_its_password(&client).await;
    committed_streams_start_the_dags_scheduled_on_them(&client).await;
    expired_tokens_are_renewed_and_errors_keep_secrets(&airflow, &client).await;
}

async fn built_from_config(airflow: &Airflow) {
    let store = Arc::new(moodbridge_auth::store::MemoryStore::new());
    store
        .put("airflow/admin", SecretString::from(ADMIN_PASSWORD))
        .await
        .unwrap();
    store
        .put("airflow/wrong", SecretString::from("not-the-password-5d2"))
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register(Arc::new(AirflowFactory)).unwrap();
    for (secret, expected) in [
        ("airflow/admin", HealthStatus::Up),
        ("airflow/wrong", HealthStatus::Down),
    ] {
        let config = SdkConfig::from_toml(&format!(
            "[[integration]]\nid = \"airflow:test\"\nkind = \"airflow\"\n\
             [integration.settings]\nurl = \"{}\"\nusername = \"admin\"\n\
             password = \"secret:{secret}\"\n",
            airflow.url
        ))
        .unwrap();
        let built = registry
            .build_one(&config.integrations[0], Some(store.clone()))
            .await
            .unwrap();
        let report = built.integration.health_check().await;
        assert_eq!(report.status, expected, "{}", report.detail);
        assert!(
            !report.detail.contains("not-the-password-5d2"),
            "{}",
            report.detail
        );
        if expected == HealthStatus::Down {
            assert!(
                report.detail.contains("refused a token"),
                "{}",
                report.detail
            );
        }
        let interfaces = built.integration.clone().interfaces();
        assert!(interfaces.get::<AirflowClient>().is_some());
        assert!(interfaces.get::<AirflowIntegration>().is_some());
    }
}

async fn dags_start_paused(client: &AirflowClient) {
    let dags = client.dags().await.unwrap();
    for id in DAGS {
        let dag = dags.iter().find(|d| d.dag_id == id).unwrap();
        assert!(dag.is_paused, "{id} starts paused");
        assert!(!dag.has_import_errors);
    }
    let hello = client.dag("mb_hello").await.unwrap();
    assert_eq!(hello.tags, ["moodbridge"]);
    let missing = client.dag("mb_missing").await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert!(missing.to_string().contains("mb_missing"), "{missing}");
}

async fn a_paused_dag_is_reported_not_waited_on(client: &AirflowClient) {
    let run = client.trigger("mb_paused", &Trigger::new()).await.unwrap();
    assert_eq!(run.state, RunState::Queued);
    let started = Instant::now();
    let err = client
        .wait_for_run("mb_paused", &run.dag_run_id, quick())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("is paused"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

async fn a_run_is_triggered_waited_on_and_read(client: &AirflowClient) {
    // A run id with `:` and `+`, as Airflow's own ids have them: paths encode them.
    let run_id = "mb:hello+1";
    let run = client
        .trigger(
            "mb_hello",
            &Trigger::new()
                .unpause()
                .run_id(run_id)
                .conf(json!({"stream": "Account"}))
                .note("from the client test"),
        )
        .await
        .unwrap();
    assert_eq!(run.dag_run_id, run_id);
    let done = client
        .wait_for_run("mb_hello", run_id, quick())
        .await
        .unwrap();
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(done.conf, Some(json!({"stream": "Account"})));
    // The same name again is a conflict, not a second run.
    let again = client
        .trigger("mb_hello", &Trigger::new().run_id(run_id))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);

    let mut tasks = client.task_instances("mb_hello", run_id).await.unwrap();
    tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let states: Vec<(&str, Option<&str>)> = tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t.state.as_deref()))
        .collect();
    assert_eq!(
        states,
        [("extract", Some("success")), ("load", Some("success"))]
    );
    assert_eq!(
        client
            .xcom("mb_hello", run_id, "extract", "return_value")
            .await
            .unwrap(),
        Some(json!({"n": 3, "stream": "Account"}))
    );
    assert_eq!(
        client
            .xcom("mb_hello", run_id, "extract", "no_such_key")
            .await
            .unwrap(),
        None
    );
    let log = client
        .task_log("mb_hello", run_id, "load", 1)
        .await
        .unwrap();
    assert!(log.iter().any(|e| e.event.contains("loading")), "{log:#?}");

    // Runs named by the client.
    let named = client.trigger("mb_hello", &Trigger::new()).await.unwrap();
    assert!(named.dag_run_id.starts_with("moodbridge__"), "{named:?}");
    let recent = client.dag_runs("mb_hello", 10).await.unwrap();
    assert!(recent.iter().any(|r| r.dag_run_id == named.dag_run_id));
    assert!(
        client
            .wait_for_run("mb_hello", &named.dag_run_id, quick())
            .await
            .unwrap()
            .succeeded()
    );
}

async fn a_failed_run_is_cleared_and_passes(client: &AirflowClient) {
    client
        .set_variable("mb_flaky_ok", "no", None)
        .await
        .unwrap();
    let run = client
        .trigger("mb_flaky", &Trigger::new().unpause())
        .await
        .unwrap();
    let failed = client
        .wait_for_run("mb_flaky", &run.dag_run_id, quick())
        .await
        .unwrap();
    assert_eq!(failed.state, RunState::Failed);
    // The variable exists: setting it replaces it.
    let set = client
        .set_variable("mb_flaky_ok", "yes", Some("lets mb_flaky pass"))
        .await
        .unwrap();
    assert_eq!(set.value, "yes");
    let read = client.variable("mb_flaky_ok").await.unwrap().unwrap();
    assert_eq!(
        (read.value.as_str(), read.description.as_deref()),
        ("yes", Some("lets mb_flaky pass"))
    );
    // A dry run lists what would run again and changes nothing.
    let clear = Clear::run(&run.dag_run_id)
        .tasks(["check"])
        .only_failed()
        .downstream();
    let would = client
        .clear_task_instances("mb_flaky", &clear.clone().dry_run())
        .await
        .unwrap();
    let mut ids: Vec<&str> = would.iter().map(|t| t.task_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["after", "check"]);
    assert_eq!(
        client
            .dag_run("mb_flaky", &run.dag_run_id)
            .await
            .unwrap()
            .state,
        RunState::Failed
    );
    client
        .clear_task_instances("mb_flaky", &clear)
        .await
        .unwrap();
    let passed = client
        .wait_for_run("mb_flaky", &run.dag_run_id, quick())
        .await
        .unwrap();
    assert!(passed.succeeded(), "{passed:?}");
    assert!(client.delete_variable("mb_flaky_ok").await.unwrap());
    assert!(!client.delete_variable("mb_flaky_ok").await.unwrap());
    assert!(client.variable("mb_flaky_ok").await.unwrap().is_none());
}

async fn a_connection_holds_its_password(client: &AirflowClient) {
    let password = "wh-Loader+pass/42";
    let store = moodbridge_auth::store::MemoryStore::new();
    store
        .put("warehouse/loader", SecretString::from(password))
        .await
        .unwrap();
    let spec = |host: &str| {
        ConnectionSpec::new("mb_warehouse", "generic")
            .host(host)
            .login("LOADER")
            .port(443)
            .password("secret:warehouse/loader".parse().unwrap())
            .extra(json!({"warehouse": "LOAD_WH"}))
    };
    client
        .put_connection(&spec("old.example.com"), Some(&store))
        .await
        .unwrap();
    // Put again: replaced.
    let put = client
        .put_connection(&spec("acme.example.com"), Some(&store))
        .await
        .unwrap();
    assert_eq!(put.host.as_deref(), Some("acme.example.com"));
    let read = client.connection("mb_warehouse").await.unwrap().unwrap();
    assert_eq!(
        (read.login.as_deref(), read.port),
        (Some("LOADER"), Some(443))
    );
    // A task reads the connection the way DAGs do and reports the password's digest.
    let run = client
        .trigger("mb_connection", &Trigger::new().unpause())
        .await
        .unwrap();
    assert!(
        client
            .wait_for_run("mb_connection", &run.dag_run_id, quick())
            .await
            .unwrap()
            .succeeded()
    );
    let seen = client
        .xcom("mb_connection", &run.dag_run_id, "digest", "return_value")
        .await
        .unwrap()
        .unwrap();
    use sha2::Digest as _;
    let digest: String = sha2::Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(seen["password_sha256"], digest.as_str());
    assert_eq!(seen["host"], "acme.example.com");
    assert_eq!(seen["extra"], json!({"warehouse": "LOAD_WH"}));
    // A password that cannot be resolved writes nothing.
    let missing = ConnectionSpec::new("mb_missing", "generic")
        .password("secret:warehouse/nothing-here".parse().unwrap());
    let err = client
        .put_connection(&missing, Some(&store))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(client.connection("mb_missing").await.unwrap().is_none());
    assert!(client.delete_connection("mb_warehouse").await.unwrap());
}

async fn committed_streams_start_the_dags_scheduled_on_them(client: &AirflowClient) {
    client.set_paused("mb_on_accounts", false).await.unwrap();
    let sink = PublishAssets::new(MemorySink::new(), client.clone(), "warehouse").required();
    let asset = client
        .asset(&sink.asset_uri("Account"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(asset.scheduled_dags, ["mb_on_accounts"]);
    let before = client.dag_runs("mb_on_accounts", 10).await.unwrap().len();
    let records = |stream: &str, n: u64| {
        RecordBatch::new(
            stream,
            (0..n)
                .map(|i| Record::from_json(json!({"Id": format!("001{i:03}")})).unwrap())
                .collect(),
        )
    };
    with_run_scope(RunScope::new("accounts", 5), async {
        for (stream, n) in [("Account", 3), ("Contact", 2)] {
            sink.begin_stream(&StreamDescriptor::new(stream), &WriteMode::Append)
                .await
                .unwrap();
            sink.write(&records(stream, n), &WriteMode::Append)
                .await
                .unwrap();
            // Contact: no DAG declares the asset; its commit posts nothing.
            sink.commit_stream(stream, &WriteMode::Append)
                .await
                .unwrap();
        }
    })
    .await;
    assert_eq!(sink.inner().len("Account"), 3);
    assert!(
        client
            .asset("moodbridge://warehouse/Contact")
            .await
            .unwrap()
            .is_none()
    );

    // The event starts a run of the DAG scheduled on the asset, which sees its extra.
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let runs = client.dag_runs("mb_on_accounts", 10).await.unwrap();
        if runs.len() > before {
            break runs[0].clone();
        }
        assert!(Instant::now() < deadline, "no run started from the asset");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(run.run_type.as_deref(), Some("asset_triggered"));
    let done = client
        .wait_for_run("mb_on_accounts", &run.dag_run_id, quick())
        .await
        .unwrap();
    assert!(done.succeeded(), "{done:?}");
    let seen = client
        .xcom("mb_on_accounts", &run.dag_run_id, "report", "return_value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen[0]["stream"], "Account");
    assert_eq!(seen[0]["records"], 3);
    assert_eq!(seen[0]["run"], "moodbridge:accounts:run-5");
}

async fn expired_tokens_are_renewed_and_errors_keep_secrets(
    airflow: &Airflow,
    client: &AirflowClient,
) {
    // Past the token's 4 s: the next request gets 401, renews and goes through.
    client.dags().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!client.dags().await.unwrap().is_empty());

    // A token Airflow did not issue: 403, permanent, the token not repeated.
    let forged = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.Zm9yZ2VkLXNpZ25hdHVyZS0xMjM0";
    let stranger =
        AirflowClient::new(AirflowConfig::token(&airflow.url, SecretString::from(forged)).unwrap())
            .unwrap();
    let err = stranger.dags().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert!(!format!("{err} {err:?}").contains(forged));
    // A wrong password: refused, and not in the error.
    let wrong = AirflowClient::new(
        AirflowConfig::password(
            &airflow.url,
            "admin",
            SecretString::from("wrong-password-0f9e"),
        )
        .unwrap(),
    )
    .unwrap();
    let err = wrong.dags().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-password-0f9e"));
    assert!(!format!("{client:?}").contains(ADMIN_PASSWORD));
    // Airflow's validation detail reaches the message.
    let err = client
        .trigger("mb_hello", &Trigger::new().run_id("has a space"))
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidInput), "{err}");
}
