//! A local Salesforce-compatible sandbox server, built from the published REST API
//! reference because Salesforce has no emulator: for tests, examples and local
//! development, on 127.0.0.1 only. Hosts reach it as `moodbridge::salesforce::sandbox`
//! (umbrella feature `sandbox`).
//!
//! It serves what the connector uses, faithfully to the reference: `/services/data`
//! versions, the OAuth token endpoint (client credentials, refresh token, and the JWT
//! bearer grant verified against the connected app's certificate),
//! query / queryMore (server-side cursors, 2,000 records a page by default) / queryAll
//! (soft-deleted records included), a SOQL parser for the subset the builder emits,
//! sObject create / retrieve / update / delete / upsert by external id, describeGlobal
//! and describe (with `If-Modified-Since`), limits and a `Sforce-Limit-Info` header that
//! counts down, Salesforce's error format, and `SystemModstamp` / `LastModifiedDate`
//! maintenance. Data lives in memory and can be seeded deterministically. [`Faults`]
//! injects latency, 503 / 429, the daily request limit after N calls, session expiry at
//! call N, and dropped connections.
//!
//! ```
//! use salesforce_sandbox::{Sandbox, SandboxConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let sandbox = Sandbox::new(SandboxConfig::default()).seed(5, 2, 42).start().await.unwrap();
//! assert!(sandbox.url().starts_with("http://127.0.0.1:"));
//! let token = sandbox.issue_token();
//! assert!(!token.is_empty());
//! sandbox.stop().await;
//! # });
//! ```

mod bulk;
mod cdc;
mod changes;
mod composite;
mod config;
mod error;
mod eval;
mod oauth;
pub mod org;
#[cfg(feature = "pubsub")]
mod pubsub;
mod reply;
mod server;
pub mod soql;
pub mod sosl;
mod state;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "pubsub")]
mod tooling;

use moodbridge_core::{Error, Result};
use std::sync::Arc;
use tokio::sync::oneshot;

pub use config::{Faults, SandboxConfig};
pub use error::ApiError;
use org::{ObjectDef, Org};

/// A sandbox to be started.
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    org: Org,
}

impl Sandbox {
    /// A sandbox with Account, Contact and Case and no data.
    pub fn new(config: SandboxConfig) -> Self {
        Sandbox {
            config,
            org: Org::default(),
        }
    }

    /// Add a custom object.
    #[must_use]
    pub fn define(mut self, object: ObjectDef) -> Self {
        self.org.define(object);
        self
    }

    /// Seed `accounts` Accounts with `per_account` Contacts and Cases each,
    /// deterministically from `seed`.
    #[must_use]
    pub fn seed(mut self, accounts: u32, per_account: u32, seed: u64) -> Self {
        self.org.seed(accounts, per_account, seed);
        self
    }

    /// Start serving on 127.0.0.1 at a free port.
    pub async fn start(self) -> Result<RunningSandbox> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| {
                Error::unavailable("cannot bind the sandbox to 127.0.0.1").with_source(e)
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal("the sandbox has no address").with_source(e))?;
        #[cfg(feature = "tls")]
        let tls = match self.config.tls {
            true => Some(tls::self_signed()?),
            false => None,
        };
        #[cfg(not(feature = "tls"))]
        if self.config.tls {
            return Err(Error::config("the sandbox was built without https")
                .with_hint("enable salesforce-sandbox's cargo feature `tls`"));
        }
        let scheme = if self.config.tls { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let mut org = self.org;
        org.changes.set_retention(self.config.cdc_retention);
        let core = Arc::new(state::Core::new(org, self.config, url.clone()));
        let server::Server {
            router: app,
            bulk,
            streaming,
        } = server::server(core.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        #[cfg(feature = "tls")]
        let ca_pem = tls.as_ref().map(|t| t.cert_pem.clone());
        #[cfg(not(feature = "tls"))]
        let ca_pem = None;
        let task = tokio::spawn(async move {
            #[cfg(feature = "tls")]
            if let Some(tls) = tls {
                tls::serve(listener, tls.acceptor, app, stopped).await;
                return;
            }
            let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(RunningSandbox {
            url,
            ca_pem,
            core,
            bulk,
            streaming,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A running sandbox; stopped by [`stop`](RunningSandbox::stop) or when dropped.
pub struct RunningSandbox {
    url: String,
    /// The self-signed certificate it serves https with (PEM).
    ca_pem: Option<String>,
    core: Arc<state::Core>,
    bulk: Arc<bulk::Bulk>,
    streaming: Arc<cdc::Streaming>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSandbox")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RunningSandbox {
    /// Its base URL (`http://127.0.0.1:PORT`), the `instance_url` of its tokens.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The certificate it serves https with, PEM (with [`SandboxConfig::tls`]): what a
    /// client adds to its trusted roots. `None` over plain http.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The sandbox as an OAuth provider: its authorize, token and revoke endpoints.
    pub fn provider(&self) -> Result<moodbridge_auth::oauth::Provider> {
        let endpoint = |path: &str| {
            format!("{}{path}", self.url)
                .parse()
                .map_err(|e| Error::internal(format!("sandbox URL {}: {e}", self.url)))
        };
        Ok(moodbridge_auth::oauth::Provider {
            name: "salesforce-sandbox".into(),
            issuer: self.url.clone(),
            authorization_endpoint: Some(endpoint("/services/oauth2/authorize")?),
            token_endpoint: endpoint("/services/oauth2/token")?,
            revocation_endpoint: Some(endpoint("/services/oauth2/revoke")?),
            jwks_uri: None,
            client_auth: moodbridge_auth::oauth::ClientAuth::Body,
        })
    }

    /// A client builder for integration `id` wired to the sandbox: tokens from its
    /// connected app by the client-credentials grant (kept by a new token manager under
    /// `("salesforce-sandbox", "integration")`), loopback instances allowed. Set a policy
    /// on it and `connect()`.
    ///
    /// ```no_run
    /// # async fn f() -> moodbridge_core::Result<()> {
    /// use salesforce_sandbox::{Sandbox, SandboxConfig};
    /// let sandbox = Sandbox::new(SandboxConfig::default()).seed(10, 1, 1).start().await?;
    /// let client = sandbox.client_builder("salesforce:dev")?.connect().await?;
    /// assert_eq!(client.api_version(), "62.0");
    /// # Ok(()) }
    /// ```
    pub fn client_builder(&self, id: &str) -> Result<connector_salesforce::client::ClientBuilder> {
        use moodbridge_auth::oauth::OAuthClient;
        use moodbridge_auth::token_manager::{ClientCredentialsSource, TokenManager};
        let config = &self.core.config;
        let app = OAuthClient::new(
            self.provider()?,
            &config.client_id,
            Some(secrecy::SecretString::from(config.client_secret.clone())),
        )?;
        let tokens = TokenManager::new();
        tokens.register(
            "salesforce-sandbox",
            "integration",
            Arc::new(ClientCredentialsSource {
                client: Arc::new(app),
                scopes: Vec::new(),
                resource: None,
            }),
        );
        Ok(connector_salesforce::client::SalesforceClient::builder(
            id,
            tokens,
            "salesforce-sandbox",
            "integration",
        )
        .allow_instances(
            connector_salesforce::instance::InstanceAllowList::default().with_loopback(),
        ))
    }

    /// A valid access token, without going through the token endpoint.
    pub fn issue_token(&self) -> String {
        self.core.issue_token()
    }

    /// A refresh token the token endpoint accepts.
    pub fn issue_refresh_token(&self) -> String {
        self.core.issue_refresh_token()
    }

    /// Inject `faults` into the calls from now on (call counting restarts).
    pub fn set_faults(&self, faults: Faults) {
        self.core
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .set(faults);
    }

    /// API calls seen since the faults were last set.
    pub fn api_calls(&self) -> u64 {
        self.core
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .calls()
    }

    /// Expire every access token now (the next call gets `INVALID_SESSION_ID`).
    pub fn expire_tokens(&self) {
        self.core.expire_tokens();
    }

    /// Every Bulk API 2.0 job: `(id, state)`, ingest and query jobs alike.
    pub fn bulk_jobs(&self) -> Vec<(String, String)> {
        self.bulk.bulk_jobs()
    }

    /// The SOQL of every Bulk API 2.0 query job, oldest first, as the client sent it.
    ///
    /// ```no_run
    /// # async fn run() -> moodbridge_core::Result<()> {
    /// use salesforce_sandbox::{Sandbox, SandboxConfig};
    /// let sb = Sandbox::new(SandboxConfig::default()).start().await?;
    /// assert!(sb.bulk_queries().is_empty());
    /// # sb.stop().await; Ok(()) }
    /// ```
    pub fn bulk_queries(&self) -> Vec<String> {
        self.bulk.bulk_queries()
    }

    /// Forget every Streaming API client (as a server restart would): their next connect
    /// is told to handshake again.
    pub fn drop_streaming_clients(&self) {
        self.streaming.drop_clients();
    }

    /// The org, to inspect or change it directly.
    pub fn with_org<T>(&self, f: impl FnOnce(&mut Org) -> T) -> T {
        let mut org = self
            .core
            .org
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut org)
    }

    /// Define a managed subscription of the Pub/Sub API (Salesforce's
    /// `ManagedEventSubscription` record) named `developer_name` on `topic`, starting at
    /// the earliest event kept or (`from_earliest` false) at the newest; its id.
    #[cfg(feature = "pubsub")]
    pub fn define_managed_subscription(
        &self,
        developer_name: &str,
        topic: &str,
        from_earliest: bool,
    ) -> String {
        // An 18-character id: "18x", pod "8d", reserved "0", 9 base-62 digits, and the
        // case checksum.
        let id = org::id18(&format!(
            "18x8d0{}",
            org::base62(self.core.next_number(), 9)
        ));
        self.core
            .managed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                id.clone(),
                state::Managed {
                    name: developer_name.to_owned(),
                    topic: topic.to_owned(),
                    from_earliest,
                    committed: None,
                },
            );
        id
    }

    /// Define platform event `name` (`Case_Update__e`) with `fields` (custom fields;
    /// `CreatedDate` and `CreatedById` are added): topic `/event/<name>` of the Pub/Sub
    /// API, where events can be published and subscribed to.
    #[cfg(feature = "pubsub")]
    pub fn define_platform_event(&self, name: &str, fields: Vec<org::FieldDef>) {
        let mut all = vec![
            org::FieldDef::new("CreatedDate", "datetime"),
            org::FieldDef::new("CreatedById", "reference"),
        ];
        all.extend(fields);
        self.core
            .platform_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                name.to_owned(),
                org::ObjectDef {
                    name: name.to_owned(),
                    key_prefix: "e00".to_owned(),
                    fields: all,
                },
            );
    }

    /// The replay id last committed on managed subscription `developer_name`.
    #[cfg(feature = "pubsub")]
    pub fn managed_committed(&self, developer_name: &str) -> Option<i64> {
        self.core
            .managed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .find(|m| m.name == developer_name)
            .and_then(|m| m.committed)
    }

    /// Stop serving and wait until the server is down.
    pub async fn stop(mut self) {
        self.core
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.core
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Sandbox, SandboxConfig};

    /// A query job's render holds the org for reading; describes and queries are
    /// answered meanwhile (under an exclusive lock they would wait for the render).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_are_answered_while_the_org_is_held_for_reading() {
        let sb = Sandbox::new(SandboxConfig::default())
            .seed(3, 0, 1)
            .start()
            .await
            .unwrap();
        let token = sb.issue_token();
        let http = reqwest::Client::new();
        // Held on a thread of its own, as the render holds it.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let shared = sb.core.clone();
        let holder = std::thread::spawn(move || {
            let _org = shared.org();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        held_rx.recv().unwrap();
        for path in [
            "/services/data/v62.0/sobjects/Account/describe",
            "/services/data/v62.0/query?q=SELECT+Id+FROM+Account",
        ] {
            let answer = tokio::time::timeout(
                Duration::from_secs(30),
                http.get(format!("{}{path}", sb.url()))
                    .bearer_auth(&token)
                    .send(),
            )
            .await
            .unwrap_or_else(|_| panic!("{path} waited for the org"))
            .unwrap();
            assert_eq!(answer.status(), 200, "{path}");
        }
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        sb.stop().await;
    }

    /// Every instance hands out its own unpredictable tokens: the first token of one
    /// sandbox says nothing about another's.
    #[tokio::test]
    async fn tokens_are_random_in_every_instance() {
        let a = Sandbox::new(SandboxConfig::default())
            .start()
            .await
            .unwrap();
        let b = Sandbox::new(SandboxConfig::default())
            .start()
            .await
            .unwrap();
        let (ta, tb) = (a.issue_token(), b.issue_token());
        assert_ne!(ta, tb);
        assert_ne!(a.issue_refresh_token(), b.issue_refresh_token());
        let random = ta.rsplit('.').next().unwrap_or_default();
        assert_eq!(random.len(), 32, "{ta}");
        a.stop().await;
        b.stop().await;
    }
}
