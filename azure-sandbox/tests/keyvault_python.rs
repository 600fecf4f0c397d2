//! Microsoft's Python Key Vault client (`azure-keyvault-secrets`, installed by
//! scripts/test.sh) runs unchanged against the fake vault: the bearer challenge, versions,
//! attributes, paging, soft delete, recovery and purge as the client expects them.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use azure_sandbox::{KeyVault, KeyVaultConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_accepts_the_fake_vault() {
    let vault = KeyVault::start(KeyVaultConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("vault.pem");
    std::fs::write(&ca, vault.ca_pem()).unwrap();
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/keyvault_client.py");
    let out = tokio::process::Command::new(moodbridge_core::testing::venv_python())
        .arg(script)
        .env("VAULT_URL", vault.url())
        .env("VAULT_CA", &ca)
        .env("VAULT_TOKEN", "sandbox-token")
        .output()
        .await
        .expect("the venv's python (run ./scripts/test.sh once to install it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed against the fake vault:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        findings["scopes"],
        serde_json::json!(["https://vault.azure.net/.default"]),
        "the client asked for a token for the challenge's resource"
    );
    assert_eq!(findings["disabled"], "Forbidden");
    assert_eq!(findings["missing"], "SecretNotFound");
    assert_eq!(findings["listed"], 31);
    assert_eq!(findings["reuse"], 409);
    assert_eq!(findings["wrong_token"], 401);
    // The client's first request came without a token and got the challenge.
    let requests = vault.requests();
    assert_eq!(
        requests[0], "PUT /secrets/case-db-password none",
        "{requests:?}"
    );
    assert_eq!(
        requests[1], "PUT /secrets/case-db-password bearer",
        "{requests:?}"
    );
    vault.stop().await;
}
