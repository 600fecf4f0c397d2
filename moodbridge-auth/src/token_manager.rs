//! The token manager: one place every connector gets its access tokens from.
//!
//! - Tokens are cached per (provider, principal) and served lock-free while valid.
//! - A token is refreshed ahead of expiry (the *skew*, default 60 s).
//! - Refreshes are single-flight: however many tasks ask for an expired token at once,
//!   one token request goes out and all of them get its result — success or failure. A
//!   failure is not cached: the next call tries again.
//! - A connector whose platform rejects a token (Salesforce `INVALID_SESSION_ID`) calls
//!   [`TokenManager::reject`]; [`TokenManager::with_token`] does that and retries the call
//!   once with a fresh token.
//! - With a [`CredentialStore`], token sets are persisted (older versions retired), so a
//!   restarted process does not need a new login.
//!
//! ```
//! use moodbridge_auth::token_manager::{TokenManager, TokenSource};
//! use moodbridge_auth::oauth::TokenSet;
//! use moodbridge_core::Result;
//! use secrecy::{ExposeSecret, SecretString};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! struct Static;
//! #[async_trait::async_trait]
//! impl TokenSource for Static {
//!     async fn fetch(&self, _current: Option<&TokenSet>) -> Result<TokenSet> {
//!         Ok(TokenSet::bearer(SecretString::from("token"), Some(Duration::from_secs(3600))))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let manager = TokenManager::new();
//! manager.register("salesforce-prod", "integration@acme.example", Arc::new(Static));
//! let token = manager.token("salesforce-prod", "integration@acme.example").await.unwrap();
//! assert_eq!(token.access_token.expose_secret(), "token");
//! # });
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use moodbridge_core::{CredentialStore, Error, ErrorKind, Result};
use secrecy::SecretString;
use tokio::sync::OnceCell;

use crate::oauth::{OAuthClient, TokenSet};

/// Where a principal's tokens come from.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A new token set. `current` is the last one, if any (its refresh token is what a
    /// refreshing source uses).
    async fn fetch(&self, current: Option<&TokenSet>) -> Result<TokenSet>;
}

/// Tokens by client credentials.
pub struct ClientCredentialsSource {
    /// The client.
    pub client: Arc<OAuthClient>,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
    /// Resource indicator, if the provider needs one.
    pub resource: Option<String>,
}

#[async_trait]
impl TokenSource for ClientCredentialsSource {
    async fn fetch(&self, _current: Option<&TokenSet>) -> Result<TokenSet> {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        self.client
            .client_credentials(&scopes, self.resource.as_deref())
            .await
    }
}

/// Tokens by client credentials, the client secret read from a [`CredentialStore`] at
/// every fetch: once the secret is rotated (a new current version under `secret_key`,
/// e.g. by [`moodbridge_core::rotation`]), the next token is asked for with the new one —
/// no restart, nothing rebuilt. A fetch happens once per token lifetime, so the store is
/// read that often.
pub struct StoredClientCredentialsSource {
    /// The client: provider, client id and HTTP client (its own secret is not used).
    pub client: Arc<OAuthClient>,
    /// Where the client secret is.
    pub store: Arc<dyn CredentialStore>,
    /// The secret's key in `store`.
    pub secret_key: String,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
    /// Resource indicator, if the provider needs one.
    pub resource: Option<String>,
}

#[async_trait]
impl TokenSource for StoredClientCredentialsSource {
    async fn fetch(&self, _current: Option<&TokenSet>) -> Result<TokenSet> {
        let secret = self.store.get(&self.secret_key).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "the client secret of {} ({}) could not be read: {}",
                    self.client.client_id(),
                    self.secret_key,
                    e.message()
                ),
            )
            .with_hint(e.hint().to_owned())
        })?;
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        self.client
            .with_client_secret(secret.value)
            .client_credentials(&scopes, self.resource.as_deref())
            .await
    }
}

/// Tokens by the JWT bearer grant, the private key read from a [`CredentialStore`] at
/// every fetch: a rotated key (a new current version under `key_key`) signs the next
/// assertion, with no restart.
pub struct StoredJwtBearerSource {
    /// The connected app's client.
    pub client: Arc<OAuthClient>,
    /// The user the tokens are for.
    pub subject: String,
    /// Where the private key (PEM) is.
    pub store: Arc<dyn CredentialStore>,
    /// The key's key in `store`.
    pub key_key: String,
}

#[async_trait]
impl TokenSource for StoredJwtBearerSource {
    async fn fetch(&self, _current: Option<&TokenSet>) -> Result<TokenSet> {
        let key = self.store.get(&self.key_key).await?;
        self.client.jwt_bearer(&self.subject, &key.value).await
    }
}

/// Tokens by refreshing a user's login (seed it with [`TokenManager::seed`] after the
/// authorization-code flow).
pub struct RefreshSource {
    /// The client the login was made with.
    pub client: Arc<OAuthClient>,
}

#[async_trait]
impl TokenSource for RefreshSource {
    async fn fetch(&self, current: Option<&TokenSet>) -> Result<TokenSet> {
        match current {
            Some(tokens) => self.client.refresh(tokens).await,
            None => Err(
                Error::new(ErrorKind::AuthExpired, "no login for this principal yet")
                    .with_hint("complete the authorization-code flow and seed the token manager"),
            ),
        }
    }
}

/// Tokens by the JWT bearer grant (Salesforce server-to-server).
pub struct JwtBearerSource {
    /// The connected app's client.
    pub client: Arc<OAuthClient>,
    /// The user the tokens are for.
    pub subject: String,
    /// The connected app's private key, PEM.
    pub private_key_pem: SecretString,
}

#[async_trait]
impl TokenSource for JwtBearerSource {
    async fn fetch(&self, _current: Option<&TokenSet>) -> Result<TokenSet> {
        self.client
            .jwt_bearer(&self.subject, &self.private_key_pem)
            .await
    }
}

type Refresh = Shared<BoxFuture<'static, Result<Arc<TokenSet>>>>;

struct Entry {
    provider: String,
    principal: String,
    source: Arc<dyn TokenSource>,
    current: ArcSwapOption<TokenSet>,
    /// The platform rejected the current access token.
    rejected: AtomicBool,
    inflight: Mutex<Option<Refresh>>,
    loaded: OnceCell<()>,
}

impl Entry {
    fn store_key(&self) -> String {
        let hex: String = self.principal.bytes().map(|b| format!("{b:02x}")).collect();
        format!("tokens/{}/{hex}", self.provider)
    }
}

struct Inner {
    skew: Duration,
    store: Option<Arc<dyn CredentialStore>>,
    /// provider → principal → entry (nested so lookups by `&str` need no allocation).
    entries: RwLock<HashMap<String, HashMap<String, Arc<Entry>>>>,
}

/// Caches, refreshes and persists access tokens. Cheap to clone (shared state).
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let principals = self
            .inner
            .entries
            .read()
            .map(|e| e.values().map(HashMap::len).sum::<usize>())
            .unwrap_or(0);
        f.debug_struct("TokenManager")
            .field("skew", &self.inner.skew)
            .field("principals", &principals)
            .field("persistent", &self.inner.store.is_some())
            .finish()
    }
}

impl Default for TokenManager {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenManager {
    /// A manager with a 60 s skew and no persistence.
    pub fn new() -> Self {
        Self::with_options(Duration::from_secs(60), None)
    }

    /// A manager refreshing `skew` ahead of expiry and persisting to `store`.
    pub fn with_options(skew: Duration, store: Option<Arc<dyn CredentialStore>>) -> Self {
        TokenManager {
            inner: Arc::new(Inner {
                skew,
                store,
                entries: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Say where the tokens of `principal` at `provider` come from. Registering again
    /// replaces the source and forgets the cached token.
    pub fn register(&self, provider: &str, principal: &str, source: Arc<dyn TokenSource>) {
        let entry = Arc::new(Entry {
            provider: provider.to_owned(),
            principal: principal.to_owned(),
            source,
            current: ArcSwapOption::empty(),
            rejected: AtomicBool::new(false),
            inflight: Mutex::new(None),
            loaded: OnceCell::new(),
        });
        if let Ok(mut entries) = self.inner.entries.write() {
            entries
                .entry(provider.to_owned())
                .or_default()
                .insert(principal.to_owned(), entry);
        }
    }

    fn entry(&self, provider: &str, principal: &str) -> Result<Arc<Entry>> {
        let entries = self
            .inner
            .entries
            .read()
            .map_err(|_| Error::internal("token manager lock poisoned"))?;
        entries
            .get(provider)
            .and_then(|principals| principals.get(principal))
            .map(Arc::clone)
            .ok_or_else(|| {
                Error::config(format!(
                    "no token source registered for {principal} at {provider}"
                ))
                .with_hint("call TokenManager::register first")
            })
    }

    /// Install a token set obtained elsewhere (after an authorization-code login).
    pub async fn seed(&self, provider: &str, principal: &str, tokens: TokenSet) -> Result<()> {
        let entry = self.entry(provider, principal)?;
        let tokens = Arc::new(tokens);
        persist(self.inner.store.as_ref(), &entry, &tokens).await;
        entry.current.store(Some(tokens));
        entry.rejected.store(false, Ordering::Release);
        Ok(())
    }

    /// A valid access token for `principal` at `provider`, refreshing if needed.
    pub async fn token(&self, provider: &str, principal: &str) -> Result<Arc<TokenSet>> {
        let entry = self.entry(provider, principal)?;
        if let Some(t) = self.usable(&entry) {
            return Ok(t);
        }
        if let Some(store) = &self.inner.store {
            entry
                .loaded
                .get_or_init(|| load(store.as_ref(), &entry))
                .await;
            if let Some(t) = self.usable(&entry) {
                return Ok(t);
            }
        }
        self.refresh(&entry).await
    }

    fn usable(&self, entry: &Entry) -> Option<Arc<TokenSet>> {
        let current = entry.current.load_full()?;
        (!entry.rejected.load(Ordering::Acquire) && !current.expires_within(self.inner.skew))
            .then_some(current)
    }

    async fn refresh(&self, entry: &Arc<Entry>) -> Result<Arc<TokenSet>> {
        let shared = {
            let mut inflight = entry
                .inflight
                .lock()
                .map_err(|_| Error::internal("token manager lock poisoned"))?;
            if let Some(f) = inflight.as_ref() {
                f.clone()
            } else {
                let entry2 = Arc::clone(entry);
                let store = self.inner.store.clone();
                let f = async move {
                    let current = entry2.current.load_full();
                    let result = entry2.source.fetch(current.as_deref()).await;
                    let outcome = match result {
                        Ok(tokens) => {
                            let tokens = Arc::new(tokens);
                            persist(store.as_ref(), &entry2, &tokens).await;
                            entry2.current.store(Some(Arc::clone(&tokens)));
                            entry2.rejected.store(false, Ordering::Release);
                            tracing::debug!(provider = %entry2.provider, "access token refreshed");
                            Ok(tokens)
                        }
                        Err(e) => {
                            tracing::warn!(provider = %entry2.provider, error = %e, "token refresh failed");
                            Err(e)
                        }
                    };
                    if let Ok(mut inflight) = entry2.inflight.lock() {
                        *inflight = None;
                    }
                    outcome
                }
                .boxed()
                .shared();
                *inflight = Some(f.clone());
                f
            }
        };
        shared.await
    }

    /// The platform rejected `token` (e.g. Salesforce `INVALID_SESSION_ID`): the next
    /// [`token`](Self::token) call refreshes. A rejection of an older token than the
    /// current one is ignored (another task already refreshed).
    pub fn reject(&self, provider: &str, principal: &str, token: &Arc<TokenSet>) {
        if let Ok(entry) = self.entry(provider, principal)
            && let Some(current) = entry.current.load_full()
            && Arc::ptr_eq(&current, token)
        {
            entry.rejected.store(true, Ordering::Release);
        }
    }

    /// Run `call` with a token; if it fails with [`ErrorKind::AuthExpired`], reject the
    /// token, get a fresh one and run `call` once more.
    pub async fn with_token<T, F, Fut>(&self, provider: &str, principal: &str, call: F) -> Result<T>
    where
        F: Fn(Arc<TokenSet>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let token = self.token(provider, principal).await?;
        match call(Arc::clone(&token)).await {
            Err(e) if e.kind() == ErrorKind::AuthExpired => {
                tracing::info!(
                    provider,
                    "platform rejected the access token; refreshing and retrying once"
                );
                self.reject(provider, principal, &token);
                let fresh = self.token(provider, principal).await?;
                call(fresh).await
            }
            other => other,
        }
    }
}

async fn persist(store: Option<&Arc<dyn CredentialStore>>, entry: &Entry, tokens: &TokenSet) {
    let Some(store) = store else { return };
    let key = entry.store_key();
    let result = async {
        let version = store.put(&key, tokens.to_secret()?).await?;
        store.retire(&key, &version).await?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = result {
        // The token is still good; only a restart would need a new login.
        tracing::warn!(provider = %entry.provider, error = %e, "could not persist the token set");
    }
}

async fn load(store: &dyn CredentialStore, entry: &Entry) {
    match store.get(&entry.store_key()).await {
        Ok(secret) => match TokenSet::from_secret(&secret.value) {
            Ok(tokens) => entry.current.store(Some(Arc::new(tokens))),
            Err(e) => {
                tracing::warn!(provider = %entry.provider, error = %e, "ignoring a stored token set")
            }
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(provider = %entry.provider, error = %e, "could not read the stored token set")
        }
    }
}
