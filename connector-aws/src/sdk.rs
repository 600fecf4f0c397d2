//! What every AWS service of the crate shares: where the keys come from
//! ([`AwsCredentials`], from config [`AwsCredentialSettings`]), the SDK configuration
//! with the SDK's own retries off (the integration's `Policy` retries), and SDK errors
//! mapped to core errors that never repeat a secret.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::region::Region;
use moodbridge_core::config::Validator;
use moodbridge_core::redact::Secrets;
use moodbridge_core::registry::BuildContext;
use moodbridge_core::{CredentialStore, Error, ErrorKind, Result, SecretRef};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Where an AWS client's credentials come from.
#[derive(Clone, Default)]
pub enum AwsCredentials {
    /// The standard AWS chain: environment, shared profile, SSO, web identity, ECS, IMDS.
    #[default]
    DefaultChain,
    /// Fixed keys.
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: SecretString,
        /// Session token of temporary credentials.
        session_token: Option<SecretString>,
    },
    /// Keys in a MoodBridge [`CredentialStore`]: `<prefix>/access_key_id`,
    /// `<prefix>/secret_access_key` and optionally `<prefix>/session_token`, read again
    /// every `refresh` so rotated keys are picked up.
    Store {
        /// The store.
        store: Arc<dyn CredentialStore>,
        /// Key prefix, e.g. `aws/prod`.
        prefix: String,
        /// How long keys read from the store are used before being read again.
        refresh: Duration,
    },
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsCredentials::DefaultChain => f.write_str("DefaultChain"),
            AwsCredentials::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"[REDACTED]")
                .finish_non_exhaustive(),
            AwsCredentials::Store {
                prefix, refresh, ..
            } => f
                .debug_struct("Store")
                .field("prefix", prefix)
                .field("refresh", refresh)
                .finish_non_exhaustive(),
        }
    }
}

/// Where an AWS integration's keys come from, tagged by `source` in its settings.
///
/// ```toml
/// credentials = { source = "static", access_key_id = "AKIA…", secret_access_key = "secret:aws/prod/secret_access_key" }
/// # credentials = { source = "store", prefix = "aws/prod", refresh = "5m" }
/// # absent: the standard AWS chain
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum AwsCredentialSettings {
    /// The standard AWS chain: environment, profile, SSO, web identity, ECS, IMDS.
    #[default]
    Chain,
    /// Fixed keys.
    Static {
        /// The access key id (not a secret).
        access_key_id: String,
        /// The secret access key.
        secret_access_key: SecretRef,
        /// The session token of temporary keys.
        #[serde(default)]
        session_token: Option<SecretRef>,
    },
    /// Keys in the host's credential store under `<prefix>/access_key_id`,
    /// `<prefix>/secret_access_key` (and `<prefix>/session_token`), read again every
    /// `refresh` so rotations are picked up.
    Store {
        /// The key prefix, e.g. `aws/prod`.
        prefix: String,
        /// How long keys are used before being read again (default 5 minutes).
        #[serde(default = "default_refresh", with = "humantime_serde")]
        refresh: Duration,
    },
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

impl AwsCredentialSettings {
    /// Report this setting's problems under `credentials`.
    pub fn validate_into(&self, v: &mut Validator) {
        if let AwsCredentialSettings::Store { prefix, refresh } = self {
            if prefix.trim().is_empty() {
                v.problem(
                    "credentials.prefix",
                    "is empty",
                    "name the credential store prefix, e.g. \"aws/prod\"",
                );
            }
            if refresh.is_zero() {
                v.problem("credentials.refresh", "is zero", "use e.g. \"5m\"");
            }
        }
    }

    /// The credentials these settings name, their secrets resolved through `ctx`.
    ///
    /// # Errors
    /// A secret reference that does not resolve; `source = "store"` with no credential
    /// store in the host ([`Config`](ErrorKind::Config)).
    pub async fn resolve(&self, ctx: &BuildContext) -> Result<AwsCredentials> {
        Ok(match self {
            AwsCredentialSettings::Chain => AwsCredentials::DefaultChain,
            AwsCredentialSettings::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => AwsCredentials::Static {
                access_key_id: access_key_id.clone(),
                secret_access_key: ctx.resolve(secret_access_key).await?,
                session_token: match session_token {
                    Some(r) => Some(ctx.resolve(r).await?),
                    None => None,
                },
            },
            AwsCredentialSettings::Store { prefix, refresh } => AwsCredentials::Store {
                store: ctx.credentials.clone().ok_or_else(|| {
                    Error::config("credentials.source = \"store\" needs a credential store")
                        .with_hint("name one in the config's `credentials` key")
                })?,
                prefix: prefix.clone(),
                refresh: *refresh,
            },
        })
    }
}

/// Check an endpoint setting: an http(s) URL.
#[cfg(any(
    feature = "s3",
    feature = "sqs",
    feature = "sns",
    feature = "secrets",
    feature = "dynamodb"
))]
pub(crate) fn validate_endpoint(endpoint: Option<&str>, example: &str, v: &mut Validator) {
    if let Some(endpoint) = endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        v.problem(
            "endpoint",
            format!("{endpoint:?} is not an http(s) URL"),
            format!("give a URL such as {example:?} or \"http://127.0.0.1:5000\""),
        );
    }
}

/// The most message attributes SQS and SNS take on a message.
pub const MAX_ATTRIBUTES: usize = 10;

/// Why SQS or SNS would refuse `attributes` (sent as `String` attributes), or `Ok`: at
/// most ten, names of letters, digits, `_`, `-` and `.` not starting with `AWS.` or
/// `Amazon.`, no empty value.
#[cfg(any(feature = "sqs", feature = "sns"))]
pub(crate) fn check_attributes(
    attributes: &std::collections::BTreeMap<String, String>,
) -> std::result::Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "{} attributes: at most {MAX_ATTRIBUTES} are taken on a message",
            attributes.len()
        ));
    }
    for (name, value) in attributes {
        let lower = name.to_ascii_lowercase();
        if name.is_empty()
            || name.len() > 256
            || lower.starts_with("aws.")
            || lower.starts_with("amazon.")
            || name.starts_with('.')
            || name.ends_with('.')
            || name.contains("..")
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "attribute name {name:?} is not one AWS takes (letters, digits, _ - and ., not starting with AWS. or Amazon.)"
            ));
        }
        if value.is_empty() {
            return Err(format!(
                "attribute {name} is empty: AWS takes no empty values"
            ));
        }
    }
    Ok(())
}

/// The bytes SQS and SNS count for a message: its body and its attributes' names, types
/// (`String`) and values.
#[cfg(any(feature = "sqs", feature = "sns"))]
pub(crate) fn message_size(message: &moodbridge_core::queue::OutgoingMessage) -> usize {
    message.body.len()
        + message
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + "String".len())
            .sum::<usize>()
}

/// Check a queue or topic setting `field` (`given`, whose name is `name`): 1 to `max`
/// letters, digits, `-` and `_`, with `.fifo` for a FIFO one.
#[cfg(any(feature = "sqs", feature = "sns"))]
pub(crate) fn validate_name(
    v: &mut Validator,
    field: &str,
    what: &str,
    given: &str,
    name: &str,
    max: usize,
) {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if base.is_empty()
        || base.len() > max
        || !base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        v.problem(
            field,
            format!("{given:?} is not an {what} name"),
            format!("a name is 1 to {max} letters, digits, - and _ (with .fifo for a FIFO one)"),
        );
    }
}

/// Reads AWS keys from a [`CredentialStore`] for the SDK.
struct StoreProvider {
    store: Arc<dyn CredentialStore>,
    prefix: String,
    refresh: Duration,
}

impl fmt::Debug for StoreProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreProvider")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl StoreProvider {
    async fn load(&self) -> std::result::Result<Credentials, CredentialsError> {
        let read = |name: &'static str| {
            let key = format!("{}/{name}", self.prefix);
            async move { self.store.get(&key).await }
        };
        let id = read("access_key_id")
            .await
            .map_err(CredentialsError::provider_error)?;
        let secret = read("secret_access_key")
            .await
            .map_err(CredentialsError::provider_error)?;
        let token = match read("session_token").await {
            Ok(token) => Some(token.value.expose_secret().to_owned()),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(CredentialsError::provider_error(e)),
        };
        Ok(Credentials::new(
            id.value.expose_secret(),
            secret.value.expose_secret(),
            token,
            Some(SystemTime::now() + self.refresh),
            "moodbridge-credential-store",
        ))
    }
}

impl ProvideCredentials for StoreProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}

/// Remembers the secret key and session token of every credential it provides.
#[derive(Debug)]
pub(crate) struct Remembering {
    inner: aws_credential_types::provider::SharedCredentialsProvider,
    secrets: Secrets,
}

impl ProvideCredentials for Remembering {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let credentials = self.inner.provide_credentials().await?;
            self.secrets.remember(
                std::iter::once(credentials.secret_access_key()).chain(credentials.session_token()),
            );
            Ok(credentials)
        })
    }
}

/// The SDK configuration for `region` (with an endpoint and no region: the region
/// chain's, or `us-east-1`) and `credentials`.
pub(crate) async fn load_config(
    region: Option<&str>,
    has_endpoint: bool,
    credentials: &AwsCredentials,
) -> aws_types::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    match (region, has_endpoint) {
        (Some(region), _) => loader = loader.region(Region::new(region.to_owned())),
        (None, true) => {
            let chain = aws_config::default_provider::region::DefaultRegionChain::builder().build();
            let region = chain
                .region()
                .await
                .unwrap_or_else(|| Region::new("us-east-1"));
            loader = loader.region(region);
        }
        (None, false) => {}
    }
    match credentials {
        AwsCredentials::DefaultChain => {}
        AwsCredentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id.clone(),
                secret_access_key.expose_secret(),
                session_token.as_ref().map(|t| t.expose_secret().to_owned()),
                None,
                "moodbridge-static",
            ));
        }
        AwsCredentials::Store {
            store,
            prefix,
            refresh,
        } => {
            loader = loader.credentials_provider(StoreProvider {
                store: store.clone(),
                prefix: prefix.clone(),
                refresh: *refresh,
            });
        }
    }
    loader.load().await
}

/// `sdk`'s credentials provider, remembering in `secrets` whatever it hands the signer,
/// so that no error made of an answer can repeat it.
pub(crate) fn remembering(sdk: &aws_types::SdkConfig, secrets: &Secrets) -> Option<Remembering> {
    sdk.credentials_provider().map(|inner| Remembering {
        inner,
        secrets: secrets.clone(),
    })
}

/// Map an SDK error of `what` (`"S3 get_object of \"key\""`) to a core [`Error`]:
/// `kind_of` names the kind of an answer's status and error code, `hint_of` the advice
/// for a kind. The service's message is kept with every remembered secret cleaned out.
pub(crate) fn map_sdk_error<E>(
    secrets: &Secrets,
    platform: &'static str,
    what: String,
    err: SdkError<E, HttpResponse>,
    kind_of: fn(u16, Option<&str>) -> ErrorKind,
    hint_of: fn(ErrorKind) -> &'static str,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut said = None;
    let (kind, status, code) = match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().map(str::to_owned);
            said = ctx.err().message().map(|m| secrets.clean(m));
            (kind_of(status, code.as_deref()), Some(status), code)
        }
        SdkError::TimeoutError(_) => (ErrorKind::Timeout, None, None),
        SdkError::DispatchFailure(_) => (ErrorKind::Unavailable, None, None),
        SdkError::ResponseError(_) => (ErrorKind::Protocol, None, None),
        SdkError::ConstructionFailure(_) => (ErrorKind::InvalidInput, None, None),
        _ => (ErrorKind::Internal, None, None),
    };
    let mut detail = match (&code, status) {
        (Some(code), Some(status)) => format!("{code} (HTTP {status})"),
        (None, Some(status)) => format!("HTTP {status}"),
        _ => secrets.clean(&DisplayErrorContext(&err).to_string()),
    };
    if let Some(said) = said.filter(|m| !m.is_empty()) {
        detail = format!("{detail}: {said}");
    }
    let hint = hint_of(kind);
    let mut out = Error::new(kind, format!("{what} failed: {detail}"))
        .with_connector(platform)
        // Not the SDK error itself: its Debug holds the raw answer, which may repeat the
        // signed request.
        .with_source(secrets.scrubbed_source(&err));
    if let Some(status) = status {
        out = out.with_context("http_status", status);
    }
    if !hint.is_empty() {
        out = out.with_hint(hint);
    }
    out
}

/// How a service's errors read: its error codes' kinds and the advice for a kind.
#[cfg(any(
    feature = "sqs",
    feature = "sns",
    feature = "secrets",
    feature = "logs",
    feature = "dynamodb"
))]
#[derive(Clone, Copy)]
pub(crate) struct ServiceErrors {
    /// The connector kind (`sqs`, `sns`): the errors' `connector`, the operations'
    /// prefix.
    pub(crate) platform: &'static str,
    /// The service's name in messages (`SQS`).
    pub(crate) service: &'static str,
    pub(crate) kind_of: fn(u16, Option<&str>) -> ErrorKind,
    pub(crate) hint_of: fn(ErrorKind) -> &'static str,
}

/// What a messaging client is made of: its integration id, its policy, the secrets it
/// remembers and the SDK configuration.
#[cfg(any(
    feature = "sqs",
    feature = "sns",
    feature = "secrets",
    feature = "logs",
    feature = "dynamodb"
))]
pub(crate) struct ClientParts {
    pub(crate) id: String,
    pub(crate) policy: moodbridge_core::Policy,
    pub(crate) secrets: Secrets,
    pub(crate) sdk: aws_types::SdkConfig,
}

/// The parts of a client of resource `name`: the id (`<platform>:<name>` unless given),
/// the policy (`default_policy` unless given), the SDK configuration.
#[cfg(any(
    feature = "sqs",
    feature = "sns",
    feature = "secrets",
    feature = "logs",
    feature = "dynamodb"
))]
#[allow(
    clippy::too_many_arguments,
    reason = "the builders' fields, passed through"
)]
pub(crate) async fn client_parts(
    platform: &str,
    name: &str,
    id: Option<&str>,
    region: Option<&str>,
    endpoint: Option<&str>,
    credentials: &AwsCredentials,
    policy: Option<&moodbridge_core::Policy>,
    default_policy: moodbridge_core::PolicyConfig,
) -> Result<ClientParts> {
    let sdk = load_config(region, endpoint.is_some(), credentials).await;
    let id = id.map_or_else(|| format!("{platform}:{name}"), str::to_owned);
    moodbridge_core::integration::check_id(&id, platform)?;
    let policy = match policy {
        Some(p) => p.clone(),
        None => moodbridge_core::Policy::from_config(id.clone(), &default_policy)?,
    };
    Ok(ClientParts {
        id,
        policy,
        secrets: Secrets::new(),
        sdk,
    })
}

/// The default policy of the messaging kinds: up to 4 attempts with backoff, each
/// attempt at most `attempt_timeout`.
#[cfg(any(
    feature = "sqs",
    feature = "sns",
    feature = "secrets",
    feature = "logs",
    feature = "dynamodb"
))]
pub(crate) fn messaging_policy_config(attempt_timeout: Duration) -> moodbridge_core::PolicyConfig {
    moodbridge_core::PolicyConfig {
        retry: Some(moodbridge_core::RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
            budget: None,
        }),
        attempt_timeout: Some(attempt_timeout),
        ..Default::default()
    }
}

/// One SDK call of `operation` on `resource` through `policy`, its error mapped with
/// `errors`.
#[cfg(any(
    feature = "sqs",
    feature = "sns",
    feature = "secrets",
    feature = "logs",
    feature = "dynamodb"
))]
#[allow(clippy::too_many_arguments, reason = "a call's whole context")]
pub(crate) async fn call<T, E, F, Fut>(
    policy: &moodbridge_core::Policy,
    secrets: &Secrets,
    errors: ServiceErrors,
    resource: &str,
    operation: &'static str,
    idempotent: bool,
    f: F,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut op = moodbridge_core::Operation::new(format!("{}.{operation}", errors.platform));
    if !idempotent {
        op = op.non_idempotent();
    }
    policy
        .call_as(op, || {
            let fut = f();
            async move {
                fut.await.map_err(|e| {
                    map_sdk_error(
                        secrets,
                        errors.platform,
                        format!("{} {operation} on {resource}", errors.service),
                        e,
                        errors.kind_of,
                        errors.hint_of,
                    )
                })
            }
        })
        .await
}
