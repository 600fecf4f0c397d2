//! A local Snowflake protocol server, for what no emulator offers: results large enough
//! to come in chunks, asynchronous and long-running queries, multi-statement requests,
//! session expiry and renewal, key-pair logins verified against registered keys, cancel,
//! and injected faults. On 127.0.0.1 only, for tests and benchmarks. Its fidelity is
//! held to what Snowflake's own Python connector accepts from it unchanged
//! (`tests/python_connector.rs`).
//!
//! It speaks the drivers' protocol (not the SQL API):
//!
//! | endpoint | what it does |
//! |---|---|
//! | `POST /session/v1/login-request` | password, `SNOWFLAKE_JWT` (RS256, `iss = ACCOUNT.USER.SHA256:<fingerprint>`), `OAUTH` and `PROGRAMMATIC_ACCESS_TOKEN` logins; session and master tokens |
//! | `POST /session/token-request` | a new session token for the master token (390112 → renew; 390114 → log in again) |
//! | `POST /session/heartbeat`, `POST /session?delete=true` | keep-alive and logout |
//! | `POST /queries/v1/query-request` | statements ([`sql`](#statements)), binds and array binds, `asyncExec`, `MULTI_STATEMENT_COUNT`, `QUERY_TAG`; a repeated `requestId` is answered, not run again |
//! | `GET /queries/<id>/result`, `GET /monitoring/queries/<id>` | results and status of running and finished queries (333333 while running) |
//! | `POST /queries/v1/abort-request`, `POST /queries/<id>/abort-request` | cancel |
//! | `GET /chunks/<id>/<n>` | result chunks: gzip Arrow IPC, only with the `qrmk` key as S3's SSE-C headers |
//! | `PUT`, `GET /stage-files/<stage>/<path>` | stage files behind presigned URLs, as a GCS bucket: the bytes and `x-goog-meta-*` headers kept as sent, `x-goog-if-generation-match: 0` create-only, unsigned `x-goog-*` headers refused |
//!
//! # Statements
//! A small subset, enough for the protocol: `SELECT * FROM t [LIMIT n]`, `SELECT
//! COUNT(*) FROM t`, `SELECT n`, `SELECT SYSTEM$WAIT(n)`, `SELECT * FROM
//! TABLE(RESULT_SCAN('<id>'))`, `SELECT SYSTEM$CANCEL_QUERY('<id>')` and `INSERT INTO t
//! [(c, …)] VALUES (…)` with `?` binds. Tables are registered up front ([`Table`]);
//! [`Table::accounts`] makes a deterministic table of any size.
//!
//! Stages: `PUT 'file://…' @stage[/path]`, `GET @stage[/path] 'file://…'`, `LIST` and
//! `REMOVE` answer as Snowflake does for an internal stage on GCS: presigned URLs and
//! the stages' master key (clients encrypt; the sandbox never decrypts). With
//! [`StageStorage::S3`] or [`StageStorage::Azure`], `PUT` sends the client to a storage
//! service of the test's choosing instead.
//!
//! ```
//! use snowflake_sandbox::{Sandbox, SandboxConfig, Table, User};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let sandbox = Sandbox::start(
//!     SandboxConfig::new("ACME")
//!         .user(User::new("loader").password("s3cret"))
//!         .table(Table::accounts("ACCOUNTS", 10_000)),
//! )
//! .await
//! .unwrap();
//! assert!(sandbox.url().starts_with("http://127.0.0.1:"));
//! sandbox.fail_next_chunks(1);
//! assert!(sandbox.queries().is_empty());
//! sandbox.stop().await;
//! # });
//! ```

mod query;
mod server;
mod session;
mod sql;
mod stage;
mod table;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

pub use query::QueryRecord;
pub use session::{User, key_pair};
pub use stage::{StageFile, StageStorage};
pub use table::{ColumnDef, ColumnKind, Table};

use query::Layout;
use server::{State, lock};

/// How the sandbox is set up.
///
/// ```
/// use std::time::Duration;
/// use snowflake_sandbox::SandboxConfig;
/// let config = SandboxConfig::new("acme")
///     .session_validity(Duration::from_secs(5))
///     .chunk_rows(1000, 50_000);
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    account: String,
    users: Vec<User>,
    tables: Vec<Table>,
    grants: Vec<Grant>,
    bind_threshold: u64,
    validity: Duration,
    master_validity: Duration,
    in_progress_after: Duration,
    layout: Layout,
    stage_storage: StageStorage,
}

impl SandboxConfig {
    /// A sandbox for `account` (upper-cased) with no users and no tables. Sessions last
    /// an hour, master tokens four; the first 1,000 rows of a result come inline and the
    /// rest in chunks of 100,000 (gzip); a statement still running after 2 s is answered
    /// "in progress" (Snowflake waits 45 s).
    pub fn new(account: &str) -> Self {
        SandboxConfig {
            account: account.to_ascii_uppercase(),
            users: Vec::new(),
            tables: Vec::new(),
            grants: Vec::new(),
            bind_threshold: 0,
            validity: Duration::from_secs(3600),
            master_validity: Duration::from_secs(4 * 3600),
            in_progress_after: Duration::from_secs(2),
            layout: Layout {
                first_chunk_rows: 1000,
                chunk_rows: 100_000,
                gzip: true,
            },
            stage_storage: StageStorage::Gcs,
        }
    }

    /// Add a user.
    #[must_use]
    pub fn user(mut self, user: User) -> Self {
        self.users.push(user);
        self
    }

    /// Add a table.
    #[must_use]
    pub fn table(mut self, table: Table) -> Self {
        self.tables.push(table);
        self
    }

    /// Grant `privilege` on the object `name` of kind `granted_on` (`WAREHOUSE`,
    /// `DATABASE`, `SCHEMA`, `ACCOUNT`, `ROLE` …) to `role`, as `SHOW GRANTS TO ROLE`
    /// lists it (the sandbox does not enforce grants).
    #[must_use]
    pub fn grant(mut self, role: &str, privilege: &str, granted_on: &str, name: &str) -> Self {
        self.grants.push(Grant {
            role: role.to_ascii_uppercase(),
            privilege: privilege.to_ascii_uppercase(),
            granted_on: granted_on.to_ascii_uppercase(),
            name: name.to_owned(),
        });
        self
    }

    /// Tell clients to stage array binds of at least `values` values
    /// (`CLIENT_STAGE_ARRAY_BINDING_THRESHOLD`; 0, the default, never): they upload the
    /// binds as CSV to a temporary stage and send its path as `bindStage`, which the
    /// sandbox reads back (decrypted, gunzipped) as the statement's binds.
    #[must_use]
    pub fn stage_binding_threshold(mut self, values: u64) -> Self {
        self.bind_threshold = values;
        self
    }

    /// How long a session token lasts.
    #[must_use]
    pub fn session_validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// How long a master token lasts.
    #[must_use]
    pub fn master_validity(mut self, validity: Duration) -> Self {
        self.master_validity = validity;
        self
    }

    /// Rows served inline and rows per chunk.
    #[must_use]
    pub fn chunk_rows(mut self, first: usize, per_chunk: usize) -> Self {
        self.layout.first_chunk_rows = first;
        self.layout.chunk_rows = per_chunk.max(1);
        self
    }

    /// Serve chunks uncompressed (`Content-Encoding` unset) instead of gzip.
    #[must_use]
    pub fn plain_chunks(mut self) -> Self {
        self.layout.gzip = false;
        self
    }

    /// How long a request waits for its statement before answering "in progress"
    /// (333333) with the URL to poll.
    #[must_use]
    pub fn in_progress_after(mut self, wait: Duration) -> Self {
        self.in_progress_after = wait;
        self
    }

    /// Where `PUT` sends files ([`StageStorage::Gcs`], kept by the sandbox, by default).
    #[must_use]
    pub fn stage_storage(mut self, storage: StageStorage) -> Self {
        self.stage_storage = storage;
        self
    }
}

/// A privilege granted to a role (see [`SandboxConfig::grant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub role: String,
    pub privilege: String,
    pub granted_on: String,
    pub name: String,
}

/// A running sandbox. Stop it with [`stop`](Sandbox::stop) (dropping it stops it too).
#[derive(Debug)]
pub struct Sandbox {
    url: String,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sandbox {
    /// Start on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn start(config: SandboxConfig) -> moodbridge_core::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| moodbridge_core::Error::internal(format!("bind 127.0.0.1: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| moodbridge_core::Error::internal(format!("the bound address: {e}")))?;
        let url = format!("http://{address}");
        let tables: HashMap<String, Table> = config
            .tables
            .into_iter()
            .map(|t| (t.name().to_owned(), t))
            .collect();
        let state = Arc::new(State {
            account: config.account,
            users: config.users,
            validity: config.validity,
            master_validity: config.master_validity,
            in_progress_after: config.in_progress_after,
            layout: config.layout,
            base: url.clone(),
            sessions: Mutex::default(),
            tables: Mutex::new(tables),
            grants: config.grants,
            bind_threshold: config.bind_threshold,
            queries: Mutex::default(),
            faults: server::Faults::default(),
            renewals: Default::default(),
            stages: Mutex::new(stage::Stages::new(config.stage_storage)),
        });
        let (shutdown, stopped) = oneshot::channel::<()>();
        let app = server::router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Sandbox {
            url,
            state,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default()
    }

    /// The account it serves.
    pub fn account(&self) -> &str {
        &self.state.account
    }

    /// Every query run so far, oldest first.
    pub fn queries(&self) -> Vec<QueryRecord> {
        lock(&self.state.queries).records()
    }

    /// Rows in table `name`, `None` when there is no such table.
    pub fn table_rows(&self, name: &str) -> Option<usize> {
        lock(&self.state.tables)
            .get(&name.to_ascii_uppercase())
            .map(Table::num_rows)
    }

    /// Live sessions.
    pub fn sessions(&self) -> usize {
        lock(&self.state.sessions).len()
    }

    /// Session tokens renewed by master tokens so far.
    pub fn renewals(&self) -> u32 {
        self.state.renewals.load(Ordering::SeqCst)
    }

    /// Every session token expires now: the next request gets 390112 and must renew.
    pub fn expire_sessions(&self) {
        lock(&self.state.sessions).expire_all();
    }

    /// Every master token (and session token) expires now: renewal gets 390114 and the
    /// client must log in again.
    pub fn expire_master_tokens(&self) {
        lock(&self.state.sessions).expire_masters();
    }

    /// The next `n` statement requests get HTTP 429, without running.
    pub fn throttle_next(&self, n: u32) {
        self.state.faults.throttle.store(n, Ordering::SeqCst);
    }

    /// The next `n` statement requests get HTTP 503, without running.
    pub fn fail_next_requests(&self, n: u32) {
        self.state.faults.unavailable.store(n, Ordering::SeqCst);
    }

    /// The next `n` statement requests run, but their answers are lost (HTTP 503): a
    /// client that retries with the same `requestId` gets the result of the one run.
    pub fn lose_next_responses(&self, n: u32) {
        self.state.faults.lose_responses.store(n, Ordering::SeqCst);
    }

    /// The chunk keys (`qrmk`) handed out so far, for tests that check no key leaks.
    pub fn chunk_keys(&self) -> Vec<String> {
        lock(&self.state.queries)
            .by_id
            .values()
            .filter_map(|q| q.served.as_ref().and_then(|s| s.qrmk.clone()))
            .collect()
    }

    /// The next `n` chunk downloads get HTTP 503, whose body echoes the key the request
    /// carried (as a misbehaving store might).
    pub fn fail_next_chunks(&self, n: u32) {
        self.state.faults.chunk_failures.store(n, Ordering::SeqCst);
    }

    /// The stages' master key (base64), with which clients encrypt what they put.
    pub fn stage_master_key(&self) -> String {
        lock(&self.state.stages).master_key()
    }

    /// The files in the sandbox's stages, as `<STAGE>/<path>`.
    pub fn stage_files(&self) -> Vec<String> {
        lock(&self.state.stages).names()
    }

    /// A stored stage file as it was sent (`<STAGE>/<path>`).
    pub fn stage_file(&self, key: &str) -> Option<StageFile> {
        lock(&self.state.stages).raw(key)
    }

    /// Stop serving and wait until the server is down.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
