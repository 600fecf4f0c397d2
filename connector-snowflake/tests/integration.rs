//! The `snowflake` kind built from a host's config against the Snowflake sandbox: the
//! settings' problems reported together with their paths, the session pool among the
//! integration's interfaces, health checks, and credentials read from the credential
//! store at every login — a fixed password and a rotated key are used without a rebuild.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;

use connector_snowflake::{SessionKey, SessionPool, SnowflakeFactory};
use moodbridge_auth::store::MemoryStore;
use moodbridge_core::credential::CredentialStore;
use moodbridge_core::{HealthStatus, Registry, SdkConfig};
use secrecy::SecretString;
use snowflake_sandbox::{Sandbox, SandboxConfig, User};

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Arc::new(SnowflakeFactory)).unwrap();
    registry
}

fn config(url: &str, credential: &str) -> SdkConfig {
    SdkConfig::from_toml(&format!(
        r#"
[[integration]]
id = "snowflake:warehouse"
kind = "snowflake"
[integration.settings]
account = "acme"
user = "loader"
{credential}
url = "{url}"
database = "CASES"
schema = "PUBLIC"
query_tag = "moodbridge-test"
[integration.settings.pool]
max_sessions_per_key = 2
"#
    ))
    .unwrap()
}

#[test]
fn every_problem_of_the_settings_is_reported_with_its_path() {
    let config = SdkConfig::from_toml(
        r#"
[[integration]]
id = "snowflake:warehouse"
kind = "snowflake"
[integration.settings]
account = ""
user = "loader"
url = "not a url"
prefetch = 0
private_key_passphrase = "env:PASSPHRASE"
[integration.settings.cost]
per_run_credits = -1.0
window_hours = 0
[[integration.settings.warehouses]]
name = "ALWAYS_ON"
auto_suspend_secs = 0
"#,
    )
    .unwrap();
    let err = registry().validate(&config).unwrap_err().to_string();
    for expected in [
        "settings.account",
        "0 credentials are given",
        "settings.private_key_passphrase",
        "settings.url",
        "settings.prefetch",
        "settings.cost.per_run_credits: is not a positive number",
        "settings.cost.window_hours: is 0",
        "settings.warehouses[0]: warehouse ALWAYS_ON never suspends",
    ] {
        assert!(err.contains(expected), "{expected} missing from: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_fixed_in_the_store_is_used_by_the_next_login_without_a_rebuild() {
    let sandbox = Sandbox::start(
        SandboxConfig::new("ACME").user(User::new("loader").password("right-password-6")),
    )
    .await
    .unwrap();
    let store = Arc::new(MemoryStore::new());
    store
        .put(
            "snowflake/loader-password",
            SecretString::from("wrong-password-6"),
        )
        .await
        .unwrap();
    let config = config(
        sandbox.url(),
        r#"password = "secret:snowflake/loader-password""#,
    );
    let built = registry()
        .build_one(&config.integrations[0], Some(store.clone()))
        .await
        .unwrap();
    assert_eq!(sandbox.sessions(), 0, "building logged in");
    let report = built.integration.health_check().await;
    assert_eq!(report.status, HealthStatus::Down);
    assert!(
        !report.detail.contains("wrong-password-6"),
        "{}",
        report.detail
    );

    store
        .put(
            "snowflake/loader-password",
            SecretString::from("right-password-6"),
        )
        .await
        .unwrap();
    let report = built.integration.health_check().await;
    assert_eq!(report.status, HealthStatus::Up, "{}", report.detail);

    let pool = built.interfaces.get::<SessionPool>().unwrap();
    let session = pool.get().await.unwrap();
    session.execute("select 1", &[]).await.unwrap();
    let tags: Vec<_> = sandbox.queries().into_iter().map(|q| q.query_tag).collect();
    assert_eq!(tags, [Some("moodbridge-test".to_owned())]);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_in_the_store_is_used_by_the_next_login() {
    let (old_private, old_public) = snowflake_sandbox::key_pair().unwrap();
    let (new_private, new_public) = snowflake_sandbox::key_pair().unwrap();
    let (stray_private, _) = snowflake_sandbox::key_pair().unwrap();
    // Mid-rotation: the old key is RSA_PUBLIC_KEY, the new one RSA_PUBLIC_KEY_2.
    let sandbox = Sandbox::start(
        SandboxConfig::new("ACME").user(
            User::new("loader")
                .public_key(&old_public)
                .public_key(&new_public),
        ),
    )
    .await
    .unwrap();
    let store = Arc::new(MemoryStore::new());
    let put = |key: String| {
        let store = store.clone();
        async move {
            store
                .put("snowflake/loader-key", SecretString::from(key))
                .await
                .unwrap();
        }
    };
    put(old_private).await;
    let config = config(
        sandbox.url(),
        r#"private_key = "secret:snowflake/loader-key""#,
    );
    let built = registry()
        .build_one(&config.integrations[0], Some(store.clone()))
        .await
        .unwrap();
    let pool = built.interfaces.get::<SessionPool>().unwrap();
    pool.get()
        .await
        .unwrap()
        .execute("select 1", &[])
        .await
        .unwrap();

    // A key the user does not have: the next login (a new context) is refused.
    put(stray_private).await;
    let other = SessionKey::default().database("CASES").schema("STAGING");
    let err = pool.get_for(&other).await.unwrap_err();
    assert_eq!(err.kind(), moodbridge_core::ErrorKind::Auth);

    // The rotated key: logins work again, and the first session is still in use.
    put(new_private).await;
    pool.get_for(&other)
        .await
        .unwrap()
        .execute("select 2", &[])
        .await
        .unwrap();
    pool.get()
        .await
        .unwrap()
        .execute("select 3", &[])
        .await
        .unwrap();
    assert_eq!(sandbox.sessions(), 2);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_holds_the_role_to_least_privilege() {
    let grants = |config: SandboxConfig| {
        config
            .grant("LOADER", "USAGE", "WAREHOUSE", "LOAD_WH")
            .grant("LOADER", "USAGE", "DATABASE", "CASES")
            .grant("LOADER", "USAGE", "SCHEMA", "CASES.PUBLIC")
            .grant("LOADER", "CREATE TABLE", "SCHEMA", "CASES.PUBLIC")
    };
    let build = async |sandbox: &Sandbox| {
        let store = Arc::new(MemoryStore::new());
        store
            .put("snowflake/loader-password", SecretString::from("pw-44"))
            .await
            .unwrap();
        let config = SdkConfig::from_toml(&format!(
            r#"
[[integration]]
id = "snowflake:warehouse"
kind = "snowflake"
[integration.settings]
account = "acme"
user = "loader"
password = "secret:snowflake/loader-password"
url = "{}"
role = "LOADER"
warehouse = "LOAD_WH"
database = "CASES"
schema = "PUBLIC"
least_privilege = true
"#,
            sandbox.url()
        ))
        .unwrap();
        registry()
            .build_one(&config.integrations[0], Some(store))
            .await
            .unwrap()
    };
    let user = || User::new("loader").password("pw-44");

    // No CREATE STAGE: the sink could not stage its files.
    let sandbox = Sandbox::start(grants(SandboxConfig::new("ACME").user(user())))
        .await
        .unwrap();
    let report = build(&sandbox).await.integration.health_check().await;
    assert_eq!(report.status, HealthStatus::Down, "{}", report.detail);
    assert!(
        report
            .detail
            .contains("role LOADER lacks CREATE STAGE on SCHEMA CASES.PUBLIC"),
        "{}",
        report.detail
    );
    sandbox.stop().await;

    // Everything it needs, and SYSADMIN besides.
    let sandbox = Sandbox::start(grants(
        SandboxConfig::new("ACME")
            .user(user())
            .grant("LOADER", "CREATE STAGE", "SCHEMA", "CASES.PUBLIC")
            .grant("LOADER", "USAGE", "ROLE", "SYSADMIN"),
    ))
    .await
    .unwrap();
    let report = build(&sandbox).await.integration.health_check().await;
    assert_eq!(report.status, HealthStatus::Degraded, "{}", report.detail);
    assert!(
        report
            .detail
            .contains("USAGE on ROLE SYSADMIN (an administrative role)"),
        "{}",
        report.detail
    );
    sandbox.stop().await;
}
