//! Every value the SOQL builder accepts comes back unchanged from an independent SOQL
//! parser (the sandbox's); every value it cannot write is a clear `InvalidInput`, never a
//! panic or a truncated query.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use connector_salesforce::soql::{Soql, Value, field};
use moodbridge_core::ErrorKind;
use proptest::prelude::*;
use salesforce_sandbox::soql::{Literal, Predicate, parse};

/// The literal of `WHERE f = value` once the query is parsed back.
fn parsed_literal(soql: &str) -> Literal {
    let q = parse(soql).unwrap_or_else(|e| panic!("{soql:?} does not parse: {e}"));
    match q.filter {
        Some(Predicate::Compare { value, .. }) => value,
        other => panic!("{soql:?}: unexpected filter {other:?}"),
    }
}

fn build(value: Value) -> moodbridge_core::Result<String> {
    Soql::select(["Id"])
        .from("Account")
        .filter(field("Name").eq(value))
        .build()
}

/// A time `secs` seconds and `millis` milliseconds from the epoch (either side of it).
fn at(secs: i64, millis: u32) -> SystemTime {
    let whole = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    whole + Duration::from_millis(u64::from(millis))
}

const EARLIEST: i64 = -8_520_336_000; // 1700-01-01T00:00:00Z
const LATEST: i64 = 64_092_124_800; // 4000-12-31T00:00:00Z

proptest! {
    // A fixed seed: the same values on every run and every machine.
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x50c1_11e7),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn datetimes_round_trip_or_are_refused(secs in -40_000_000_000i64..300_000_000_000i64, millis in 0u32..1000) {
        let t = at(secs, millis);
        let in_range = (EARLIEST..LATEST).contains(&secs) || (secs == LATEST && millis == 0);
        match build(Value::DateTime(t)) {
            Ok(soql) => {
                prop_assert!(in_range, "{soql} was built for a time Salesforce cannot store");
                let Literal::DateTime(text) = parsed_literal(&soql) else {
                    panic!("{soql}: not a datetime literal");
                };
                let back = chrono::DateTime::parse_from_rfc3339(&text).unwrap();
                prop_assert_eq!((back.timestamp(), back.timestamp_subsec_millis()), (secs, millis), "{}", soql);
            }
            Err(e) => {
                prop_assert!(!in_range, "{} refused: {}", secs, e);
                prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
                prop_assert!(e.to_string().contains("1700-01-01T00:00:00Z to 4000-12-31T00:00:00Z"), "{}", e);
            }
        }
    }

    #[test]
    fn numbers_round_trip_or_are_refused(n in any::<f64>()) {
        match build(Value::Number(n)) {
            Ok(soql) => {
                prop_assert!(n.is_finite());
                let Literal::Number(text) = parsed_literal(&soql) else {
                    panic!("{soql}: not a number literal");
                };
                prop_assert_eq!(text.parse::<f64>().unwrap(), n, "{}", soql);
            }
            Err(e) => {
                prop_assert!(!n.is_finite(), "{} refused: {}", n, e);
                prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
            }
        }
    }

    #[test]
    fn whole_numbers_round_trip(n in any::<i64>()) {
        let soql = build(Value::Int(n)).unwrap();
        let Literal::Number(text) = parsed_literal(&soql) else {
            panic!("{soql}: not a number literal");
        };
        prop_assert_eq!(text.parse::<i64>().unwrap(), n);
    }

    #[test]
    fn strings_round_trip(s in any::<String>()) {
        let soql = build(Value::String(s.clone())).unwrap();
        prop_assert_eq!(parsed_literal(&soql), Literal::String(s));
    }
}

/// The edges, named: the first and last instants Salesforce stores, and the first
/// outside on each side, before 1970 and at year 10,000.
#[test]
fn datetime_edges_are_written_or_refused_by_name() {
    let written =
        |t: SystemTime| build(Value::DateTime(t)).map(|s| s.rsplit(' ').next().unwrap().to_owned());
    assert_eq!(written(at(EARLIEST, 0)).unwrap(), "1700-01-01T00:00:00Z");
    assert_eq!(written(at(LATEST, 0)).unwrap(), "4000-12-31T00:00:00Z");
    assert_eq!(written(at(-1, 0)).unwrap(), "1969-12-31T23:59:59Z");
    assert_eq!(written(at(-1, 500)).unwrap(), "1969-12-31T23:59:59.500Z");
    for refused in [at(EARLIEST - 1, 0), at(LATEST, 1), at(253_402_300_800, 0)] {
        let e = written(refused).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("cannot be written in SOQL"), "{e}");
    }
}
