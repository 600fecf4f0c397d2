//! Log in through the browser with the authorization-code flow + PKCE on a loopback
//! redirect (RFC 8252), against any OpenID Connect provider found by discovery; validate
//! the ID token against the provider's published keys; show what was granted — never a
//! token itself.
//!
//! ```sh
//! # Entra ID, Okta, Keycloak, Auth0 … — a native/public app registration whose redirect
//! # URI is http://127.0.0.1/callback (any port is accepted on loopback):
//! cargo run --example oauth_login -- --issuer https://login.microsoftonline.com/<tenant>/v2.0 \
//!     --client-id <app id> --scopes "openid profile offline_access"
//! # a confidential client: its secret from an environment variable
//! cargo run --example oauth_login -- --issuer … --client-id … --client-secret-env MY_SECRET
//! # open the browser for you (default: print the URL)
//! cargo run --example oauth_login -- … --open-with xdg-open
//! ```

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use moodbridge::auth::jwt::{IssuerConfig, JwtValidator};
use moodbridge::auth::oauth::{OAuthClient, Provider, login_with_loopback};
use moodbridge::{Error, Result};
use secrecy::{ExposeSecret, SecretString};

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let issuer = flag("--issuer").ok_or_else(|| {
        Error::config("no --issuer").with_hint("pass the provider's issuer URL (its discovery document is at <issuer>/.well-known/openid-configuration)")
    })?;
    let client_id = flag("--client-id").ok_or_else(|| {
        Error::config("no --client-id").with_hint("pass the app registration's client id")
    })?;
    let secret = match flag("--client-secret-env") {
        Some(var) => Some(SecretString::from(std::env::var(&var).map_err(|_| {
            Error::config(format!("{var} is not set")).with_hint(
                "export the client secret in it, or drop --client-secret-env for a public client",
            )
        })?)),
        None => None,
    };
    let scopes = flag("--scopes").unwrap_or_else(|| "openid offline_access".to_owned());
    let scopes: Vec<&str> = scopes.split_whitespace().collect();

    let http = reqwest::Client::new();
    let provider = Provider::discover("oidc", &http, &issuer).await?;
    let (issuer, jwks) = (provider.issuer.clone(), provider.jwks_uri.clone());
    let client = OAuthClient::new(provider, &client_id, secret)?;

    let opener = flag("--open-with");
    let tokens = login_with_loopback(&client, &scopes, Duration::from_secs(300), |url| {
        match &opener {
            None => println!("Open this URL in a browser to log in:\n\n  {url}\n"),
            Some(command) => {
                let mut words = command.split_whitespace();
                let program = words.next().unwrap_or_default();
                std::process::Command::new(program)
                    .args(words)
                    .arg(url.as_str())
                    .stdout(Stdio::null())
                    .spawn()
                    .map_err(|e| Error::config(format!("cannot run {program}")).with_source(e))?;
            }
        }
        Ok(())
    })
    .await?;

    println!("logged in: {} token", tokens.token_type);
    if let Some(at) = tokens.expires_at {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        println!("  access token expires in {} s", left.as_secs());
    }
    println!("  scopes granted: {}", tokens.scopes.join(" "));
    println!(
        "  refresh token: {}",
        if tokens.refresh_token.is_some() {
            "yes (store it in a CredentialStore)"
        } else {
            "no"
        }
    );
    // The ID token says who logged in — once its signature, issuer, audience and times
    // check out against the provider's published keys.
    match (&tokens.id_token, jwks) {
        (Some(id_token), Some(jwks)) => {
            let validator = JwtValidator::new(vec![IssuerConfig::new(
                &issuer,
                jwks.as_str(),
                [client_id.as_str()],
            )])?;
            let claims = validator
                .validate::<serde_json::Value>(id_token.expose_secret())
                .await?;
            println!(
                "  ID token valid: iss {}, sub {}",
                claims.iss,
                claims.sub.as_deref().unwrap_or("?")
            );
        }
        (Some(_), None) => {
            println!("  ID token received; the provider publishes no JWKS to check it")
        }
        (None, _) => println!("  no ID token (ask for the openid scope)"),
    }
    Ok(())
}
