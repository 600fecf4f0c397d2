//! [`TokenSet`]: what a token endpoint returns, kept as secrets.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moodbridge_core::{Error, ErrorKind, Result};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Tokens from one grant. `Debug` shows no token.
///
/// ```
/// use moodbridge_auth::oauth::TokenSet;
/// use secrecy::SecretString;
/// use std::time::Duration;
///
/// let tokens = TokenSet::bearer(SecretString::from("at-123"), Some(Duration::from_secs(3600)));
/// assert!(!tokens.expires_within(Duration::from_secs(60)));
/// assert!(!format!("{tokens:?}").contains("at-123"));
/// ```
#[derive(Clone)]
pub struct TokenSet {
    /// The access token.
    pub access_token: SecretString,
    /// Its type, normally `Bearer`.
    pub token_type: String,
    /// When the access token expires, if the provider said.
    pub expires_at: Option<SystemTime>,
    /// The refresh token, if one was issued (store the newest: providers rotate them).
    pub refresh_token: Option<SecretString>,
    /// Granted scopes, if the provider said.
    pub scopes: Vec<String>,
    /// The OpenID Connect ID token, if any.
    pub id_token: Option<SecretString>,
    /// The instance to call with this token (Salesforce `instance_url`).
    pub instance_url: Option<String>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[REDACTED]")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("scopes", &self.scopes)
            .field("id_token", &self.id_token.as_ref().map(|_| "[REDACTED]"))
            .field("instance_url", &self.instance_url)
            .finish()
    }
}

/// The persisted form; built and parsed only inside `Zeroizing` buffers.
#[derive(Serialize, Deserialize)]
struct Stored {
    access_token: String,
    token_type: String,
    expires_at: Option<u64>,
    refresh_token: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    id_token: Option<String>,
    instance_url: Option<String>,
}

impl Drop for Stored {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.access_token.zeroize();
        if let Some(t) = &mut self.refresh_token {
            t.zeroize();
        }
        if let Some(t) = &mut self.id_token {
            t.zeroize();
        }
    }
}

impl TokenSet {
    /// A bearer token valid for `expires_in`.
    pub fn bearer(access_token: SecretString, expires_in: Option<Duration>) -> Self {
        TokenSet {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_at: expires_in.map(|d| SystemTime::now() + d),
            refresh_token: None,
            scopes: Vec::new(),
            id_token: None,
            instance_url: None,
        }
    }

    /// Whether the access token expires within `skew` from now (unknown expiry: never).
    pub fn expires_within(&self, skew: Duration) -> bool {
        self.expires_at
            .is_some_and(|at| at <= SystemTime::now() + skew)
    }

    /// The form kept in a credential store (JSON, as a secret).
    pub fn to_secret(&self) -> Result<SecretString> {
        let stored = Stored {
            access_token: self.access_token.expose_secret().to_owned(),
            token_type: self.token_type.clone(),
            expires_at: self
                .expires_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            refresh_token: self
                .refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            scopes: self.scopes.clone(),
            id_token: self.id_token.as_ref().map(|t| t.expose_secret().to_owned()),
            instance_url: self.instance_url.clone(),
        };
        let json = Zeroizing::new(
            serde_json::to_string(&stored)
                .map_err(|e| Error::internal("cannot serialize a token set").with_source(e))?,
        );
        Ok(SecretString::from(json.as_str()))
    }

    /// Parse the form written by [`to_secret`](Self::to_secret).
    pub fn from_secret(secret: &SecretString) -> Result<Self> {
        let stored: Stored = serde_json::from_str(secret.expose_secret()).map_err(|_| {
            Error::new(ErrorKind::Integrity, "a stored token set is not valid")
                .with_hint("delete it; the next call will log in again")
        })?;
        Ok(TokenSet {
            access_token: SecretString::from(stored.access_token.as_str()),
            token_type: stored.token_type.clone(),
            expires_at: stored
                .expires_at
                .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            refresh_token: stored.refresh_token.as_deref().map(SecretString::from),
            scopes: stored.scopes.clone(),
            id_token: stored.id_token.as_deref().map(SecretString::from),
            instance_url: stored.instance_url.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_stored_form() {
        let mut t = TokenSet::bearer(SecretString::from("at"), Some(Duration::from_secs(60)));
        t.refresh_token = Some(SecretString::from("rt"));
        t.instance_url = Some("https://acme.my.salesforce.com".into());
        let back = TokenSet::from_secret(&t.to_secret().unwrap()).unwrap();
        assert_eq!(back.access_token.expose_secret(), "at");
        assert_eq!(back.refresh_token.unwrap().expose_secret(), "rt");
        assert_eq!(back.instance_url, t.instance_url);
        assert!(back.expires_at.is_some());
    }

    #[test]
    fn expiry_is_judged_with_skew() {
        let t = TokenSet::bearer(SecretString::from("at"), Some(Duration::from_secs(30)));
        assert!(t.expires_within(Duration::from_secs(60)));
        assert!(!t.expires_within(Duration::from_secs(10)));
    }
}
