//! Property-based fuzzing (stable Rust: proptest, fixed seed) of the sandbox's parsers of
//! what clients send: SOQL and SOSL text — arbitrary, and token soups near the grammar —
//! parsed and, when it parses, run against a seeded org; and Bulk API 2.0 ingest CSV.
//! Nothing panics: a query either runs or is refused with an error.

use proptest::prelude::*;

use crate::org::{Org, standard_objects};
use crate::{eval, soql, sosl};

/// One seeded org for every case.
fn org() -> &'static Org {
    static ORG: std::sync::LazyLock<Org> = std::sync::LazyLock::new(|| {
        let mut org = Org::new(standard_objects());
        org.seed(6, 2, 3);
        org
    });
    &ORG
}

/// SOQL's words, the org's names, literals of every kind and punctuation.
fn soql_token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "NOT IN", "LIKE", "INCLUDES",
            "ORDER BY", "GROUP BY", "HAVING", "ASC", "DESC", "NULLS FIRST", "NULLS LAST",
            "LIMIT", "OFFSET", "COUNT()", "COUNT(Id)", "FOR UPDATE", "ALL ROWS", "USING SCOPE",
            "WITH", "TYPEOF", "WHEN", "THEN", "END",
        ]).prop_map(str::to_owned),
        4 => prop::sample::select(vec![
            "Id", "Name", "Account", "Contact", "Case", "Account.Name", "Owner.Name",
            "Account.Owner.Name", "AccountId", "CreatedDate", "SystemModstamp", "IsDeleted",
            "AnnualRevenue", "NumberOfEmployees", "Bogus__c", "Contacts", "(SELECT Id FROM Contacts)",
        ]).prop_map(str::to_owned),
        3 => prop::sample::select(vec![
            "=", "!=", "<>", "<", "<=", ">", ">=", "(", ")", ",", ":", "'", "\\", "%", "_",
        ]).prop_map(str::to_owned),
        3 => prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            Just("-3.5e2".to_owned()),
            Just("null".to_owned()),
            Just("TRUE".to_owned()),
            Just("2026-11-30".to_owned()),
            Just("2026-11-30T10:00:00Z".to_owned()),
            Just("2026-11-30T10:00:00.123+05:30".to_owned()),
            Just("0000-00-00T99:99:99Z".to_owned()),
            Just("TODAY".to_owned()),
            Just("LAST_N_DAYS:3".to_owned()),
            Just("NEXT_N_DAYS:-99999999999".to_owned()),
            ".{0,8}".prop_map(|s| format!("'{}'", s.replace('\'', "\\'"))),
            ".{0,8}".prop_map(|s| format!("'{s}'")),
        ],
    ]
}

/// A field of the seeded objects, a relationship path, or a name they lack.
fn soql_field() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "Id",
        "Name",
        "CreatedDate",
        "SystemModstamp",
        "LastModifiedDate",
        "IsDeleted",
        "AccountId",
        "Account.Name",
        "Account.Industry",
        "Owner.Name",
        "AnnualRevenue",
        "NumberOfEmployees",
        "Industry",
        "LastName",
        "Email",
        "Subject",
        "Status",
        "Bogus__c",
    ])
    .prop_map(str::to_owned)
}

/// A literal of any type (a field compared with the wrong type is a case too).
fn soql_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i32>().prop_map(|i| i.to_string()),
        Just("1.5".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("2026-11-30".to_owned()),
        Just("2026-11-30T10:00:00Z".to_owned()),
        Just("TODAY".to_owned()),
        Just("LAST_N_DAYS:3".to_owned()),
        "[a-zA-Z %_]{0,8}".prop_map(|s| format!("'{s}'")),
    ]
}

/// A WHERE condition: comparisons, IN, LIKE, NOT, nesting with AND and OR.
fn soql_condition() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (
            soql_field(),
            prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]),
            soql_literal()
        )
            .prop_map(|(f, op, v)| format!("{f} {op} {v}")),
        (soql_field(), prop::collection::vec(soql_literal(), 1..4))
            .prop_map(|(f, vs)| format!("{f} IN ({})", vs.join(", "))),
        (soql_field(), "[a-zA-Z%_]{0,6}").prop_map(|(f, p)| format!("{f} LIKE '{p}'")),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["AND", "OR"]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|c| format!("NOT ({c})")),
            inner.prop_map(|c| format!("({c})")),
        ]
    })
}

/// A query near the grammar: SELECT fields FROM an object, optionally WHERE, ORDER BY,
/// LIMIT and OFFSET, sometimes followed by a soup of tokens.
fn near_soql() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            4 => prop::collection::vec(soql_field(), 1..5).prop_map(|f| f.join(", ")),
            1 => Just("COUNT()".to_owned()),
        ],
        prop::sample::select(vec!["Account", "Contact", "Case", "Nope"]),
        prop::option::of(soql_condition()),
        prop::option::of((
            soql_field(),
            prop::sample::select(vec![
                "",
                "ASC",
                "DESC",
                "DESC NULLS LAST",
                "ASC NULLS FIRST",
            ]),
        )),
        prop::option::of(0u32..3000),
        prop::option::of(0u32..3000),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(soql_token(), 1..6),
        ],
    )
        .prop_map(|(fields, object, filter, order, limit, offset, soup)| {
            let mut q = format!("SELECT {fields} FROM {object}");
            if let Some(c) = filter {
                q.push_str(&format!(" WHERE {c}"));
            }
            if let Some((f, dir)) = order {
                q.push_str(&format!(" ORDER BY {f} {dir}"));
            }
            if let Some(n) = limit {
                q.push_str(&format!(" LIMIT {n}"));
            }
            if let Some(n) = offset {
                q.push_str(&format!(" OFFSET {n}"));
            }
            for t in soup {
                q.push(' ');
                q.push_str(&t);
            }
            q
        })
}

/// A query that runs: it parses and the evaluator answers it.
fn runs(text: &str) -> bool {
    soql::parse(text).is_ok_and(|q| eval::run(org(), &q, "62.0").is_ok())
}

/// Parse `text`; run it when it parses. Never panics.
fn run_soql(text: &str) {
    if let Ok(query) = soql::parse(text) {
        let _ = eval::run(org(), &query, "62.0");
        let _ = eval::count(org(), &query);
    }
}

fn sosl_token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "FIND",
            "IN",
            "ALL FIELDS",
            "NAME FIELDS",
            "EMAIL FIELDS",
            "PHONE FIELDS",
            "RETURNING",
            "LIMIT",
            "Account",
            "Contact(Id, Name)",
            "Case(Id WHERE Status = 'New')",
            "{",
            "}",
            "(",
            ")",
            ",",
            "*",
            "?",
            "\\",
            "AND",
            "OR",
            "\"",
        ])
        .prop_map(str::to_owned),
        ".{0,6}",
        any::<i32>().prop_map(|i| i.to_string()),
    ]
}

fn run_sosl(text: &str) {
    if let Ok(search) = sosl::parse(text) {
        let _ = sosl::run(org(), &search, "62.0");
    }
}

proptest! {
    // A fixed seed: the same inputs on every run and every machine.
    #![proptest_config(ProptestConfig {
        cases: 768,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5041_5253),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn soql_of_any_text_is_parsed_or_refused_without_a_panic(text in ".{0,300}") {
        run_soql(&text);
    }

    #[test]
    fn soql_near_the_grammar_runs_or_is_refused_without_a_panic(text in near_soql()) {
        run_soql(&text);
    }

    #[test]
    fn soql_token_soup_is_refused_without_a_panic(tokens in prop::collection::vec(soql_token(), 0..30)) {
        run_soql(&tokens.join(" "));
    }

    #[test]
    fn sosl_of_any_text_is_parsed_or_refused_without_a_panic(text in ".{0,200}") {
        run_sosl(&text);
    }

    #[test]
    fn sosl_near_the_grammar_runs_or_is_refused_without_a_panic(
        term in ".{0,20}",
        tokens in prop::collection::vec(sosl_token(), 0..14),
    ) {
        run_sosl(&format!("FIND {{{term}}} {}", tokens.join(" ")));
    }
}

/// Share of `strategy`'s values (500 drawn, fixed seed) that `accept` takes.
fn accepted<S: Strategy>(strategy: S, accept: impl Fn(&S::Value) -> bool) -> usize {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    (0..500)
        .filter(|_| {
            strategy
                .new_tree(&mut runner)
                .is_ok_and(|tree| accept(&tree.current()))
        })
        .count()
}

/// The generators near the grammar reach the evaluators, not only the parsers' errors.
#[test]
fn the_generators_near_the_grammar_reach_the_evaluators() {
    let soql = accepted(near_soql(), |q| runs(q));
    eprintln!("near-grammar: {soql} of 500 queries run");
    assert!(soql >= 50, "{soql} of 500 generated queries run");
    let sosl = accepted(
        (".{2,20}", prop::collection::vec(sosl_token(), 0..14)),
        |(term, tokens)| sosl::parse(&format!("FIND {{{term}}} {}", tokens.join(" "))).is_ok(),
    );
    eprintln!("near-grammar: {sosl} of 500 searches parse");
    assert!(sosl >= 25, "{sosl} of 500 generated searches parse");
}
