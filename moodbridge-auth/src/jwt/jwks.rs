//! The signing keys of one issuer, fetched from its JWKS URI and cached.
//!
//! - Keys are cached for a TTL, then re-fetched on the next use.
//! - A token with an unknown `kid` triggers a re-fetch (the issuer may have rotated its
//!   keys), but at most once per `refetch_interval`, so a flood of tokens with made-up key
//!   ids cannot make us hammer the issuer.
//! - Fetches are single-flight: concurrent callers wait for one request.
//! - A failed fetch is not repeated for every token: for `refetch_interval` the keys
//!   fetched before keep working and other tokens are refused as `Unavailable` at once.
//! - A key whose JWK names an `alg` verifies that algorithm only.
//! - Only asymmetric keys are accepted from a JWKS (`RSA`, `EC`, `OKP`); a symmetric
//!   (`oct`) key, or a key marked for encryption, is ignored — so a public key can never
//!   become an HMAC secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use moodbridge_core::{Error, Result};
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::http::{MAX_METADATA_BYTES, get_json};

/// Which algorithm family a key may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFamily {
    Rsa,
    Ec,
    Ed,
}

pub(crate) struct Key {
    pub(crate) family: KeyFamily,
    /// The one algorithm the key may verify, when the JWKS says (`alg`).
    pub(crate) alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

/// The signature algorithm a JWK's `alg` names; `None` for an encryption algorithm.
fn signing_algorithm(alg: &KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The state of fetching: when the last attempt was, and when it last failed.
#[derive(Default)]
struct FetchState {
    attempted: Option<Instant>,
    failed: Option<Instant>,
}

struct KeySet {
    fetched_at: Instant,
    keys: HashMap<String, Arc<Key>>,
}

pub(crate) struct JwksCache {
    url: Url,
    ttl: Duration,
    refetch_interval: Duration,
    current: ArcSwapOption<KeySet>,
    /// Single-flight guard; holds when the last fetch was attempted and last failed.
    fetch: Mutex<FetchState>,
}

pub(crate) enum Lookup {
    Found(Arc<Key>),
    /// Not in the key set, even after a re-fetch (or a re-fetch was rate-limited).
    Unknown {
        refetched: bool,
    },
}

impl JwksCache {
    pub(crate) fn new(url: Url, ttl: Duration, refetch_interval: Duration) -> Self {
        JwksCache {
            url,
            ttl,
            refetch_interval,
            current: ArcSwapOption::empty(),
            fetch: Mutex::new(FetchState::default()),
        }
    }

    /// The key with id `kid`, fetching or re-fetching the key set as the rules allow.
    pub(crate) async fn key(&self, client: &reqwest::Client, kid: &str) -> Result<Lookup> {
        if let Some(set) = self.current.load_full()
            && set.fetched_at.elapsed() < self.ttl
            && let Some(key) = set.keys.get(kid)
        {
            return Ok(Lookup::Found(Arc::clone(key)));
        }
        let mut state = self.fetch.lock().await;
        let stale = self.current.load_full();
        // Another task may have fetched while we waited.
        if let Some(set) = &stale
            && set.fetched_at.elapsed() < self.ttl
        {
            if let Some(key) = set.keys.get(kid) {
                return Ok(Lookup::Found(Arc::clone(key)));
            }
            if state
                .attempted
                .is_some_and(|t| t.elapsed() < self.refetch_interval)
            {
                return Ok(Lookup::Unknown { refetched: false });
            }
        }
        // A failing endpoint is not asked again for every token: keys already known
        // keep working, anything else waits for the interval.
        if let Some(failed) = state.failed
            && failed.elapsed() < self.refetch_interval
        {
            if let Some(key) = stale.as_ref().and_then(|set| set.keys.get(kid)) {
                return Ok(Lookup::Found(Arc::clone(key)));
            }
            let wait = self.refetch_interval.saturating_sub(failed.elapsed());
            return Err(Error::unavailable(format!(
                "the JWKS at {} failed to load; it is asked again in {} s",
                self.url,
                wait.as_secs().max(1)
            ))
            .with_hint("check that the issuer's JWKS endpoint is reachable"));
        }
        state.attempted = Some(Instant::now());
        let set = match self.fetch_set(client).await {
            Ok(set) => set,
            Err(e) => {
                state.failed = Some(Instant::now());
                if let Some(key) = stale.as_ref().and_then(|set| set.keys.get(kid)) {
                    tracing::warn!(url = %self.url, error = %e, "JWKS re-fetch failed; using the keys fetched before");
                    return Ok(Lookup::Found(Arc::clone(key)));
                }
                return Err(e);
            }
        };
        state.failed = None;
        let found = set.keys.get(kid).cloned();
        self.current.store(Some(Arc::new(set)));
        Ok(match found {
            Some(key) => Lookup::Found(key),
            None => Lookup::Unknown { refetched: true },
        })
    }

    async fn fetch_set(&self, client: &reqwest::Client) -> Result<KeySet> {
        let jwks: JwkSet = get_json(client, &self.url, "JWKS fetch", MAX_METADATA_BYTES).await?;
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
                AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
                AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Ed,
                // Symmetric or unknown keys never come from a public JWKS.
                _ => continue,
            };
            // A key published for one algorithm verifies that algorithm only; a key whose
            // `alg` is an encryption algorithm, or of another key type, verifies nothing.
            let alg = match &jwk.common.key_algorithm {
                None => None,
                Some(named) => match signing_algorithm(named) {
                    Some(a) if super::family(a) == Some(family) => Some(a),
                    _ => {
                        tracing::warn!(url = %self.url, kid = %kid, alg = ?named, "skipping a JWKS key whose alg does not sign with its key type");
                        continue;
                    }
                },
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, Arc::new(Key { family, alg, key }));
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, kid = %kid, error = %e, "skipping an unusable JWKS key")
                }
            }
        }
        tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
        Ok(KeySet {
            fetched_at: Instant::now(),
            keys,
        })
    }
}
