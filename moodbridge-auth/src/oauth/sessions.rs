//! Authorization-code flows of a web host: the state and PKCE verifier stay on the server,
//! keyed by the CSRF state; each can be completed once, within a time limit.

use std::collections::HashMap;
use std::time::Duration;

use moodbridge_core::{Error, ErrorKind, Result};
use tokio::sync::Mutex;
use url::Url;

use super::client::{OAuthClient, PendingAuthorization};
use super::token_set::TokenSet;

/// Pending authorization-code flows of a web host.
///
/// ```no_run
/// use moodbridge_auth::oauth::{AuthorizationSessions, OAuthClient};
///
/// # async fn run(client: OAuthClient, code: String, state: String) -> moodbridge_core::Result<()> {
/// let sessions = AuthorizationSessions::new();
/// // GET /login: send the user to the provider.
/// let url = sessions.begin(&client, "https://app.example.com/oauth/callback", &["openid", "offline_access"]).await?;
/// // GET /oauth/callback?code=…&state=…: finish, checking the state.
/// let tokens = sessions.complete(&client, &code, &state).await?;
/// # let _ = (url, tokens); Ok(()) }
/// ```
#[derive(Debug)]
pub struct AuthorizationSessions {
    pending: Mutex<HashMap<String, PendingAuthorization>>,
    ttl: Duration,
}

impl Default for AuthorizationSessions {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorizationSessions {
    /// Sessions that expire after 10 minutes.
    pub fn new() -> Self {
        Self::with_ttl(Duration::from_secs(600))
    }

    /// Sessions that expire after `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        AuthorizationSessions {
            pending: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Start a flow; returns the URL to redirect the user to.
    pub async fn begin(
        &self,
        client: &OAuthClient,
        redirect_uri: &str,
        scopes: &[&str],
    ) -> Result<Url> {
        let (url, pending) = client.authorize_url(redirect_uri, scopes)?;
        let mut map = self.pending.lock().await;
        map.retain(|_, p| p.age() < self.ttl);
        map.insert(pending.state.clone(), pending);
        Ok(url)
    }

    /// Finish the flow the provider's `state` names: single use, within the TTL.
    pub async fn complete(
        &self,
        client: &OAuthClient,
        code: &str,
        state: &str,
    ) -> Result<TokenSet> {
        let pending = self.pending.lock().await.remove(state).ok_or_else(|| {
            Error::new(
                ErrorKind::Auth,
                "no login is pending for this state (unknown, already used, or forged: possible CSRF)",
            )
            .with_hint("start the login again")
        })?;
        if pending.age() >= self.ttl {
            return Err(
                Error::new(ErrorKind::Auth, "the login took too long and expired")
                    .with_hint("start the login again"),
            );
        }
        client.exchange_code(pending, code, state).await
    }

    /// Flows started and not yet completed or expired.
    pub async fn pending(&self) -> usize {
        let mut map = self.pending.lock().await;
        map.retain(|_, p| p.age() < self.ttl);
        map.len()
    }
}
