//! What the Storage clients (Blob, Queue) share: how requests are authorized, the
//! client options every official client is built with, and their error mapping.

// Key Vault alone uses the credentials and the error mapping, not the client parts.
#![cfg_attr(not(any(feature = "blob", feature = "queue")), allow(unused_imports))]

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Url};
use moodbridge_core::raw::kind_of_status;
use moodbridge_core::redact::Secrets;
use moodbridge_core::{Error, ErrorKind, Result};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::{ConnectionString, SharedKey, SharedKeyPolicy};

/// The service API version sent by default; Azurite 3.35 accepts it.
pub const DEFAULT_API_VERSION: &str = "2025-11-05";

/// How requests are authorized.
#[derive(Clone)]
pub enum AzureCredentials {
    /// Shared Key: account name and key.
    SharedKey(SharedKey),
    /// A SAS token (query string without `?`) appended to every request.
    Sas(SecretString),
    /// Entra ID through any `TokenCredential` (`azure_identity`'s
    /// `ManagedIdentityCredential`, `ClientSecretCredential`, `DeveloperToolsCredential` …;
    /// https endpoints only).
    Entra(Arc<dyn TokenCredential>),
}

impl AzureCredentials {
    /// The credentials a connection string carries: its account key, else its SAS.
    ///
    /// ```
    /// use connector_azure::auth::ConnectionString;
    /// use connector_azure::storage::AzureCredentials;
    /// let cs = ConnectionString::parse("UseDevelopmentStorage=true")?;
    /// assert!(matches!(AzureCredentials::from_connection_string(&cs), AzureCredentials::SharedKey(_)));
    /// # Ok::<_, moodbridge_core::Error>(())
    /// ```
    pub fn from_connection_string(connection_string: &ConnectionString) -> Self {
        match (&connection_string.key, &connection_string.sas) {
            (Some(key), _) => AzureCredentials::SharedKey(SharedKey {
                account: connection_string.account.clone(),
                key: key.clone(),
            }),
            (None, Some(sas)) => AzureCredentials::Sas(sas.clone()),
            // `ConnectionString::parse` refuses a string with neither; one built by
            // hand without either carries an empty SAS, which the service refuses.
            (None, None) => AzureCredentials::Sas(SecretString::from(String::new())),
        }
    }
}

impl fmt::Debug for AzureCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureCredentials::SharedKey(key) => f.debug_tuple("SharedKey").field(key).finish(),
            AzureCredentials::Sas(_) => f.write_str("Sas([REDACTED])"),
            AzureCredentials::Entra(_) => f.write_str("Entra(..)"),
        }
    }
}

/// An SDK error of `service` (`Azure Blob`, `Azure Queue`) as a core error of
/// `platform`; `request` names the REST operation (`Put Blob`) in the message, `key` the
/// object it was about. The operation name itself is set by the policy around the call.
pub(crate) fn storage_error(
    service: &str,
    platform: &'static str,
    secrets: &Secrets,
    request: &'static str,
    key: Option<&str>,
    err: azure_core::Error,
) -> Error {
    let what = match key {
        Some(key) => format!("{service} {request} of {key:?}"),
        None => format!("{service} {request}"),
    };
    // Not the SDK error itself: its Debug holds the raw answer, which may repeat the
    // request's URL (a SAS signature) or headers.
    let source = secrets.scrubbed_source(&err);
    let (kind, detail, status) = match err.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let status = u16::from(*status);
            let code = error_code.clone();
            (
                service_kind(status, code.as_deref()),
                format!("{} (HTTP {status})", code.unwrap_or_default()),
                Some(status),
            )
        }
        azure_core::error::ErrorKind::Io | azure_core::error::ErrorKind::Connection => {
            // The causes say why (the TLS or connection error underneath).
            (ErrorKind::Unavailable, source.as_str().to_owned(), None)
        }
        azure_core::error::ErrorKind::Credential => {
            (ErrorKind::Auth, secrets.clean(&err.to_string()), None)
        }
        _ => (ErrorKind::Protocol, secrets.clean(&err.to_string()), None),
    };
    let mut out = Error::new(kind, format!("{what} failed: {detail}")).with_connector(platform);
    if let Some(status) = status {
        out = out.with_context("http_status", status);
    }
    out.with_source(source)
}

/// Remembers every token the credential it wraps hands out.
#[derive(Debug)]
pub(crate) struct RememberingCredential {
    pub(crate) inner: Arc<dyn TokenCredential>,
    pub(crate) secrets: Secrets,
}

#[async_trait::async_trait]
impl TokenCredential for RememberingCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let token = self.inner.get_token(scopes, options).await?;
        self.secrets.remember([token.token.secret()]);
        Ok(token)
    }
}

pub(crate) fn service_kind(status: u16, code: Option<&str>) -> ErrorKind {
    match code {
        Some(
            "BlobNotFound" | "ContainerNotFound" | "ResourceNotFound" | "QueueNotFound"
            | "MessageNotFound",
        ) => {
            return ErrorKind::NotFound;
        }
        Some("ServerBusy" | "OperationTimedOut") => {
            return ErrorKind::RateLimited { retry_after: None };
        }
        Some(
            "AuthorizationFailure"
            | "AuthorizationPermissionMismatch"
            | "InsufficientAccountPermissions",
        ) => return ErrorKind::Forbidden,
        Some("AuthenticationFailed" | "InvalidAuthenticationInfo") => return ErrorKind::Auth,
        Some("ConditionNotMet" | "TargetConditionNotMet") => return ErrorKind::Conflict,
        Some("Md5Mismatch" | "Crc64Mismatch" | "InvalidMd5") => return ErrorKind::Integrity,
        Some(
            "InvalidRange"
            | "PopReceiptMismatch"
            | "RequestBodyTooLarge"
            | "MessageTooLarge"
            | "InvalidXmlDocument"
            | "OutOfRangeQueryParameterValue",
        ) => return ErrorKind::InvalidInput,
        Some("QueueAlreadyExists" | "QueueBeingDeleted" | "QueueDisabled") => {
            return ErrorKind::Conflict;
        }
        _ => {}
    }
    // Throttling is told by its error code (above); a bare 503 (no code: a gateway) is
    // an outage.
    kind_of_status(status)
}

#[cfg(any(feature = "blob", feature = "queue"))]
/// What an official Storage client is built from: its URL (with the SAS query when
/// SAS-authorized), its options (our transport, no retries of its own, the Shared Key
/// signing policy), the bearer credential (Entra ID) and the secrets to scrub.
pub(crate) struct StorageClient {
    pub(crate) url: Url,
    pub(crate) options: ClientOptions,
    pub(crate) token: Option<Arc<dyn TokenCredential>>,
    pub(crate) secrets: Secrets,
}

#[cfg(any(feature = "blob", feature = "queue"))]
/// The client parts of resource `path` (a container, a queue) of `service` at
/// `endpoint`.
pub(crate) fn storage_client(
    service: &str,
    platform: &'static str,
    endpoint: Option<&str>,
    path: &str,
    credentials: Option<&AzureCredentials>,
    http_client: Option<Arc<dyn azure_core::http::HttpClient>>,
    policies: &[Arc<dyn azure_core::http::policies::Policy>],
) -> Result<StorageClient> {
    let endpoint = endpoint.ok_or_else(|| {
        Error::config(format!("{service} has no endpoint"))
            .with_connector(platform)
            .with_hint("set endpoint(...) or connection_string(...)")
    })?;
    let mut url = Url::parse(endpoint.trim_end_matches('/')).map_err(|e| {
        Error::config(format!("{service} endpoint {endpoint:?} is not a URL: {e}"))
            .with_connector(platform)
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(
            Error::config(format!("{service} endpoint {endpoint:?} is not http(s)"))
                .with_connector(platform),
        );
    }
    let credentials = credentials.ok_or_else(|| {
        Error::config(format!("{service} has no credentials"))
            .with_connector(platform)
            .with_hint("set credentials(...) or connection_string(...)")
    })?;
    let full = format!("{}/{path}", url.path().trim_end_matches('/'));
    url.set_path(&full);
    let mut options = ClientOptions {
        // One HTTP client (and connection pool) for every client made from these parts;
        // automatic decompression off, as the official clients configure it.
        transport: Some(azure_core::http::Transport::new(
            http_client.unwrap_or_else(|| {
                azure_core::http::new_http_client(Some(azure_core::http::HttpClientOptions {
                    automatic_decompression: false,
                }))
            }),
        )),
        // Retries are the policy's: one attempt per SDK call.
        retry: azure_core::http::RetryOptions::none(),
        ..Default::default()
    };
    options.per_try_policies.extend(policies.iter().cloned());
    let mut token: Option<Arc<dyn TokenCredential>> = None;
    // Every credential a request carries, scrubbed from every error made of an answer.
    let secrets = Secrets::new();
    match credentials {
        AzureCredentials::SharedKey(key) => {
            key.sign("check").map(|_| ())?;
            secrets.remember([key.key.expose_secret()]);
            options
                .per_try_policies
                .push(SharedKeyPolicy::new(key.clone()));
        }
        AzureCredentials::Sas(sas) => {
            let query = sas.expose_secret();
            secrets.remember(
                std::iter::once(query.to_owned()).chain(
                    url::form_urlencoded::parse(query.as_bytes())
                        .filter(|(name, _)| name == "sig")
                        .map(|(_, value)| value.into_owned()),
                ),
            );
            url.set_query(Some(query));
        }
        AzureCredentials::Entra(credential) => {
            token = Some(Arc::new(RememberingCredential {
                inner: credential.clone(),
                secrets: secrets.clone(),
            }));
        }
    }
    Ok(StorageClient {
        url,
        options,
        token,
        secrets,
    })
}
