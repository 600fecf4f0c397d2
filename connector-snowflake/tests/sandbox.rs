//! The client against the Snowflake sandbox (whose fidelity Snowflake's own Python
//! connector checks in `snowflake-sandbox/tests/python_connector.rs`), for what fakesnow
//! cannot serve: results in chunks streamed with failed downloads retried, statements
//! polled past "in progress", asynchronous queries resumed from another session,
//! cancel (explicit, on timeout and on drop), multi-statement requests, session renewal
//! and re-login, a lost answer retried without running the statement twice, throttling,
//! query tags, and key-pair and token logins.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use connector_snowflake::{Bind, QueryStatus, SnowflakeClient, SnowflakeConfig};
use futures::TryStreamExt as _;
use moodbridge_core::ErrorKind;
use secrecy::SecretString;
use snowflake_sandbox::{ColumnDef, ColumnKind, Sandbox, SandboxConfig, Table, User};

const PASSWORD: &str = "sandbox-password-88";

fn matters() -> Table {
    Table::new(
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
        ],
    )
}

async fn sandbox(config: impl FnOnce(SandboxConfig) -> SandboxConfig) -> Sandbox {
    let base = SandboxConfig::new("ACME")
        .user(
            User::new("loader")
                .password(PASSWORD)
                .token("PROGRAMMATIC_ACCESS_TOKEN", "pat-sandbox-1"),
        )
        .table(Table::accounts("ACCOUNTS", 30_000))
        .table(matters())
        .chunk_rows(500, 4_000)
        .in_progress_after(Duration::from_millis(200));
    Sandbox::start(config(base)).await.unwrap()
}

fn login(sandbox: &Sandbox) -> SnowflakeConfig {
    SnowflakeConfig::new("acme", "LOADER", SecretString::from(PASSWORD))
        .url(sandbox.url())
        .database("SANDBOX")
        .schema("PUBLIC")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_result_streams_every_row_and_failed_downloads_are_retried() {
    let sandbox = sandbox(|c| c).await;
    let client = SnowflakeClient::login(login(&sandbox).prefetch(2))
        .await
        .unwrap();
    sandbox.fail_next_chunks(2);
    let mut stream = client.stream("select * from ACCOUNTS", &[]).await.unwrap();
    assert_eq!(stream.total(), 30_000);
    let mut ids = Vec::new();
    while let Some(batch) = stream.try_next().await.unwrap() {
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        ids.extend(column.values().iter().copied());
    }
    assert_eq!(ids, (1..=30_000).collect::<Vec<i64>>());

    let result = client
        .execute("select * from ACCOUNTS limit 4600", &[])
        .await
        .unwrap();
    assert_eq!(result.num_rows(), 4600);
    let rows = result.json_rows().unwrap();
    let row = &rows[4599];
    let i: i64 = 4599;
    assert_eq!(row["ID"], serde_json::json!(i + 1));
    assert_eq!(row["NAME"], serde_json::json!(format!("Account {i:07}")));
    let cents = (i * 1237) % 10_000_000;
    assert_eq!(
        row["AMOUNT"],
        serde_json::json!(format!("{}.{:02}", cents / 100, cents % 100))
    );
    assert_eq!(row["ACTIVE"], serde_json::json!(i % 3 != 0));
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_still_running_is_polled_to_its_result() {
    let sandbox = sandbox(|c| c).await;
    let client = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    let result = client
        .execute("select system$wait(900, 'MILLISECONDS')", &[])
        .await
        .unwrap();
    assert_eq!(
        result.json_rows().unwrap()[0]["SYSTEM$WAIT"],
        "waited 0.9 seconds"
    );
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asynchronous_query_is_read_back_by_id_from_another_session() {
    let sandbox = sandbox(|c| c).await;
    let first = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    let id = first.submit("select system$wait(2)", &[]).await.unwrap();
    assert_eq!(first.query_status(&id).await.unwrap(), QueryStatus::Running);
    // A process that restarted: a new session with only the persisted id.
    let second = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    let result = second.query_result(&id).await.unwrap();
    assert_eq!(result.query_id, id);
    assert_eq!(result.num_rows(), 1);
    assert_eq!(
        second.query_status(&id).await.unwrap(),
        QueryStatus::Success
    );
    let err = second.query_status("not/an/id").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_query_and_its_result_reads_as_a_timeout() {
    let sandbox = sandbox(|c| c).await;
    let client = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    let id = client.submit("select system$wait(30)", &[]).await.unwrap();
    assert!(client.cancel(&id).await.unwrap());
    assert_eq!(
        client.query_status(&id).await.unwrap(),
        QueryStatus::Aborted
    );
    let err = client.query_result(&id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(!client.cancel(&id).await.unwrap(), "cancelled twice");
    sandbox.stop().await;
}

async fn wait_for_status(sandbox: &Sandbox, sql: &str, status: &str) {
    for _ in 0..100 {
        if sandbox
            .queries()
            .iter()
            .any(|q| q.sql == sql && q.status == status)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{sql} never reached {status}: {:?}", sandbox.queries());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_its_timeout_or_abandoned_is_cancelled_on_the_server() {
    let sandbox = sandbox(|c| c).await;
    let limited =
        SnowflakeClient::login(login(&sandbox).statement_timeout(Duration::from_millis(400)))
            .await
            .unwrap();
    let err = limited
        .execute("select system$wait(31)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    wait_for_status(&sandbox, "select system$wait(31)", "ABORTED").await;

    let client = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    let task = tokio::spawn({
        let client = client.clone();
        async move { client.execute("select system$wait(32)", &[]).await }
    });
    wait_for_status(&sandbox, "select system$wait(32)", "RUNNING").await;
    task.abort();
    wait_for_status(&sandbox, "select system$wait(32)", "ABORTED").await;
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_statements_run_in_one_request_and_a_wrong_count_is_refused() {
    let sandbox = sandbox(|c| c).await;
    let client = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    let results = client
        .execute_multi(
            "select 7; select count(*) from ACCOUNTS; select * from ACCOUNTS",
            3,
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].json_rows().unwrap()[0]["7"], 7);
    assert_eq!(results[1].json_rows().unwrap()[0]["COUNT(*)"], 30_000);
    assert_eq!(results[2].num_rows(), 30_000);
    let err = client
        .execute_multi("select 1; select 2", 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("statement count"), "{err}");
    let err = client
        .execute_multi("select 1; select * from NOPE; select 3", 0)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_renewed_and_an_expired_master_token_logs_in_again() {
    let sandbox = sandbox(|c| c).await;
    let client = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    sandbox.expire_sessions();
    client.execute("select 1", &[]).await.unwrap();
    assert_eq!(sandbox.renewals(), 1);
    assert_eq!(sandbox.sessions(), 1);
    sandbox.expire_master_tokens();
    client.execute("select 2", &[]).await.unwrap();
    assert_eq!(sandbox.renewals(), 1, "a dead master token was renewed");
    assert_eq!(
        sandbox.sessions(),
        2,
        "no new login after the master token expired"
    );
    client.heartbeat().await.unwrap();
    client.logout().await.unwrap();
    assert_eq!(sandbox.sessions(), 1);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_by_request_id_and_the_insert_runs_once() {
    let sandbox = sandbox(|c| c).await;
    let client = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    sandbox.lose_next_responses(1);
    sandbox.throttle_next(1);
    let result = client
        .execute(
            "insert into MATTERS (ID, TITLE) values (?, ?)",
            &[
                Bind::fixeds([1, 2, 3]),
                Bind::texts(["Doe v. Roe", "In re Smith", "Acme v. Beta"]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(result.rows_affected(), Some(3));
    assert_eq!(sandbox.table_rows("MATTERS"), Some(3));
    let insert = sandbox
        .queries()
        .into_iter()
        .find(|q| q.sql.starts_with("insert"))
        .unwrap();
    assert_eq!(insert.requests, 2, "the retry did not reuse the request id");
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_carry_the_session_tag_their_handles_own_or_their_runs() {
    let sandbox = sandbox(|c| c).await;
    let client = SnowflakeClient::login(login(&sandbox).query_tag("moodbridge"))
        .await
        .unwrap();
    client.execute("select 1", &[]).await.unwrap();
    client
        .tagged("moodbridge:sync:run-42")
        .execute("select 2", &[])
        .await
        .unwrap();
    // Inside a sync run, an untagged handle's statements carry the run's tag.
    let scope = moodbridge_core::observe::RunScope::new("accounts", 7);
    moodbridge_core::observe::with_run_scope(scope, client.execute("select 3", &[]))
        .await
        .unwrap();
    let tags: Vec<Option<String>> = sandbox.queries().into_iter().map(|q| q.query_tag).collect();
    assert_eq!(
        tags,
        [
            Some("moodbridge".to_owned()),
            Some("moodbridge:sync:run-42".to_owned()),
            Some("moodbridge:accounts:run-7".to_owned())
        ]
    );
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pair_and_token_logins_are_verified_and_a_wrong_password_is_refused() {
    let (pem, public) = snowflake_sandbox::key_pair().unwrap();
    let sandbox = sandbox(|c| c.user(User::new("keyed").public_key(&public))).await;
    let keyed = SnowflakeClient::login(
        SnowflakeConfig::key_pair("acme", "keyed", SecretString::from(pem), None)
            .url(sandbox.url()),
    )
    .await
    .unwrap();
    keyed.execute("select 1", &[]).await.unwrap();
    let pat = SnowflakeClient::login(
        SnowflakeConfig::programmatic_access_token(
            "acme",
            "loader",
            SecretString::from("pat-sandbox-1"),
        )
        .url(sandbox.url()),
    )
    .await
    .unwrap();
    pat.execute("select 1", &[]).await.unwrap();
    let err = SnowflakeClient::login(
        SnowflakeConfig::new("acme", "LOADER", SecretString::from("wrong-password-3"))
            .url(sandbox.url()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(!format!("{err:?}").contains("wrong-password-3"));
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_key_echoed_by_a_failing_store_never_reaches_the_error() {
    let sandbox = sandbox(|c| c).await;
    let client = SnowflakeClient::login(login(&sandbox).policy(
        moodbridge_core::resilience::PolicyConfig {
            retry: Some(moodbridge_core::resilience::RetryConfig {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(10),
                max_elapsed: Duration::from_secs(10),
                budget: None,
            }),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    sandbox.fail_next_chunks(1000);
    let err = client
        .execute("select * from ACCOUNTS", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let shown = moodbridge_core::testing::everything_shown(&err);
    assert!(shown.contains("SlowDown"), "{shown}");
    let keys = sandbox.chunk_keys();
    assert!(!keys.is_empty());
    for key in keys {
        assert!(!shown.contains(&key), "the chunk key leaked: {shown}");
    }
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_becomes_the_engines_rows_with_exact_text_cells() {
    use moodbridge_core::{Cell, ColumnKind};
    let sandbox = sandbox(|c| c).await;
    let client = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    let stream = client
        .stream("select * from ACCOUNTS limit 9000", &[])
        .await
        .unwrap();
    let batches: Vec<moodbridge_core::RowBatch> =
        stream.into_rows("Account").try_collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 9000);
    let kinds: Vec<ColumnKind> = batches[0].columns().iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ColumnKind::Integer,
            ColumnKind::Text,
            ColumnKind::Text,
            ColumnKind::Boolean,
            ColumnKind::Text,
            ColumnKind::Text
        ]
    );
    // Row i = 7: ID 8, AMOUNT 7 * 1237 cents, ACTIVE (7 % 3 != 0), CREATED 1,700,000,007 s
    // + 7 * 7919 ns, NOTE NULL (7 % 7 == 0).
    let row = batches[0].row(7).unwrap();
    assert_eq!(row.cell(0), Some(Cell::Integer(8)));
    assert_eq!(row.cell(1), Some(Cell::Text("Account 0000007")));
    assert_eq!(row.cell(2), Some(Cell::Text("86.59")));
    assert_eq!(row.cell(3), Some(Cell::Bool(true)));
    assert_eq!(
        row.cell(4),
        Some(Cell::Text("2023-11-14T22:13:27.000055433"))
    );
    assert_eq!(row.cell(5), Some(Cell::Null));
    let record = row.to_record();
    assert_eq!(record.get("ID"), Some(&serde_json::json!(8)));
    sandbox.stop().await;
}

/// Access tokens handed out in order, counting the fetches (the identity provider of
/// the test: what matters here is how the client uses the manager).
struct Issued {
    tokens: std::sync::Mutex<std::collections::VecDeque<&'static str>>,
    fetches: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl moodbridge_auth::token_manager::TokenSource for Issued {
    async fn fetch(
        &self,
        _current: Option<&moodbridge_auth::oauth::TokenSet>,
    ) -> moodbridge_core::Result<moodbridge_auth::oauth::TokenSet> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let token = self.tokens.lock().unwrap().pop_front().ok_or_else(|| {
            moodbridge_core::Error::new(ErrorKind::Auth, "the provider has no more tokens to give")
        })?;
        Ok(moodbridge_auth::oauth::TokenSet::bearer(
            SecretString::from(token),
            Some(Duration::from_secs(3600)),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_token_from_the_token_manager_is_refreshed_when_snowflake_refuses_it() {
    use std::sync::Arc;
    let sandbox =
        sandbox(|c| c.user(User::new("federated").token("OAUTH", "oauth-current-7"))).await;
    let source = Arc::new(Issued {
        tokens: std::sync::Mutex::new(["oauth-revoked-6", "oauth-current-7"].into()),
        fetches: std::sync::atomic::AtomicUsize::new(0),
    });
    let manager = moodbridge_auth::token_manager::TokenManager::new();
    manager.register("idp", "federated", source.clone());
    let client = SnowflakeClient::login(
        SnowflakeConfig::oauth_managed("acme", "federated", manager, "idp", "federated")
            .url(sandbox.url()),
    )
    .await
    .unwrap();
    // The first token was refused (390303), rejected to the manager, and the fresh one
    // logged in.
    assert_eq!(source.fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    client.execute("select 1", &[]).await.unwrap();
    // A new login after the master token expired asks the manager again, which still
    // holds a valid token: no fetch.
    sandbox.expire_master_tokens();
    client.execute("select 2", &[]).await.unwrap();
    assert_eq!(source.fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(sandbox.sessions() >= 2, "no new login happened");
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_binds_past_the_sessions_threshold_go_through_a_stage() {
    // The sandbox tells clients to stage binds of 100 values or more, and reads staged
    // binds back as Snowflake's own Python connector stages them (4.x and 5.x, in
    // snowflake-sandbox/tests/python_connector.rs).
    let sandbox = sandbox(|c| c.stage_binding_threshold(100)).await;
    let client = SnowflakeClient::login(login(&sandbox)).await.unwrap();
    let tricky = [
        Some("plain"),
        Some("with, comma"),
        Some("with \"quotes\""),
        Some("two\nlines"),
        Some(""),
        None,
        Some("back\\slash"),
    ];
    let titles: Vec<Option<String>> = (0..60)
        .map(|n| tricky[n % tricky.len()].map(str::to_owned))
        .collect();
    client
        .execute(
            "insert into MATTERS (ID, TITLE) values (?, ?)",
            &[Bind::fixeds(100..160), Bind::optional_texts(titles.clone())],
        )
        .await
        .unwrap();
    // Under the threshold: in the request.
    client
        .execute(
            "insert into MATTERS (ID, TITLE) values (?, ?)",
            &[Bind::fixeds([1, 2]), Bind::texts(["a", "b"])],
        )
        .await
        .unwrap();
    let inserts: Vec<Option<String>> = sandbox
        .queries()
        .into_iter()
        .filter(|q| q.sql.starts_with("insert"))
        .map(|q| q.bind_stage)
        .collect();
    assert_eq!(inserts.len(), 2);
    assert!(
        inserts[0]
            .as_deref()
            .is_some_and(|s| s.starts_with("@SYSTEM$BIND/")),
        "{inserts:?}"
    );
    assert_eq!(inserts[1], None);
    let rows = client
        .execute("select * from MATTERS", &[])
        .await
        .unwrap()
        .json_rows()
        .unwrap();
    let staged: Vec<Option<String>> = rows
        .iter()
        .filter(|r| r["ID"].as_i64().is_some_and(|id| id >= 100))
        .map(|r| r["TITLE"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(staged, titles);
    sandbox.stop().await;
}
