//! Property-based fuzzing of config parsing (stable Rust: proptest, fixed seed): host
//! config files — integrations of every registered kind with settings of any shape,
//! pipelines with streams, mappings, rules and regexes — and arbitrary text never panic
//! in parsing, checking (each connector's typed settings included) or `Debug`; a literal
//! put where a secret belongs never appears in an error or a `Debug` string.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use moodbridge::host::HostConfig;
use proptest::prelude::*;

/// The literal the generator puts where secrets belong.
const CANARY: &str = "hunter2-fuzz-canary-7731";

/// A TOML value of any shape, a few levels deep, as TOML text.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1.5".to_owned()),
        Just("-0.0".to_owned()),
        Just("nan".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        "[a-z:/._ 0-9-]{0,24}".prop_map(|s| format!("{s:?}")),
        Just("\"secret:salesforce/prod/client_secret\"".to_owned()),
        Just("\"env:MOODBRIDGE_FUZZ\"".to_owned()),
        Just("\"5m\"".to_owned()),
        Just("\"0s\"".to_owned()),
        Just("\"https://login.salesforce.com\"".to_owned()),
        Just("\"http://127.0.0.1:9\"".to_owned()),
        Just("\"^(a+)+$\"".to_owned()),
        Just("\"[\"".to_owned()),
    ];
    leaf.prop_recursive(3, 20, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::btree_map(key(), inner, 0..5).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

/// Keys the connectors and the engine read, and some they do not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "auth", "flow", "client_id", "instance_url", "login_url", "api_version", "username",
            "bucket", "region", "endpoint", "path_style", "part_size", "concurrency", "credentials",
            "source", "access_key_id", "prefix", "refresh", "container", "account", "api",
            "path", "root", "policy", "timeout", "retry", "max_attempts", "circuit_breaker",
            "rate_limit", "bulkhead", "encryption", "storage_class", "sandbox", "objects",
        ]).prop_map(str::to_owned),
        1 => "[a-z_]{1,10}",
    ]
}

/// Keys of secrets: their value is the canary literal.
fn secret_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "client_secret",
        "secret_access_key",
        "session_token",
        "password",
        "key",
        "sas",
        "connection_string",
        "private_key",
        "refresh_token",
    ])
}

/// Settings: a mix of any keys with any values and secrets given as literals, possibly
/// nested in a sub-table the connector reads (`auth`, `credentials`).
fn settings() -> impl Strategy<Value = String> {
    (
        prop::collection::btree_map(key(), value(), 0..6),
        prop::collection::btree_set(secret_key(), 0..3),
        prop::option::of(prop::sample::select(vec!["auth", "credentials"])),
        prop::option::of(prop::sample::select(vec![
            "client_credentials",
            "jwt_bearer",
            "refresh_token",
            "password",
            "static",
            "store",
            "chain",
            "shared_key",
            "sas",
            "entra",
        ])),
    )
        .prop_map(|(plain, secrets, nest, flow)| {
            let taken = |k: &str| {
                Some(k) == nest
                    || (nest.is_none()
                        && (secrets.contains(k)
                            || (flow.is_some() && (k == "flow" || k == "source"))))
            };
            let mut parts: Vec<String> = plain
                .into_iter()
                .filter(|(k, _)| !taken(k))
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            let mut inner: Vec<String> = secrets
                .iter()
                .map(|k| format!("{k} = {CANARY:?}"))
                .collect();
            if let Some(flow) = flow {
                inner.push(format!("flow = {flow:?}"));
                inner.push(format!("source = {flow:?}"));
            }
            match nest {
                Some(table) => parts.push(format!("{table} = {{ {} }}", inner.join(", "))),
                None => parts.extend(inner),
            }
            format!("{{ {} }}", parts.join(", "))
        })
}

fn integration() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "salesforce",
            "s3",
            "sqs",
            "sns",
            "azure-blob",
            "sqlite-warehouse",
            "local-objects",
            "env",
            "encrypted-file",
            "bogus",
        ]),
        "[a-z]{1,8}",
        settings(),
        prop::option::of(prop_oneof![
            value(),
            Just("{ timeout = \"5s\", retry = { max_attempts = 0 } }".to_owned()),
        ]),
    )
        .prop_map(|(kind, name, settings, policy)| {
            let mut t = format!(
                "[[integration]]\nid = \"{kind}:{name}\"\nkind = {kind:?}\nsettings = {settings}\n"
            );
            if let Some(p) = policy {
                t.push_str(&format!("policy = {p}\n"));
            }
            t
        })
}

fn stream() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["Account", "Contact", "Case", ""]),
        prop::collection::btree_map(
            prop::sample::select(vec![
                "mode",
                "write",
                "mapping",
                "sanitize",
                "validate",
                "deletes",
                "batch_size",
                "target",
                "unknown_key",
            ]),
            prop_oneof![
                value(),
                Just("\"soft\"".to_owned()),
                Just("\"incremental\"".to_owned()),
                Just("[{ op = \"rename\", from = \"Id\", to = \"id\" }]".to_owned()),
                Just("[{ rule = \"pattern\", field = \"Name\", regex = \"(\" }]".to_owned()),
                Just("[{ rule = \"length\", field = \"Name\", max = -1 }]".to_owned()),
                Just("{ mode = \"upsert\", key = [] }".to_owned()),
            ],
            0..5,
        ),
    )
        .prop_map(|(name, fields)| {
            let mut t = format!("[[pipeline.streams]]\nname = {name:?}\n");
            for (k, v) in fields {
                t.push_str(&format!("{k} = {v}\n"));
            }
            t
        })
}

fn pipeline() -> impl Strategy<Value = String> {
    (
        "[a-z-]{0,10}",
        prop::sample::select(vec![
            "salesforce:a",
            "s3:b",
            "sqlite-warehouse:c",
            "nowhere",
        ]),
        prop::sample::select(vec!["sqlite-warehouse:c", "salesforce:a", "nowhere"]),
        prop::collection::vec(stream(), 1..3),
        prop::option::of(prop::sample::select(vec![
            "audit = false\n",
            "actor = \"fuzz\"\n",
        ])),
    )
        .prop_map(|(name, source, sink, streams, extra)| {
            let mut t =
                format!("[[pipeline]]\nname = {name:?}\nsource = {source:?}\nsink = {sink:?}\n");
            t.push_str(extra.unwrap_or_default());
            for s in streams {
                t.push_str(&s);
            }
            t
        })
}

fn host_config() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(integration(), 0..4),
        prop::collection::vec(pipeline(), 0..2),
        prop::option::of(prop_oneof![
            4 => Just("[state]\nbackend = \"sqlite\"\npath = \"\"\n".to_owned()),
            1 => Just(format!("[state]\nbackend = \"postgres\"\nurl = {CANARY:?}\n")),
            1 => Just("[state]\nbackend = \"cassandra\"\n".to_owned()),
        ]),
        prop::option::of(Just("credentials = \"env:vault\"\n".to_owned())),
    )
        .prop_map(|(integrations, pipelines, state, credentials)| {
            let mut t = credentials.unwrap_or_default();
            t.push_str(&state.unwrap_or_default());
            for i in integrations {
                t.push_str(&i);
            }
            for p in pipelines {
                t.push_str(&p);
            }
            t
        })
}

/// Parse, check and print `text`: no panic, and the canary never shown.
fn exercise(text: &str) -> Result<(), TestCaseError> {
    let registry = moodbridge::registry();
    let shown = match HostConfig::from_toml(text) {
        Err(e) => format!("{e}\n{e:?}"),
        Ok(config) => {
            let debug = format!("{config:?}");
            let checked = match config.check(&registry) {
                Ok(()) => String::new(),
                Err(e) => format!("{e}\n{e:?}"),
            };
            format!("{debug}\n{checked}")
        }
    };
    prop_assert!(
        !shown.contains(CANARY),
        "a literal secret was shown:\n{}\n--- config ---\n{}",
        shown,
        text
    );
    Ok(())
}

proptest! {
    // A fixed seed: the same configs on every run and every machine.
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x00c0_4f16),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Config files of the right shape with wrong, odd or hostile contents.
    #[test]
    fn host_configs_of_any_content_are_checked_without_a_panic(text in host_config()) {
        exercise(&text)?;
    }

    /// Anything at all.
    #[test]
    fn arbitrary_text_is_refused_without_a_panic(text in prop_oneof![
        ".{0,400}",
        "[\\[\\]a-z=\"{}., \n]{0,400}",
    ]) {
        exercise(&text)?;
    }
}

/// The generator reaches the checks, not only the TOML parser's errors: a good share of
/// its files parse, and some of them pass every check.
#[test]
fn the_generated_configs_reach_the_connectors_checks() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]),
    );
    let registry = moodbridge::registry();
    let strategy = host_config();
    let (mut parsed, mut passed) = (0, 0);
    for _ in 0..400 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        let parsed_config = HostConfig::from_toml(&text);
        if let Err(e) = &parsed_config
            && std::env::var_os("FUZZ_SHOW").is_some()
        {
            eprintln!("{e}");
        }
        if let Ok(config) = parsed_config {
            parsed += 1;
            if config.check(&registry).is_ok() {
                passed += 1;
            }
        }
    }
    eprintln!("generated configs: {parsed} of 400 parse, {passed} pass every check");
    assert!(parsed >= 100, "{parsed} of 400 generated configs parse");
}
