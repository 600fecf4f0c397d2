//! Key-pair authentication checked against Snowflake's own Python connector
//! (`snowflake-connector-python` 4.8.1, installed by scripts/test.sh): for a fresh RSA
//! key, our JWT's issuer and subject are the ones the connector makes, its fingerprint
//! is the connector's, and PyJWT (the connector's JWT library) verifies our signature
//! with the public key, for a plain and an encrypted PKCS#8 key; and a key-pair login to
//! fakesnow.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use connector_snowflake::{SnowflakeClient, SnowflakeConfig};
use moodbridge_core::ErrorKind;
use secrecy::SecretString;

async fn python(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/keypair.py");
    let mut command = tokio::process::Command::new(moodbridge_core::testing::venv_python());
    command.arg(script).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "snowflake-connector-python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_key_pair_token_is_the_one_snowflakes_connector_makes() {
    let passphrase = "correct horse battery staple";
    let theirs = python(
        &["make"],
        &[
            ("ACCOUNT", "xy12345.eu-west-1.aws"),
            ("USER_NAME", "moodbridge_loader"),
            ("PASSPHRASE", passphrase),
        ],
    )
    .await;
    let public = theirs["public_pem"].as_str().unwrap();
    for (pem, phrase) in [
        (theirs["pem"].as_str().unwrap(), None),
        (
            theirs["encrypted_pem"].as_str().unwrap(),
            Some(SecretString::from(passphrase)),
        ),
    ] {
        let ours = connector_snowflake::key_pair_token(
            "xy12345.eu-west-1.aws",
            "moodbridge_loader",
            &SecretString::from(pem),
            phrase.as_ref(),
        )
        .unwrap();
        let claims = python(&["verify"], &[("TOKEN", &ours), ("PUBLIC_PEM", public)]).await;
        assert_eq!(claims["iss"], theirs["claims"]["iss"]);
        assert_eq!(claims["sub"], theirs["claims"]["sub"]);
        assert_eq!(claims["sub"], "XY12345.MOODBRIDGE_LOADER");
        let fingerprint = theirs["fingerprint"].as_str().unwrap();
        assert!(claims["iss"].as_str().unwrap().ends_with(fingerprint));
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
    }

    // A wrong passphrase is a config error that shows neither the key nor the phrase.
    let err = connector_snowflake::key_pair_token(
        "acme",
        "loader",
        &SecretString::from(theirs["encrypted_pem"].as_str().unwrap()),
        Some(&SecretString::from("wrong phrase")),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("passphrase"), "{err}");
    assert!(!format!("{err:?}").contains("ENCRYPTED"), "{err:?}");

    // A login to fakesnow with the key. fakesnow takes any credential, so this checks
    // the request's shape only; the checks above prove the token.
    let server = support::FakeSnow::start();
    let config = SnowflakeConfig::key_pair(
        "acme-test",
        "LOADER",
        SecretString::from(theirs["pem"].as_str().unwrap()),
        None,
    )
    .url(&server.url);
    let client = SnowflakeClient::login(config).await.unwrap();
    let one = client.execute("select 1 as ONE", &[]).await.unwrap();
    assert_eq!(one.json_rows().unwrap(), [serde_json::json!({"ONE": 1})]);
}
