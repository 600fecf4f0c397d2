//! How a sandbox behaves ([`SandboxConfig`]) and the faults it injects ([`Faults`]).

use std::time::Duration;

/// How the sandbox behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// API versions served (the client picks the newest it accepts).
    pub versions: Vec<String>,
    /// Records per query page (Salesforce's default is 2,000).
    pub page_size: usize,
    /// How long an access token lives.
    pub token_ttl: Duration,
    /// API calls allowed before `REQUEST_LIMIT_EXCEEDED`.
    pub daily_api_limit: u64,
    /// The connected app's client id.
    pub client_id: String,
    /// The connected app's client secret.
    pub client_secret: String,
    /// The connected app's certificate public key (PEM), for the JWT bearer grant.
    pub jwt_public_key_pem: Option<String>,
    /// Users the connected app is approved for (the JWT bearer grant's `sub`; the first
    /// is the one who consents in the web-server flow).
    pub users: Vec<String>,
    /// The connected app's callback URLs for the web-server flow. A loopback callback
    /// (`http://127.0.0.1/…`, `http://localhost/…`) matches on any port, as RFC 8252
    /// asks for native apps.
    pub callback_urls: Vec<String>,
    /// Whether the web-server flow requires PKCE (`code_challenge`, S256), as a
    /// connected app with "Require PKCE" does.
    pub require_pkce: bool,
    /// Records per Bulk API 2.0 query result page when the client sends no `maxRecords`.
    pub bulk_query_page_size: usize,
    /// How long a Bulk API 2.0 job waits before it is processed (to make `UploadComplete`
    /// / `InProgress` observable in tests; Salesforce queues jobs for seconds to minutes).
    pub bulk_processing_delay: Duration,
    /// How long a Streaming API `/meta/connect` is held when no event arrives
    /// (Salesforce: 110 s).
    pub cometd_timeout: Duration,
    /// Change events kept for replay (Salesforce keeps 72 hours' worth); a replay id
    /// older than the window is refused as Salesforce refuses it.
    pub cdc_retention: usize,
    /// The granularity of the delete log's times (`sObject Get Deleted` ignores seconds:
    /// Salesforce's is one minute). A window must be longer than it.
    pub delete_log_granularity: Duration,
    /// Serve https with a throwaway self-signed certificate for `127.0.0.1` (cargo
    /// feature `tls`); clients trust it through
    /// [`RunningSandbox::ca_pem`](crate::RunningSandbox::ca_pem).
    pub tls: bool,
    /// How long a Pub/Sub API subscription waits with nothing to send before an empty
    /// keepalive response (Salesforce: 270 s).
    pub pubsub_keepalive: Duration,
    /// How long a Pub/Sub API publish stream may go without a publish request carrying
    /// events before the server closes it (Salesforce: 70 s).
    pub pubsub_publish_idle: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            versions: ["59.0", "60.0", "61.0", "62.0"].map(String::from).to_vec(),
            page_size: 2_000,
            token_ttl: Duration::from_secs(7_200),
            daily_api_limit: 100_000,
            client_id: "sandbox-client".into(),
            client_secret: "sandbox-secret".into(),
            jwt_public_key_pem: None,
            users: vec!["integration@moodbridge.test".into()],
            callback_urls: vec![
                "http://127.0.0.1/callback".into(),
                "http://localhost:1717/OauthRedirect".into(),
            ],
            require_pkce: true,
            bulk_query_page_size: 50_000,
            bulk_processing_delay: Duration::ZERO,
            cometd_timeout: Duration::from_secs(110),
            cdc_retention: crate::changes::DEFAULT_RETENTION,
            delete_log_granularity: Duration::from_secs(60),
            tls: false,
            pubsub_keepalive: Duration::from_secs(270),
            pubsub_publish_idle: Duration::from_secs(70),
        }
    }
}

/// Faults the sandbox injects into API calls (under `/services/data/vXX.X/`), from a
/// seeded generator so a failing test can be replayed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Added to every call.
    pub latency: Duration,
    /// Share of calls answered 503 `SERVER_UNAVAILABLE` (half) or 429 concurrent-limit
    /// `REQUEST_LIMIT_EXCEEDED` (half).
    pub error_rate: f64,
    /// Share of calls whose connection drops after the headers.
    pub drop_rate: f64,
    /// The first this many calls are answered 503 `SERVER_UNAVAILABLE` (`u64::MAX`: every
    /// call), before any other fault.
    pub unavailable_first: u64,
    /// After this many calls, every call is refused with the daily
    /// `REQUEST_LIMIT_EXCEEDED`.
    pub request_limit_after: Option<u64>,
    /// At this call, every session ends (`INVALID_SESSION_ID` until a new token).
    pub invalid_session_after: Option<u64>,
    /// Seed of the generator.
    pub seed: u64,
}
