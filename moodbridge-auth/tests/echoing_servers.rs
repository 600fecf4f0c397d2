//! A token endpoint that echoes the request back in its error answer — the form body and
//! the `Authorization` header, raw, URL-encoded and base64-encoded — must not carry the
//! client secret or the refresh token into the SDK's errors.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use base64::Engine as _;
use moodbridge_auth::oauth::{ClientAuth, OAuthClient, Provider, TokenSet};
use secrecy::SecretString;

const SECRET: &str = "cl1ent-Secret/with+chars=";
const REFRESH: &str = "5Aep861refresh-Token/value==";

/// A token endpoint answering every request 400 `invalid_grant`, its description quoting
/// the request in every encoding a careless server might use.
async fn echoing_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    use axum::http::HeaderMap;
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(|headers: HeaderMap, body: String| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let decoded: String = url::form_urlencoded::parse(body.as_bytes())
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            let b64 = base64::engine::general_purpose::STANDARD.encode(&decoded);
            let description = format!("bad request: {body} | {decoded} | {b64} | auth {auth}");
            (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({
                    "error": "invalid_grant",
                    "error_description": description,
                })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, task)
}

fn provider(token_endpoint: &str, client_auth: ClientAuth) -> Provider {
    Provider {
        name: "echo".into(),
        issuer: "http://127.0.0.1".into(),
        authorization_endpoint: None,
        token_endpoint: token_endpoint.parse().unwrap(),
        revocation_endpoint: None,
        jwks_uri: None,
        client_auth,
    }
}

fn assert_clean(shown: &str) {
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in [SECRET, REFRESH] {
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        for form in [secret.to_owned(), encoded, b64.encode(secret)] {
            assert!(!shown.contains(&form), "{form:?} leaked into: {shown}");
        }
    }
    assert!(shown.contains("[redacted]"), "{shown}");
}

#[tokio::test]
async fn secrets_echoed_by_a_token_endpoint_never_reach_an_error() {
    let (url, server) = echoing_endpoint().await;
    for auth in [ClientAuth::Body, ClientAuth::Basic] {
        let client = OAuthClient::new(
            provider(&url, auth),
            "client-id",
            Some(SecretString::from(SECRET)),
        )
        .unwrap();
        let err = client.client_credentials(&["api"], None).await.unwrap_err();
        assert_clean(&format!("{err} {err:?}"));
        let tokens = TokenSet {
            refresh_token: Some(SecretString::from(REFRESH)),
            ..TokenSet::bearer(SecretString::from("access-token-value"), None)
        };
        let err = client.refresh(&tokens).await.unwrap_err();
        assert_clean(&format!("{err} {err:?}"));
    }
    server.abort();
}
