//! [`OAuthClient`]: one client registration at one provider, and the grants it can make.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moodbridge_core::{Error, ErrorKind, Result};
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::http_adapter::{HttpError, OAuthHttp};
use super::provider::{ClientAuth, Provider};
use super::token_set::TokenSet;
use crate::http::secure_url;

/// Token response fields beyond RFC 6749 that providers send: OpenID Connect's
/// `id_token`, and Salesforce's `instance_url` and `id`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Extra {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    instance_url: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

impl ExtraTokenFields for Extra {}

type Response = StandardTokenResponse<Extra, BasicTokenType>;
type Client<HasAuth, HasRevoke> = oauth2::Client<
    BasicErrorResponse,
    Response,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuth,
    EndpointNotSet,
    EndpointNotSet,
    HasRevoke,
    EndpointSet,
>;

/// A token to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocable {
    /// The access token of the set.
    Access,
    /// The refresh token of the set (revoking it usually ends the whole grant).
    Refresh,
}

/// A client registration at a provider: the client id and, for confidential clients, its
/// secret. Makes every grant the SDK supports. `Debug` shows no secret.
pub struct OAuthClient {
    provider: Provider,
    client_id: String,
    client_secret: Option<SecretString>,
    http: reqwest::Client,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("provider", &self.provider.name)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Which grant a token request was for, to word its errors.
#[derive(Clone, Copy)]
enum Grant {
    ClientCredentials,
    Code,
    Refresh,
    JwtBearer,
}

impl Grant {
    fn name(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client credentials grant",
            Grant::Code => "authorization code exchange",
            Grant::Refresh => "token refresh",
            Grant::JwtBearer => "JWT bearer grant",
        }
    }
}

impl OAuthClient {
    /// A client of `provider`. `client_secret` is `None` for public clients and for the
    /// JWT bearer flow.
    pub fn new(
        provider: Provider,
        client_id: impl Into<String>,
        client_secret: Option<SecretString>,
    ) -> Result<Self> {
        Ok(OAuthClient {
            provider,
            client_id: client_id.into(),
            client_secret,
            http: crate::http::client()?,
        })
    }

    /// The same client (provider, client id, HTTP client) with `secret` as its client
    /// secret: what a token source uses after the secret was rotated.
    pub fn with_client_secret(&self, secret: SecretString) -> OAuthClient {
        OAuthClient {
            provider: self.provider.clone(),
            client_id: self.client_id.clone(),
            client_secret: Some(secret),
            http: self.http.clone(),
        }
    }

    /// The provider.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn base(&self) -> Client<EndpointNotSet, EndpointNotSet> {
        let mut client = oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(TokenUrl::from_url(self.provider.token_endpoint.clone()))
            .set_auth_type(match self.provider.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Body => AuthType::RequestBody,
            });
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()));
        }
        client
    }

    fn http(&self) -> OAuthHttp {
        OAuthHttp(self.http.clone())
    }

    fn error(&self, grant: Grant, err: RequestTokenError<HttpError, BasicErrorResponse>) -> Error {
        map_token_error(&self.provider.name, grant, err)
    }

    /// Client credentials grant: a token for the client itself. `resource` is the RFC
    /// 8707 resource indicator, for providers that need one.
    pub async fn client_credentials(
        &self,
        scopes: &[&str],
        resource: Option<&str>,
    ) -> Result<TokenSet> {
        let client = self.base();
        let mut request = client.exchange_client_credentials();
        for s in scopes {
            request = request.add_scope(Scope::new((*s).to_owned()));
        }
        if let Some(r) = resource {
            request = request.add_extra_param("resource", r.to_owned());
        }
        let response = request
            .request_async(&self.http())
            .await
            .map_err(|e| self.error(Grant::ClientCredentials, e))?;
        Ok(token_set(response, None))
    }

    /// Refresh `tokens` with their refresh token. When the provider rotates refresh
    /// tokens the new one is in the result; otherwise the old one is kept.
    pub async fn refresh(&self, tokens: &TokenSet) -> Result<TokenSet> {
        let refresh = tokens.refresh_token.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::AuthExpired,
                "the access token expired and there is no refresh token",
            )
            .with_hint("log in again")
        })?;
        let client = self.base();
        let rt = RefreshToken::new(refresh.expose_secret().to_owned());
        let response = client
            .exchange_refresh_token(&rt)
            .request_async(&self.http())
            .await
            .map_err(|e| self.error(Grant::Refresh, e))?;
        let mut next = token_set(response, Some(tokens));
        if next.instance_url.is_none() {
            next.instance_url.clone_from(&tokens.instance_url);
        }
        Ok(next)
    }

    /// Start an authorization-code flow with PKCE (S256): the URL to send the user to,
    /// and what must be kept server-side until the user comes back.
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        scopes: &[&str],
    ) -> Result<(Url, PendingAuthorization)> {
        let auth = self
            .provider
            .authorization_endpoint
            .clone()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!("{} has no authorization endpoint", self.provider.name),
                )
            })?;
        let redirect = RedirectUrl::from_url(secure_url(redirect_uri)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self
            .base()
            .set_auth_uri(AuthUrl::from_url(auth))
            .set_redirect_uri(redirect);
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .set_pkce_challenge(challenge);
        for s in scopes {
            request = request.add_scope(Scope::new((*s).to_owned()));
        }
        let (url, state) = request.url();
        Ok((
            url,
            PendingAuthorization {
                state: state.secret().clone(),
                verifier: SecretString::from(verifier.secret().as_str()),
                redirect_uri: redirect_uri.to_owned(),
                created: std::time::Instant::now(),
            },
        ))
    }

    /// Finish an authorization-code flow: check that `returned_state` is the state of
    /// `pending` (CSRF protection), then exchange `code` with the PKCE verifier.
    pub async fn exchange_code(
        &self,
        pending: PendingAuthorization,
        code: &str,
        returned_state: &str,
    ) -> Result<TokenSet> {
        if !constant_time_eq(pending.state.as_bytes(), returned_state.as_bytes()) {
            return Err(Error::new(
                ErrorKind::Auth,
                "the authorization response's state does not match the request (possible CSRF)",
            )
            .with_hint("start the login again"));
        }
        let redirect = RedirectUrl::from_url(secure_url(&pending.redirect_uri)?);
        let client = self.base().set_redirect_uri(redirect);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(
                pending.verifier.expose_secret().to_owned(),
            ))
            .request_async(&self.http())
            .await
            .map_err(|e| self.error(Grant::Code, e))?;
        Ok(token_set(response, None))
    }

    /// Revoke one token of `tokens` (RFC 7009), where the provider supports revocation.
    ///
    /// Posted here rather than through the `oauth2` crate, whose revocation refuses every
    /// non-https endpoint, loopback included — our endpoints are already checked to be
    /// https (or loopback) when the provider is configured.
    pub async fn revoke(&self, tokens: &TokenSet, which: Revocable) -> Result<()> {
        let endpoint = self.provider.revocation_endpoint.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("{} does not support token revocation", self.provider.name),
            )
        })?;
        let (token, hint) = match which {
            Revocable::Access => (&tokens.access_token, "access_token"),
            Revocable::Refresh => (
                tokens.refresh_token.as_ref().ok_or_else(|| {
                    Error::invalid_input("the token set has no refresh token to revoke")
                })?,
                "refresh_token",
            ),
        };
        let response = self
            .post_form(
                &endpoint,
                &[("token", token.expose_secret()), ("token_type_hint", hint)],
                true,
            )
            .await?;
        if response.status().is_success() {
            return Ok(());
        }
        let reason = serde_json::from_slice::<BasicErrorResponse>(response.body())
            .map(|e| e.error().to_string())
            .unwrap_or_else(|_| format!("HTTP {}", response.status()));
        Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "token revocation at {} failed: {reason}",
                self.provider.name
            ),
        ))
    }

    /// POST a form to `url` with the client's authentication (if `authenticate`) through
    /// the same HTTP adapter as the `oauth2` grants.
    async fn post_form(
        &self,
        url: &Url,
        params: &[(&str, &str)],
        authenticate: bool,
    ) -> Result<http::Response<Vec<u8>>> {
        let mut form: Vec<(&str, &str)> = params.to_vec();
        let mut request = self
            .http
            .post(url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        let secret = self.client_secret.as_ref().map(|s| s.expose_secret());
        match (authenticate, self.provider.client_auth, secret) {
            (true, ClientAuth::Basic, Some(secret)) => {
                // RFC 6749 §2.3.1: form-urlencode both parts before Basic encoding.
                let id: String =
                    url::form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect();
                let pw: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
                request = request.basic_auth(id, Some(pw));
            }
            (true, ClientAuth::Body, Some(secret)) => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret));
            }
            _ => form.push(("client_id", &self.client_id)),
        }
        let request = request
            .form(&form)
            .build()
            .map_err(|e| Error::internal("cannot build the request").with_source(e))?;
        let mut builder = http::Request::builder()
            .method(http::Method::POST)
            .uri(request.url().as_str());
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        let body = request
            .body()
            .and_then(|b| b.as_bytes())
            .unwrap_or_default()
            .to_vec();
        let http_request = builder
            .body(body)
            .map_err(|e| Error::internal("cannot build the request").with_source(e))?;
        oauth2::AsyncHttpClient::call(&self.http(), http_request)
            .await
            .map_err(|HttpError(e)| e)
    }

    /// The JWT bearer grant (RFC 7523) — Salesforce's server-to-server flow: an assertion
    /// (`iss` = client id, `sub` = `subject`, `aud` = the provider's issuer, 3 minutes)
    /// signed RS256 with the connected app's private key. The `oauth2` crate has no such
    /// grant, so the form is posted here; the assertion is signed by `jsonwebtoken`.
    pub async fn jwt_bearer(
        &self,
        subject: &str,
        private_key_pem: &SecretString,
    ) -> Result<TokenSet> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes()).map_err(
            |_| {
                Error::config("the JWT bearer private key is not an RSA key in PEM").with_hint(
                    "use the connected app certificate's private key (-----BEGIN PRIVATE KEY-----)",
                )
            },
        )?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        #[derive(Serialize)]
        struct Assertion<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            exp: u64,
            iat: u64,
        }
        let assertion = SecretString::from(
            jsonwebtoken::encode(
                &Header::new(Algorithm::RS256),
                &Assertion {
                    iss: &self.client_id,
                    sub: subject,
                    aud: &self.provider.issuer,
                    exp: now + 180,
                    iat: now,
                },
                &key,
            )
            .map_err(|e| Error::config(format!("cannot sign the JWT bearer assertion: {e}")))?,
        );
        let response = self
            .post_form(
                &self.provider.token_endpoint,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.expose_secret()),
                ],
                false,
            )
            .await?;
        let status = response.status();
        if status.is_success() {
            let parsed: Response = serde_json::from_slice(response.body()).map_err(|_| {
                Error::new(
                    ErrorKind::Protocol,
                    "the JWT bearer grant answered an invalid token response",
                )
            })?;
            return Ok(token_set(parsed, None));
        }
        let err: BasicErrorResponse = serde_json::from_slice(response.body()).map_err(|_| {
            Error::new(
                ErrorKind::Protocol,
                format!("the JWT bearer grant answered HTTP {status}"),
            )
        })?;
        Err(map_token_error(
            &self.provider.name,
            Grant::JwtBearer,
            RequestTokenError::ServerResponse(err),
        ))
    }
}

/// What a web host keeps server-side between sending the user to the provider and the
/// user coming back: the CSRF state, the PKCE verifier and the redirect URI. `Debug`
/// shows no verifier.
#[derive(Clone)]
pub struct PendingAuthorization {
    /// The CSRF state sent to the provider (not secret: it travels in the URL).
    pub state: String,
    verifier: SecretString,
    redirect_uri: String,
    created: std::time::Instant,
}

impl PendingAuthorization {
    /// How long ago the flow started.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("state", &self.state)
            .field("verifier", &"[REDACTED]")
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

fn token_set(response: Response, previous: Option<&TokenSet>) -> TokenSet {
    let extra = response.extra_fields().clone();
    TokenSet {
        access_token: SecretString::from(response.access_token().secret().as_str()),
        token_type: "Bearer".to_owned(),
        expires_at: response.expires_in().map(|d| SystemTime::now() + d),
        refresh_token: response
            .refresh_token()
            .map(|t| SecretString::from(t.secret().as_str()))
            .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
        scopes: response
            .scopes()
            .map(|s| s.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
        id_token: extra.id_token.as_deref().map(SecretString::from),
        instance_url: extra.instance_url,
    }
}

fn map_token_error(
    provider: &str,
    grant: Grant,
    err: RequestTokenError<HttpError, BasicErrorResponse>,
) -> Error {
    match err {
        RequestTokenError::Request(HttpError(e)) => e,
        RequestTokenError::ServerResponse(r) => {
            // Scrubbed of the request's secrets already; kept short all the same.
            let detail = r
                .error_description()
                .map(|d| format!(": {}", moodbridge_core::redact::cap(d, 300)))
                .unwrap_or_default();
            let (kind, what, hint) = match r.error() {
                BasicErrorResponseType::InvalidClient => (
                    ErrorKind::Auth,
                    "the client was not authenticated (wrong client id or secret)",
                    "check the client id and secret registered at the provider",
                ),
                BasicErrorResponseType::InvalidGrant => match grant {
                    Grant::Refresh => (
                        ErrorKind::AuthExpired,
                        "the refresh token is invalid, expired or revoked",
                        "log in again to get a new refresh token",
                    ),
                    Grant::Code => (
                        ErrorKind::Auth,
                        "the authorization code is invalid, expired or already used, or the PKCE verifier does not match",
                        "start the login again",
                    ),
                    _ => (
                        ErrorKind::Auth,
                        "the grant was refused",
                        "check the assertion's subject, the key and that the user pre-authorized the app",
                    ),
                },
                BasicErrorResponseType::UnauthorizedClient => (
                    ErrorKind::Forbidden,
                    "the client may not use this grant",
                    "enable the grant for the client at the provider",
                ),
                BasicErrorResponseType::UnsupportedGrantType => (
                    ErrorKind::Unsupported,
                    "the provider does not support this grant",
                    "use a grant the provider supports",
                ),
                BasicErrorResponseType::InvalidRequest | BasicErrorResponseType::InvalidScope => (
                    ErrorKind::InvalidInput,
                    "the token request was invalid",
                    "check the scopes and parameters",
                ),
                BasicErrorResponseType::Extension(e) if e == "temporarily_unavailable" => (
                    ErrorKind::Unavailable,
                    "the provider is temporarily unavailable",
                    "retry later",
                ),
                BasicErrorResponseType::Extension(_) => (
                    ErrorKind::Auth,
                    "the provider refused the request",
                    "see the provider's error description",
                ),
            };
            Error::new(
                kind,
                format!("{} at {provider} failed: {what}{detail}", grant.name()),
            )
            .with_context("oauth_error", r.error())
            .with_hint(hint)
        }
        RequestTokenError::Parse(_, _) => Error::new(
            ErrorKind::Protocol,
            format!(
                "{} at {provider}: the provider answered an invalid token response",
                grant.name()
            ),
        ),
        RequestTokenError::Other(e) => Error::new(
            ErrorKind::Protocol,
            format!("{} at {provider} failed: {e}", grant.name()),
        ),
    }
}
