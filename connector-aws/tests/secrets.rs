//! AWS Secrets Manager as a `CredentialStore`, against moto (a local server speaking
//! Secrets Manager's AWS JSON protocol as aws-sdk-secretsmanager sends it): the core
//! credential store contract with pending versions, the staging labels the service
//! shows to its own clients, the recovery window and restore, batch reads, a store built
//! from config, and errors that never repeat a secret.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;

use connector_aws::sdk::AwsCredentials;
use connector_aws::secrets::SecretsManagerStore;
use moodbridge_core::testing::credential_store_contract;
use moodbridge_core::{CredentialStore, ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use support::Moto;

fn keys() -> AwsCredentials {
    AwsCredentials::Static {
        access_key_id: "AKIDTESTSECRETS".into(),
        secret_access_key: "sm-secret-key-never-shown-0042".to_owned().into(),
        session_token: None,
    }
}

async fn store(moto: &Moto, prefix: &str, recovery_window_days: u32) -> SecretsManagerStore {
    SecretsManagerStore::builder()
        .region("us-east-1")
        .endpoint(&moto.endpoint)
        .credentials(keys())
        .prefix(prefix)
        .recovery_window_days(recovery_window_days)
        .build()
        .await
        .unwrap()
}

/// The service's own view of a secret's labels, by version id.
async fn stages(moto: &Moto, name: &str) -> std::collections::HashMap<String, Vec<String>> {
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .build(),
    );
    client
        .describe_secret()
        .secret_id(name)
        .send()
        .await
        .unwrap()
        .version_ids_to_stages()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_meets_the_credential_store_contract() {
    let moto = Moto::start();
    // Deleted at once: the contract writes a deleted key again.
    credential_store_contract(&store(&moto, "moodbridge/test/", 0).await, "contract").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_labels_are_the_services_own_and_a_deleted_key_can_be_restored() {
    let moto = Moto::start();
    let s = store(&moto, "app/", 7).await;
    let key = "salesforce/client_secret";
    let name = s.secret_name(key);
    assert_eq!(name, "app/salesforce/client_secret");
    let v1 = s.put(key, SecretString::from("one")).await.unwrap();
    let v2 = s.put(key, SecretString::from("two")).await.unwrap();
    let labels = stages(&moto, &name).await;
    assert_eq!(labels[v2.as_str()], ["AWSCURRENT"]);
    assert_eq!(labels[v1.as_str()], ["AWSPREVIOUS"]);
    // A pending version, promoted: the labels move as Secrets Manager's rotation does.
    let v3 = s.stage(key, SecretString::from("three")).await.unwrap();
    assert_eq!(stages(&moto, &name).await[v3.as_str()], ["AWSPENDING"]);
    assert_eq!(s.get(key).await.unwrap().version, v2);
    s.promote(key, &v3).await.unwrap();
    let labels = stages(&moto, &name).await;
    assert_eq!(labels[v3.as_str()], ["AWSCURRENT"]);
    assert_eq!(labels[v2.as_str()], ["AWSPREVIOUS"]);
    assert!(labels[v1.as_str()].is_empty(), "{labels:?}");
    assert_eq!(s.get(key).await.unwrap().value.expose_secret(), "three");
    // Retiring from the current one takes AWSPREVIOUS off too.
    assert_eq!(s.retire(key, &v3).await.unwrap(), 2);
    assert!(stages(&moto, &name).await[v2.as_str()].is_empty());

    // Deleted with a recovery window: not found, with the way back; restored, as it was.
    s.delete(key).await.unwrap();
    let err = s.get(key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.hint().contains("restore"), "{err:?}");
    let err = s.put(key, SecretString::from("four")).await.unwrap_err();
    assert!(err.hint().contains("restore"), "{err:?}");
    s.restore(key).await.unwrap();
    let back = s.get(key).await.unwrap();
    assert_eq!(back.version, v3);
    assert_eq!(back.value.expose_secret(), "three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_get_reads_many_keys_and_says_which_are_missing() {
    let moto = Moto::start();
    let s = store(&moto, "", 0).await;
    let names: Vec<String> = (0..23).map(|i| format!("batch/key{i:02}")).collect();
    for (i, key) in names.iter().enumerate() {
        s.put(key, SecretString::from(format!("value {i}")))
            .await
            .unwrap();
    }
    let mut wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    wanted.insert(5, "batch/missing");
    let got = s.batch_get(&wanted).await.unwrap();
    assert_eq!(got.len(), 24);
    for (key, outcome) in wanted.iter().zip(&got) {
        match outcome {
            Ok(secret) => {
                assert_eq!(secret.key, *key);
                let i: usize = key["batch/key".len()..].parse().unwrap();
                assert_eq!(secret.value.expose_secret(), &format!("value {i}"));
            }
            Err(e) => {
                assert_eq!(*key, "batch/missing");
                assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_built_from_config_resolves_secret_references_and_keeps_its_secrets() {
    let moto = Moto::start();
    let seed = store(&moto, "prod/", 0).await;
    seed.put(
        "warehouse/password",
        SecretString::from("pw-never-shown-9d1e"),
    )
    .await
    .unwrap();
    // The store's own AWS keys come from another credential store (here in memory).
    let keys_store = moodbridge_auth::store::MemoryStore::new();
    keys_store
        .put(
            "aws/test/secret_access_key",
            "sm-config-key-never-shown-11".to_owned().into(),
        )
        .await
        .unwrap();
    let toml = format!(
        r#"
        [[integration]]
        id = "secrets"
        kind = "aws-secrets-manager"
        [integration.settings]
        region = "us-east-1"
        endpoint = "{}"
        prefix = "prod/"
        recovery_window_days = 0
        credentials = {{ source = "static", access_key_id = "AKIDCONFIG", secret_access_key = "secret:aws/test/secret_access_key" }}
        "#,
        moto.endpoint
    );
    let config = moodbridge_core::SdkConfig::from_toml(&toml).unwrap();
    let mut registry = moodbridge_core::Registry::new();
    registry
        .register(Arc::new(connector_aws::SecretsManagerFactory))
        .unwrap();
    let built = registry
        .build_all(&config, Some(Arc::new(keys_store)))
        .await
        .unwrap();
    let built = built.get("secrets").unwrap();
    assert_eq!(built.integration.kind(), "aws-secrets-manager");
    let from_config = built
        .interfaces
        .get::<dyn CredentialStore>()
        .expect("a Secrets Manager integration is a CredentialStore");
    assert_eq!(
        from_config
            .get("warehouse/password")
            .await
            .unwrap()
            .value
            .expose_secret(),
        "pw-never-shown-9d1e"
    );
    let health = built.integration.health_check().await;
    assert_eq!(
        health.status,
        moodbridge_core::HealthStatus::Up,
        "{health:?}"
    );

    // Reads and errors never carry a value or the secret key.
    let secret = seed.get("warehouse/password").await.unwrap();
    assert!(!format!("{secret:?}").contains("pw-never-shown"));
    let err = seed
        .get_version(
            "warehouse/password",
            &moodbridge_core::SecretVersion::new("x".repeat(40)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    for text in [err.to_string(), format!("{err:?}"), format!("{seed:?}")] {
        assert!(!text.contains("pw-never-shown"), "{text}");
        assert!(!text.contains("sm-secret-key-never-shown"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_stages_verifies_and_promotes_through_the_services_labels() {
    use moodbridge_core::rotation::Rotation;
    let moto = Moto::start();
    let s = Arc::new(store(&moto, "rot/", 0).await);
    let key = "salesforce/client_secret";
    let name = s.secret_name(key);
    let first = s.put(key, SecretString::from("old")).await.unwrap();
    let rotation = Rotation::new(s.clone(), key).grace(std::time::Duration::ZERO);
    let err = rotation
        .rotate(SecretString::from("rejected"), async |_: &SecretString| {
            Err(moodbridge_core::Error::new(
                ErrorKind::Auth,
                "test login refused",
            ))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let labels = stages(&moto, &name).await;
    assert_eq!(labels[first.as_str()], ["AWSCURRENT"], "{labels:?}");
    assert!(
        labels.values().any(|l| l == &["AWSPENDING"]),
        "the rejected value waits as AWSPENDING: {labels:?}"
    );
    assert_eq!(s.get(key).await.unwrap().value.expose_secret(), "old");
    let rotated = rotation
        .rotate(SecretString::from("new"), async |_: &SecretString| Ok(()))
        .await
        .unwrap();
    let labels = stages(&moto, &name).await;
    assert_eq!(labels[rotated.version.as_str()], ["AWSCURRENT"]);
    assert_eq!(labels[first.as_str()], ["AWSPREVIOUS"]);
    assert!(
        !labels.values().flatten().any(|l| l == "AWSPENDING"),
        "{labels:?}"
    );
    assert_eq!(s.get(key).await.unwrap().value.expose_secret(), "new");
    assert!(rotation.retire(&rotated).await.unwrap() >= 1);
    assert_eq!(
        s.get_version(key, &first).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
