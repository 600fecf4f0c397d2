//! The state every part of a running sandbox shares.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use crate::config::{Faults, SandboxConfig};
use crate::error::ApiError;
use crate::eval;
use crate::org::Org;

/// What every part of a running sandbox shares: the org, the configuration, sessions,
/// query cursors, the API-call count and the injected faults. Bulk jobs, streaming
/// clients and authorization codes belong to the parts that serve them.
pub(crate) struct Core {
    /// Read by many requests at once (a query job's render among them); written by one.
    pub(crate) org: RwLock<Org>,
    pub(crate) config: SandboxConfig,
    pub(crate) base_url: String,
    tokens: Mutex<HashMap<String, Instant>>,
    refresh_tokens: Mutex<HashMap<String, ()>>,
    pub(crate) cursors: Mutex<HashMap<String, Cursor>>,
    pub(crate) api_used: Mutex<u64>,
    next: Mutex<u64>,
    pub(crate) faults: Mutex<FaultState>,
    /// Set when the sandbox stops: long-lived streams (Pub/Sub subscriptions) end, so
    /// that the server's graceful shutdown does not wait for them.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// The Pub/Sub API's managed subscriptions, by id.
    #[cfg(feature = "pubsub")]
    pub(crate) managed: Mutex<HashMap<String, Managed>>,
    /// The platform events defined (`Case_Update__e`), by name.
    #[cfg(feature = "pubsub")]
    pub(crate) platform_events: Mutex<HashMap<String, crate::org::ObjectDef>>,
}

/// A managed subscription (Salesforce's `ManagedEventSubscription` record): a topic,
/// where a first subscription starts, and the replay id last committed.
#[cfg(feature = "pubsub")]
#[derive(Debug, Clone)]
pub(crate) struct Managed {
    pub(crate) name: String,
    pub(crate) topic: String,
    pub(crate) from_earliest: bool,
    pub(crate) committed: Option<i64>,
}

/// An API part's state reads through to the [`Core`] it holds in its `core` field.
macro_rules! deref_to_core {
    ($part:ty) => {
        impl std::ops::Deref for $part {
            type Target = $crate::state::Core;
            fn deref(&self) -> &$crate::state::Core {
                &self.core
            }
        }
    };
}
pub(crate) use deref_to_core;

/// 128 random bits as 32 hex digits, for the secrets the sandbox hands out (tokens,
/// authorization codes): unpredictable in every instance, as a real server's are.
pub(crate) fn secret_text() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// Injected faults and their seeded random generator.
#[derive(Default)]
pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    rng: u64,
    calls: u64,
}

/// What the fault injector decided for one call.
pub(crate) enum Injected {
    None,
    Status(StatusCode, ApiError),
    Drop,
}

impl FaultState {
    pub(crate) fn set(&mut self, faults: Faults) {
        self.rng = faults.seed | 1;
        self.calls = 0;
        self.faults = faults;
    }

    pub(crate) fn calls(&self) -> u64 {
        self.calls
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Decide the fault of the next call; `expire` is set when sessions must end now.
    pub(crate) fn next(&mut self, expire: &mut bool) -> (std::time::Duration, Injected) {
        self.calls += 1;
        let f = self.faults.clone();
        if f.invalid_session_after == Some(self.calls) {
            *expire = true;
        }
        if self.calls <= f.unavailable_first {
            return (
                f.latency,
                Injected::Status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ApiError::new("SERVER_UNAVAILABLE", "Server temporarily unavailable"),
                ),
            );
        }
        if f.request_limit_after.is_some_and(|n| self.calls > n) {
            return (
                f.latency,
                Injected::Status(
                    StatusCode::FORBIDDEN,
                    ApiError::new("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
                ),
            );
        }
        let roll = self.random();
        let injected = if roll < f.error_rate / 2.0 {
            Injected::Status(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiError::new("SERVER_UNAVAILABLE", "Server temporarily unavailable"),
            )
        } else if roll < f.error_rate {
            Injected::Status(
                StatusCode::TOO_MANY_REQUESTS,
                ApiError::new(
                    "REQUEST_LIMIT_EXCEEDED",
                    "ConcurrentPerOrgLongTxn Limit exceeded",
                ),
            )
        } else if roll < f.error_rate + f.drop_rate {
            Injected::Drop
        } else {
            Injected::None
        };
        (f.latency, injected)
    }
}

/// A query's remaining records, fetched page by page with its locator.
pub(crate) struct Cursor {
    /// The records not yet paged through.
    pub(crate) records: std::vec::IntoIter<Value>,
    pub(crate) version: String,
}

impl Core {
    /// The state of a sandbox serving `org` at `base_url`.
    pub(crate) fn new(mut org: Org, config: SandboxConfig, base_url: String) -> Self {
        org.set_topic_filter(eval::matches);
        Core {
            org: RwLock::new(org),
            config,
            base_url,
            tokens: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
            api_used: Mutex::new(0),
            next: Mutex::new(0),
            faults: Mutex::new(FaultState::default()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "pubsub")]
            managed: Mutex::new(HashMap::new()),
            #[cfg(feature = "pubsub")]
            platform_events: Mutex::new(HashMap::new()),
        }
    }

    /// The next number of the sandbox's counter (ids of jobs, cursors, tokens).
    pub(crate) fn next_number(&self) -> u64 {
        let mut n = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        *n += 1;
        *n
    }

    /// A new access token, valid for the configured time.
    pub(crate) fn issue_token(&self) -> String {
        let token = format!("00D8d0000000001!sandbox.{}", secret_text());
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), Instant::now() + self.config.token_ttl);
        token
    }

    /// A new refresh token.
    pub(crate) fn issue_refresh_token(&self) -> String {
        let token = format!("5Aep861sandbox{}", secret_text());
        self.refresh_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.clone(), ());
        token
    }

    /// Whether the request's `Authorization: Bearer|OAuth <token>` is a live session.
    pub(crate) fn session_valid(&self, headers: &HeaderMap) -> bool {
        let session = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("OAuth "))
            });
        session.is_some_and(|t| self.token_live(t))
    }

    /// Whether `token` is a live access token.
    pub(crate) fn token_live(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Whether `token` is a live refresh token.
    pub(crate) fn refresh_token_known(&self, token: &str) -> bool {
        self.refresh_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(token)
    }

    /// Revoke an access or refresh token; `false` when it was neither.
    pub(crate) fn revoke(&self, token: &str) -> bool {
        let access = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token)
            .is_some();
        let refresh = self
            .refresh_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token)
            .is_some();
        access || refresh
    }

    /// End every access token now (as a session timeout would).
    pub(crate) fn expire_tokens(&self) {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The org, to read (shared with other readers).
    pub(crate) fn org(&self) -> std::sync::RwLockReadGuard<'_, Org> {
        self.org.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The org, to change (alone).
    pub(crate) fn org_mut(&self) -> std::sync::RwLockWriteGuard<'_, Org> {
        self.org.write().unwrap_or_else(PoisonError::into_inner)
    }
}
