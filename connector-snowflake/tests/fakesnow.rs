//! The Snowflake client against fakesnow (PyPI, installed by scripts/test.sh: the
//! drivers' protocol over DuckDB) on a loopback port of its own: login, DDL, inserts with
//! positional and array binds, a SELECT read from Arrow with every type decoded, a DML
//! answer read from a JSON rowset, the same row read by Snowflake's own Python connector
//! to the same values, Snowflake's errors mapped with their fix, logout.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::time::{Duration, SystemTime};

use connector_snowflake::{Bind, SnowflakeClient, SnowflakeConfig};
use moodbridge_core::ErrorKind;
use secrecy::SecretString;
use serde_json::json;
use support::FakeSnow;

/// What `snowflake-connector-python` reads for `query`, as JSON rows.
async fn read_back(server: &FakeSnow, query: &str) -> Vec<serde_json::Value> {
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/read_back.py");
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let out = tokio::process::Command::new(moodbridge_core::testing::venv_python())
        .arg(script)
        .env("SF_HOST", "127.0.0.1")
        .env("SF_PORT", port)
        .env("SF_QUERY", query)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "snowflake-connector-python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_with_binds_and_every_type_reads_back() {
    let server = FakeSnow::start();
    let client = SnowflakeClient::login(server.config()).await.unwrap();
    client
        .execute("create database if not exists CASES", &[])
        .await
        .unwrap();
    client
        .execute(
            "create or replace table ACCOUNT (ID number(10,0), NAME varchar, AMOUNT number(12,2), \
             RATE float, ACTIVE boolean, OPENED date, SEEN timestamp_ntz, DETAILS variant)",
            &[],
        )
        .await
        .unwrap();

    // Microseconds: fakesnow (DuckDB) keeps six digits of a fraction, Snowflake nine.
    let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_765_108_800_123_456_000);
    let inserted = client
        .execute(
            "insert into ACCOUNT select ?, ?, ?, ?, ?, '2025-12-07', ?, parse_json(?)",
            &[
                Bind::fixed(1),
                Bind::text("Acme Legal"),
                Bind::decimal("1250.50"),
                Bind::real(0.25),
                Bind::boolean(true),
                Bind::timestamp_ntz(at),
                Bind::text(r#"{"tier":"gold","seats":12}"#),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        inserted.rows_affected(),
        Some(1),
        "a DML answer (a JSON rowset)"
    );

    // Array binds: three rows in one request.
    let many = client
        .execute(
            "insert into ACCOUNT (ID, NAME) values (?, ?)",
            &[
                Bind::fixeds([2, 3, 4]),
                Bind::texts(["Beta", "Gamma", "Delta"]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(many.rows_affected(), Some(3));

    let result = client
        .execute("select * from ACCOUNT where ID = ?", &[Bind::fixed(1)])
        .await
        .unwrap();
    assert!(!result.query_id.is_empty());
    assert_eq!(
        result
            .columns
            .iter()
            .map(|c| c.kind.as_str())
            .collect::<Vec<_>>(),
        [
            "fixed",
            "text",
            "fixed",
            "real",
            "boolean",
            "date",
            "timestamp_ntz",
            "variant"
        ]
    );
    assert_eq!(
        result.json_rows().unwrap(),
        [json!({
            "ID": 1,
            "NAME": "Acme Legal",
            "AMOUNT": "1250.50",
            "RATE": 0.25,
            "ACTIVE": true,
            "OPENED": "2025-12-07",
            "SEEN": "2025-12-07T12:00:00.123456",
            "DETAILS": {"tier": "gold", "seats": 12},
        })]
    );

    // Snowflake's own Python connector reads the same row the same way (VARIANT comes
    // to it as JSON text).
    let mut theirs = read_back(&server, "select * from ACCOUNT where ID = 1").await;
    let details = theirs[0]["DETAILS"].as_str().unwrap().to_owned();
    theirs[0]["DETAILS"] = serde_json::from_str(&details).unwrap();
    assert_eq!(theirs, result.json_rows().unwrap());

    let names = client
        .execute("select NAME from ACCOUNT where ID > 1 order by ID", &[])
        .await
        .unwrap();
    assert_eq!(
        names.json_rows().unwrap(),
        [
            json!({"NAME": "Beta"}),
            json!({"NAME": "Gamma"}),
            json!({"NAME": "Delta"})
        ]
    );
    let nulls = client
        .execute("select AMOUNT, DETAILS from ACCOUNT where ID = 2", &[])
        .await
        .unwrap();
    assert_eq!(
        nulls.json_rows().unwrap(),
        [json!({"AMOUNT": null, "DETAILS": null})]
    );
    client.heartbeat().await.unwrap();
    client.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflakes_errors_name_the_problem_and_never_the_password() {
    let server = FakeSnow::start();
    let client = SnowflakeClient::login(server.config()).await.unwrap();
    client
        .execute("create database if not exists CASES", &[])
        .await
        .unwrap();
    let err = client
        .execute("select * from NO_SUCH_TABLE", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("002003"), "{err}");
    assert!(err.hint().contains("create the object"), "{err:?}");

    let err = client.execute("selec 1", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

    let err = client
        .execute("select ?, ?", &[Bind::fixeds([1, 2]), Bind::fixed(3)])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.hint().contains("same length"), "{err:?}");

    let shown = format!("{client:?}");
    assert!(!shown.contains("fakesnow-password-7e2"), "{shown}");

    // Nothing listens: the login fails as unavailable, after the policy's attempts.
    let closed = SnowflakeConfig::new("acme-test", "LOADER", SecretString::from("x"))
        .url("http://127.0.0.1:9")
        .policy(moodbridge_core::resilience::PolicyConfig::default());
    let err = SnowflakeClient::login(closed).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_binds_run_as_positional_ones_and_variant_paths_are_left_alone() {
    let server = FakeSnow::start();
    let client = SnowflakeClient::login(server.config()).await.unwrap();
    for sql in [
        "create database if not exists CASES",
        "create schema if not exists CASES.PUBLIC",
        "create table NOTES (ID number, OWNER varchar, BODY variant)",
    ] {
        client.execute(sql, &[]).await.unwrap();
    }
    for (id, owner, status) in [
        (1, "005A", "open"),
        (2, "005B", "open"),
        (3, "005A", "closed"),
    ] {
        client
            .execute_named(
                "insert into NOTES select :id, :owner, parse_json(:body)",
                &[
                    ("id", Bind::fixed(id)),
                    ("owner", Bind::text(owner)),
                    ("body", Bind::text(json!({"status": status}).to_string())),
                ],
            )
            .await
            .unwrap();
    }
    // `:owner` twice, a VARIANT path with a `::` cast, and a ':name' string. (A cast
    // right after a bind, `:id::number`, is scanned alike — see the unit tests — but
    // fakesnow's SQL parser cannot read `?::number`.)
    let rows = client
        .execute_named(
            "select ID, BODY:status::varchar as STATUS, ':owner' as LITERAL from NOTES \
             where (OWNER = :owner or ID = cast(:id as number)) and OWNER = :owner order by ID",
            &[("owner", Bind::text("005A")), ("id", Bind::fixed(2))],
        )
        .await
        .unwrap()
        .json_rows()
        .unwrap();
    assert_eq!(
        rows,
        [
            json!({"ID": 1, "STATUS": "open", "LITERAL": ":owner"}),
            json!({"ID": 3, "STATUS": "closed", "LITERAL": ":owner"}),
        ]
    );
    let err = client
        .execute_named(
            "select * from NOTES where OWNER = :owner",
            &[("onwer", Bind::text("x"))],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("no value for :owner"), "{err}");
}
