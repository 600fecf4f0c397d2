//! AWS Secrets Manager as a [`CredentialStore`] (feature `secrets`, kind
//! `aws-secrets-manager`), on the official `aws-sdk-secretsmanager`.
//!
//! - **Keys** are secret names, behind an optional prefix (`moodbridge/prod/` +
//!   `salesforce/client_secret`). Every key the core accepts is a valid name.
//! - **Versions** are Secrets Manager's version ids. Versions this store writes get a
//!   time-ordered UUID (v7) as their id, so their order holds even where creation times
//!   tie to the second; others are ordered by their creation date.
//! - **Current, previous, pending** are the staging labels `AWSCURRENT`, `AWSPREVIOUS`
//!   and `AWSPENDING`. Reads always name the label or the version: never an implicit
//!   read (an emulator answered those with the old version after a label move).
//! - **Retiring** records a cut in the secret's tag `moodbridge:retired-before` — the
//!   creation of `keep_from`, or of the current or pending version when older — and
//!   takes the labels off the versions before it; this store then refuses to read them.
//!   Secrets Manager keeps their values until it removes unlabelled versions itself
//!   (beyond 100 versions) — retire is a read barrier here, not an erasure.
//! - **Delete** schedules the deletion with the recovery window set
//!   ([`recovery_window_days`](SecretsManagerBuilder::recovery_window_days), default
//!   30 days, as the service) — [`restore`](SecretsManagerStore::restore) undoes it —
//!   or deletes at once with `0`. A key scheduled for deletion reads as `NotFound` with
//!   a hint to restore it.
//! - [`batch_get`](SecretsManagerStore::batch_get) reads the current value of up to 20
//!   keys in one request.
//!
//! ```no_run
//! use connector_aws::secrets::SecretsManagerStore;
//! use moodbridge_core::CredentialStore;
//! use secrecy::{ExposeSecret, SecretString};
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let store = SecretsManagerStore::builder().region("eu-west-1").prefix("moodbridge/prod/").build().await?;
//! store.put("salesforce/client_secret", SecretString::from("s3cr3t")).await?;
//! let secret = store.get("salesforce/client_secret").await?;
//! assert_eq!(secret.value.expose_secret(), "s3cr3t");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::Tag;
use moodbridge_core::credential::check_secret_key;
use moodbridge_core::integration::{
    Capabilities, Capability, HealthReport, HealthStatus, Interfaces, PlatformIntegration,
};
use moodbridge_core::redact::Secrets;
use moodbridge_core::{
    CredentialStore, Error, ErrorKind, Policy, PolicyConfig, Result, Secret, SecretMetadata,
    SecretVersion,
};
use secrecy::{ExposeSecret, SecretString};

use crate::sdk::{AwsCredentialSettings, AwsCredentials};

const PLATFORM: &str = "aws-secrets-manager";

/// The kind name of Secrets Manager stores.
pub const SECRETS_KIND: &str = "aws-secrets-manager";
/// The tag recording the retire cut: `<millis>:<version id>`.
pub const RETIRED_TAG: &str = "moodbridge:retired-before";
/// The most keys of one [`batch_get`](SecretsManagerStore::batch_get) request.
pub const MAX_BATCH_GET: usize = 20;

const CURRENT: &str = "AWSCURRENT";
const PREVIOUS: &str = "AWSPREVIOUS";
const PENDING: &str = "AWSPENDING";

/// Settings of an `aws-secrets-manager` integration, read from its config's `settings`.
///
/// ```toml
/// [[integration]]
/// id = "secrets"
/// kind = "aws-secrets-manager"
///
/// [integration.settings]
/// region = "eu-west-1"
/// prefix = "moodbridge/prod/"          # secret:salesforce/client_secret → moodbridge/prod/salesforce/client_secret
/// recovery_window_days = 30            # 7 to 30, or 0 to delete at once
/// # endpoint = "http://127.0.0.1:5000" # a local emulator
/// # credentials: the standard AWS chain when absent
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsManagerSettings {
    /// The AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// A custom endpoint (a local emulator).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Prepended to every key.
    #[serde(default)]
    pub prefix: String,
    /// Days a deleted key can be restored (7 to 30; 0 deletes at once). Default 30.
    #[serde(default = "default_recovery_window")]
    pub recovery_window_days: u32,
    /// Where the keys come from (default: the standard AWS chain).
    #[serde(default)]
    pub credentials: AwsCredentialSettings,
}

fn default_recovery_window() -> u32 {
    30
}

impl moodbridge_core::config::Validate for SecretsManagerSettings {
    fn validate_into(&self, v: &mut moodbridge_core::config::Validator) {
        crate::sdk::validate_endpoint(
            self.endpoint.as_deref(),
            "https://secretsmanager.eu-west-1.amazonaws.com",
            v,
        );
        if let Some(problem) = prefix_problem(&self.prefix) {
            v.problem("prefix", problem, "use letters, digits and / _ + = . @ -");
        }
        if self.recovery_window_days != 0 && !(7..=30).contains(&self.recovery_window_days) {
            v.problem(
                "recovery_window_days",
                format!("{} is outside 7 to 30", self.recovery_window_days),
                "use 7 to 30 days, or 0 to delete at once",
            );
        }
        self.credentials.validate_into(v);
    }
}

fn prefix_problem(prefix: &str) -> Option<String> {
    let bad = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)));
    match bad {
        Some(c) => Some(format!("holds {c:?}, which Secrets Manager names cannot")),
        None if prefix.len() > 256 => Some("is longer than 256 characters".to_owned()),
        None => None,
    }
}

/// The default policy: up to 4 attempts with backoff, 10 s per attempt.
pub fn default_policy_config() -> PolicyConfig {
    crate::sdk::messaging_policy_config(Duration::from_secs(10))
}

/// Settings of a [`SecretsManagerStore`]; made by [`SecretsManagerStore::builder`].
#[derive(Debug, Clone)]
pub struct SecretsManagerBuilder {
    id: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    prefix: String,
    recovery_window_days: u32,
    credentials: AwsCredentials,
    policy: Option<Policy>,
}

impl SecretsManagerBuilder {
    /// The integration id (default `aws-secrets-manager:<prefix or "all">`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The AWS region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A custom endpoint (a local emulator).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Prepended to every key to make the secret's name.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Days a deleted key can be restored (7 to 30), or 0 to delete at once. Default 30.
    pub fn recovery_window_days(mut self, days: u32) -> Self {
        self.recovery_window_days = days;
        self
    }

    /// Where the keys come from (default: the standard AWS chain).
    pub fn credentials(mut self, credentials: AwsCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Run every call through `policy`.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Checks the settings and makes the client (no request is made).
    ///
    /// # Errors
    /// A bad prefix or recovery window, as [`Config`](ErrorKind::Config) errors.
    pub async fn build(self) -> Result<SecretsManagerStore> {
        if let Some(problem) = prefix_problem(&self.prefix) {
            return Err(Error::config(format!(
                "Secrets Manager prefix {:?} {problem}",
                self.prefix
            ))
            .with_connector(PLATFORM));
        }
        if self.recovery_window_days != 0 && !(7..=30).contains(&self.recovery_window_days) {
            return Err(Error::config(format!(
                "Secrets Manager recovery window of {} days is outside 7 to 30",
                self.recovery_window_days
            ))
            .with_connector(PLATFORM)
            .with_hint("use 7 to 30 days, or 0 to delete at once"));
        }
        let name = if self.prefix.is_empty() {
            "all".to_owned()
        } else {
            self.prefix
                .trim_end_matches('/')
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
        };
        let parts = crate::sdk::client_parts(
            PLATFORM,
            &name,
            self.id.as_deref(),
            self.region.as_deref(),
            self.endpoint.as_deref(),
            &self.credentials,
            self.policy.as_ref(),
            default_policy_config(),
        )
        .await?;
        let mut config = aws_sdk_secretsmanager::config::Builder::from(&parts.sdk)
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled());
        if let Some(provider) = crate::sdk::remembering(&parts.sdk, &parts.secrets) {
            config = config.credentials_provider(provider);
        }
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint.clone());
        }
        Ok(SecretsManagerStore {
            inner: Arc::new(Inner {
                id: parts.id,
                client: Client::from_conf(config.build()),
                policy: parts.policy,
                secrets: parts.secrets,
                settings: self,
            }),
        })
    }
}

/// AWS Secrets Manager as a credential store. See the [module docs](self). Cheap to
/// clone.
#[derive(Clone)]
pub struct SecretsManagerStore {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    client: Client,
    policy: Policy,
    secrets: Secrets,
    settings: SecretsManagerBuilder,
}

impl fmt::Debug for SecretsManagerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsManagerStore")
            .field("id", &self.inner.id)
            .field("prefix", &self.inner.settings.prefix)
            .field("region", &self.inner.settings.region)
            .finish_non_exhaustive()
    }
}

/// The place of a version in time: its id's timestamp when it is a UUID v7 (the ones this
/// store writes), else its creation date; the id breaks ties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Age {
    millis: i64,
    id: String,
}

impl Age {
    fn of(id: &str, created: Option<&aws_smithy_types::DateTime>) -> Age {
        let v7 = uuid::Uuid::parse_str(id)
            .ok()
            .filter(|u| u.get_version_num() == 7)
            .and_then(|u| u.get_timestamp())
            .map(|t| {
                let (secs, nanos) = t.to_unix();
                i64::try_from(secs).unwrap_or(i64::MAX) * 1000 + i64::from(nanos / 1_000_000)
            });
        let millis = v7
            .or_else(|| created.and_then(|d| d.to_millis().ok()))
            .unwrap_or(0);
        Age {
            millis,
            id: id.to_owned(),
        }
    }

    fn tag(&self) -> String {
        format!("{}:{}", self.millis, self.id)
    }

    fn from_tag(tag: &str) -> Option<Age> {
        let (millis, id) = tag.split_once(':')?;
        Some(Age {
            millis: millis.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

fn system_time(d: Option<&aws_smithy_types::DateTime>) -> SystemTime {
    d.and_then(|d| SystemTime::try_from(*d).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// What `DescribeSecret` says of a key: its labels by version and its retire cut.
struct Described {
    stages: HashMap<String, Vec<String>>,
    retired_before: Option<Age>,
    /// Scheduled for deletion.
    deleted: bool,
}

impl Described {
    fn labelled(&self, stage: &str) -> Option<&str> {
        self.stages
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(v, _)| v.as_str())
    }

    /// Whether version `age` is retired (before the cut, neither current nor pending).
    fn retired(&self, age: &Age) -> bool {
        let labels = self.stages.get(&age.id);
        let kept = labels.is_some_and(|l| l.iter().any(|s| s == CURRENT || s == PENDING));
        !kept && self.retired_before.as_ref().is_some_and(|cut| age < cut)
    }
}

/// The error kind of a Secrets Manager error code.
fn service_kind(status: u16, code: Option<&str>) -> ErrorKind {
    match code {
        Some("ResourceNotFoundException") => ErrorKind::NotFound,
        Some("ResourceExistsException" | "PreconditionNotMetException") => ErrorKind::Conflict,
        Some("InvalidRequestException") => ErrorKind::Conflict,
        Some(
            "InvalidParameterException"
            | "MalformedPolicyDocumentException"
            | "LimitExceededException"
            | "EncryptionFailure"
            | "ValidationException",
        ) => ErrorKind::InvalidInput,
        Some("DecryptionFailure") => ErrorKind::Forbidden,
        Some("AccessDeniedException") => ErrorKind::Forbidden,
        Some("ThrottlingException" | "TooManyRequestsException") => {
            ErrorKind::RateLimited { retry_after: None }
        }
        Some(
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "IncompleteSignature",
        ) => ErrorKind::Auth,
        Some("InternalServiceError") => ErrorKind::Unavailable,
        _ => moodbridge_core::raw::kind_of_status(status),
    }
}

fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "check the key and the store's prefix and region",
        ErrorKind::Forbidden => {
            "the credentials lack a secretsmanager: permission on this secret (or kms:Decrypt on its key)"
        }
        ErrorKind::Auth => "check the access key id and secret",
        ErrorKind::Conflict => {
            "the secret may be scheduled for deletion: restore it, or wait for the recovery window"
        }
        ErrorKind::RateLimited { .. } => "Secrets Manager is throttling: cache reads, or slow down",
        _ => "",
    }
}

impl SecretsManagerStore {
    /// A builder (region and credentials from the AWS chain unless set).
    pub fn builder() -> SecretsManagerBuilder {
        SecretsManagerBuilder {
            id: None,
            region: None,
            endpoint: None,
            prefix: String::new(),
            recovery_window_days: 30,
            credentials: AwsCredentials::default(),
            policy: None,
        }
    }

    /// The secret name of `key`.
    pub fn secret_name(&self, key: &str) -> String {
        format!("{}{key}", self.inner.settings.prefix)
    }

    /// One SDK call through the policy, its error mapped.
    async fn call<T, E, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        idempotent: bool,
        f: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<
                    T,
                    aws_sdk_secretsmanager::error::SdkError<
                        E,
                        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
                    >,
                >,
            >,
        E: aws_sdk_secretsmanager::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let errors = crate::sdk::ServiceErrors {
            platform: PLATFORM,
            service: "Secrets Manager",
            kind_of: service_kind,
            hint_of: hint,
        };
        crate::sdk::call(
            &self.inner.policy,
            &self.inner.secrets,
            errors,
            key,
            operation,
            idempotent,
            f,
        )
        .await
    }

    /// A deleted key reads as missing, with the way back.
    fn deleted(&self, key: &str, err: Error) -> Error {
        if err.kind() == ErrorKind::Conflict && err.message().contains("deleted") {
            Error::not_found(format!("secret {key} is scheduled for deletion"))
                .with_connector(PLATFORM)
                .with_hint("restore it (SecretsManagerStore::restore) within its recovery window, or put it again after")
        } else {
            err
        }
    }

    async fn describe(&self, key: &str) -> Result<Described> {
        let name = self.secret_name(key);
        let out = self
            .call("describe_secret", key, true, || {
                self.inner.client.describe_secret().secret_id(&name).send()
            })
            .await?;
        Ok(Described {
            stages: out.version_ids_to_stages().cloned().unwrap_or_default(),
            retired_before: out
                .tags()
                .iter()
                .find(|t| t.key() == Some(RETIRED_TAG))
                .and_then(|t| Age::from_tag(t.value()?)),
            deleted: out.deleted_date().is_some(),
        })
    }

    /// Reads `key` at `stage` or `version`.
    async fn read(&self, key: &str, stage: Option<&str>, version: Option<&str>) -> Result<Secret> {
        let name = self.secret_name(key);
        let out = self
            .call("get_secret_value", key, true, || {
                self.inner
                    .client
                    .get_secret_value()
                    .secret_id(&name)
                    .set_version_stage(stage.map(str::to_owned))
                    .set_version_id(version.map(str::to_owned))
                    .send()
            })
            .await
            .map_err(|e| self.deleted(key, e))?;
        let id = out.version_id().unwrap_or_default().to_owned();
        let value = out.secret_string().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("secret {key} holds binary data, not text"),
            )
            .with_connector(PLATFORM)
            .with_hint("store text secrets (SecretString) for MoodBridge")
        })?;
        // The value is remembered so that no later error can repeat it.
        self.inner.secrets.remember([value]);
        Ok(Secret {
            key: key.to_owned(),
            version: SecretVersion::new(id),
            value: SecretString::from(value.to_owned()),
            created_at: system_time(out.created_date()),
        })
    }

    /// Writes `value` as a new version of `key` with `stages` (the service makes it
    /// current when none are given); creates the secret when `create` and it is missing.
    async fn write(&self, key: &str, value: &SecretString, pending: bool) -> Result<SecretVersion> {
        check_secret_key(key)?;
        let name = self.secret_name(key);
        // The version id is the request's idempotency token: a retried request is not a
        // second version.
        let token = uuid::Uuid::now_v7().to_string();
        self.inner.secrets.remember([value.expose_secret()]);
        if value.expose_secret().is_empty() {
            return Err(Error::invalid_input(format!(
                "secret {key}: Secrets Manager cannot hold an empty value"
            ))
            .with_connector(PLATFORM)
            .with_hint("delete the key instead, or store a placeholder your code understands"));
        }
        // The service refuses a new version of a key scheduled for deletion; say so the
        // same way everywhere (an emulator accepted it).
        let exists = match self.describe(key).await {
            Ok(d) if d.deleted => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("secret {key} is scheduled for deletion"),
                )
                .with_connector(PLATFORM)
                .with_hint("restore it (SecretsManagerStore::restore) to write new versions"));
            }
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !exists {
            if pending {
                return Err(
                    Error::not_found(format!("no secret {key} to stage a version of"))
                        .with_connector(PLATFORM)
                        .with_hint("put the first version; stage the ones that replace it"),
                );
            }
            let created = self
                .call("create_secret", key, true, || {
                    self.inner
                        .client
                        .create_secret()
                        .name(&name)
                        .secret_string(value.expose_secret())
                        .client_request_token(&token)
                        .send()
                })
                .await;
            match created {
                Ok(out) => return Ok(SecretVersion::new(out.version_id().unwrap_or(&token))),
                // Created meanwhile by another writer: a new version of it, below.
                Err(e) if e.kind() == ErrorKind::Conflict && !e.message().contains("deleted") => {}
                Err(e) => return Err(self.deleted(key, e)),
            }
        }
        let out = self
            .call("put_secret_value", key, true, || {
                let mut request = self
                    .inner
                    .client
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(value.expose_secret())
                    .client_request_token(&token);
                if pending {
                    request = request.version_stages(PENDING);
                }
                request.send()
            })
            .await
            .map_err(|e| self.deleted(key, e))?;
        Ok(SecretVersion::new(out.version_id().unwrap_or(&token)))
    }

    /// Moves `stage` from `from` to `to` (either may be absent).
    async fn move_stage(
        &self,
        key: &str,
        stage: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<()> {
        let name = self.secret_name(key);
        self.call("update_secret_version_stage", key, true, || {
            self.inner
                .client
                .update_secret_version_stage()
                .secret_id(&name)
                .version_stage(stage)
                .set_remove_from_version_id(from.map(str::to_owned))
                .set_move_to_version_id(to.map(str::to_owned))
                .send()
        })
        .await
        .map(|_| ())
    }

    /// Every version of `key` with its age and labels, oldest first.
    async fn versions(&self, key: &str) -> Result<Vec<(Age, Vec<String>)>> {
        let name = self.secret_name(key);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .call("list_secret_version_ids", key, true, || {
                    self.inner
                        .client
                        .list_secret_version_ids()
                        .secret_id(&name)
                        .include_deprecated(true)
                        .set_next_token(token.clone())
                        .send()
                })
                .await?;
            for v in page.versions() {
                if let Some(id) = v.version_id() {
                    out.push((Age::of(id, v.created_date()), v.version_stages().to_vec()));
                }
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Cancels the scheduled deletion of `key`: it reads again, with all its versions.
    ///
    /// # Errors
    /// `NotFound` for a key that does not exist (or was deleted for good).
    pub async fn restore(&self, key: &str) -> Result<()> {
        check_secret_key(key)?;
        let name = self.secret_name(key);
        self.call("restore_secret", key, true, || {
            self.inner.client.restore_secret().secret_id(&name).send()
        })
        .await
        .map(|_| ())
    }

    /// The current values of `keys` in requests of 20: one outcome per key, in order
    /// (`NotFound` for a missing or deleted key).
    ///
    /// # Errors
    /// A bad key, or a failed request.
    pub async fn batch_get(&self, keys: &[&str]) -> Result<Vec<Result<Secret>>> {
        for key in keys {
            check_secret_key(key)?;
        }
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_BATCH_GET) {
            let names: Vec<String> = chunk.iter().map(|k| self.secret_name(k)).collect();
            let page = self
                .call("batch_get_secret_value", "(batch)", true, || {
                    self.inner
                        .client
                        .batch_get_secret_value()
                        .set_secret_id_list(Some(names.clone()))
                        .send()
                })
                .await?;
            let mut found: HashMap<String, Secret> = HashMap::new();
            for v in page.secret_values() {
                let (Some(name), Some(value)) = (v.name(), v.secret_string()) else {
                    continue;
                };
                self.inner.secrets.remember([value]);
                let key = name
                    .strip_prefix(&self.inner.settings.prefix)
                    .unwrap_or(name)
                    .to_owned();
                found.insert(
                    name.to_owned(),
                    Secret {
                        key,
                        version: SecretVersion::new(v.version_id().unwrap_or_default()),
                        value: SecretString::from(value.to_owned()),
                        created_at: system_time(v.created_date()),
                    },
                );
            }
            let errors: HashMap<&str, String> = page
                .errors()
                .iter()
                .filter_map(|e| {
                    Some((
                        e.secret_id()?,
                        self.inner
                            .secrets
                            .clean(e.error_code().unwrap_or("an error")),
                    ))
                })
                .collect();
            for (key, name) in chunk.iter().zip(&names) {
                out.push(found.remove(name).ok_or_else(|| {
                    let why = errors.get(name.as_str()).cloned().unwrap_or_default();
                    Error::not_found(format!("no secret {key} ({why})")).with_connector(PLATFORM)
                }));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl CredentialStore for SecretsManagerStore {
    async fn get(&self, key: &str) -> Result<Secret> {
        check_secret_key(key)?;
        self.read(key, Some(CURRENT), None).await
    }

    async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret> {
        check_secret_key(key)?;
        let missing =
            || Error::not_found(format!("no secret {key} {version}")).with_connector(PLATFORM);
        // Version ids are 32 to 64 characters: another is no version.
        if !(32..=64).contains(&version.as_str().len()) {
            return Err(missing());
        }
        let secret = match self.read(key, None, Some(version.as_str())).await {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::InvalidInput => {
                return Err(missing());
            }
            Err(e) => return Err(e),
        };
        let described = self.describe(key).await?;
        let age = Age::of(version.as_str(), None);
        let age = if age.millis == 0 {
            Age {
                millis: secret
                    .created_at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .unwrap_or(0),
                id: age.id,
            }
        } else {
            age
        };
        if described.retired(&age) {
            return Err(
                Error::not_found(format!("secret {key} {version} was retired"))
                    .with_connector(PLATFORM)
                    .with_hint("read the current version, or a version not yet retired"),
            );
        }
        Ok(secret)
    }

    async fn put(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        self.write(key, &value, false).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_secret_key(key)?;
        let name = self.secret_name(key);
        let days = self.inner.settings.recovery_window_days;
        let done = self
            .call("delete_secret", key, true, || {
                let request = self.inner.client.delete_secret().secret_id(&name);
                if days == 0 {
                    request.force_delete_without_recovery(true).send()
                } else {
                    request.recovery_window_in_days(i64::from(days)).send()
                }
            })
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            // Deleting a key already scheduled for deletion.
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<SecretMetadata>> {
        let full = self.secret_name(prefix);
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut request = self
                .inner
                .client
                .list_secrets()
                .set_next_token(token.clone());
            if !full.is_empty() {
                request = request.filters(
                    aws_sdk_secretsmanager::types::Filter::builder()
                        .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                        .values(&full)
                        .build(),
                );
            }
            let page = self
                .call("list_secrets", prefix, true, || request.clone().send())
                .await?;
            for s in page.secret_list() {
                if let Some(name) = s.name()
                    && name.starts_with(&full)
                    && s.deleted_date().is_none()
                {
                    names.push(name.to_owned());
                }
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let key = name
                .strip_prefix(&self.inner.settings.prefix)
                .unwrap_or(&name)
                .to_owned();
            let described = self.describe(&key).await?;
            let versions = self.versions(&key).await?;
            let Some(current) = described.labelled(CURRENT).map(SecretVersion::new) else {
                continue;
            };
            // When the current version was written, from the version list: listing reads
            // no secret value.
            let updated_at = versions
                .iter()
                .find(|(age, _)| age.id == current.as_str())
                .map(|(age, _)| {
                    SystemTime::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(age.millis).unwrap_or(0))
                })
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(SecretMetadata {
                pending: described.labelled(PENDING).map(SecretVersion::new),
                readable: versions
                    .iter()
                    .filter(|(age, _)| !described.retired(age))
                    .map(|(age, _)| SecretVersion::new(&age.id))
                    .collect(),
                current,
                updated_at,
                key,
            });
        }
        Ok(out)
    }

    async fn retire(&self, key: &str, keep_from: &SecretVersion) -> Result<usize> {
        check_secret_key(key)?;
        let versions = self.versions(key).await.map_err(|e| self.deleted(key, e))?;
        let Some((cut, _)) = versions
            .iter()
            .find(|(age, _)| age.id == keep_from.as_str())
        else {
            return Err(
                Error::not_found(format!("no secret {key} {keep_from}")).with_connector(PLATFORM)
            );
        };
        let described = self.describe(key).await?;
        let before = versions
            .iter()
            .filter(|(age, _)| !described.retired(age))
            .count();
        // The cut is a point in time: every version before it is retired. It stops at
        // the current and the pending version, which stay readable after they are
        // replaced, and it never moves back.
        let mut cut = cut.clone();
        for (age, stages) in &versions {
            if stages.iter().any(|s| s == CURRENT || s == PENDING) && *age < cut {
                cut = age.clone();
            }
        }
        let cut = match &described.retired_before {
            Some(old) if *old > cut => old.clone(),
            _ => cut,
        };
        let after = Described {
            retired_before: Some(cut.clone()),
            ..described
        };
        let name = self.secret_name(key);
        let tag = Tag::builder().key(RETIRED_TAG).value(cut.tag()).build();
        self.call("tag_resource", key, true, || {
            self.inner
                .client
                .tag_resource()
                .secret_id(&name)
                .tags(tag.clone())
                .send()
        })
        .await?;
        // The service's own previous label leaves a retired version.
        for (age, stages) in &versions {
            if stages.iter().any(|s| s == PREVIOUS) && after.retired(age) {
                self.move_stage(key, PREVIOUS, Some(&age.id), None).await?;
            }
        }
        let remaining = versions
            .iter()
            .filter(|(age, _)| !after.retired(age))
            .count();
        Ok(before.saturating_sub(remaining))
    }

    fn can_stage(&self) -> bool {
        true
    }

    async fn stage(&self, key: &str, value: SecretString) -> Result<SecretVersion> {
        self.write(key, &value, true).await
    }

    async fn promote(&self, key: &str, version: &SecretVersion) -> Result<()> {
        check_secret_key(key)?;
        let described = self.describe(key).await?;
        let current = described.labelled(CURRENT).map(str::to_owned);
        if current.as_deref() == Some(version.as_str()) {
            return Ok(());
        }
        // Readable (exists, not retired), or refused.
        self.get_version(key, version).await?;
        self.move_stage(key, CURRENT, current.as_deref(), Some(version.as_str()))
            .await?;
        if described.labelled(PENDING) == Some(version.as_str()) {
            self.move_stage(key, PENDING, Some(version.as_str()), None)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl PlatformIntegration for SecretsManagerStore {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        SECRETS_KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none().with(Capability::Secrets))
    }

    async fn health_check(&self) -> HealthReport {
        let started = std::time::Instant::now();
        let probe = self
            .call("list_secrets", "(health)", true, || {
                self.inner.client.list_secrets().max_results(1).send()
            })
            .await;
        match probe {
            Ok(_) => HealthReport::new(
                HealthStatus::Up,
                started.elapsed(),
                "Secrets Manager answers",
            ),
            Err(e) => HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Interfaces::new().with::<dyn CredentialStore>(self)
    }
}

/// Builds `aws-secrets-manager` credential stores from [`SecretsManagerSettings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretsManagerFactory;

#[async_trait]
impl moodbridge_core::registry::IntegrationFactory for SecretsManagerFactory {
    fn kind(&self) -> &'static str {
        SECRETS_KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        default_policy_config()
    }

    fn validate(
        &self,
        config: &moodbridge_core::IntegrationConfig,
        v: &mut moodbridge_core::config::Validator,
    ) {
        config.check_settings::<SecretsManagerSettings>(v);
    }

    async fn build(
        &self,
        ctx: moodbridge_core::registry::BuildContext,
    ) -> Result<Arc<dyn PlatformIntegration>> {
        let s: SecretsManagerSettings = ctx.settings()?;
        let mut builder = SecretsManagerStore::builder()
            .id(&ctx.config.id)
            .policy(ctx.policy.clone())
            .prefix(&s.prefix)
            .recovery_window_days(s.recovery_window_days)
            .credentials(s.credentials.resolve(&ctx).await?);
        if let Some(region) = &s.region {
            builder = builder.region(region);
        }
        if let Some(endpoint) = &s.endpoint {
            builder = builder.endpoint(endpoint);
        }
        Ok(Arc::new(builder.build().await?))
    }
}
