//! Property-based fuzzing of JWT validation (stable Rust: proptest, fixed seed): hostile
//! headers, payloads and signatures — well-formed JSON with odd values, broken JSON,
//! broken base64, huge fields — never panic, are always refused as `Auth`, and never
//! echo more than a short excerpt of what the token said.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moodbridge_auth::jwt::{IssuerConfig, JwtValidator};
use moodbridge_core::ErrorKind;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use support::{JwksServer, TestKey};

const ISS: &str = "https://issuer.test";
const AUD: &str = "moodbridge-api";

/// One runtime, one JWKS server and one validator for every case.
struct World {
    runtime: tokio::runtime::Runtime,
    validator: JwtValidator,
    kid: String,
    _server: JwksServer,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let key = TestKey::generate("fuzz-key");
    let server = runtime.block_on(JwksServer::start(vec![key.jwk.clone()]));
    let mut config = IssuerConfig::new(ISS, server.url(), [AUD]);
    config.algorithms = vec![
        jsonwebtoken::Algorithm::RS256,
        jsonwebtoken::Algorithm::PS256,
        jsonwebtoken::Algorithm::ES256,
    ];
    let validator = JwtValidator::new(vec![config]).unwrap();
    World {
        runtime,
        validator,
        kid: key.kid.clone(),
        _server: server,
    }
});

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JSON value of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A header: the fields the validator reads, each absent, plausible or hostile, plus
/// any others.
fn header(kid: String) -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        Just(json!("RS256")),
        Just(json!("PS256")),
        Just(json!("ES256")),
        Just(json!("HS256")),
        Just(json!("none")),
        Just(json!("nOnE")),
        Just(json!("")),
        ".{0,20}".prop_map(Value::from),
        any_json(),
    ];
    let kid = prop_oneof![
        Just(json!(kid)),
        ".{0,40}".prop_map(Value::from),
        "[a-z]{5000,12000}".prop_map(Value::from),
        any_json(),
    ];
    (
        prop::option::of(alg),
        prop::option::of(kid),
        prop::option::of(prop_oneof![
            Just(json!("JWT")),
            Just(json!("at+jwt")),
            any_json()
        ]),
        prop::option::of(prop_oneof![
            prop::collection::vec(".{0,20}".prop_map(Value::from), 0..4).prop_map(Value::from),
            any_json()
        ]),
        prop::collection::btree_map("[a-z5]{1,6}", any_json(), 0..4),
    )
        .prop_map(|(alg, kid, typ, crit, extra)| {
            let mut h: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [("alg", alg), ("kid", kid), ("typ", typ), ("crit", crit)] {
                if let Some(v) = value {
                    h.insert(name.to_owned(), v);
                }
            }
            Value::Object(h)
        })
}

/// A payload: the routing and time claims, plausible or hostile, plus any others.
fn payload() -> impl Strategy<Value = Value> {
    let iss = prop_oneof![
        3 => Just(json!(ISS)),
        1 => ".{0,30}".prop_map(Value::from),
        1 => "[a-z]{5000,12000}".prop_map(Value::from),
        1 => any_json(),
    ];
    let time = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any_json(),
    ];
    (
        prop::option::of(iss),
        prop::option::of(prop_oneof![Just(json!(AUD)), any_json()]),
        prop::option::of(time.clone()),
        prop::option::of(time),
        prop::collection::btree_map("[a-z]{1,6}", any_json(), 0..4),
    )
        .prop_map(|(iss, aud, exp, nbf, extra)| {
            let mut p: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [("iss", iss), ("aud", aud), ("exp", exp), ("nbf", nbf)] {
                if let Some(v) = value {
                    p.insert(name.to_owned(), v);
                }
            }
            Value::Object(p)
        })
}

/// A signature: empty, random bytes, or text that is not base64.
fn signature() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        prop::collection::vec(any::<u8>(), 0..600).prop_map(|b| b64(&b)),
        ".{0,80}",
    ]
}

/// A part encoded as a token carries it, or mangled.
fn encoded(part: Value) -> impl Strategy<Value = String> {
    let text = part.to_string();
    prop_oneof![
        6 => Just(b64(text.as_bytes())),
        1 => Just(base64::engine::general_purpose::STANDARD.encode(text.as_bytes())),
        1 => Just(text.clone()),
        1 => (0..text.len().max(1)).prop_map(move |cut| b64(&text.as_bytes()[..cut.min(text.len())])),
    ]
}

fn refused(token: &str) -> Result<(), TestCaseError> {
    let outcome = WORLD
        .runtime
        .block_on(WORLD.validator.validate::<Value>(token));
    match outcome {
        Ok(claims) => Err(TestCaseError::fail(format!(
            "a token without a valid signature was accepted: {claims:?}"
        ))),
        Err(e) => {
            prop_assert_eq!(e.kind(), ErrorKind::Auth, "{}", e);
            let shown = e.to_string();
            prop_assert!(
                shown.len() < 2_000,
                "the error echoes too much ({} bytes)",
                shown.len()
            );
            Ok(())
        }
    }
}

proptest! {
    // A fixed seed: the same tokens on every run and every machine.
    #![proptest_config(ProptestConfig {
        cases: 384,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0007_a11e),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Structured tokens: every header and payload shape, encoded well or badly.
    #[test]
    fn hostile_tokens_are_refused_without_a_panic(
        (h, p, s) in (header(WORLD.kid.clone()), payload(), signature())
            .prop_flat_map(|(h, p, s)| (encoded(h), encoded(p), Just(s)))
    ) {
        refused(&format!("{h}.{p}.{s}"))?;
    }

    /// Anything at all, of up to 20,000 characters, with or without dots.
    #[test]
    fn arbitrary_text_is_refused_without_a_panic(token in prop_oneof![
        ".{0,200}",
        "[A-Za-z0-9_.=+/-]{0,400}",
        "[a-z.]{15000,20000}",
    ]) {
        refused(&token)?;
    }
}
