//! The session pool against the Snowflake sandbox: a session is reused with its context,
//! contexts get sessions of their own, a session whose state a statement changed is
//! retired (and logged out) instead of reused, lifetime and idle eviction, a health
//! check that survives a server that forgot the session, and a busy pool that times
//! out.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use connector_snowflake::{
    PoolSettings, SessionKey, SessionPool, SnowflakeClient, SnowflakeConfig,
};
use moodbridge_core::ErrorKind;
use secrecy::SecretString;
use snowflake_sandbox::{Sandbox, SandboxConfig, User};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::new("ACME").user(User::new("loader").password("pool-pw-4")))
        .await
        .unwrap()
}

fn config(sandbox: &Sandbox) -> SnowflakeConfig {
    SnowflakeConfig::new("acme", "LOADER", SecretString::from("pool-pw-4"))
        .url(sandbox.url())
        .role("LOADER_ROLE")
        .warehouse("LOAD_WH")
        .database("CASES")
        .schema("PUBLIC")
}

async fn current(client: &SnowflakeClient, what: &str) -> String {
    let result = client
        .execute(&format!("select current_{what}()"), &[])
        .await
        .unwrap();
    let rows = result.json_rows().unwrap();
    rows[0][format!("CURRENT_{}()", what.to_uppercase())]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn settle(sandbox: &Sandbox, sessions: usize) {
    for _ in 0..100 {
        if sandbox.sessions() == sessions {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} sessions, not {sessions}", sandbox.sessions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_session_is_handed_out_again_with_its_context() {
    let sandbox = sandbox().await;
    let pool = SessionPool::new(config(&sandbox), PoolSettings::default());
    let first = pool.get().await.unwrap();
    let id = current(&first, "session").await;
    assert_eq!(current(&first, "schema").await, "PUBLIC");
    drop(first);
    let again = pool.get().await.unwrap();
    assert_eq!(current(&again, "session").await, id);
    assert_eq!(sandbox.sessions(), 1);
    let status = pool.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].open, 1);
    assert_eq!(status[0].idle, 0);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_context_has_sessions_of_its_own() {
    let sandbox = sandbox().await;
    let pool = SessionPool::new(config(&sandbox), PoolSettings::default());
    let main = pool.get().await.unwrap();
    let staging = pool
        .get_for(
            &SessionKey::default()
                .role("AUDITOR")
                .warehouse("AUDIT_WH")
                .database("CASES")
                .schema("STAGING"),
        )
        .await
        .unwrap();
    assert_eq!(current(&staging, "schema").await, "STAGING");
    assert_eq!(current(&staging, "role").await, "AUDITOR");
    assert_eq!(current(&main, "role").await, "LOADER_ROLE");
    assert_ne!(
        current(&main, "session").await,
        current(&staging, "session").await
    );
    assert_eq!(pool.status().len(), 2);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_state_changed_is_logged_out_not_reused() {
    let sandbox = sandbox().await;
    let pool = SessionPool::new(config(&sandbox), PoolSettings::default());
    let first = pool.get().await.unwrap();
    let id = current(&first, "session").await;
    first.execute("use schema SCRATCH", &[]).await.unwrap();
    assert_eq!(current(&first, "schema").await, "SCRATCH");
    assert!(first.session_changed());
    drop(first);
    let next = pool.get().await.unwrap();
    assert_ne!(current(&next, "session").await, id);
    assert_eq!(current(&next, "schema").await, "PUBLIC");
    settle(&sandbox, 1).await;
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_their_lifetime_or_idle_too_long_are_retired() {
    let sandbox = sandbox().await;
    let pool = SessionPool::new(
        config(&sandbox),
        PoolSettings {
            max_lifetime: Duration::from_millis(1000),
            idle_timeout: Duration::from_millis(400),
            ..PoolSettings::default()
        },
    );
    let first = pool.get().await.unwrap();
    let id = current(&first, "session").await;
    drop(first);
    assert_eq!(pool.evict_idle(), 0, "a session just returned was evicted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pool.evict_idle(), 1);
    settle(&sandbox, 0).await;

    let young = pool.get().await.unwrap();
    let young_id = current(&young, "session").await;
    assert_ne!(young_id, id);
    drop(young);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = pool.get().await.unwrap();
    assert_ne!(
        current(&next, "session").await,
        young_id,
        "an old session was reused"
    );
    settle(&sandbox, 1).await;
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_checked_and_recovers_when_the_server_forgot_it() {
    let sandbox = sandbox().await;
    let pool = SessionPool::new(
        config(&sandbox),
        PoolSettings {
            health_check_after: Duration::ZERO,
            ..PoolSettings::default()
        },
    );
    drop(pool.get().await.unwrap());
    sandbox.expire_master_tokens();
    let session = pool.get().await.unwrap();
    assert_eq!(current(&session, "schema").await, "PUBLIC");
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_sessions_stay_busy_times_out_with_the_fix() {
    let sandbox = sandbox().await;
    let pool = SessionPool::new(
        config(&sandbox),
        PoolSettings {
            max_sessions_per_key: 1,
            wait_timeout: Duration::from_millis(200),
            ..PoolSettings::default()
        },
    );
    let held = pool.get().await.unwrap();
    let err = pool.get().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("busy"), "{err}");
    drop(held);
    pool.get().await.unwrap();
    pool.close().await;
    settle(&sandbox, 0).await;
    sandbox.stop().await;
}
