//! The sandbox's fidelity, held to Snowflake's own Python connector, 4.x (pure Python,
//! in the test venv beside fakesnow) and 5.x (Snowflake's Rust core, in a venv of its
//! own), both installed by scripts/test.sh, each running
//! `tests/python/connector_check.py` against it unchanged: chunked Arrow results read to
//! the last row and value, a statement polled past "in progress", an asynchronous query
//! read back by id, cancel, multi-statement, single and array binds, error codes,
//! session renewal by the master token, key-pair and programmatic-access-token logins,
//! and a refused password. What the connector sent is then checked on the sandbox's side.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use snowflake_sandbox::{ColumnDef, ColumnKind, Sandbox, SandboxConfig, Table, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflakes_python_connector_4_accepts_what_the_sandbox_serves() {
    check_with(moodbridge_core::testing::venv_python(), "4.").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflakes_python_connector_5_with_its_rust_core_accepts_what_the_sandbox_serves() {
    check_with(moodbridge_core::testing::snowflake5_python(), "5.").await;
}

async fn check_with(python: std::path::PathBuf, version: &str) {
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test.sh once to install snowflake-connector-python",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public_key) = snowflake_sandbox::key_pair().unwrap();
    let (_, other_public_key) = snowflake_sandbox::key_pair().unwrap();
    let private_key = dir.path().join("current.p8");
    std::fs::write(&private_key, private_pem).unwrap();
    let sandbox = Sandbox::start(
        SandboxConfig::new("SANDBOX")
            .user(
                User::new("loader")
                    .password("sandbox-password-51")
                    // RSA_PUBLIC_KEY is an older key; the login uses RSA_PUBLIC_KEY_2.
                    .public_key(&other_public_key)
                    .public_key(&public_key)
                    .token("PROGRAMMATIC_ACCESS_TOKEN", "sandbox-pat-9"),
            )
            .table(Table::accounts("ACCOUNTS", 120_000))
            .stage_binding_threshold(100)
            .grant("loader", "USAGE", "WAREHOUSE", "LOAD_WH")
            .grant("loader", "USAGE", "DATABASE", "SANDBOX")
            .grant("analyst", "USAGE", "DATABASE", "SANDBOX")
            .table(Table::new(
                "MATTERS",
                vec![
                    ColumnDef::new(
                        "ID",
                        ColumnKind::Fixed {
                            precision: 38,
                            scale: 0,
                        },
                    ),
                    ColumnDef::new("TITLE", ColumnKind::Text),
                    ColumnDef::new("OPENED", ColumnKind::Date),
                ],
            ))
            .chunk_rows(1000, 25_000)
            .session_validity(Duration::from_secs(4)),
    )
    .await
    .unwrap();
    // The first two chunk downloads fail: the connector retries them.
    sandbox.fail_next_chunks(2);
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/connector_check.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(sandbox.port().to_string())
        .arg(sandbox.account())
        .arg(&private_key)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the Python connector failed against the sandbox:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["chunked_rows"], 120_000);
    assert_eq!(summary["grants"], 2);
    assert_eq!(summary["staged_binds"], 60);
    assert!(
        summary["connector"].as_str().unwrap().starts_with(version),
        "expected connector {version}x, ran {}",
        summary["connector"]
    );

    let queries = sandbox.queries();
    let find = |id: &serde_json::Value| {
        queries
            .iter()
            .find(|q| q.query_id == id.as_str().unwrap())
            .unwrap()
            .clone()
    };
    assert_eq!(find(&summary["slow_query"]).status, "ABORTED");
    assert_eq!(find(&summary["async_query"]).status, "SUCCESS");
    // Every statement of the password session carried the session's query tag.
    assert!(
        queries
            .iter()
            .filter(|q| q.sql.contains("ACCOUNTS"))
            .all(|q| q.query_tag.as_deref() == Some("python-check"))
    );
    // 71 matters: one single insert, one array-bound insert of ten, and sixty whose
    // binds came through a stage (the request named it; the binds were not in it).
    assert_eq!(sandbox.table_rows("MATTERS"), Some(71));
    let staged: Vec<_> = queries
        .iter()
        .filter(|q| q.sql.starts_with("insert into MATTERS"))
        .map(|q| q.bind_stage.clone())
        .collect();
    assert_eq!(staged.len(), 3, "{staged:?}");
    assert!(staged[..2].iter().all(Option::is_none), "{staged:?}");
    assert!(
        staged[2]
            .as_deref()
            // 4.x names the stage SYSTEMBIND, the 5.x core SYSTEM$BIND.
            .is_some_and(|s| {
                let s = s.to_ascii_uppercase();
                s.starts_with("@SYSTEMBIND/") || s.starts_with("@SYSTEM$BIND/")
            }),
        "{staged:?}"
    );
    assert!(
        sandbox.renewals() >= 1,
        "the connector never renewed its session"
    );
    assert_eq!(
        sandbox.sessions(),
        0,
        "the connector's sessions were not closed"
    );
    sandbox.stop().await;
}
