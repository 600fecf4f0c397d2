//! Settings of an `azure-blob` integration, read from its config's `settings` table.
//!
//! ```toml
//! [[integration]]
//! id = "azure-blob:documents"
//! kind = "azure-blob"
//!
//! [integration.settings]
//! container = "documents"
//! connection_string = "secret:azure/prod/storage_connection_string"
//! # or an endpoint and credentials:
//! # endpoint = "https://acme.blob.core.windows.net"
//! # credentials = { source = "shared_key", account = "acme", key = "secret:azure/prod/account_key" }
//! # credentials = { source = "sas", token = "env:AZURE_SAS" }
//! block_size_mib = 8
//! concurrency = 4                      # blocks in flight per upload
//! download_concurrency = 16            # ranged GETs in flight at most per download
//! download_buffer_mib = 24             # bytes held at most ahead of the reader
//! ```
//!
//! Entra ID (managed identity, service principals) takes a `TokenCredential`, given in
//! code with [`AzureBlobStore::builder`](crate::blob::AzureBlobStore::builder).

use moodbridge_core::Result;
use moodbridge_core::SecretRef;
#[cfg(feature = "blob")]
use moodbridge_core::config::Validate;
use moodbridge_core::config::Validator;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::auth::{ConnectionString, SharedKey};
use crate::storage::AzureCredentials;

#[cfg(feature = "blob")]
use crate::blob::{
    DEFAULT_BLOCK_SIZE, DEFAULT_CONCURRENCY, DEFAULT_DOWNLOAD_BUFFER, DEFAULT_DOWNLOAD_CONCURRENCY,
    MAX_BLOCK_SIZE,
};

/// Settings of an `azure-blob` integration. See the [module docs](self).
#[cfg(feature = "blob")]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobSettings {
    /// The container.
    pub container: String,
    /// A storage connection string (it holds the key or SAS: a reference only).
    #[serde(default)]
    pub connection_string: Option<SecretRef>,
    /// The Blob service endpoint, when no connection string is given.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How requests are authorized, with `endpoint`.
    #[serde(default)]
    pub credentials: Option<AzureCredentialSettings>,
    /// Block size of staged uploads and ranged downloads, MiB (default 8).
    #[serde(default = "default_block_size_mib")]
    pub block_size_mib: u64,
    /// Blocks in flight per upload (default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Ranged GETs in flight at most per download; a download starts with up to 4 and
    /// adds more while they bring more throughput (default 16; 1 reads one stream).
    #[serde(default = "default_download_concurrency")]
    pub download_concurrency: usize,
    /// MiB a download holds at most for the ranges ahead of the one being read
    /// (default 24).
    #[serde(default = "default_download_buffer_mib")]
    pub download_buffer_mib: u64,
    /// The service API version sent.
    #[serde(default)]
    pub api_version: Option<String>,
}

#[cfg(feature = "blob")]
fn default_block_size_mib() -> u64 {
    DEFAULT_BLOCK_SIZE / (1024 * 1024)
}

#[cfg(feature = "blob")]
fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

#[cfg(feature = "blob")]
fn default_download_concurrency() -> usize {
    DEFAULT_DOWNLOAD_CONCURRENCY
}

#[cfg(feature = "blob")]
fn default_download_buffer_mib() -> u64 {
    DEFAULT_DOWNLOAD_BUFFER / (1024 * 1024)
}

/// How an `azure-blob` integration authorizes, tagged by `source`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum AzureCredentialSettings {
    /// The storage account's Shared Key.
    SharedKey {
        /// The account name.
        account: String,
        /// The account key.
        key: SecretRef,
    },
    /// A SAS token.
    Sas {
        /// The token (the query string, without `?`).
        token: SecretRef,
    },
}

#[cfg(feature = "blob")]
impl Validate for AzureBlobSettings {
    fn validate_into(&self, v: &mut Validator) {
        if let Err(e) = crate::blob::check_container_name(&self.container) {
            v.problem("container", e.message().to_owned(), e.hint().to_owned());
        }
        validate_access(
            v,
            self.connection_string.as_ref(),
            self.endpoint.as_deref(),
            self.credentials.as_ref(),
            "https://acme.blob.core.windows.net",
        );
        let bytes = self.block_size_mib.saturating_mul(1024 * 1024);
        if bytes == 0 || bytes > MAX_BLOCK_SIZE {
            v.problem(
                "block_size_mib",
                format!("{} is outside 1 to 4000", self.block_size_mib),
                "use 8 (the default) or another size up to 4000",
            );
        }
        if self.concurrency == 0 {
            v.problem("concurrency", "is 0", "use at least 1 (default 4)");
        }
        moodbridge_core::raw::validate_download_settings(
            v,
            self.download_concurrency,
            self.download_buffer_mib,
        );
    }
}

/// Where an integration's settings say its service is and how to authorize: the
/// connection string (parsed) or the credentials, their secrets resolved.
pub(crate) struct Access {
    pub(crate) connection_string: Option<ConnectionString>,
    pub(crate) credentials: Option<AzureCredentials>,
}

/// Resolves the access settings of an integration through `ctx`'s credential store.
pub(crate) async fn resolve_access(
    ctx: &moodbridge_core::registry::BuildContext,
    connection_string: Option<&moodbridge_core::SecretRef>,
    credentials: Option<&AzureCredentialSettings>,
) -> Result<Access> {
    let connection_string = match connection_string {
        Some(r) => Some(ConnectionString::parse(
            ctx.resolve(r).await?.expose_secret(),
        )?),
        None => None,
    };
    let credentials = match credentials {
        None => None,
        Some(AzureCredentialSettings::SharedKey { account, key }) => {
            Some(AzureCredentials::SharedKey(SharedKey {
                account: account.clone(),
                key: ctx.resolve(key).await?,
            }))
        }
        Some(AzureCredentialSettings::Sas { token }) => {
            Some(AzureCredentials::Sas(ctx.resolve(token).await?))
        }
    };
    Ok(Access {
        connection_string,
        credentials,
    })
}

/// Checks that exactly one of a connection string or an endpoint with credentials is
/// given, and that the endpoint is an http(s) URL (`example` shows one).
pub(crate) fn validate_access(
    v: &mut Validator,
    connection_string: Option<&SecretRef>,
    endpoint: Option<&str>,
    credentials: Option<&AzureCredentialSettings>,
    example: &str,
) {
    match (connection_string, endpoint, credentials) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => {}
        (None, None, _) => v.problem(
            "connection_string",
            "is missing, and so is endpoint",
            "set connection_string = \"secret:…\", or endpoint and credentials",
        ),
        (None, Some(_), None) => v.problem(
            "credentials",
            "is missing",
            "set credentials = { source = \"shared_key\", … } or { source = \"sas\", … }",
        ),
        (Some(_), _, _) => v.problem(
            "connection_string",
            "is set together with endpoint or credentials",
            "keep the connection string, or endpoint and credentials",
        ),
    }
    if let Some(endpoint) = endpoint
        && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
    {
        v.problem(
            "endpoint",
            format!("{endpoint:?} is not an http(s) URL"),
            format!("use e.g. \"{example}\""),
        );
    }
}

#[cfg(all(test, feature = "blob"))]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;

    fn problems(settings: &str) -> Vec<String> {
        moodbridge_core::testing::settings_problems::<AzureBlobSettings>(settings)
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let found = problems(
            r#"container = "A"
            endpoint = "blob.example"
            block_size_mib = 0
            concurrency = 0
            download_concurrency = 0
            download_buffer_mib = 0"#,
        );
        let paths: Vec<&str> = found.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "settings.container",
                "settings.credentials",
                "settings.endpoint",
                "settings.block_size_mib",
                "settings.concurrency",
                "settings.download_concurrency",
                "settings.download_buffer_mib"
            ],
            "{found:?}"
        );
    }

    #[test]
    fn a_literal_connection_string_is_refused_unechoed() {
        let found = problems(
            r#"container = "docs"
            connection_string = "AccountName=a;AccountKey=c2VjcmV0""#,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].contains("c2VjcmV0"), "{found:?}");
    }
}
