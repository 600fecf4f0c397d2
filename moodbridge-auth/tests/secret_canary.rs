//! The secret canary: every flow runs with tracing at TRACE captured to a buffer (log
//! records of the HTTP libraries included); then no client secret, access token, refresh
//! token, ID token, private key or store master key may appear in the logs, in any
//! `Debug` output or in any error message.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::{Arc, Mutex};

use moodbridge_auth::jwt::{IssuerConfig, JwtValidator};
use moodbridge_auth::oauth::{OAuthClient, Provider, Revocable, TokenSet};
use moodbridge_auth::store::{EncryptedStore, Keyring, MasterKey};
use moodbridge_auth::token_manager::{ClientCredentialsSource, TokenManager};
use moodbridge_core::{CredentialStore, SecretRef};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use support::TestKey;
use support::oidc::{OidcProvider, Options, code_login};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything that was shown: Debug and Display strings of values and errors.
#[derive(Default)]
struct Shown(Vec<String>);

impl Shown {
    fn debug(&mut self, v: &dyn std::fmt::Debug) {
        self.0.push(format!("{v:?}"));
    }
    fn err(&mut self, e: &moodbridge_core::Error) {
        self.0.push(format!("{e} {e:?}"));
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_a_debug_string_or_an_error() {
    let _ = tracing_log::LogTracer::init();
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut shown = Shown::default();
    let mut secrets: Vec<String> = vec!["svc-secret".into(), "web-secret".into()];

    // The encrypted store holds the client secret.
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate().unwrap();
    secrets.push(master.to_base64());
    let store = Arc::new(
        EncryptedStore::create(&dir.path().join("s.db"), Keyring::new(master.clone()))
            .await
            .unwrap(),
    );
    store
        .put("oidc/svc/client_secret", SecretString::from("svc-secret"))
        .await
        .unwrap();
    let secret_ref: SecretRef = "secret:oidc/svc/client_secret".parse().unwrap();
    let svc_secret = secret_ref.resolve(Some(store.as_ref())).await.unwrap();
    shown.debug(&master);
    shown.debug(&Keyring::new(master.clone()));
    shown.debug(&store.get("oidc/svc/client_secret").await.unwrap());
    shown.err(
        &EncryptedStore::open(
            &dir.path().join("s.db"),
            Keyring::new(MasterKey::generate().unwrap()),
        )
        .await
        .unwrap_err(),
    );

    // A provider with a JWT-bearer key.
    let app_key = TestKey::generate("app");
    secrets.push(app_key.pem.lines().nth(3).unwrap().to_owned());
    let pub_file = dir.path().join("app.pub.pem");
    std::fs::write(&pub_file, &app_key.public_pem).unwrap();
    let oidc = OidcProvider::start(Options {
        jwt_bearer_key_file: Some(pub_file),
        ..Options::default()
    })
    .await;
    let http = moodbridge_auth::http::client().unwrap();
    let provider = Provider::discover("oidc", &http, &oidc.issuer)
        .await
        .unwrap();

    // Client credentials, through the token manager persisting to the store.
    let svc = Arc::new(OAuthClient::new(provider.clone(), "svc", Some(svc_secret)).unwrap());
    shown.debug(&svc);
    let manager =
        TokenManager::with_options(std::time::Duration::from_secs(60), Some(store.clone()));
    manager.register(
        "oidc",
        "svc",
        Arc::new(ClientCredentialsSource {
            client: svc.clone(),
            scopes: vec!["api:read".into()],
            resource: Some("urn:moodbridge:api".into()),
        }),
    );
    let cc = manager.token("oidc", "svc").await.unwrap();
    shown.debug(&manager);
    shown.debug(&cc);
    let collect = |t: &TokenSet, secrets: &mut Vec<String>| {
        secrets.push(t.access_token.expose_secret().to_owned());
        if let Some(r) = &t.refresh_token {
            secrets.push(r.expose_secret().to_owned());
        }
        if let Some(i) = &t.id_token {
            secrets.push(i.expose_secret().to_owned());
        }
    };
    collect(&cc, &mut secrets);

    // A wrong secret.
    let bad = OAuthClient::new(
        provider.clone(),
        "svc",
        Some(SecretString::from("svc-secret-but-wrong")),
    )
    .unwrap();
    secrets.push("svc-secret-but-wrong".into());
    shown.err(
        &bad.client_credentials(&["api:read"], None)
            .await
            .unwrap_err(),
    );

    // Code flow, refresh, revocation, refused refresh.
    let web = OAuthClient::new(
        provider.clone(),
        "web",
        Some(SecretString::from("web-secret")),
    )
    .unwrap();
    let (_, pending) = web
        .authorize_url("http://127.0.0.1:9/callback", &["openid"])
        .unwrap();
    shown.debug(&pending);
    let login = code_login(&web).await;
    collect(&login, &mut secrets);
    let refreshed = web.refresh(&login).await.unwrap();
    collect(&refreshed, &mut secrets);
    shown.debug(&refreshed);
    web.revoke(&refreshed, Revocable::Refresh).await.unwrap();
    shown.err(&web.refresh(&refreshed).await.unwrap_err());

    // JWT bearer, right and wrong key.
    let app = OAuthClient::new(provider.clone(), "sf-app", None).unwrap();
    let jb = app
        .jwt_bearer(
            "integration@acme.example",
            &SecretString::from(app_key.pem.as_str()),
        )
        .await
        .unwrap();
    collect(&jb, &mut secrets);
    let other = TestKey::generate("x");
    secrets.push(other.pem.lines().nth(3).unwrap().to_owned());
    shown.err(
        &app.jwt_bearer(
            "integration@acme.example",
            &SecretString::from(other.pem.as_str()),
        )
        .await
        .unwrap_err(),
    );

    // JWT validation of a real token and of a tampered one.
    let validator = JwtValidator::new(vec![IssuerConfig::new(
        &oidc.issuer,
        provider.jwks_uri.clone().unwrap().as_str(),
        ["urn:moodbridge:api"],
    )])
    .unwrap();
    validator
        .validate::<Value>(cc.access_token.expose_secret())
        .await
        .unwrap();
    let tampered = format!("{}x", cc.access_token.expose_secret());
    shown.err(&validator.validate::<Value>(&tampered).await.unwrap_err());

    drop(_guard);
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the capture saw nothing: {logs}"
    );
    let everything = format!("{logs}\n{}", shown.0.join("\n"));
    for secret in &secrets {
        assert!(
            secret.len() >= 10,
            "canary too short to be meaningful: {secret}"
        );
        // Tokens are long: also look for a distinctive slice (a prefix could be a shared header).
        let probe = if secret.len() > 40 {
            &secret[secret.len() - 30..]
        } else {
            secret.as_str()
        };
        assert!(!everything.contains(probe), "a secret leaked: …{probe}");
    }
    assert!(
        secrets.len() >= 12,
        "the canary must cover every kind of secret"
    );
}
