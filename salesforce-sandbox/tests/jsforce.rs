//! Conformance: jsforce 3 (npm), an independent and widely used Salesforce client, runs
//! unchanged against the sandbox — query + queryMore, autoFetch with relationships,
//! queryAll, CRUD, upsert by external id, describeGlobal / describe, collections,
//! composite, limits, the error format, 401 → refresh → retry, and the web-server flow
//! with PKCE (authorize, code exchange, refresh, a replayed code refused). `scripts/test.sh`
//! installs jsforce (`npm ci` in `tests/jsforce`).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use salesforce_sandbox::{Sandbox, SandboxConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsforce_works_against_the_sandbox_unchanged() {
    let dir =
        moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR")).join("tests/jsforce");
    assert!(
        dir.join("node_modules/jsforce").is_dir(),
        "jsforce is not installed: run ./scripts/test.sh (or npm ci --prefix {})",
        dir.display()
    );
    let config = SandboxConfig {
        page_size: 50,
        ..SandboxConfig::default()
    };
    let (client_id, client_secret) = (config.client_id.clone(), config.client_secret.clone());
    let sb = Sandbox::new(config).seed(120, 2, 3).start().await.unwrap();
    let expired = sb.issue_token();
    sb.expire_tokens();

    let output = tokio::process::Command::new("node")
        .arg(dir.join("conformance.mjs"))
        .env("SANDBOX_URL", sb.url())
        .env("CLIENT_ID", client_id)
        .env("CLIENT_SECRET", client_secret)
        .env("EXPIRED_TOKEN", expired)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs (Node.js ≥ 20 is required)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "jsforce conformance failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    sb.stop().await;
}
