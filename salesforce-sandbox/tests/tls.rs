//! The sandbox over https (feature `tls`): a throwaway self-signed certificate that
//! clients trust through its PEM — Python's `requests` (what `simple-salesforce` sends
//! with) and reqwest — while a client that does not trust it is refused.
#![cfg(feature = "tls")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use salesforce_sandbox::{Sandbox, SandboxConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trust_its_certificate_reach_it_over_https() {
    let sb = Sandbox::new(SandboxConfig {
        tls: true,
        ..SandboxConfig::default()
    })
    .seed(3, 0, 1)
    .start()
    .await
    .unwrap();
    assert!(sb.url().starts_with("https://127.0.0.1:"), "{}", sb.url());
    let pem = sb.ca_pem().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("sandbox-ca.pem");
    std::fs::write(&ca, &pem).unwrap();

    // reqwest, trusting the certificate: the versions; the token endpoint.
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let versions: serde_json::Value = trusting
        .get(format!("{}/services/data", sb.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        versions.as_array().is_some_and(|v| !v.is_empty()),
        "{versions}"
    );
    // Not trusting it: refused.
    let err = reqwest::Client::new()
        .get(format!("{}/services/data", sb.url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // Python's requests, with the certificate as its CA bundle: a token and a query.
    let script = r#"
import json, sys, requests
url, ca = sys.argv[1], sys.argv[2]
token = requests.post(url + "/services/oauth2/token", data={
    "grant_type": "client_credentials", "client_id": "sandbox-client",
    "client_secret": "sandbox-secret"}, verify=ca).json()["access_token"]
answer = requests.get(url + "/services/data/v62.0/query",
    params={"q": "SELECT Id, Name FROM Account"},
    headers={"Authorization": "Bearer " + token}, verify=ca)
answer.raise_for_status()
print(json.dumps({"totalSize": answer.json()["totalSize"]}))
try:
    requests.get(url + "/services/data", timeout=10)
    print("UNVERIFIED ACCEPTED")
except requests.exceptions.SSLError:
    print("unverified refused")
"#;
    let out = tokio::process::Command::new(moodbridge_core::testing::venv_python())
        .args(["-c", script, sb.url(), ca.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"totalSize\": 3"), "{stdout}");
    assert!(stdout.contains("unverified refused"), "{stdout}");
    sb.stop().await;
}
