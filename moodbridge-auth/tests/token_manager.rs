//! The token manager: single-flight refresh, shared failures, skew, the reject-and-retry
//! hook, persistence across restarts — with counting sources, and against the real OpenID
//! provider.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use moodbridge_auth::oauth::{OAuthClient, Provider, TokenSet};
use moodbridge_auth::store::{EncryptedStore, Keyring, MasterKey};
use moodbridge_auth::token_manager::{
    ClientCredentialsSource, RefreshSource, TokenManager, TokenSource,
};
use moodbridge_core::{CredentialStore, Error, ErrorKind, Result};
use secrecy::{ExposeSecret, SecretString};
use support::oidc::{OidcProvider, Options, code_login};
use tokio::sync::Semaphore;

/// Counts fetches; each fetch waits for a permit of `gate`, then returns `result`.
struct Counting {
    fetches: AtomicUsize,
    gate: Semaphore,
    fail: bool,
    lifetime: Duration,
}

impl Counting {
    fn new(fail: bool, lifetime: Duration) -> Arc<Self> {
        Arc::new(Counting {
            fetches: AtomicUsize::new(0),
            gate: Semaphore::new(0),
            fail,
            lifetime,
        })
    }
    fn open(&self) {
        self.gate.add_permits(1_000);
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenSource for Counting {
    async fn fetch(&self, _current: Option<&TokenSet>) -> Result<TokenSet> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        let _permit = self.gate.acquire().await.unwrap();
        if self.fail {
            return Err(Error::new(ErrorKind::Auth, "invalid_client"));
        }
        Ok(TokenSet::bearer(
            SecretString::from(format!("token-{n}")),
            Some(self.lifetime),
        ))
    }
}

/// Spawn `n` callers on this (current-thread) runtime and let each run until it waits
/// on the in-flight refresh.
async fn park_callers(
    manager: &TokenManager,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<Arc<TokenSet>>>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let m = manager.clone();
            tokio::spawn(async move { m.token("p", "u").await })
        })
        .collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tasks
}

#[tokio::test]
async fn a_hundred_callers_of_an_expired_token_cause_exactly_one_request() {
    let source = Counting::new(false, Duration::from_secs(3600));
    let manager = TokenManager::new();
    manager.register("p", "u", source.clone());
    let tasks = park_callers(&manager, 100).await;
    assert_eq!(source.fetches(), 1, "one request is in flight");
    source.open();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap());
    }
    assert_eq!(source.fetches(), 1);
    assert!(
        tokens.iter().all(|t| Arc::ptr_eq(t, &tokens[0])),
        "all got the same token"
    );
}

#[tokio::test]
async fn a_failed_refresh_reaches_every_waiter_and_is_not_cached() {
    let source = Counting::new(true, Duration::from_secs(3600));
    let manager = TokenManager::new();
    manager.register("p", "u", source.clone());
    let tasks = park_callers(&manager, 100).await;
    source.open();
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth);
    }
    assert_eq!(
        source.fetches(),
        1,
        "the failure was shared, not retried per waiter"
    );
    assert!(manager.token("p", "u").await.is_err());
    assert_eq!(source.fetches(), 2, "the failure was not cached as success");
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry_by_the_skew() {
    let source = Counting::new(false, Duration::from_secs(30));
    source.open();
    let eager = TokenManager::with_options(Duration::from_secs(60), None);
    eager.register("p", "u", source.clone());
    eager.token("p", "u").await.unwrap();
    eager.token("p", "u").await.unwrap();
    assert_eq!(
        source.fetches(),
        2,
        "a 30 s token is inside a 60 s skew: refreshed"
    );

    let relaxed = TokenManager::with_options(Duration::from_secs(10), None);
    relaxed.register("p", "u", source.clone());
    relaxed.token("p", "u").await.unwrap();
    relaxed.token("p", "u").await.unwrap();
    assert_eq!(source.fetches(), 3, "outside a 10 s skew: cached");
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_and_the_call_retried_exactly_once() {
    let source = Counting::new(false, Duration::from_secs(3600));
    source.open();
    let manager = TokenManager::new();
    manager.register("p", "u", source.clone());
    let calls = AtomicUsize::new(0);
    let seen = manager
        .with_token("p", "u", |token| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(Error::new(ErrorKind::AuthExpired, "INVALID_SESSION_ID"))
                } else {
                    Ok(token.access_token.expose_secret().to_owned())
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(seen, "token-2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A platform that keeps rejecting: the call is retried once, not forever.
    let calls = AtomicUsize::new(0);
    let err = manager
        .with_token("p", "u", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Error::new(ErrorKind::AuthExpired, "INVALID_SESSION_ID")) }
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthExpired);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn tokens_persist_across_restarts_in_the_credential_store() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().unwrap();
    let path = dir.path().join("tokens.db");
    let source = Counting::new(false, Duration::from_secs(3600));
    source.open();
    {
        let store = Arc::new(
            EncryptedStore::create(&path, Keyring::new(key.clone()))
                .await
                .unwrap(),
        );
        let manager = TokenManager::with_options(Duration::from_secs(60), Some(store.clone()));
        manager.register("sf", "integration@acme.example", source.clone());
        manager
            .token("sf", "integration@acme.example")
            .await
            .unwrap();
        manager
            .token("sf", "integration@acme.example")
            .await
            .unwrap();
        let listed = store.list("tokens/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].readable.len(), 1, "older versions are retired");
    }
    // A new process: the token comes from the store, no request.
    let store = Arc::new(
        EncryptedStore::open(&path, Keyring::new(key))
            .await
            .unwrap(),
    );
    let manager = TokenManager::with_options(Duration::from_secs(60), Some(store));
    manager.register("sf", "integration@acme.example", source.clone());
    let token = manager
        .token("sf", "integration@acme.example")
        .await
        .unwrap();
    assert_eq!(token.access_token.expose_secret(), "token-1");
    assert_eq!(source.fetches(), 1);
}

/// Counts the requests a real source makes.
struct CountingReal {
    inner: Box<dyn TokenSource>,
    requests: AtomicUsize,
}

#[async_trait]
impl TokenSource for CountingReal {
    async fn fetch(&self, current: Option<&TokenSet>) -> Result<TokenSet> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch(current).await
    }
}

async fn real_client(oidc: &OidcProvider, id: &str, secret: &str) -> Arc<OAuthClient> {
    let http = moodbridge_auth::http::client().unwrap();
    let provider = Provider::discover("oidc", &http, &oidc.issuer)
        .await
        .unwrap();
    Arc::new(OAuthClient::new(provider, id, Some(SecretString::from(secret))).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_provider_a_hundred_concurrent_callers_make_one_token_request() {
    let oidc = OidcProvider::start(Options::default()).await;
    let source = Arc::new(CountingReal {
        inner: Box::new(ClientCredentialsSource {
            client: real_client(&oidc, "svc", "svc-secret").await,
            scopes: vec!["api:read".into()],
            resource: Some("urn:moodbridge:api".into()),
        }),
        requests: AtomicUsize::new(0),
    });
    let manager = TokenManager::new();
    manager.register("oidc", "svc", source.clone());
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (m, b) = (manager.clone(), barrier.clone());
            tokio::spawn(async move {
                b.wait().await;
                m.token("oidc", "svc").await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap());
    }
    assert_eq!(source.requests.load(Ordering::SeqCst), 1);
    assert!(tokens.iter().all(|t| Arc::ptr_eq(t, &tokens[0])));
}

#[tokio::test]
async fn against_the_provider_an_expiring_access_token_is_refreshed_with_the_rotated_refresh_token()
{
    let oidc = OidcProvider::start(Options {
        access_token_ttl: Some(30),
        ..Options::default()
    })
    .await;
    let web = real_client(&oidc, "web", "web-secret").await;
    let login = code_login(&web).await;
    let first_access = login.access_token.expose_secret().to_owned();
    let first_refresh = login
        .refresh_token
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();

    // A 60 s skew makes the 30 s access token due for refresh at once.
    let manager = TokenManager::with_options(Duration::from_secs(60), None);
    manager.register(
        "oidc",
        "alice",
        Arc::new(RefreshSource {
            client: web.clone(),
        }),
    );
    manager.seed("oidc", "alice", login).await.unwrap();
    let refreshed = manager.token("oidc", "alice").await.unwrap();
    assert_ne!(refreshed.access_token.expose_secret(), first_access);
    let second_refresh = refreshed
        .refresh_token
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    assert_ne!(
        second_refresh, first_refresh,
        "the rotated refresh token is kept"
    );
    // And it works: the next refresh uses it.
    let again = manager.token("oidc", "alice").await.unwrap();
    assert_ne!(
        again.access_token.expose_secret(),
        refreshed.access_token.expose_secret()
    );
}

/// A rotated client secret is used from the next token on, with nothing rebuilt: the
/// source reads the secret from the store at each fetch. Against the real OpenID
/// provider (oidc-provider), which knows only the new secret.
#[tokio::test]
async fn a_rotated_client_secret_is_picked_up_without_a_restart() {
    use moodbridge_auth::store::MemoryStore;
    use moodbridge_auth::token_manager::StoredClientCredentialsSource;
    use moodbridge_core::rotation::Rotation;

    let oidc = OidcProvider::start(Options::default()).await;
    let http = moodbridge_auth::http::client().unwrap();
    let provider = Provider::discover("test-oidc", &http, &oidc.issuer)
        .await
        .unwrap();
    let client = Arc::new(OAuthClient::new(provider, "svc", None).unwrap());
    let store: Arc<dyn CredentialStore> = Arc::new(MemoryStore::new());
    store
        .put(
            "oauth/svc/client_secret",
            SecretString::from("old-secret-never-logged"),
        )
        .await
        .unwrap();
    let manager = TokenManager::new();
    manager.register(
        "test-oidc",
        "svc",
        Arc::new(StoredClientCredentialsSource {
            client: client.clone(),
            store: store.clone(),
            secret_key: "oauth/svc/client_secret".to_owned(),
            scopes: vec!["api:read".to_owned()],
            resource: Some("urn:moodbridge:api".to_owned()),
        }),
    );
    // The provider no longer takes the old secret.
    let err = manager.token("test-oidc", "svc").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!format!("{err:?}").contains("old-secret-never-logged"));

    // Rotated in the store, checked against the provider before it is promoted.
    let rotation = Rotation::new(store.clone(), "oauth/svc/client_secret").grace(Duration::ZERO);
    let check = client.clone();
    rotation
        .rotate(
            SecretString::from("svc-secret"),
            async move |candidate: &SecretString| {
                check
                    .with_client_secret(candidate.clone())
                    .client_credentials(&["api:read"], Some("urn:moodbridge:api"))
                    .await
                    .map(|_| ())
            },
        )
        .await
        .unwrap();
    // The same manager and source: the next token comes with the new secret.
    let token = manager.token("test-oidc", "svc").await.unwrap();
    assert!(!token.access_token.expose_secret().is_empty());
    oidc.stop().await;
}
