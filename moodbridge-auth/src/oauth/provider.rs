//! Identity providers: their endpoints, from a preset or from OpenID Connect discovery.

use moodbridge_core::{Error, Result};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::discovery::discover;
use crate::http::secure_url;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with client id and secret.
    Basic,
    /// `client_secret_post`: id and secret in the form body.
    Body,
}

/// An identity provider's endpoints, by name.
///
/// ```
/// use moodbridge_auth::oauth::Provider;
///
/// let prod = Provider::salesforce_production();
/// assert_eq!(prod.token_endpoint.as_str(), "https://login.salesforce.com/services/oauth2/token");
/// let mine = Provider::salesforce_my_domain("acme").unwrap();
/// assert_eq!(mine.token_endpoint.as_str(), "https://acme.my.salesforce.com/services/oauth2/token");
/// let entra = Provider::entra("contoso.onmicrosoft.com").unwrap();
/// assert!(entra.token_endpoint.as_str().ends_with("/contoso.onmicrosoft.com/oauth2/v2.0/token"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// A name for logs and the token manager (`salesforce-prod`).
    pub name: String,
    /// The issuer (the `aud` of JWT-bearer assertions; the `iss` of its tokens).
    pub issuer: String,
    /// Where users authorize (code flow).
    pub authorization_endpoint: Option<Url>,
    /// Where tokens are requested.
    pub token_endpoint: Url,
    /// Where tokens are revoked, if supported.
    pub revocation_endpoint: Option<Url>,
    /// The issuer's signing keys.
    pub jwks_uri: Option<Url>,
    /// Client authentication at the token endpoint.
    pub client_auth: ClientAuth,
}

fn url(s: &str) -> Result<Url> {
    secure_url(s)
}

impl Provider {
    fn salesforce(name: &str, base: &str) -> Result<Self> {
        Ok(Provider {
            name: name.to_owned(),
            issuer: base.to_owned(),
            authorization_endpoint: Some(url(&format!("{base}/services/oauth2/authorize"))?),
            token_endpoint: url(&format!("{base}/services/oauth2/token"))?,
            revocation_endpoint: Some(url(&format!("{base}/services/oauth2/revoke"))?),
            jwks_uri: Some(url(&format!("{base}/id/keys"))?),
            client_auth: ClientAuth::Body,
        })
    }

    /// A Salesforce login host given by its base URL (`https://login.salesforce.com`,
    /// `https://acme.my.salesforce.com`, or a local sandbox on loopback), its OAuth
    /// endpoints under `/services/oauth2/`. Plain http is accepted only on loopback.
    ///
    /// ```
    /// use moodbridge_auth::oauth::Provider;
    /// let p = Provider::salesforce_at("salesforce-prod", "https://acme.my.salesforce.com/").unwrap();
    /// assert_eq!(p.token_endpoint.as_str(), "https://acme.my.salesforce.com/services/oauth2/token");
    /// assert!(Provider::salesforce_at("x", "http://acme.example.com").is_err());
    /// ```
    pub fn salesforce_at(name: &str, base_url: &str) -> Result<Self> {
        Self::salesforce(name, base_url.trim_end_matches('/'))
    }

    /// Salesforce production orgs: `login.salesforce.com`.
    pub fn salesforce_production() -> Self {
        // The URL is a constant; parsing it cannot fail.
        Self::salesforce("salesforce-prod", "https://login.salesforce.com")
            .unwrap_or_else(|_| unreachable!("constant URL"))
    }

    /// Salesforce sandboxes: `test.salesforce.com`.
    pub fn salesforce_sandbox() -> Self {
        Self::salesforce("salesforce-sandbox", "https://test.salesforce.com")
            .unwrap_or_else(|_| unreachable!("constant URL"))
    }

    /// A Salesforce My Domain: `https://<domain>.my.salesforce.com`. `domain` may also be
    /// a full `https://…` URL (e.g. a sandbox My Domain).
    pub fn salesforce_my_domain(domain: &str) -> Result<Self> {
        let base = if domain.starts_with("https://") {
            domain.trim_end_matches('/').to_owned()
        } else if !domain.is_empty()
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            format!("https://{domain}.my.salesforce.com")
        } else {
            return Err(Error::config(format!("{domain:?} is not a My Domain name"))
                .with_hint("give the name before .my.salesforce.com, e.g. \"acme\""));
        };
        Self::salesforce(&format!("salesforce-{domain}"), &base)
    }

    /// Microsoft Entra ID, tenant-specific v2.0 endpoints. `tenant` is a tenant id, a
    /// domain, or `organizations` / `common`.
    pub fn entra(tenant: &str) -> Result<Self> {
        if tenant.is_empty()
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(Error::config(format!("{tenant:?} is not an Entra tenant"))
                .with_hint("use the directory (tenant) id or its domain"));
        }
        let base = format!("https://login.microsoftonline.com/{tenant}");
        Ok(Provider {
            name: format!("entra-{tenant}"),
            issuer: format!("{base}/v2.0"),
            authorization_endpoint: Some(url(&format!("{base}/oauth2/v2.0/authorize"))?),
            token_endpoint: url(&format!("{base}/oauth2/v2.0/token"))?,
            revocation_endpoint: None,
            jwks_uri: Some(url(&format!("{base}/discovery/v2.0/keys"))?),
            client_auth: ClientAuth::Body,
        })
    }

    /// Any OpenID Connect provider, from its discovery document.
    pub async fn discover(name: &str, client: &reqwest::Client, issuer: &str) -> Result<Self> {
        let meta = discover(client, issuer).await?;
        Ok(Provider {
            name: name.to_owned(),
            issuer: meta.issuer.clone(),
            authorization_endpoint: meta
                .authorization_endpoint
                .as_deref()
                .map(url)
                .transpose()?,
            token_endpoint: url(&meta.token_endpoint)?,
            revocation_endpoint: meta.revocation_endpoint.as_deref().map(url).transpose()?,
            jwks_uri: meta.jwks_uri.as_deref().map(url).transpose()?,
            client_auth: ClientAuth::Basic,
        })
    }
}

/// A provider as written in configuration: a preset by name, or any OpenID Connect
/// provider by its issuer (endpoints from discovery).
///
/// ```
/// use moodbridge_auth::oauth::ProviderConfig;
///
/// #[derive(serde::Deserialize)]
/// struct Auth { provider: ProviderConfig }
///
/// let a: Auth = toml::from_str(r#"provider = { preset = "salesforce-my-domain", domain = "acme" }"#).unwrap();
/// assert_eq!(a.provider, ProviderConfig::SalesforceMyDomain { domain: "acme".into() });
/// let b: Auth = toml::from_str(r#"provider = { preset = "oidc", issuer = "https://id.example.com" }"#).unwrap();
/// assert!(matches!(b.provider, ProviderConfig::Oidc { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "preset", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// `login.salesforce.com`.
    SalesforceProduction,
    /// `test.salesforce.com`.
    SalesforceSandbox,
    /// `https://<domain>.my.salesforce.com`.
    SalesforceMyDomain {
        /// The My Domain name, or a full https URL.
        domain: String,
    },
    /// Microsoft Entra ID, one tenant.
    Entra {
        /// Tenant id or domain.
        tenant: String,
    },
    /// Any OpenID Connect provider.
    Oidc {
        /// The issuer; endpoints come from its discovery document.
        issuer: String,
        /// A name for logs and the token manager (default: the issuer's host).
        #[serde(default)]
        name: Option<String>,
    },
}

impl ProviderConfig {
    /// The provider's endpoints (fetching discovery for [`ProviderConfig::Oidc`]).
    pub async fn build(&self, client: &reqwest::Client) -> Result<Provider> {
        match self {
            ProviderConfig::SalesforceProduction => Ok(Provider::salesforce_production()),
            ProviderConfig::SalesforceSandbox => Ok(Provider::salesforce_sandbox()),
            ProviderConfig::SalesforceMyDomain { domain } => Provider::salesforce_my_domain(domain),
            ProviderConfig::Entra { tenant } => Provider::entra(tenant),
            ProviderConfig::Oidc { issuer, name } => {
                let name = match name {
                    Some(n) => n.clone(),
                    None => url(issuer)?.host_str().unwrap_or("oidc").to_owned(),
                };
                Provider::discover(&name, client, issuer).await
            }
        }
    }
}
