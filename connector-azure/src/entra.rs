//! An Entra ID app registration's client secret as an `azure_core` [`TokenCredential`]
//! (feature `keyvault`), through `moodbridge-auth`'s OAuth client: the client
//! credentials grant at the tenant's v2.0 token endpoint. Tokens are kept per scope until
//! a minute before they expire; concurrent asks for one scope share one request.
//!
//! ```no_run
//! use std::sync::Arc;
//! use connector_azure::entra::EntraClientSecret;
//! use connector_azure::keyvault::KeyVaultStore;
//! use secrecy::SecretString;
//!
//! # fn run(secret: SecretString) -> moodbridge_core::Result<()> {
//! let credential = EntraClientSecret::new("contoso.onmicrosoft.com", "app-client-id", secret)?;
//! let store = KeyVaultStore::builder("https://contoso-prod.vault.azure.net")
//!     .credential(Arc::new(credential))
//!     .build()?;
//! # let _ = store; Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use moodbridge_auth::oauth::{OAuthClient, Provider};
use moodbridge_core::Result;
use secrecy::{ExposeSecret, SecretString};

/// How long before its expiry a token is fetched again.
const EARLY: Duration = Duration::from_secs(60);

/// A client secret credential. `Debug` shows the tenant and client id, never the secret
/// or a token.
pub struct EntraClientSecret {
    client: OAuthClient,
    cache: tokio::sync::Mutex<HashMap<String, (SecretString, SystemTime)>>,
}

impl fmt::Debug for EntraClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraClientSecret")
            .field("provider", &self.client.provider().name)
            .field("client_id", &self.client.client_id())
            .finish_non_exhaustive()
    }
}

impl EntraClientSecret {
    /// The app `client_id` of `tenant` (a tenant id or domain) with `secret`, at
    /// `login.microsoftonline.com`.
    ///
    /// # Errors
    /// A tenant that is not one (`Config`).
    pub fn new(tenant: &str, client_id: &str, secret: SecretString) -> Result<Self> {
        Self::with_provider(Provider::entra(tenant)?, client_id, secret)
    }

    /// As [`new`](Self::new), at another authority host (a national cloud such as
    /// `https://login.microsoftonline.us`, or a local one in tests).
    ///
    /// # Errors
    /// A tenant or authority that is not one (`Config`).
    pub fn at_authority(
        authority: &str,
        tenant: &str,
        client_id: &str,
        secret: SecretString,
    ) -> Result<Self> {
        let mut provider = Provider::entra(tenant)?;
        let base = format!("{}/{tenant}", authority.trim_end_matches('/'));
        // https, or plain http on loopback only.
        provider.token_endpoint =
            moodbridge_auth::http::secure_url(&format!("{base}/oauth2/v2.0/token"))?;
        provider.issuer = format!("{base}/v2.0");
        provider.authorization_endpoint = None;
        provider.jwks_uri = None;
        Self::with_provider(provider, client_id, secret)
    }

    /// A client of any `provider` (its token endpoint takes the client credentials
    /// grant).
    ///
    /// # Errors
    /// The HTTP client could not be made.
    pub fn with_provider(
        provider: Provider,
        client_id: &str,
        secret: SecretString,
    ) -> Result<Self> {
        Ok(EntraClientSecret {
            client: OAuthClient::new(provider, client_id, Some(secret))?,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl TokenCredential for EntraClientSecret {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let key = scopes.join(" ");
        // Held across the request: concurrent asks wait for the one in flight.
        let mut cache = self.cache.lock().await;
        let now = SystemTime::now();
        if let Some((token, expires)) = cache.get(&key)
            && *expires > now + EARLY
        {
            return Ok(access_token(token, *expires));
        }
        let tokens = self
            .client
            .client_credentials(scopes, None)
            .await
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    format!("Entra ID client credentials: {e}"),
                )
            })?;
        let expires = tokens
            .expires_at
            .unwrap_or_else(|| now + Duration::from_secs(3600));
        let token = SecretString::from(tokens.access_token.expose_secret().to_owned());
        let out = access_token(&token, expires);
        cache.insert(key, (token, expires));
        Ok(out)
    }
}

fn access_token(token: &SecretString, expires: SystemTime) -> AccessToken {
    AccessToken::new(
        token.expose_secret().to_owned(),
        azure_core::time::OffsetDateTime::from(expires),
    )
}
