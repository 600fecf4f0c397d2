//! JWT validation against a JWKS served on loopback: the hostile-token table, key
//! rotation, and the re-fetch rate limit.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moodbridge_auth::jwt::{IssuerConfig, JwtValidator};
use moodbridge_core::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};
use support::{JwksServer, TestKey};

const ISS: &str = "https://issuer.test";
const AUD: &str = "moodbridge-api";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "user-1", "exp": now() + 600, "iat": now(), "tenant": "acme"})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn config(server: &JwksServer) -> IssuerConfig {
    let mut cfg = IssuerConfig::new(ISS, server.url(), [AUD]);
    cfg.leeway = Duration::from_secs(5);
    cfg
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[derive(Debug, Deserialize, PartialEq)]
struct Tenant {
    tenant: String,
}

#[tokio::test]
async fn a_valid_token_yields_standard_and_typed_claims() {
    let key = TestKey::generate("k1");
    let server = JwksServer::start(vec![key.jwk.clone()]).await;
    let validator = JwtValidator::new(vec![config(&server)]).unwrap();
    let claims = validator
        .validate::<Tenant>(&key.sign(&claims()))
        .await
        .unwrap();
    assert_eq!(claims.iss, ISS);
    assert_eq!(claims.aud, [AUD]);
    assert_eq!(claims.sub.as_deref(), Some("user-1"));
    assert_eq!(
        claims.custom,
        Tenant {
            tenant: "acme".into()
        }
    );
}

#[tokio::test]
async fn hostile_tokens_are_each_refused_with_a_distinct_clear_error() {
    let key = TestKey::generate("k1");
    let other = TestKey::generate("k1"); // same kid, different key
    let server = JwksServer::start(vec![key.jwk.clone()]).await;
    let mut cfg = config(&server);
    cfg.required_claims = vec!["tenant".into()];
    cfg.refetch_interval = Duration::from_secs(3600);
    let validator = JwtValidator::new(vec![cfg]).unwrap();

    let valid = key.sign(&claims());
    let parts: Vec<&str> = valid.split('.').collect();
    let public_key_as_hmac_secret = {
        let Value::Object(jwk) = serde_json::to_value(&key.jwk).unwrap() else {
            panic!()
        };
        jwk["n"].as_str().unwrap().as_bytes().to_vec()
    };
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(&public_key_as_hmac_secret),
        )
        .unwrap()
    };
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with(claims(), "sub", json!("admin"))),
        parts[2]
    );
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    );
    let unknown_kid = {
        let k = TestKey::generate("k-unknown");
        k.sign(&claims())
    };

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned, "alg: none"),
        (
            "HS256 signed with the issuer's RSA public key",
            hs256,
            "algorithm HS256 is not allowed",
        ),
        (
            "expired",
            key.sign(&with(claims(), "exp", json!(now() - 3600))),
            "it has expired",
        ),
        (
            "nbf in the future",
            key.sign(&with(claims(), "nbf", json!(now() + 3600))),
            "not valid yet",
        ),
        (
            "iat in the future",
            key.sign(&with(claims(), "iat", json!(now() + 3600))),
            "issued in the future",
        ),
        (
            "wrong iss",
            key.sign(&with(claims(), "iss", json!("https://evil.test"))),
            "is not trusted",
        ),
        (
            "wrong aud",
            key.sign(&with(claims(), "aud", json!("someone-else"))),
            "audience",
        ),
        (
            "missing required claim",
            key.sign(&json!({"iss": ISS, "aud": AUD, "exp": now() + 60})),
            "required claim \"tenant\"",
        ),
        ("unknown kid", unknown_kid, "key id \"k-unknown\""),
        (
            "signed with another key under a known kid",
            other.sign(&claims()),
            "signature does not verify",
        ),
        ("tampered payload", tampered, "signature does not verify"),
        (
            "truncated signature",
            format!("{}.{}.", parts[0], parts[1]),
            "truncated",
        ),
        (
            "truncated mid-payload",
            valid[..parts[0].len() + 10].to_owned(),
            "not a JWT",
        ),
        (
            "garbage header",
            format!("!!!.{}.{}", parts[1], parts[2]),
            "header is not base64url",
        ),
        (
            "oversized",
            format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]),
            "over the 16384-byte limit",
        ),
    ];

    for (name, token, expected) in &cases {
        let err = validator
            .validate::<Value>(token)
            .await
            .expect_err(&format!("{name} must be refused"));
        assert_eq!(err.kind(), ErrorKind::Auth, "{name}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(expected),
            "{name}: expected {expected:?} in {text:?}"
        );
        // No part of a token is echoed back.
        if let Some(sig) = token.split('.').nth(2).filter(|s| s.len() > 8) {
            assert!(
                !text.contains(sig),
                "{name}: the signature leaked into {text}"
            );
        }
    }
    // The distinct causes have distinct messages (the two signature failures share one).
    let mut messages: Vec<String> = Vec::new();
    for (_, token, _) in &cases {
        messages.push(
            validator
                .validate::<Value>(token)
                .await
                .unwrap_err()
                .message()
                .to_owned(),
        );
    }
    messages.sort();
    messages.dedup();
    assert_eq!(messages.len(), cases.len() - 1);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_restart() {
    let old = TestKey::generate("2026-a");
    let new = TestKey::generate("2026-b");
    let server = JwksServer::start(vec![old.jwk.clone()]).await;
    let mut cfg = config(&server);
    cfg.refetch_interval = Duration::ZERO;
    let validator = JwtValidator::new(vec![cfg]).unwrap();

    validator
        .validate::<Value>(&old.sign(&claims()))
        .await
        .unwrap();
    assert_eq!(server.fetches(), 1);
    // Cached: no fetch for the same key.
    validator
        .validate::<Value>(&old.sign(&claims()))
        .await
        .unwrap();
    assert_eq!(server.fetches(), 1);

    server.set_keys(vec![new.jwk.clone()]);
    validator
        .validate::<Value>(&new.sign(&claims()))
        .await
        .unwrap();
    assert_eq!(
        server.fetches(),
        2,
        "the unknown kid triggered one re-fetch"
    );

    let err = validator
        .validate::<Value>(&old.sign(&claims()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("2026-a"), "{err}");
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_cannot_hammer_the_issuer() {
    let key = TestKey::generate("real");
    let server = JwksServer::start(vec![key.jwk.clone()]).await;
    let mut cfg = config(&server);
    cfg.refetch_interval = Duration::from_secs(3600);
    let validator = std::sync::Arc::new(JwtValidator::new(vec![cfg]).unwrap());
    validator
        .validate::<Value>(&key.sign(&claims()))
        .await
        .unwrap();

    let forger = TestKey::generate("x");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let validator = validator.clone();
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(format!("made-up-{i}"));
            let token = jsonwebtoken::encode(&header, &claims(), &forger.encoding).unwrap();
            tokio::spawn(async move { validator.validate::<Value>(&token).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    assert_eq!(
        server.fetches(),
        1,
        "no re-fetch within the refetch interval"
    );
}

#[tokio::test]
async fn concurrent_first_validations_fetch_the_keys_once() {
    let key = TestKey::generate("k");
    let server = JwksServer::start(vec![key.jwk.clone()]).await;
    let validator = std::sync::Arc::new(JwtValidator::new(vec![config(&server)]).unwrap());
    let token = key.sign(&claims());
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (validator, token) = (validator.clone(), token.clone());
            tokio::spawn(async move { validator.validate::<Value>(&token).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_a_bad_token() {
    let key = TestKey::generate("k");
    // A port that was just free and has no listener (closed synchronously on drop).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/jwks");
    let validator = JwtValidator::new(vec![IssuerConfig::new(ISS, url, [AUD])]).unwrap();
    let err = validator
        .validate::<Value>(&key.sign(&claims()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[test]
fn hmac_algorithms_cannot_be_allowed_for_a_jwks_issuer() {
    let mut cfg = IssuerConfig::new(ISS, "https://issuer.test/jwks", [AUD]);
    cfg.algorithms = vec![Algorithm::RS256, Algorithm::HS256];
    let err = JwtValidator::new(vec![cfg]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn plain_http_jwks_off_loopback_is_refused() {
    let cfg = IssuerConfig::new(ISS, "http://issuer.test/jwks", [AUD]);
    assert_eq!(
        JwtValidator::new(vec![cfg]).unwrap_err().kind(),
        ErrorKind::Config
    );
}

/// A token signed by `key` with `header` (its `kid` set to the key's).
fn sign_with(key: &TestKey, mut header: Header, claims: &Value) -> String {
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A JWK that names its algorithm verifies that algorithm only, even when the issuer
/// allows others of the same family; a JWK without `alg` verifies any allowed one of its
/// family.
#[tokio::test]
async fn a_key_published_for_one_algorithm_verifies_no_other() {
    let bound = TestKey::generate("bound");
    let mut free = TestKey::generate("free");
    free.jwk.common.key_algorithm = None;
    let server = JwksServer::start(vec![bound.jwk.clone(), free.jwk.clone()]).await;
    let mut cfg = config(&server);
    cfg.algorithms = vec![Algorithm::RS256, Algorithm::RS384, Algorithm::PS256];
    let validator = JwtValidator::new(vec![cfg]).unwrap();
    for alg in [Algorithm::RS384, Algorithm::PS256] {
        let err = validator
            .validate::<Value>(&sign_with(&bound, Header::new(alg), &claims()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth);
        assert!(
            err.to_string().contains("published for RS256 only"),
            "{alg:?}: {err}"
        );
        validator
            .validate::<Value>(&sign_with(&free, Header::new(alg), &claims()))
            .await
            .unwrap();
    }
    validator
        .validate::<Value>(&bound.sign(&claims()))
        .await
        .unwrap();
}

/// RFC 7515 §4.1.11: a header marking an extension critical is refused, as this
/// validator understands none.
#[tokio::test]
async fn critical_header_extensions_are_refused() {
    let key = TestKey::generate("k1");
    let server = JwksServer::start(vec![key.jwk.clone()]).await;
    let validator = JwtValidator::new(vec![config(&server)]).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.crit = Some(vec!["exp-unknown".into()]);
    let err = validator
        .validate::<Value>(&sign_with(&key, header, &claims()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(err.to_string().contains("critical"), "{err}");
}

/// With a token type configured (RFC 9068's `at+jwt`), other types are refused.
#[tokio::test]
async fn a_configured_token_type_is_required() {
    let key = TestKey::generate("k1");
    let server = JwksServer::start(vec![key.jwk.clone()]).await;
    let mut cfg = config(&server);
    cfg.token_type = Some("at+jwt".into());
    let validator = JwtValidator::new(vec![cfg]).unwrap();
    for (typ, ok) in [
        ("at+jwt", true),
        ("application/at+jwt", true),
        ("AT+JWT", true),
        ("JWT", false),
    ] {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some(typ.into());
        let result = validator
            .validate::<Value>(&sign_with(&key, header, &claims()))
            .await;
        assert_eq!(result.is_ok(), ok, "{typ}: {result:?}");
    }
}

/// A JWKS endpoint that fails is asked once per interval, not once per token; every
/// token meanwhile is `Unavailable` at once.
#[tokio::test]
async fn a_failing_jwks_endpoint_is_not_asked_again_for_every_token() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let validator = JwtValidator::new(vec![IssuerConfig::new(ISS, url, [AUD])]).unwrap();
    let key = TestKey::generate("k1");
    for _ in 0..5 {
        let err = validator
            .validate::<Value>(&key.sign(&claims()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    server.abort();
}

/// A hostile token's kilobytes of `kid` or `iss` are not echoed whole into the error.
#[tokio::test]
async fn long_key_ids_and_issuers_are_cut_in_errors() {
    let key = TestKey::generate("k1");
    let server = JwksServer::start(vec![key.jwk.clone()]).await;
    let long = "k".repeat(10_000);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(long.clone());
    let by_kid = jsonwebtoken::encode(&header, &claims(), &key.encoding).unwrap();
    let by_iss = key.sign(&with(claims(), "iss", json!(long.clone())));
    let mut cfg = config(&server);
    cfg.max_token_bytes = 64 * 1024;
    let validator = JwtValidator::new(vec![cfg]).unwrap();
    for token in [&by_kid, &by_iss] {
        let err = validator.validate::<Value>(token).await.unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 400, "{} bytes: {text}", text.len());
        assert!(text.contains("(10000 bytes)"), "{text}");
    }
}
