//! Azure Key Vault secrets as a [`CredentialStore`] (feature `keyvault`, kind
//! `azure-key-vault`), on the official `azure_security_keyvault_secrets` crate with an
//! Entra ID `TokenCredential`.
//!
//! - **Names.** Key Vault names hold letters, digits and dashes only (1–127, compared
//!   without case). A key's name is the store's prefix followed by the key with every
//!   other character turned into `-`: `salesforce/prod/client_secret` →
//!   `salesforce-prod-client-secret`. The exact key is kept in the tag `moodbridge-key`,
//!   so `list` gives keys back as written; a second key that maps to a name already
//!   holding another key is refused (`Conflict`).
//! - **Versions** are Key Vault's version ids (32 hex digits). The ones this store
//!   writes carry their order in the tag `moodbridge-order` (a time-ordered UUID), since
//!   Key Vault's creation times are whole seconds.
//! - **Current and pending.** Key Vault makes its newest version current; a pending
//!   version ([`stage`](CredentialStore::stage)) is the newest one tagged
//!   `moodbridge-stage = pending`, and while it waits this store reads the newest
//!   version before it. [`promote`](CredentialStore::promote) takes the tag off. Only
//!   the newest version can be promoted.
//! - **Retiring** disables the versions (Key Vault refuses to read a disabled version:
//!   `403`), from the oldest up to `keep_from`, or up to the current or the pending
//!   version when older.
//! - **Delete** is Key Vault's soft delete: the name stays taken until
//!   [`recover`](KeyVaultStore::recover) or a purge. With
//!   [`purge_on_delete`](KeyVaultBuilder::purge_on_delete), the store purges right after
//!   deleting (refused by vaults with purge protection).
//!
//! ```no_run
//! use std::sync::Arc;
//! use connector_azure::keyvault::KeyVaultStore;
//! use moodbridge_core::CredentialStore;
//! use secrecy::SecretString;
//!
//! # async fn run(credential: Arc<dyn azure_core::credentials::TokenCredential>) -> moodbridge_core::Result<()> {
//! let store = KeyVaultStore::builder("https://moodbridge-prod.vault.azure.net")
//!     .credential(credential)
//!     .build()?;
//! store.put("salesforce/prod/client_secret", SecretString::from("s3cr3t")).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RequestContent};
use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions,
    SecretClientListSecretPropertiesVersionsOptions, SecretClientUpdateSecretPropertiesOptions,
    SecretProperties, SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use moodbridge_core::credential::check_secret_key;
use moodbridge_core::integration::{
    Capabilities, Capability, HealthReport, HealthStatus, Interfaces, PlatformIntegration,
};
use moodbridge_core::redact::Secrets;
use moodbridge_core::resilience::{Operation, Policy, PolicyConfig, RetryConfig};
use moodbridge_core::{
    CredentialStore, Error, ErrorKind, Result, Secret, SecretMetadata, SecretVersion,
};
use secrecy::{ExposeSecret, SecretString};

use crate::storage::{RememberingCredential, storage_error};

const PLATFORM: &str = "azure-key-vault";

/// The kind name of Key Vault stores.
pub const KEYVAULT_KIND: &str = "azure-key-vault";
/// The tag holding a secret's MoodBridge key.
pub const KEY_TAG: &str = "moodbridge-key";
/// The tag holding a version's place in time (a UUID v7).
pub const ORDER_TAG: &str = "moodbridge-order";
/// The tag marking a pending version.
pub const STAGE_TAG: &str = "moodbridge-stage";
/// The longest Key Vault name.
pub const MAX_NAME: usize = 127;

/// The Key Vault name of `key` behind `prefix`: letters and digits kept, every other
/// character a dash.
///
/// ```
/// use connector_azure::keyvault::vault_name;
/// assert_eq!(vault_name("", "salesforce/prod/client_secret").unwrap(), "salesforce-prod-client-secret");
/// assert_eq!(vault_name("moodbridge-", "a.b").unwrap(), "moodbridge-a-b");
/// assert!(vault_name("", &"k".repeat(128)).is_err());
/// ```
///
/// # Errors
/// A name over 127 characters, as `InvalidInput`.
pub fn vault_name(prefix: &str, key: &str) -> Result<String> {
    let name: String = prefix
        .chars()
        .chain(
            key.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }),
        )
        .collect();
    if name.len() > MAX_NAME {
        return Err(Error::invalid_input(format!(
            "secret key {key:?} makes a Key Vault name of {} characters (at most {MAX_NAME})",
            name.len()
        ))
        .with_connector(PLATFORM)
        .with_hint("use a shorter key or prefix"));
    }
    Ok(name)
}

fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() < MAX_NAME
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(
            Error::config(format!("Key Vault prefix {prefix:?} is not valid"))
                .with_connector(PLATFORM)
                .with_hint("use letters, digits and dashes only"),
        )
    }
}

/// The default policy: up to 4 attempts with backoff from 200 ms (Key Vault throttles
/// with 429 and `Retry-After`), 30 s per attempt.
pub fn default_policy_config() -> PolicyConfig {
    PolicyConfig {
        retry: Some(RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
            budget: None,
        }),
        attempt_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    }
}

/// Settings of a [`KeyVaultStore`]; made by [`KeyVaultStore::builder`].
#[derive(Clone)]
pub struct KeyVaultBuilder {
    vault: String,
    id: Option<String>,
    prefix: String,
    credential: Option<Arc<dyn TokenCredential>>,
    http_client: Option<Arc<dyn azure_core::http::HttpClient>>,
    policy: Option<Policy>,
    purge_on_delete: bool,
    verify_challenge_resource: bool,
}

impl fmt::Debug for KeyVaultBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultBuilder")
            .field("vault", &self.vault)
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("purge_on_delete", &self.purge_on_delete)
            .finish_non_exhaustive()
    }
}

impl KeyVaultBuilder {
    /// The integration id (default `azure-key-vault:<vault host's first label>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Prepended to every name (letters, digits and dashes).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The Entra ID credential (`azure_identity`'s `ManagedIdentityCredential`,
    /// `ClientSecretCredential` …). Required.
    pub fn credential(mut self, credential: Arc<dyn TokenCredential>) -> Self {
        self.credential = Some(credential);
        self
    }

    /// The HTTP client every request goes through (a proxy, a private CA …).
    pub fn http_client(mut self, client: Arc<dyn azure_core::http::HttpClient>) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Run every request through `policy` (default: [`default_policy_config`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Purge a key right after deleting it, so its name can be used again at once
    /// (default false: Key Vault's soft delete, recoverable).
    pub fn purge_on_delete(mut self, yes: bool) -> Self {
        self.purge_on_delete = yes;
        self
    }

    /// Whether the authentication challenge's resource must match the vault's domain
    /// (default true; a local vault on 127.0.0.1 needs false).
    pub fn verify_challenge_resource(mut self, yes: bool) -> Self {
        self.verify_challenge_resource = yes;
        self
    }

    /// Checks the settings and makes the client (no request is made).
    ///
    /// # Errors
    /// A vault URL that is not https, a bad prefix, no credential.
    pub fn build(self) -> Result<KeyVaultStore> {
        check_prefix(&self.prefix)?;
        let url = url::Url::parse(&self.vault).map_err(|e| {
            Error::config(format!("Key Vault URL {:?} is not a URL: {e}", self.vault))
                .with_connector(PLATFORM)
        })?;
        if url.scheme() != "https" {
            return Err(Error::config(format!("Key Vault URL {:?} is not https", self.vault))
                .with_connector(PLATFORM)
                .with_hint("Key Vault takes bearer tokens over https only: use https://<vault>.vault.azure.net"));
        }
        let credential = self.credential.clone().ok_or_else(|| {
            Error::config("Key Vault store has no credential")
                .with_connector(PLATFORM)
                .with_hint("set credential(...) with an Entra ID TokenCredential")
        })?;
        let secrets = Secrets::new();
        let credential: Arc<dyn TokenCredential> = Arc::new(RememberingCredential {
            inner: credential,
            secrets: secrets.clone(),
        });
        let host = url
            .host_str()
            .unwrap_or("vault")
            .split('.')
            .next()
            .unwrap_or("vault")
            .to_owned();
        let id = self.id.clone().unwrap_or_else(|| {
            format!(
                "{PLATFORM}:{}",
                host.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
            )
        });
        moodbridge_core::integration::check_id(&id, PLATFORM)?;
        let policy = match &self.policy {
            Some(p) => p.clone(),
            None => Policy::from_config(id.clone(), &default_policy_config())?,
        };
        let mut client_options = ClientOptions {
            retry: azure_core::http::RetryOptions::none(),
            ..Default::default()
        };
        if let Some(http) = &self.http_client {
            client_options.transport = Some(azure_core::http::Transport::new(http.clone()));
        }
        let options = SecretClientOptions {
            client_options,
            verify_challenge_resource: Some(self.verify_challenge_resource),
            ..Default::default()
        };
        let client = SecretClient::new(url.as_str(), credential, Some(options)).map_err(|e| {
            storage_error(
                "Azure Key Vault",
                PLATFORM,
                &secrets,
                "create client",
                None,
                e,
            )
        })?;
        Ok(KeyVaultStore {
            inner: Arc::new(Inner {
                id,
                client,
                policy,
                secrets,
                settings: self,
            }),
        })
    }
}

/// Azure Key Vault secrets as a credential store. See the [module docs](self). Cheap to
/// clone.
#[derive(Clone)]
pub struct KeyVaultStore {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    client: SecretClient,
    policy: Policy,
    secrets: Secrets,
    settings: KeyVaultBuilder,
}

impl fmt::Debug for KeyVaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultStore")
            .field("id", &self.inner.id)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// One version as listed: its id, place in time, and state.
#[derive(Debug, Clone)]
struct Listed {
    version: String,
    /// The MoodBridge key the version was written for (its `moodbridge-key` tag).
    owner: Option<String>,
    order: (i64, String),
    enabled: bool,
    pending: bool,
    created: SystemTime,
}

fn order_of(
    version: &str,
    tags: Option<&HashMap<String, String>>,
    created: Option<time::OffsetDateTime>,
) -> (i64, String) {
    let v7 = tags
        .and_then(|t| t.get(ORDER_TAG))
        .and_then(|o| uuid::Uuid::parse_str(o).ok())
        .filter(|u| u.get_version_num() == 7);
    match v7.and_then(|u| Some((u, u.get_timestamp()?))) {
        Some((u, ts)) => {
            let (secs, nanos) = ts.to_unix();
            (
                i64::try_from(secs).unwrap_or(i64::MAX) * 1000 + i64::from(nanos / 1_000_000),
                u.to_string(),
            )
        }
        None => (
            created.map(|c| c.unix_timestamp() * 1000).unwrap_or(0),
            version.to_owned(),
        ),
    }
}

fn kind_hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "check the key, the store's prefix and the vault URL",
        ErrorKind::Forbidden => {
            "the identity lacks a secrets permission on this vault (an access policy or the Key Vault Secrets Officer role), or the version is disabled"
        }
        ErrorKind::Auth => "check the Entra ID credential and its tenant",
        ErrorKind::Conflict => {
            "the name is deleted but recoverable: recover it, or purge it to reuse the name"
        }
        ErrorKind::RateLimited { .. } => "Key Vault is throttling: cache reads, or slow down",
        _ => "",
    }
}

impl KeyVaultStore {
    /// A builder for the vault at `vault_url` (`https://<vault>.vault.azure.net`).
    pub fn builder(vault_url: impl Into<String>) -> KeyVaultBuilder {
        KeyVaultBuilder {
            vault: vault_url.into(),
            id: None,
            prefix: String::new(),
            credential: None,
            http_client: None,
            policy: None,
            purge_on_delete: false,
            verify_challenge_resource: true,
        }
    }

    /// The official client, for what the trait does not cover (its calls do not go
    /// through the store's policy).
    pub fn client(&self) -> &SecretClient {
        &self.inner.client
    }

    /// The Key Vault name of `key` in this store.
    ///
    /// # Errors
    /// As [`vault_name`].
    pub fn name_of(&self, key: &str) -> Result<String> {
        vault_name(&self.inner.settings.prefix, key)
    }

    /// One request through the policy, its error mapped (the name in the message).
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        request: &'static str,
        name: &str,
        f: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = azure_core::Result<T>>,
    {
        let secrets = &self.inner.secrets;
        self.inner
            .policy
            .call_as(
                Operation::new(format!("azure_key_vault.{operation}")),
                || {
                    let fut = f();
                    async move {
                        fut.await.map_err(|e| {
                            let err = storage_error(
                                "Azure Key Vault",
                                PLATFORM,
                                secrets,
                                request,
                                Some(name),
                                e,
                            );
                            let hint = kind_hint(err.kind());
                            if hint.is_empty() {
                                err
                            } else {
                                err.with_hint(hint)
                            }
                        })
                    }
                },
            )
            .await
    }

    /// Every version of `name`, oldest first (`None` when the name does not exist).
    async fn versions(&self, name: &str) -> Result<Option<Vec<Listed>>> {
        let listed = self
            .call(
                "list_secret_versions",
                "Get Secret Versions",
                name,
                || async {
                    let pager = self.inner.client.list_secret_properties_versions(
                        name,
                        Some(SecretClientListSecretPropertiesVersionsOptions {
                            maxresults: Some(25),
                            ..Default::default()
                        }),
                    )?;
                    pager.try_collect::<Vec<SecretProperties>>().await
                },
            )
            .await;
        let items = match listed {
            Ok(items) => items,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out: Vec<Listed> = items
            .into_iter()
            .filter_map(|p| {
                let version = p.resource_id().ok()?.version?;
                let attributes = p.attributes.clone().unwrap_or_default();
                Some(Listed {
                    owner: p.tags.as_ref().and_then(|t| t.get(KEY_TAG).cloned()),
                    order: order_of(&version, p.tags.as_ref(), attributes.created),
                    enabled: attributes.enabled.unwrap_or(true),
                    pending: p
                        .tags
                        .as_ref()
                        .and_then(|t| t.get(STAGE_TAG))
                        .is_some_and(|s| s == "pending"),
                    created: attributes
                        .created
                        .map(SystemTime::from)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    version,
                })
            })
            .collect();
        out.sort_by(|a, b| a.order.cmp(&b.order));
        Ok(Some(out))
    }

    /// The current and the pending version among `versions`.
    fn current_and_pending(versions: &[Listed]) -> (Option<&Listed>, Option<&Listed>) {
        let newest = versions.last();
        match newest {
            Some(n) if n.pending => (versions.iter().rev().find(|v| !v.pending), Some(n)),
            other => (other, None),
        }
    }

    /// Reads `version` (the newest when `None`) of `name`, with the version's tags. A
    /// disabled version reads as retired.
    async fn read(
        &self,
        key: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<(Secret, HashMap<String, String>)> {
        let got = self
            .call("get_secret", "Get Secret", name, || async {
                self.inner
                    .client
                    .get_secret(
                        name,
                        Some(SecretClientGetSecretOptions {
                            secret_version: version.map(str::to_owned),
                            ..Default::default()
                        }),
                    )
                    .await?
                    .into_model()
            })
            .await;
        let got = match got {
            Ok(got) => got,
            // Key Vault refuses to read a disabled version (403): retired, when the
            // version list says it is disabled; else a permission problem.
            Err(e) if e.kind() == ErrorKind::Forbidden => {
                let versions = self.versions(name).await?.unwrap_or_default();
                let disabled = versions
                    .iter()
                    .any(|v| !v.enabled && version.is_none_or(|id| v.version == id));
                if !disabled {
                    return Err(e);
                }
                return Err(Error::not_found(format!(
                    "secret {key} version {} was retired",
                    version.unwrap_or("(newest)")
                ))
                .with_connector(PLATFORM)
                .with_hint("read the current version, or a version not yet retired"));
            }
            Err(e) => return Err(e),
        };
        let tags = got.tags.clone().unwrap_or_default();
        if let Some(owner) = tags.get(KEY_TAG)
            && owner != key
        {
            return Err(Error::not_found(format!(
                "no secret {key}: Key Vault name {name} holds key {owner}"
            ))
            .with_connector(PLATFORM));
        }
        let value = got.value.clone().unwrap_or_default();
        self.inner.secrets.remember([value.as_str()]);
        let id = got.resource_id().map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("Key Vault gave a secret id it cannot parse: {e}"),
            )
            .with_connector(PLATFORM)
        })?;
        let secret = Secret {
            key: key.to_owned(),
            version: SecretVersion::new(id.version.unwrap_or_default()),
            value: SecretString::from(value),
            created_at: got
                .attributes
                .and_then(|a| a.created)
                .map(SystemTime::from)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        };
        Ok((secret, tags))
    }

    async fn write(&self, key: &str, value: &SecretString, pending: bool) -> Result<SecretVersion> {
        check_secret_key(key)?;
        let name = self.name_of(key)?;
        let existing = self.versions(&name).await?;
        match (&existing, pending) {
            (None, true) => {
                return Err(
                    Error::not_found(format!("no secret {key} to stage a version of"))
                        .with_connector(PLATFORM)
                        .with_hint("put the first version; stage the ones that replace it"),
                );
            }
            (Some(versions), _) => check_owner(key, &name, versions)?,
            (None, false) => {}
        }
        // A pending version staged before is pending no more.
        if pending
            && let Some(versions) = &existing
            && let (_, Some(old)) = Self::current_and_pending(versions)
        {
            self.set_tags(key, &name, &old.version, None).await?;
        }
        let mut tags = HashMap::from([
            (KEY_TAG.to_owned(), key.to_owned()),
            (ORDER_TAG.to_owned(), uuid::Uuid::now_v7().to_string()),
        ]);
        if pending {
            tags.insert(STAGE_TAG.to_owned(), "pending".to_owned());
        }
        self.inner.secrets.remember([value.expose_secret()]);
        let set = self
            .call("set_secret", "Set Secret", &name, || {
                let parameters = SetSecretParameters {
                    value: Some(value.expose_secret().to_owned()),
                    tags: Some(tags.clone()),
                    ..Default::default()
                };
                let content: azure_core::Result<RequestContent<SetSecretParameters>> =
                    parameters.try_into();
                let name = &name;
                async move {
                    self.inner
                        .client
                        .set_secret(name, content?, None)
                        .await?
                        .into_model()
                }
            })
            .await?;
        let id = set.resource_id().map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("Key Vault gave a secret id it cannot parse: {e}"),
            )
        })?;
        Ok(SecretVersion::new(id.version.unwrap_or_default()))
    }

    /// Sets the stage tag of `version` (`None` removes it), keeping its other tags.
    async fn set_tags(
        &self,
        key: &str,
        name: &str,
        version: &str,
        stage: Option<&str>,
    ) -> Result<()> {
        let (_, mut tags) = self.read(key, name, Some(version)).await?;
        tags.insert(KEY_TAG.to_owned(), key.to_owned());
        match stage {
            Some(s) => tags.insert(STAGE_TAG.to_owned(), s.to_owned()),
            None => tags.remove(STAGE_TAG),
        };
        self.update(name, version, Some(tags), None).await
    }

    /// `PATCH` of a version's tags and enabled flag.
    async fn update(
        &self,
        name: &str,
        version: &str,
        tags: Option<HashMap<String, String>>,
        enabled: Option<bool>,
    ) -> Result<()> {
        self.call("update_secret", "Update Secret", name, || {
            let parameters = UpdateSecretPropertiesParameters {
                tags: tags.clone(),
                secret_attributes: enabled.map(|enabled| SecretAttributes {
                    enabled: Some(enabled),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let content: azure_core::Result<RequestContent<UpdateSecretPropertiesParameters>> =
                parameters.try_into();
            async move {
                self.inner
                    .client
                    .update_secret_properties(
                        name,
                        content?,
                        Some(SecretClientUpdateSecretPropertiesOptions {
                            secret_version: Some(version.to_owned()),
                            ..Default::default()
                        }),
                    )
                    .await
                    .map(|_| ())
            }
        })
        .await
    }

    /// Recovers a deleted key (with all its versions).
    ///
    /// # Errors
    /// `NotFound` for a key that is not deleted.
    pub async fn recover(&self, key: &str) -> Result<()> {
        check_secret_key(key)?;
        let name = self.name_of(key)?;
        self.call(
            "recover_deleted_secret",
            "Recover Deleted Secret",
            &name,
            || self.inner.client.recover_deleted_secret(&name, None),
        )
        .await
        .map(|_| ())
    }

    /// Purges a deleted key for good, freeing its name.
    ///
    /// # Errors
    /// `NotFound` for a key that is not deleted; `Forbidden` on a vault with purge
    /// protection.
    pub async fn purge(&self, key: &str) -> Result<()> {
        check_secret_key(key)?;
        let name = self.name_of(key)?;
        self.call(
            "purge_deleted_secret",
            "Purge Deleted Secret",
            &name,
            || self.inner.client.purge_deleted_secret(&name, None),
        )
        .await
        .map(|_| ())
    }
}

/// Refuses a name whose newest version holds another key (from the version list: no
/// request of its own).
fn check_owner(key: &str, name: &str, versions: &[Listed]) -> Result<()> {
    match versions.last().and_then(|v| v.owner.as_deref()) {
        Some(owner) if owner != key => Err(Error::new(
            ErrorKind::Conflict,
            format!("secret key {key} maps to Key Vault name {name}, which holds key {owner}"),
        )
        .with_connector(PLATFORM)
        .with_hint(
            "keys that differ only in punctuation or case share a Key Vault name: rename one",
        )),
        _ => Ok(()),
    }
}

fn no_version(key: &str, version: &SecretVersion) -> Error {
    Error::not_found(format!("no secret {key} {version}")).with_connector(PLATFORM)
}

#[async_trait]
impl CredentialStore for KeyVaultStore {
    async fn get(&self, key: &str) -> Result<Secret> {
        check_secret_key(key)?;
        let name = self.name_of(key)?;
        let (newest, tags) = match self.read(key, &name, None).await {
            Ok(found) => found,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::not_found(format!("no secret {key}"))
                    .with_connector(PLATFORM)
                    .with_hint(kind_hint(ErrorKind::NotFound)));
            }
            Err(e) => return Err(e),
        };
        if tags.get(STAGE_TAG).is_none_or(|s| s != "pending") {
            return Ok(newest);
        }
        // The newest version is pending: the current one is the newest before it.
        let versions = self.versions(&name).await?.unwrap_or_default();
        match Self::current_and_pending(&versions) {
            (Some(current), _) => Ok(self.read(key, &name, Some(&current.version)).await?.0),
            (None, _) => Err(
                Error::not_found(format!("no current version of secret {key}"))
                    .with_connector(PLATFORM)
                    .with_hint("promote its pending version"),
            ),
        }
    }

    async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret> {
        check_secret_key(key)?;
        let name = self.name_of(key)?;
        let id = version.as_str();
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(no_version(key, version));
        }
        match self.read(key, &name, Some(id)).await {
            Ok((secret, _)) => Ok(secret),
            Err(e) if e.kind() == ErrorKind::NotFound && !e.message().contains("retired") => {
                Err(no_version(key, version))
            }
            Err(e) => Err(e),
        }
    }

    async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        self.write(key, &value, false).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_secret_key(key)?;
        let name = self.name_of(key)?;
        let deleted = self
            .call("delete_secret", "Delete Secret", &name, || {
                self.inner.client.delete_secret(&name, None)
            })
            .await;
        match deleted {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        if self.inner.settings.purge_on_delete {
            // Key Vault finishes a delete in the background: purge once it shows.
            let mut wait = Duration::from_millis(100);
            for _ in 0..20 {
                match self.purge(key).await {
                    Ok(()) => return Ok(()),
                    Err(e)
                        if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::Conflict =>
                    {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => return Err(e),
                }
            }
            return self.purge(key).await;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>> {
        let all = self
            .call("list_secrets", "Get Secrets", "(all)", || async {
                let pager = self.inner.client.list_secret_properties(None)?;
                pager.try_collect::<Vec<SecretProperties>>().await
            })
            .await?;
        let store_prefix = &self.inner.settings.prefix;
        let mut keys: Vec<(String, String)> = all
            .iter()
            .filter_map(|p| {
                let name = p.resource_id().ok()?.name;
                if !name
                    .to_ascii_lowercase()
                    .starts_with(&store_prefix.to_ascii_lowercase())
                {
                    return None;
                }
                let key = p
                    .tags
                    .as_ref()
                    .and_then(|t| t.get(KEY_TAG).cloned())
                    .unwrap_or_else(|| name[store_prefix.len()..].to_owned());
                key.starts_with(prefix).then_some((key, name))
            })
            .collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for (key, name) in keys {
            let Some(versions) = self.versions(&name).await? else {
                continue;
            };
            let (current, pending) = Self::current_and_pending(&versions);
            let Some(current) = current else { continue };
            out.push(SecretMetadata {
                key,
                current: SecretVersion::new(&current.version),
                pending: pending.map(|p| SecretVersion::new(&p.version)),
                readable: versions
                    .iter()
                    .filter(|v| v.enabled)
                    .map(|v| SecretVersion::new(&v.version))
                    .collect(),
                updated_at: current.created,
            });
        }
        Ok(out)
    }

    async fn retire(&self, key: &str, keep_from: &SecretVersion) -> Result<usize> {
        check_secret_key(key)?;
        let name = self.name_of(key)?;
        let versions = self
            .versions(&name)
            .await?
            .ok_or_else(|| no_version(key, keep_from))?;
        let Some(keep) = versions.iter().find(|v| v.version == keep_from.as_str()) else {
            return Err(no_version(key, keep_from));
        };
        let (current, pending) = Self::current_and_pending(&versions);
        let mut cut = keep.order.clone();
        for protected in [current, pending].into_iter().flatten() {
            if protected.order < cut {
                cut = protected.order.clone();
            }
        }
        let mut retired = 0;
        for v in versions.iter().filter(|v| v.enabled && v.order < cut) {
            self.update(&name, &v.version, None, Some(false)).await?;
            retired += 1;
        }
        Ok(retired)
    }

    fn can_stage(&self) -> bool {
        true
    }

    async fn stage(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        self.write(key, &value, true).await
    }

    async fn promote(&self, key: &str, version: &SecretVersion) -> Result<()> {
        check_secret_key(key)?;
        let name = self.name_of(key)?;
        let versions = self
            .versions(&name)
            .await?
            .ok_or_else(|| no_version(key, version))?;
        let (current, _) = Self::current_and_pending(&versions);
        if current.is_some_and(|c| c.version == version.as_str()) {
            return Ok(());
        }
        let Some(newest) = versions
            .last()
            .filter(|v| v.version == version.as_str() && v.enabled)
        else {
            return Err(match versions.iter().find(|v| v.version == version.as_str() && v.enabled) {
                Some(_) => Error::new(
                    ErrorKind::Conflict,
                    format!("{version} of {key} is not Key Vault's newest version"),
                )
                .with_connector(PLATFORM)
                .with_hint("Key Vault makes its newest version current: put the value again to make it current"),
                None => no_version(key, version),
            });
        };
        self.set_tags(key, &name, &newest.version, None).await
    }
}

#[async_trait]
impl PlatformIntegration for KeyVaultStore {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        KEYVAULT_KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::Secrets))
    }

    async fn health_check(&self) -> HealthReport {
        let started = std::time::Instant::now();
        let probe = self
            .call("list_secrets", "Get Secrets", "(health)", || async {
                let pager = self.inner.client.list_secret_properties(None)?;
                let mut pages = pager.into_pages();
                match futures::StreamExt::next(&mut pages).await {
                    Some(page) => page.map(|_| ()),
                    None => Ok(()),
                }
            })
            .await;
        match probe {
            Ok(()) => HealthReport::new(HealthStatus::Up, started.elapsed(), "Key Vault answers"),
            Err(e) => HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new().with::<dyn CredentialStore>(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;

    #[test]
    fn names_keep_letters_and_digits_and_dash_the_rest() {
        assert_eq!(
            vault_name("mb-", "Tokens/SF_prod.v2").unwrap(),
            "mb-Tokens-SF-prod-v2"
        );
        let err = vault_name("", &"a".repeat(200)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(check_prefix("bad_prefix").is_err());
    }

    #[test]
    fn an_http_vault_or_no_credential_is_a_config_error() {
        let err = KeyVaultStore::builder("http://vault.example")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.hint().contains("https"), "{err:?}");
        let err = KeyVaultStore::builder("https://vault.example")
            .build()
            .unwrap_err();
        assert!(err.message().contains("credential"), "{err}");
    }
}

/// Settings of an `azure-key-vault` integration, read from its config's `settings`.
///
/// ```toml
/// [[integration]]
/// id = "vault"
/// kind = "azure-key-vault"
///
/// [integration.settings]
/// vault = "https://contoso-prod.vault.azure.net"
/// prefix = "moodbridge-"                 # letters, digits and dashes
/// purge_on_delete = false                # true: free a deleted name at once
/// # The app registration's client secret; an env: reference when this vault is the
/// # host's credential store (it cannot read its own secret from itself).
/// credentials = { source = "client_secret", tenant = "contoso.onmicrosoft.com", client_id = "…", client_secret = "env:AZURE_CLIENT_SECRET" }
/// # ca_file = "/etc/ssl/private-ca.pem"  # an extra trusted root (a proxy's, a local vault's)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVaultSettings {
    /// The vault URL (`https://<vault>.vault.azure.net`).
    pub vault: String,
    /// Prepended to every name.
    #[serde(default)]
    pub prefix: String,
    /// Purge a key right after deleting it.
    #[serde(default)]
    pub purge_on_delete: bool,
    /// How the store gets its Entra ID tokens.
    pub credentials: KeyVaultCredentialSettings,
    /// A PEM file of an extra trusted root certificate.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Whether the challenge's resource must match the vault's domain (default true;
    /// false for a local vault).
    #[serde(default = "default_true")]
    pub verify_challenge_resource: bool,
}

fn default_true() -> bool {
    true
}

/// How an `azure-key-vault` integration gets its tokens, tagged by `source`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyVaultCredentialSettings {
    /// An app registration's client secret (the client credentials grant).
    ClientSecret {
        /// The directory (tenant) id or domain.
        tenant: String,
        /// The application (client) id.
        client_id: String,
        /// The client secret.
        client_secret: moodbridge_core::SecretRef,
        /// The authority host (default `https://login.microsoftonline.com`).
        #[serde(default)]
        authority: Option<String>,
    },
}

impl moodbridge_core::config::Validate for KeyVaultSettings {
    fn validate_into(&self, v: &mut moodbridge_core::config::Validator) {
        if !self.vault.starts_with("https://") {
            v.problem(
                "vault",
                format!("{:?} is not an https URL", self.vault),
                "use https://<vault>.vault.azure.net",
            );
        }
        if let Err(e) = check_prefix(&self.prefix) {
            v.problem("prefix", e.message().to_owned(), e.hint().to_owned());
        }
        let KeyVaultCredentialSettings::ClientSecret {
            tenant, client_id, ..
        } = &self.credentials;
        if tenant.is_empty() {
            v.problem(
                "credentials.tenant",
                "is empty",
                "give the directory (tenant) id",
            );
        }
        if client_id.is_empty() {
            v.problem(
                "credentials.client_id",
                "is empty",
                "give the application (client) id",
            );
        }
    }
}

/// Builds `azure-key-vault` credential stores from [`KeyVaultSettings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyVaultFactory;

#[async_trait]
impl moodbridge_core::registry::IntegrationFactory for KeyVaultFactory {
    fn kind(&self) -> &'static str {
        KEYVAULT_KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        default_policy_config()
    }

    fn validate(
        &self,
        config: &moodbridge_core::IntegrationConfig,
        v: &mut moodbridge_core::config::Validator,
    ) {
        config.check_settings::<KeyVaultSettings>(v);
    }

    async fn build(
        &self,
        ctx: moodbridge_core::registry::BuildContext,
    ) -> Result<Arc<dyn PlatformIntegration>> {
        let s: KeyVaultSettings = ctx.settings()?;
        let KeyVaultCredentialSettings::ClientSecret {
            tenant,
            client_id,
            client_secret,
            authority,
        } = &s.credentials;
        let secret = ctx.resolve(client_secret).await?;
        let credential = match authority {
            Some(authority) => {
                crate::entra::EntraClientSecret::at_authority(authority, tenant, client_id, secret)?
            }
            None => crate::entra::EntraClientSecret::new(tenant, client_id, secret)?,
        };
        let mut builder = KeyVaultStore::builder(&s.vault)
            .id(&ctx.config.id)
            .policy(ctx.policy.clone())
            .prefix(&s.prefix)
            .purge_on_delete(s.purge_on_delete)
            .verify_challenge_resource(s.verify_challenge_resource)
            .credential(Arc::new(credential));
        if let Some(path) = &s.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::config(format!(
                    "Key Vault ca_file {} cannot be read: {e}",
                    path.display()
                ))
                .with_connector(PLATFORM)
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Error::config(format!(
                    "Key Vault ca_file {} is not a PEM certificate: {e}",
                    path.display()
                ))
                .with_connector(PLATFORM)
            })?;
            let http = reqwest::Client::builder()
                .add_root_certificate(cert)
                .build()
                .map_err(|e| Error::internal(format!("an HTTP client: {e}")))?;
            builder = builder.http_client(Arc::new(http));
        }
        Ok(Arc::new(builder.build()?))
    }
}
