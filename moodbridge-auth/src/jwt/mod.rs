//! JWT validation against an issuer's published keys.
//!
//! Every check, in order, with its own error so a caller (and its logs) can tell why a
//! token was refused:
//!
//! 1. size: tokens over [`IssuerConfig::max_token_bytes`] are refused before parsing;
//! 2. shape: three base64url parts;
//! 3. header: `alg: none` is never accepted; no extension may be marked `crit`; the
//!    `typ` must be [`IssuerConfig::token_type`] when one is set; the algorithm must be on
//!    the issuer's allow-list (default RS256), must match the key's type — an RSA public
//!    key is never used as an HMAC secret — and must be the key's own `alg` when its JWK
//!    names one;
//! 4. issuer: the (unverified) `iss` selects a configured issuer; unknown issuers are
//!    refused without any network call;
//! 5. key: the `kid` must name a key in the issuer's JWKS (re-fetched on an unknown `kid`,
//!    rate-limited);
//! 6. signature;
//! 7. claims: `iss`, `aud`, `exp`, `nbf`, `iat` (not in the future) with leeway, and the
//!    issuer's required claims;
//! 8. typed custom claims.
//!
//! ```no_run
//! use moodbridge_auth::jwt::{IssuerConfig, JwtValidator};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Extra { tenant: String }
//!
//! # async fn run(token: &str) -> moodbridge_core::Result<()> {
//! let validator = JwtValidator::new(vec![IssuerConfig::new(
//!     "https://login.example.com",
//!     "https://login.example.com/jwks",
//!     ["moodbridge-api"],
//! )])?;
//! let claims = validator.validate::<Extra>(token).await?;
//! println!("{} of tenant {}", claims.sub.unwrap_or_default(), claims.custom.tenant);
//! # Ok(()) }
//! ```

mod jwks;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use moodbridge_core::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::http::{client, secure_url};
use jwks::{JwksCache, KeyFamily, Lookup};

/// How one trusted issuer's tokens are validated.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The issuer, exactly as in the tokens' `iss`.
    pub issuer: String,
    /// Its JWKS URI (https, or loopback http).
    pub jwks_uri: String,
    /// Accepted audiences; a token must name at least one. Empty accepts any audience —
    /// only sensible when the issuer mints tokens for this service alone.
    pub audiences: Vec<String>,
    /// Accepted algorithms (default `[RS256]`). HMAC algorithms cannot be used with keys
    /// from a JWKS and are refused.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Claims that must be present (beyond `exp`, which always is).
    pub required_claims: Vec<String>,
    /// How long fetched keys are trusted before a re-fetch.
    pub jwks_ttl: Duration,
    /// At most one re-fetch per this interval because of an unknown `kid`.
    pub refetch_interval: Duration,
    /// Tokens longer than this are refused before parsing.
    pub max_token_bytes: usize,
    /// The header `typ` tokens must carry, when set (e.g. `at+jwt` for OAuth access
    /// tokens, RFC 9068; `application/at+jwt` is the same). `None` accepts any.
    pub token_type: Option<String>,
}

impl IssuerConfig {
    /// An issuer with the defaults: RS256, 60 s leeway, 1 h key TTL, 30 s between
    /// unknown-`kid` re-fetches, 16 KiB tokens.
    pub fn new<A: Into<String>>(
        issuer: impl Into<String>,
        jwks_uri: impl Into<String>,
        audiences: impl IntoIterator<Item = A>,
    ) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            jwks_uri: jwks_uri.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            algorithms: vec![Algorithm::RS256],
            leeway: Duration::from_secs(60),
            required_claims: Vec::new(),
            jwks_ttl: Duration::from_secs(3600),
            refetch_interval: Duration::from_secs(30),
            max_token_bytes: 16 * 1024,
            token_type: None,
        }
    }
}

/// The standard claims of a validated token, plus the caller's typed claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims<C> {
    /// Issuer.
    pub iss: String,
    /// Subject.
    #[serde(default)]
    pub sub: Option<String>,
    /// Audience(s).
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Token id.
    #[serde(default)]
    pub jti: Option<String>,
    /// The caller's claims.
    #[serde(flatten)]
    pub custom: C,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

struct Issuer {
    config: IssuerConfig,
    jwks: JwksCache,
}

/// Validates JWTs of one or more trusted issuers. Cheap to share (`Arc`); keys are fetched
/// lazily and cached.
pub struct JwtValidator {
    issuers: HashMap<String, Issuer>,
    client: reqwest::Client,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidator")
            .field("issuers", &self.issuers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `text` as an error shows it: at most 64 characters (a hostile token's `kid` or `iss`
/// can be kilobytes).
fn shown(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(MAX).collect();
    format!("{head:?}… ({} bytes)", text.len())
}

/// Why a token was refused. Every variant has its own message; all are
/// [`ErrorKind::Auth`] except an unreachable issuer.
fn refused(reason: &str) -> Error {
    Error::new(ErrorKind::Auth, format!("token refused: {reason}"))
        .with_hint("obtain a new token from the issuer")
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
}

#[derive(Deserialize)]
struct RoutingClaims {
    iss: Option<String>,
}

impl JwtValidator {
    /// A validator trusting `issuers`. Checks the configuration; fetches nothing yet.
    pub fn new(issuers: Vec<IssuerConfig>) -> Result<Self> {
        Self::with_client(issuers, client()?)
    }

    /// The same with a caller-supplied HTTP client.
    pub fn with_client(issuers: Vec<IssuerConfig>, client: reqwest::Client) -> Result<Self> {
        let mut map = HashMap::new();
        for config in issuers {
            let url = secure_url(&config.jwks_uri)?;
            if config.algorithms.is_empty() {
                return Err(
                    Error::config(format!("issuer {} allows no algorithm", config.issuer))
                        .with_hint("allow RS256 (the default) or another asymmetric algorithm"),
                );
            }
            if let Some(alg) = config.algorithms.iter().find(|a| family(**a).is_none()) {
                return Err(Error::config(format!(
                    "issuer {} allows {alg:?}, an HMAC algorithm; keys from a JWKS are public and can never verify HMAC tokens safely",
                    config.issuer
                )));
            }
            let jwks = JwksCache::new(url, config.jwks_ttl, config.refetch_interval);
            map.insert(config.issuer.clone(), Issuer { config, jwks });
        }
        Ok(JwtValidator {
            issuers: map,
            client,
        })
    }

    /// Validate `token`; return its claims with the caller's typed part `C`.
    pub async fn validate<C: DeserializeOwned>(&self, token: &str) -> Result<Claims<C>> {
        let limit = self
            .issuers
            .values()
            .map(|i| i.config.max_token_bytes)
            .max()
            .unwrap_or(16 * 1024);
        if token.len() > limit {
            return Err(refused(&format!(
                "it is {} bytes, over the {limit}-byte limit",
                token.len()
            )));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refused(
                "it is not a JWT (expected three dot-separated parts)",
            ));
        };
        if header.is_empty() || payload.is_empty() {
            return Err(refused("it is truncated (an empty part)"));
        }
        let raw_header: RawHeader = decode_part(header, "header")?;
        let alg_name = raw_header
            .alg
            .ok_or_else(|| refused("its header names no algorithm"))?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(refused("unsigned tokens (alg: none) are never accepted"));
        }
        if signature.is_empty() {
            return Err(refused("it is truncated (an empty part)"));
        }
        let routing: RoutingClaims = decode_part(payload, "payload")?;
        let iss = routing
            .iss
            .ok_or_else(|| refused("it names no issuer (iss)"))?;
        let issuer = self
            .issuers
            .get(&iss)
            .ok_or_else(|| refused(&format!("issuer {} is not trusted", shown(&iss))))?;
        let cfg = &issuer.config;

        let jwt_header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(&format!("its header is invalid: {e}")))?;
        // RFC 7515 §4.1.11: an extension marked critical must be understood, and this
        // validator understands none.
        if let Some(crit) = &jwt_header.crit {
            let names: Vec<String> = crit.iter().take(8).map(|c| shown(c)).collect();
            return Err(refused(&format!(
                "its header marks extensions critical ([{}]), which this validator does not understand",
                names.join(", ")
            )));
        }
        if let Some(expected) = &cfg.token_type {
            let typ = jwt_header.typ.as_deref().unwrap_or_default();
            let bare = |t: &str| {
                let t = t.to_ascii_lowercase();
                t.strip_prefix("application/")
                    .map(str::to_owned)
                    .unwrap_or(t)
            };
            if bare(typ) != bare(expected) {
                return Err(refused(&format!(
                    "its type (typ) is {}, not {expected:?}",
                    shown(typ)
                )));
            }
        }
        let alg = jwt_header.alg;
        if !cfg.algorithms.contains(&alg) {
            return Err(refused(&format!(
                "algorithm {alg:?} is not allowed for issuer {iss} (allowed: {:?})",
                cfg.algorithms
            )));
        }
        let kid = jwt_header
            .kid
            .ok_or_else(|| refused("its header names no key id (kid)"))?;
        let key = match issuer.jwks.key(&self.client, &kid).await? {
            Lookup::Found(key) => key,
            Lookup::Unknown { refetched } => {
                return Err(refused(&format!(
                    "key id {} is not among issuer {iss}'s keys{}",
                    shown(&kid),
                    if refetched {
                        ""
                    } else {
                        " (re-fetch rate-limited)"
                    }
                )));
            }
        };
        if family(alg) != Some(key.family) {
            return Err(refused(&format!(
                "algorithm {alg:?} does not match the {:?} key {}",
                key.family,
                shown(&kid)
            )));
        }
        if let Some(bound) = key.alg
            && bound != alg
        {
            return Err(refused(&format!(
                "key {} is published for {bound:?} only, and the token uses {alg:?}",
                shown(&kid)
            )));
        }

        let mut validation = Validation::new(alg);
        validation.leeway = cfg.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&cfg.issuer]);
        if cfg.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&cfg.audiences);
        }
        let mut required: HashSet<String> = ["exp".to_owned(), "iss".to_owned()].into();
        if !cfg.audiences.is_empty() {
            required.insert("aud".to_owned());
        }
        validation.required_spec_claims = required;

        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            .map_err(|e| map_jwt_error(e, cfg))?;
        let claims = data.claims;

        if let Some(iat) = claims.get("iat").and_then(serde_json::Value::as_u64) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if iat > now + cfg.leeway.as_secs() {
                return Err(refused(&format!(
                    "it was issued in the future (iat {iat}, now {now})"
                )));
            }
        }
        for claim in &cfg.required_claims {
            if claims.get(claim).is_none_or(serde_json::Value::is_null) {
                return Err(refused(&format!("required claim {claim:?} is missing")));
            }
        }
        serde_json::from_value(claims)
            .map_err(|e| refused(&format!("its claims do not have the expected shape: {e}")))
    }
}

fn family(alg: Algorithm) -> Option<KeyFamily> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(KeyFamily::Rsa),
        ES256 | ES384 => Some(KeyFamily::Ec),
        EdDSA => Some(KeyFamily::Ed),
        // HMAC, and any algorithm a future jsonwebtoken adds: not verifiable with a JWKS key.
        _ => None,
    }
}

fn decode_part<T: DeserializeOwned>(part: &str, what: &str) -> Result<T> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| refused(&format!("its {what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| refused(&format!("its {what} is not a JSON object")))
}

fn map_jwt_error(err: jsonwebtoken::errors::Error, cfg: &IssuerConfig) -> Error {
    let reason = match err.kind() {
        JwtErrorKind::InvalidSignature => {
            "its signature does not verify (altered, or signed with another key)".to_owned()
        }
        JwtErrorKind::ExpiredSignature => "it has expired".to_owned(),
        JwtErrorKind::ImmatureSignature => "it is not valid yet (nbf is in the future)".to_owned(),
        JwtErrorKind::InvalidIssuer => format!("its issuer is not {}", cfg.issuer),
        JwtErrorKind::InvalidAudience => format!("its audience is not one of {:?}", cfg.audiences),
        JwtErrorKind::MissingRequiredClaim(c) => format!("required claim {c:?} is missing"),
        JwtErrorKind::InvalidAlgorithm => "its algorithm does not match the key".to_owned(),
        JwtErrorKind::InvalidToken
        | JwtErrorKind::Base64(_)
        | JwtErrorKind::Json(_)
        | JwtErrorKind::Utf8(_) => "it is malformed".to_owned(),
        other => format!("it failed validation ({other:?})"),
    };
    refused(&reason)
}
