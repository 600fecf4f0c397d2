//! Every OAuth grant against a real OpenID provider (oidc-provider) on loopback.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::time::Duration;

use moodbridge_auth::jwt::{IssuerConfig, JwtValidator};
use moodbridge_auth::oauth::{
    AuthorizationSessions, OAuthClient, Provider, Revocable, login_with_loopback,
};
use moodbridge_core::ErrorKind;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use support::TestKey;
use support::oidc::{OidcProvider, Options, browse_to_redirect, code_login, query};

const RESOURCE: &str = "urn:moodbridge:api";

async fn provider_for(oidc: &OidcProvider) -> Provider {
    let http = moodbridge_auth::http::client().unwrap();
    Provider::discover("test-oidc", &http, &oidc.issuer)
        .await
        .unwrap()
}

async fn client(oidc: &OidcProvider, id: &str, secret: Option<&str>) -> OAuthClient {
    OAuthClient::new(provider_for(oidc).await, id, secret.map(SecretString::from)).unwrap()
}

#[tokio::test]
async fn client_credentials_yield_a_jwt_that_validates_against_the_issuers_jwks() {
    let oidc = OidcProvider::start(Options::default()).await;
    let svc = client(&oidc, "svc", Some("svc-secret")).await;
    let tokens = svc
        .client_credentials(&["api:read"], Some(RESOURCE))
        .await
        .unwrap();
    assert!(tokens.expires_at.is_some());

    let provider = provider_for(&oidc).await;
    let validator = JwtValidator::new(vec![IssuerConfig::new(
        &oidc.issuer,
        provider.jwks_uri.unwrap().as_str(),
        [RESOURCE],
    )])
    .unwrap();
    let claims = validator
        .validate::<Value>(tokens.access_token.expose_secret())
        .await
        .unwrap();
    assert_eq!(claims.sub.as_deref(), Some("svc"));
    assert_eq!(claims.custom["scope"], "api:read");
}

#[tokio::test]
async fn a_wrong_client_secret_is_an_auth_error_without_the_secret() {
    let oidc = OidcProvider::start(Options::default()).await;
    let svc = client(&oidc, "svc", Some("wrong-secret-4b1d")).await;
    let err = svc
        .client_credentials(&["api:read"], None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    let text = format!("{err} {err:?}");
    assert!(text.contains("not authenticated"), "{text}");
    assert!(!text.contains("wrong-secret-4b1d"), "{text}");
}

#[tokio::test]
async fn the_code_flow_with_pkce_yields_access_and_refresh_tokens() {
    let oidc = OidcProvider::start(Options::default()).await;
    let web = client(&oidc, "web", Some("web-secret")).await;
    let tokens = code_login(&web).await;
    assert!(tokens.refresh_token.is_some());
    assert!(tokens.id_token.is_some(), "openid scope gives an ID token");
}

#[tokio::test]
async fn a_wrong_pkce_verifier_is_refused() {
    let oidc = OidcProvider::start(Options::default()).await;
    let web = client(&oidc, "web", Some("web-secret")).await;
    let redirect = "http://127.0.0.1:9/callback";
    let (url, _real) = web
        .authorize_url(redirect, &["openid", "api:read"])
        .unwrap();
    let back = browse_to_redirect(&url, redirect).await;
    // Another flow's pending authorization: its own state (passes the CSRF check) but a
    // different verifier.
    let (_, other) = web
        .authorize_url(redirect, &["openid", "api:read"])
        .unwrap();
    let state = other.state.clone();
    let err = web
        .exchange_code(other, &query(&back, "code"), &state)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(err.to_string().contains("PKCE"), "{err}");
}

#[tokio::test]
async fn a_replayed_authorization_code_is_refused() {
    let oidc = OidcProvider::start(Options::default()).await;
    let web = client(&oidc, "web", Some("web-secret")).await;
    let redirect = "http://127.0.0.1:9/callback";
    let (url, pending) = web
        .authorize_url(redirect, &["openid", "api:read"])
        .unwrap();
    let back = browse_to_redirect(&url, redirect).await;
    let (code, state) = (query(&back, "code"), query(&back, "state"));
    web.exchange_code(pending.clone(), &code, &state)
        .await
        .unwrap();
    let err = web.exchange_code(pending, &code, &state).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(err.to_string().contains("already used"), "{err}");
}

#[tokio::test]
async fn a_forged_or_reused_state_is_refused_before_any_exchange() {
    let oidc = OidcProvider::start(Options::default()).await;
    let web = client(&oidc, "web", Some("web-secret")).await;
    let sessions = AuthorizationSessions::new();
    let redirect = "http://127.0.0.1:9/callback";
    let url = sessions.begin(&web, redirect, &["api:read"]).await.unwrap();
    let back = browse_to_redirect(&url, redirect).await;
    let code = query(&back, "code");
    let err = sessions
        .complete(&web, &code, "forged-state")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CSRF"), "{err}");
    sessions
        .complete(&web, &code, &query(&back, "state"))
        .await
        .unwrap();
    let err = sessions
        .complete(&web, &code, &query(&back, "state"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_revocation_ends_the_grant() {
    let oidc = OidcProvider::start(Options::default()).await;
    let web = client(&oidc, "web", Some("web-secret")).await;
    let first = code_login(&web).await;
    let second = web.refresh(&first).await.unwrap();
    let (rt1, rt2) = (
        first.refresh_token.as_ref().unwrap().expose_secret(),
        second.refresh_token.as_ref().unwrap().expose_secret(),
    );
    assert_ne!(
        rt1, rt2,
        "the provider rotates refresh tokens; the new one is kept"
    );
    assert_ne!(
        first.access_token.expose_secret(),
        second.access_token.expose_secret()
    );

    web.revoke(&second, Revocable::Refresh).await.unwrap();
    let err = web.refresh(&second).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthExpired, "{err}");
    assert!(err.to_string().contains("log in again"), "{err}");
}

#[tokio::test]
async fn the_jwt_bearer_grant_signs_an_assertion_the_provider_verifies() {
    let key = TestKey::generate("connected-app");
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("app.pub.pem");
    std::fs::write(&public, &key.public_pem).unwrap();
    let oidc = OidcProvider::start(Options {
        jwt_bearer_key_file: Some(public),
        ..Options::default()
    })
    .await;
    let app = client(&oidc, "sf-app", None).await;
    let tokens = app
        .jwt_bearer(
            "integration@acme.example",
            &SecretString::from(key.pem.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(tokens.instance_url.as_deref(), Some(oidc.issuer.as_str()));

    let impostor = TestKey::generate("impostor");
    let err = app
        .jwt_bearer(
            "integration@acme.example",
            &SecretString::from(impostor.pem.as_str()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(err.to_string().contains("JWT bearer grant"), "{err}");
}

#[tokio::test]
async fn the_loopback_login_receives_the_redirect_on_a_random_port() {
    let oidc = OidcProvider::start(Options::default()).await;
    let web = client(&oidc, "web", Some("web-secret")).await;
    let tokens = login_with_loopback(
        &web,
        &["openid", "offline_access"],
        Duration::from_secs(30),
        |url| {
            let url = url.clone();
            // The "browser": follows the provider's redirects, ending at our listener.
            let redirect = query(&url, "redirect_uri");
            tokio::spawn(async move {
                let back = browse_to_redirect(&url, &redirect).await;
                reqwest::get(back)
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap();
            });
            Ok(())
        },
    )
    .await
    .unwrap();
    assert!(tokens.refresh_token.is_some());
}

#[tokio::test]
async fn a_provider_key_rotation_is_picked_up_without_restarting_the_validator() {
    let oidc = OidcProvider::start(Options {
        kid: Some("2026-11-a".into()),
        ..Options::default()
    })
    .await;
    let (issuer, port) = (oidc.issuer.clone(), oidc.port);
    let provider = provider_for(&oidc).await;
    let mut cfg = IssuerConfig::new(&issuer, provider.jwks_uri.unwrap().as_str(), [RESOURCE]);
    cfg.refetch_interval = Duration::ZERO;
    let validator = JwtValidator::new(vec![cfg]).unwrap();
    let svc = client(&oidc, "svc", Some("svc-secret")).await;
    let t1 = svc
        .client_credentials(&["api:read"], Some(RESOURCE))
        .await
        .unwrap();
    validator
        .validate::<Value>(t1.access_token.expose_secret())
        .await
        .unwrap();

    // The provider restarts with a new signing key on the same address.
    oidc.stop().await;
    let oidc = OidcProvider::start(Options {
        port: Some(port),
        kid: Some("2026-11-b".into()),
        ..Options::default()
    })
    .await;
    let svc = client(&oidc, "svc", Some("svc-secret")).await;
    let t2 = svc
        .client_credentials(&["api:read"], Some(RESOURCE))
        .await
        .unwrap();
    validator
        .validate::<Value>(t2.access_token.expose_secret())
        .await
        .unwrap();
    // The old key is gone from the provider's JWKS, so its tokens no longer validate.
    let err = validator
        .validate::<Value>(t1.access_token.expose_secret())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("2026-11-a"), "{err}");
}

#[tokio::test]
async fn a_provider_configured_by_issuer_is_discovered() {
    let oidc = OidcProvider::start(Options::default()).await;
    let config: moodbridge_auth::oauth::ProviderConfig = toml::from_str(&format!(
        "preset = \"oidc\"\nissuer = \"{}\"\nname = \"corp\"",
        oidc.issuer
    ))
    .unwrap();
    let http = moodbridge_auth::http::client().unwrap();
    let provider = config.build(&http).await.unwrap();
    assert_eq!(provider.name, "corp");
    assert_eq!(
        provider.token_endpoint.as_str(),
        format!("{}/token", oidc.issuer)
    );
    let svc = OAuthClient::new(provider, "svc", Some(SecretString::from("svc-secret"))).unwrap();
    svc.client_credentials(&["api:read"], None).await.unwrap();
}
