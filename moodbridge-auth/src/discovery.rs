//! OpenID Connect discovery: a provider's endpoints from
//! `<issuer>/.well-known/openid-configuration`.

use moodbridge_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

use crate::http::{MAX_METADATA_BYTES, get_json, secure_url};

/// The parts of a provider's discovery document the SDK uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderMetadata {
    /// The issuer identifier; must equal the URL discovery was fetched for.
    pub issuer: String,
    /// Where users authorize (code flow).
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Where tokens are requested.
    pub token_endpoint: String,
    /// The signing keys of the issuer's tokens.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Where tokens are revoked (RFC 7009), if supported.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// Grant types the provider supports.
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    /// PKCE methods supported.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

/// Fetch and check the discovery document of `issuer`.
///
/// The document's `issuer` must equal `issuer` exactly (OpenID Connect Discovery §4.3),
/// so a provider cannot pass itself off as another; every endpoint must be https (or
/// loopback).
pub async fn discover(client: &reqwest::Client, issuer: &str) -> Result<ProviderMetadata> {
    let base = issuer.trim_end_matches('/');
    let url = secure_url(&format!("{base}/.well-known/openid-configuration"))?;
    let meta: ProviderMetadata =
        get_json(client, &url, "OpenID discovery", MAX_METADATA_BYTES).await?;
    if meta.issuer.trim_end_matches('/') != base {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "discovery for issuer {issuer} names issuer {}; refusing a mixed-up provider",
                meta.issuer
            ),
        )
        .with_hint("configure the issuer URL exactly as the provider states it"));
    }
    secure_url(&meta.token_endpoint)?;
    for endpoint in [
        &meta.authorization_endpoint,
        &meta.jwks_uri,
        &meta.revocation_endpoint,
    ]
    .into_iter()
    .flatten()
    {
        secure_url(endpoint)?;
    }
    Ok(meta)
}
