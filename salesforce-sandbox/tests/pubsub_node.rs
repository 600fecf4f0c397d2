//! Conformance of the Pub/Sub service: the npm package `salesforce-pubsub-api-client`
//! (an independent Pub/Sub API client on `@grpc/grpc-js` and `avro-js`) runs unchanged
//! against the sandbox over TLS — connects with a token the sandbox issued, subscribes
//! from the earliest event and after a replay id with flow control, fetches the schemas,
//! decodes the Avro payloads and, with its own parser, the header's bitmap fields, and
//! sees an unknown topic refused; publishes platform events with `Publish` and on a
//! `PublishStream` and reads them back; looks a managed subscription up with the Tooling
//! API, commits a position on it and resumes after it. `scripts/test.sh` installs it (`npm ci` in
//! `tests/pubsub-node`).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use salesforce_sandbox::{Sandbox, SandboxConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_pubsub_client_works_against_the_sandbox_unchanged() {
    let dir =
        moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR")).join("tests/pubsub-node");
    assert!(
        dir.join("node_modules/salesforce-pubsub-api-client")
            .is_dir(),
        "salesforce-pubsub-api-client is not installed: run ./scripts/test.sh (or npm ci --prefix {})",
        dir.display()
    );
    let sb = Sandbox::new(SandboxConfig {
        tls: true,
        ..SandboxConfig::default()
    })
    .start()
    .await
    .unwrap();
    let field = |v: serde_json::Value| v.as_object().unwrap().clone();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            sb.with_org(|org| {
                org.create(
                    "Account",
                    &field(json!({"Name": format!("Firm {i}"), "Industry": "Legal"})),
                )
                .unwrap()
            })
        })
        .collect();
    sb.with_org(|org| {
        org.update(
            "Account",
            &ids[1],
            &field(json!({"Phone": "(415) 555-0100", "Industry": null})),
        )
        .unwrap();
    });
    sb.define_platform_event(
        "Case_Update__e",
        ["Case_Id__c", "Status__c"]
            .into_iter()
            .map(|name| salesforce_sandbox::org::FieldDef::new(name, "string"))
            .chain([salesforce_sandbox::org::FieldDef::new("Hours__c", "double")])
            .collect(),
    );
    let managed = sb.define_managed_subscription("Account_Sync", "/data/AccountChangeEvent", true);
    // The client's Tooling API calls (jsforce) trust the sandbox's certificate.
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), sb.ca_pem().unwrap()).unwrap();
    // The certificate names localhost and 127.0.0.1; TLS server names are host names.
    let endpoint = sb.url().replace("https://127.0.0.1", "localhost");
    let output = tokio::process::Command::new("node")
        .arg(dir.join("conformance.mjs"))
        .env("SANDBOX_URL", sb.url())
        .env("PUBSUB_ENDPOINT", endpoint)
        .env("ACCESS_TOKEN", sb.issue_token())
        .env("ORG_ID", "00D8d0000000001EAA")
        .env("USER_ID", "0058d000000001AAAA")
        .env("MANAGED_NAME", "Account_Sync")
        .env("MANAGED_ID", &managed)
        .env("NODE_EXTRA_CA_CERTS", ca.path())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs (Node.js ≥ 20 is required)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the npm Pub/Sub client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert_eq!(
        sb.managed_committed("Account_Sync"),
        Some(2),
        "the npm client's commit is the subscription's position"
    );
    sb.stop().await;
}
