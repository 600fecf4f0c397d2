//! OAuth 2.0 flows on the `oauth2` crate (over the workspace's reqwest):
//!
//! - client credentials — [`OAuthClient::client_credentials`];
//! - authorization code with PKCE (S256) — for web hosts [`AuthorizationSessions`]
//!   (state and verifier kept server-side, CSRF check on return); for command-line and
//!   desktop programs `login_with_loopback` (feature `loopback`; a redirect listener on 127.0.0.1, random
//!   port);
//! - refresh, keeping rotated refresh tokens — [`OAuthClient::refresh`];
//! - JWT bearer (RFC 7523, Salesforce's server-to-server flow) — [`OAuthClient::jwt_bearer`];
//! - revocation (RFC 7009) — [`OAuthClient::revoke`].
//!
//! Providers come from presets (Salesforce production, sandbox, My Domain; Microsoft
//! Entra ID) or OpenID Connect discovery: [`Provider`].
//!
//! ```no_run
//! use moodbridge_auth::oauth::{OAuthClient, Provider};
//! use secrecy::SecretString;
//!
//! # async fn run(secret: SecretString) -> moodbridge_core::Result<()> {
//! let client = OAuthClient::new(Provider::entra("contoso.onmicrosoft.com")?, "app-id", Some(secret))?;
//! let tokens = client
//!     .client_credentials(&["https://storage.azure.com/.default"], None)
//!     .await?;
//! # let _ = tokens; Ok(()) }
//! ```

mod client;
mod http_adapter;
#[cfg(feature = "loopback")]
mod loopback;
mod provider;
mod sessions;
mod token_set;

pub use client::{OAuthClient, PendingAuthorization, Revocable};
#[cfg(feature = "loopback")]
pub use loopback::login_with_loopback;
pub use provider::{ClientAuth, Provider, ProviderConfig};
pub use sessions::AuthorizationSessions;
pub use token_set::TokenSet;
