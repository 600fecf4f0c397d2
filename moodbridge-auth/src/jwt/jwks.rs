//! The signing keys of one issuer, fetched from its JWKS URI and cached.
//!
//! - Keys are cached for a TTL, then re-fetched on the next use.
//! - A token with an unknown `kid` triggers a re-fetch (the issuer may have rotated its
//!   keys), but at most once per `refetch_interval`, so a flood of tokens with made-up key
//!   ids cannot make us hammer the issuer.
//! - Fetches are single-flight: concurrent callers wait for one request.
//! - Only asymmetric keys are accepted from a JWKS (`RSA`, `EC`, `OKP`); a symmetric
//!   (`oct`) key, or a key marked for encryption, is ignored — so a public key can never
//!   become an HMAC secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use moodbridge_core::Result;
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
    pub(crate) key: DecodingKey,
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
    /// Single-flight guard; holds the time of the last fetch attempt.
    fetch: Mutex<Option<Instant>>,
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
            fetch: Mutex::new(None),
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
        let mut last_fetch = self.fetch.lock().await;
        // Another task may have fetched while we waited.
        if let Some(set) = self.current.load_full()
            && set.fetched_at.elapsed() < self.ttl
        {
            if let Some(key) = set.keys.get(kid) {
                return Ok(Lookup::Found(Arc::clone(key)));
            }
            if last_fetch.is_some_and(|t| t.elapsed() < self.refetch_interval) {
                return Ok(Lookup::Unknown { refetched: false });
            }
        }
        *last_fetch = Some(Instant::now());
        let set = self.fetch_set(client).await?;
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
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, Arc::new(Key { family, key }));
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
