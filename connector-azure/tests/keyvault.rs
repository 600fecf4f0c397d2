//! Azure Key Vault secrets as a `CredentialStore`, against azure-sandbox's fake vault
//! over https (whose fidelity Microsoft's Python client proves in azure-sandbox's own
//! tests), reached through the official `azure_security_keyvault_secrets` crate with its
//! bearer challenge: the core credential store contract with pending versions, the name
//! mapping and its collisions, soft delete and recovery, a rotation, and errors that
//! never repeat a secret.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use azure_sandbox::{KeyVault, KeyVaultConfig};
use connector_azure::keyvault::{KEY_TAG, KeyVaultBuilder, KeyVaultStore};
use moodbridge_core::testing::credential_store_contract;
use moodbridge_core::{CredentialStore, ErrorKind};
use secrecy::{ExposeSecret, SecretString};

/// An Entra ID credential handing out the vault's token, counting the asks.
#[derive(Debug)]
struct VaultToken {
    token: &'static str,
    asked: AtomicU32,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for VaultToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(
            scopes,
            ["https://vault.azure.net/.default"],
            "the challenge's scope"
        );
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok(azure_core::credentials::AccessToken::new(
            self.token,
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

fn builder(vault: &KeyVault, token: &'static str) -> KeyVaultBuilder {
    let cert = reqwest::Certificate::from_pem(vault.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([cert])
        .build()
        .unwrap();
    KeyVaultStore::builder(vault.url())
        .credential(Arc::new(VaultToken {
            token,
            asked: AtomicU32::new(0),
        }))
        .http_client(Arc::new(http))
        // The vault is 127.0.0.1, not *.vault.azure.net.
        .verify_challenge_resource(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_meets_the_credential_store_contract() {
    let vault = KeyVault::start(KeyVaultConfig::default()).await.unwrap();
    // Purged on delete: the contract writes a deleted key again.
    let store = builder(&vault, "sandbox-token")
        .purge_on_delete(true)
        .build()
        .unwrap();
    credential_store_contract(&store, "contract").await;
    // The first request asked for the challenge; every later one carried the token.
    let requests = vault.requests();
    assert!(requests[0].ends_with(" none"), "{requests:?}");
    assert!(
        requests[1..].iter().all(|r| r.ends_with(" bearer")),
        "{requests:?}"
    );
    vault.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_map_keys_and_refuse_collisions_and_deletes_are_recoverable() {
    let vault = KeyVault::start(KeyVaultConfig::default()).await.unwrap();
    let store = builder(&vault, "sandbox-token")
        .prefix("mb-")
        .build()
        .unwrap();
    let key = "salesforce/prod/client_secret";
    assert_eq!(
        store.name_of(key).unwrap(),
        "mb-salesforce-prod-client-secret"
    );
    store.put(key, SecretString::from("one")).await.unwrap();
    // The name and the key tag, as the service holds them.
    let raw = store
        .client()
        .get_secret("mb-salesforce-prod-client-secret", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(raw.tags.unwrap()[KEY_TAG], key);
    // Another key with the same name: refused, not overwritten.
    let err = store
        .put("salesforce/prod/client-secret", SecretString::from("other"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.hint().contains("rename"), "{err:?}");
    let err = store
        .get("salesforce/prod/client-secret")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(store.get(key).await.unwrap().value.expose_secret(), "one");
    // list gives keys back as written.
    let listed = store.list("salesforce/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);

    // Soft delete: the name stays taken until recovered.
    store.delete(key).await.unwrap();
    assert_eq!(
        store.get(key).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let err = store.put(key, SecretString::from("two")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.hint().contains("recover"), "{err:?}");
    store.recover(key).await.unwrap();
    assert_eq!(store.get(key).await.unwrap().value.expose_secret(), "one");
    vault.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_promotes_only_a_verified_value_and_errors_keep_secrets() {
    use moodbridge_core::rotation::Rotation;
    let vault = KeyVault::start(KeyVaultConfig::default()).await.unwrap();
    let store = Arc::new(builder(&vault, "sandbox-token").build().unwrap());
    let key = "webhooks/apex";
    let first = store
        .put(key, SecretString::from("old-value-never-shown"))
        .await
        .unwrap();
    let rotation = Rotation::new(store.clone(), key).grace(std::time::Duration::ZERO);
    rotation
        .rotate(
            SecretString::from("bad-value-never-shown"),
            async |_: &SecretString| {
                Err(moodbridge_core::Error::new(
                    ErrorKind::Auth,
                    "test call refused",
                ))
            },
        )
        .await
        .unwrap_err();
    // The rejected value waits as the newest version; readers still get the current.
    let current = store.get(key).await.unwrap();
    assert_eq!(current.version, first);
    let listed = store.list(key).await.unwrap();
    assert!(listed[0].pending.is_some());
    let rotated = rotation
        .rotate(
            SecretString::from("new-value-never-shown"),
            async |_: &SecretString| Ok(()),
        )
        .await
        .unwrap();
    let current = store.get(key).await.unwrap();
    assert_eq!(current.version, rotated.version);
    assert_eq!(current.value.expose_secret(), "new-value-never-shown");
    assert_eq!(store.list(key).await.unwrap()[0].pending, None);
    assert!(rotation.retire(&rotated).await.unwrap() >= 1);
    let err = store.get_version(key, &first).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("retired"), "{err}");

    // A token the vault refuses: Auth, nothing secret in the error.
    let stranger = builder(&vault, "stranger-token").build().unwrap();
    let err = stranger.get(key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    for text in [err.to_string(), format!("{err:?}"), format!("{stranger:?}")] {
        assert!(!text.contains("never-shown"), "{text}");
        assert!(!text.contains("stranger-token"), "{text}");
    }
    vault.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_built_from_config_gets_its_tokens_with_a_client_secret() {
    let vault = KeyVault::start(KeyVaultConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("vault.pem");
    std::fs::write(&ca, vault.ca_pem()).unwrap();
    let keys = moodbridge_auth::store::MemoryStore::new();
    keys.put(
        "azure/kv/client_secret",
        SecretString::from("sandbox-client-secret"),
    )
    .await
    .unwrap();
    let toml = format!(
        r#"
        [[integration]]
        id = "vault"
        kind = "azure-key-vault"
        [integration.settings]
        vault = "{}"
        prefix = "mb-"
        purge_on_delete = true
        verify_challenge_resource = false
        ca_file = "{}"
        credentials = {{ source = "client_secret", tenant = "{}", client_id = "sandbox-client", client_secret = "secret:azure/kv/client_secret", authority = "{}" }}
        "#,
        vault.url(),
        ca.display(),
        KeyVaultConfig::default().tenant,
        vault.authority()
    );
    let config = moodbridge_core::SdkConfig::from_toml(&toml).unwrap();
    let mut registry = moodbridge_core::Registry::new();
    registry
        .register(Arc::new(connector_azure::keyvault::KeyVaultFactory))
        .unwrap();
    let built = registry
        .build_all(&config, Some(Arc::new(keys)))
        .await
        .unwrap();
    let built = built.get("vault").unwrap();
    assert_eq!(built.integration.kind(), "azure-key-vault");
    let store = built
        .interfaces
        .get::<dyn CredentialStore>()
        .expect("a Key Vault integration is a CredentialStore");
    store
        .put("warehouse/password", SecretString::from("pw"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get("warehouse/password")
            .await
            .unwrap()
            .value
            .expose_secret(),
        "pw"
    );
    let health = built.integration.health_check().await;
    assert_eq!(
        health.status,
        moodbridge_core::HealthStatus::Up,
        "{health:?}"
    );

    // A wrong client secret: an Auth error that does not repeat it.
    let bad = toml.replace("secret:azure/kv/client_secret", "secret:azure/kv/wrong");
    let keys = moodbridge_auth::store::MemoryStore::new();
    keys.put(
        "azure/kv/wrong",
        SecretString::from("wrong-secret-never-shown"),
    )
    .await
    .unwrap();
    let built = registry
        .build_all(
            &moodbridge_core::SdkConfig::from_toml(&bad).unwrap(),
            Some(Arc::new(keys)),
        )
        .await
        .unwrap();
    let store = built
        .get("vault")
        .unwrap()
        .interfaces
        .get::<dyn CredentialStore>()
        .unwrap();
    let err = store.get("warehouse/password").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("wrong-secret-never-shown"), "{text}");
    }
    vault.stop().await;
}
