//! Dataset checks: properties of a whole stream, evaluated on the data as it moves (batch
//! by batch, before the sink's commit), where a record rule sees one record at a time.
//!
//! | check | passes when |
//! |---|---|
//! | `completeness` | the share of records with the field present and not null is at least `mostly` |
//! | `unique` | no two records share the values of `fields` |
//! | `validity` | the share of the field's non-null values passing `rule` (any record rule) is at least `mostly` |
//! | `row_count` | the records number between `min` and `max` |
//! | `references` | the share of non-null `field` values found among `stream`'s `key` values in this run is at least `mostly` (`Contact.AccountId ∈ Account.Id`; the referenced stream must move first) |
//! | `freshness` | the newest `field` timestamp is at most `max_age_secs` old |
//!
//! Each check has a `severity`: `fail` (the default) makes the gate fail, `warn` only
//! reports. A stream's checks are declared in its pipeline config:
//!
//! ```toml
//! checks = [
//!   { check = "completeness", field = "Email", mostly = 0.95 },
//!   { check = "unique", fields = ["Id"] },
//!   { check = "validity", mostly = 0.995, rule = { rule = "pattern", field = "Email", regex = "^[^@\\s]+@[^@\\s]+$" } },
//!   { check = "row_count", min = 1, max = 5000000 },
//!   { check = "references", field = "AccountId", stream = "Account", key = "Id", severity = "warn" },
//!   { check = "freshness", field = "SystemModstamp", max_age_secs = 86400 },
//! ]
//! ```
//!
//! ```
//! use connector_etl::checks::{CheckSpec, DatasetChecks};
//! use moodbridge_core::{Record, RecordBatch};
//! use serde_json::json;
//!
//! let specs: Vec<CheckSpec> = toml::from_str::<toml::Table>(r#"checks = [
//!   { check = "unique", fields = ["Id"] },
//!   { check = "completeness", field = "Email", mostly = 0.9 },
//! ]"#).unwrap()["checks"].clone().try_into().unwrap();
//! let mut checks = DatasetChecks::new();
//! checks.declare("Contact", specs).unwrap();
//! let batch = RecordBatch::new("Contact", (0..10).map(|i| {
//!     let email = if i == 3 { json!(null) } else { json!(format!("c{i}@firm.example")) };
//!     Record::from_json(json!({"Id": format!("003{}", i % 9), "Email": email})).unwrap()
//! }).collect());
//! checks.observe(&batch);
//! let outcomes = checks.evaluate("Contact");
//! assert!(!outcomes[0].passed, "{}", outcomes[0]);   // Ids 0030 twice
//! assert!(outcomes[1].passed, "{}", outcomes[1]);    // 90 % have an email
//! assert!(DatasetChecks::gate(&outcomes).is_err());
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use moodbridge_core::config::Validator;
use moodbridge_core::engine::{Rule, Rules};
use moodbridge_core::{Error, ErrorKind, Record, RecordBatch, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::profile::StableHash;

/// What a failing check does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The gate fails (the run can be rolled back).
    #[default]
    Fail,
    /// Reported only.
    Warn,
}

fn all() -> f64 {
    1.0
}

/// One dataset check; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "check", deny_unknown_fields)]
pub enum Check {
    /// The field is present and not null in at least `mostly` of the records.
    Completeness {
        /// The field.
        field: String,
        /// The share required (0 to 1, default 1).
        #[serde(default = "all")]
        mostly: f64,
    },
    /// No two records share the values of `fields`.
    Unique {
        /// The key's fields.
        fields: Vec<String>,
    },
    /// At least `mostly` of the non-null values pass `rule`.
    Validity {
        /// The record rule.
        rule: Rule,
        /// The share required (default 1).
        #[serde(default = "all")]
        mostly: f64,
    },
    /// The stream has between `min` and `max` records.
    RowCount {
        /// At least.
        #[serde(default)]
        min: Option<u64>,
        /// At most.
        #[serde(default)]
        max: Option<u64>,
    },
    /// At least `mostly` of the non-null `field` values are among the `key` values of
    /// `stream` seen in this run.
    References {
        /// The referring field.
        field: String,
        /// The referenced stream (moved before this one).
        stream: String,
        /// Its key field.
        key: String,
        /// The share required (default 1).
        #[serde(default = "all")]
        mostly: f64,
    },
    /// The newest `field` timestamp (RFC 3339, or Salesforce's `+0000` offsets) is at
    /// most `max_age_secs` old when evaluated.
    Freshness {
        /// The timestamp field.
        field: String,
        /// The age allowed, in seconds.
        max_age_secs: u64,
    },
}

/// A check and its severity, as a pipeline declares them: the check's table with an
/// optional `severity` key. A key no check knows (a typo such as `mostyl`) is refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSpec {
    /// The check.
    #[serde(flatten)]
    pub check: Check,
    /// What its failure does (default `fail`).
    pub severity: Severity,
}

impl<'de> Deserialize<'de> for CheckSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = serde_json::Map::<String, Value>::deserialize(d)?;
        let severity = match table.remove("severity") {
            Some(v) => serde_json::from_value(v).map_err(D::Error::custom)?,
            None => Severity::Fail,
        };
        let check = serde_json::from_value(Value::Object(table)).map_err(D::Error::custom)?;
        Ok(CheckSpec { check, severity })
    }
}

/// A check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckOutcome {
    /// The stream.
    pub stream: String,
    /// The check, in words (`completeness of Email`).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was measured (a share, a count, an age in seconds).
    pub observed: f64,
    /// What was required, in words.
    pub expected: String,
    /// Its severity.
    pub severity: Severity,
}

impl fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} of {}: observed {}, expected {}",
            if self.passed { "passed" } else { "FAILED" },
            self.name,
            self.stream,
            trim(self.observed),
            self.expected
        )
    }
}

/// A number without a needless fraction.
fn trim(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.4}")
    }
}

/// A check's running state.
#[derive(Debug)]
enum State {
    Share { passed: u64, seen: u64 },
    Unique { keys: HashSet<u64>, duplicates: u64 },
    Validity { rule: Rules, passed: u64, seen: u64 },
    Count(u64),
    Newest(Option<i64>),
}

#[derive(Debug)]
struct Declared {
    spec: CheckSpec,
    state: State,
}

/// The dataset checks of a run's streams, with the key sets `references` checks need.
#[derive(Debug, Default)]
pub struct DatasetChecks {
    streams: BTreeMap<String, Vec<Declared>>,
    /// Key values of `(stream, field)` seen, for `references` checks.
    keys: BTreeMap<(String, String), HashSet<u64>>,
}

/// A value's hash, stable across processes; `None` for a missing or null value.
fn hash_value(value: Option<&Value>) -> Option<u64> {
    let value = value.filter(|v| !v.is_null())?;
    let mut h = StableHash.build_hasher();
    match value {
        Value::String(s) => s.hash(&mut h),
        other => other.to_string().hash(&mut h),
    }
    Some(h.finish())
}

fn timestamp(value: &Value) -> Option<i64> {
    let text = value.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.timestamp())
}

impl DatasetChecks {
    /// No checks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare `specs` for `stream`.
    ///
    /// # Errors
    /// [`Config`](ErrorKind::Config) naming every bad check (a share outside 0 to 1, an
    /// empty key, a rule that does not compile, bounds the wrong way round).
    pub fn declare(&mut self, stream: &str, specs: Vec<CheckSpec>) -> Result<()> {
        let mut v = Validator::new();
        let mut declared = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            let state = v.nested(format!("checks.{stream}[{i}]"), |v| {
                self.state_of(&spec.check, v)
            });
            declared.push(Declared { spec, state });
        }
        v.finish().map_err(Error::from)?;
        self.streams
            .entry(stream.to_owned())
            .or_default()
            .extend(declared);
        Ok(())
    }

    fn state_of(&mut self, check: &Check, v: &mut Validator) -> State {
        let share = |mostly: f64, v: &mut Validator| {
            if !(0.0..=1.0).contains(&mostly) {
                v.problem(
                    "mostly",
                    format!("is {mostly}"),
                    "give a share from 0 to 1, such as 0.995",
                );
            }
        };
        match check {
            Check::Completeness { mostly, .. } => {
                share(*mostly, v);
                State::Share { passed: 0, seen: 0 }
            }
            Check::Unique { fields } => {
                if fields.is_empty() {
                    v.problem("fields", "is empty", "name the fields of the key");
                }
                State::Unique {
                    keys: HashSet::new(),
                    duplicates: 0,
                }
            }
            Check::Validity { rule, mostly } => {
                share(*mostly, v);
                let rule = v.nested("rule", |v| Rules::compile(std::slice::from_ref(rule), v));
                State::Validity {
                    rule,
                    passed: 0,
                    seen: 0,
                }
            }
            Check::RowCount { min, max } => {
                if let (Some(lo), Some(hi)) = (min, max)
                    && lo > hi
                {
                    v.problem("min", "is above max", "swap min and max");
                }
                State::Count(0)
            }
            Check::References {
                mostly,
                stream,
                key,
                ..
            } => {
                share(*mostly, v);
                self.keys.entry((stream.clone(), key.clone())).or_default();
                State::Share { passed: 0, seen: 0 }
            }
            Check::Freshness { .. } => State::Newest(None),
        }
    }

    /// Count `batch` (records about to be written to its stream).
    pub fn observe(&mut self, batch: &RecordBatch) {
        for ((stream, field), keys) in &mut self.keys {
            if *stream == batch.stream {
                keys.extend(
                    batch
                        .records
                        .iter()
                        .filter_map(|r| hash_value(r.get(field))),
                );
            }
        }
        let Some(declared) = self.streams.get_mut(&batch.stream) else {
            return;
        };
        for d in declared {
            for record in &batch.records {
                observe_one(&d.spec.check, &mut d.state, record, &self.keys);
            }
        }
    }

    /// The outcome of each check of `stream`, in declared order.
    pub fn evaluate(&self, stream: &str) -> Vec<CheckOutcome> {
        let now = chrono::Utc::now().timestamp();
        self.streams
            .get(stream)
            .into_iter()
            .flatten()
            .map(|d| outcome(stream, d, now))
            .collect()
    }

    /// `Ok` unless a check of severity `fail` failed; the error names each.
    ///
    /// # Errors
    /// [`InvalidInput`](ErrorKind::InvalidInput) listing the failed checks.
    pub fn gate(outcomes: &[CheckOutcome]) -> Result<()> {
        let failed: Vec<String> = outcomes
            .iter()
            .filter(|o| !o.passed && o.severity == Severity::Fail)
            .map(ToString::to_string)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!("the quality gate failed: {}", failed.join("; ")),
        )
        .with_hint(
            "look at the records behind each failed check (dead letters, the source); roll the run back if it was written",
        ))
    }
}

fn observe_one(
    check: &Check,
    state: &mut State,
    record: &Record,
    keys: &BTreeMap<(String, String), HashSet<u64>>,
) {
    match (check, state) {
        (Check::Completeness { field, .. }, State::Share { passed, seen }) => {
            *seen += 1;
            if record.get(field).is_some_and(|v| !v.is_null()) {
                *passed += 1;
            }
        }
        (Check::Unique { fields }, State::Unique { keys, duplicates }) => {
            let mut h = StableHash.build_hasher();
            for f in fields {
                match hash_value(record.get(f)) {
                    Some(v) => v.hash(&mut h),
                    None => 0u64.hash(&mut h),
                }
            }
            if !keys.insert(h.finish()) {
                *duplicates += 1;
            }
        }
        (
            Check::Validity { rule: r, .. },
            State::Validity {
                rule: compiled,
                passed,
                seen,
            },
        ) => {
            let field = r.field();
            // `required` counts every record; the others their non-null values.
            let counted = matches!(r, Rule::Required { .. })
                || record.get(field).is_some_and(|v| !v.is_null());
            if counted {
                *seen += 1;
                if compiled.check(record).is_ok() {
                    *passed += 1;
                }
            }
        }
        (Check::RowCount { .. }, State::Count(n)) => *n += 1,
        (
            Check::References {
                field, stream, key, ..
            },
            State::Share { passed, seen },
        ) => {
            if let Some(h) = hash_value(record.get(field)) {
                *seen += 1;
                if keys
                    .get(&(stream.clone(), key.clone()))
                    .is_some_and(|k| k.contains(&h))
                {
                    *passed += 1;
                }
            }
        }
        (Check::Freshness { field, .. }, State::Newest(newest)) => {
            if let Some(t) = record.get(field).and_then(timestamp) {
                *newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
        _ => {}
    }
}

fn outcome(stream: &str, d: &Declared, now: i64) -> CheckOutcome {
    let share = |passed: u64, seen: u64| {
        if seen == 0 {
            1.0
        } else {
            passed as f64 / seen as f64
        }
    };
    let (name, passed, observed, expected) = match (&d.spec.check, &d.state) {
        (Check::Completeness { field, mostly }, State::Share { passed, seen }) => {
            let s = share(*passed, *seen);
            (
                format!("completeness of {field}"),
                s >= *mostly,
                s,
                format!("at least {mostly}"),
            )
        }
        (Check::Unique { fields }, State::Unique { duplicates, .. }) => (
            format!("uniqueness of ({})", fields.join(", ")),
            *duplicates == 0,
            *duplicates as f64,
            "0 duplicates".to_owned(),
        ),
        (Check::Validity { rule, mostly }, State::Validity { passed, seen, .. }) => {
            let s = share(*passed, *seen);
            let what = serde_json::to_value(rule)
                .ok()
                .and_then(|v| {
                    Some(format!(
                        "{} of {}",
                        v["rule"].as_str()?,
                        v["field"].as_str()?
                    ))
                })
                .unwrap_or_else(|| "a rule".to_owned());
            (
                format!("validity ({what})"),
                s >= *mostly,
                s,
                format!("at least {mostly}"),
            )
        }
        (Check::RowCount { min, max }, State::Count(n)) => (
            "row count".to_owned(),
            min.is_none_or(|m| *n >= m) && max.is_none_or(|m| *n <= m),
            *n as f64,
            format!(
                "between {} and {}",
                min.map_or_else(|| "0".to_owned(), |m| m.to_string()),
                max.map_or_else(|| "any".to_owned(), |m| m.to_string())
            ),
        ),
        (
            Check::References {
                field,
                stream: other,
                key,
                mostly,
            },
            State::Share { passed, seen },
        ) => {
            let s = share(*passed, *seen);
            (
                format!("references {field} → {other}.{key}"),
                s >= *mostly,
                s,
                format!("at least {mostly}"),
            )
        }
        (
            Check::Freshness {
                field,
                max_age_secs,
            },
            State::Newest(newest),
        ) => {
            let age = newest.map_or(f64::INFINITY, |t| (now - t).max(0) as f64);
            (
                format!("freshness of {field}"),
                age <= *max_age_secs as f64,
                age,
                format!("at most {max_age_secs} s old"),
            )
        }
        _ => ("an unknown check".to_owned(), false, 0.0, String::new()),
    };
    CheckOutcome {
        stream: stream.to_owned(),
        name,
        passed,
        observed,
        expected,
        severity: d.spec.severity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs(toml_text: &str) -> Vec<CheckSpec> {
        let table: toml::Table = toml_text.parse().unwrap();
        table["checks"].clone().try_into().unwrap()
    }

    fn contacts(n: usize, orphan_every: usize, bad_email_every: usize) -> RecordBatch {
        RecordBatch::new(
            "Contact",
            (0..n)
                .map(|i| {
                    let account = if orphan_every > 0 && i % orphan_every == 0 {
                        "001NOPE".to_owned()
                    } else {
                        format!("001{:04}", i % 50)
                    };
                    let email = if bad_email_every > 0 && i % bad_email_every == 0 {
                        "not-an-email".to_owned()
                    } else {
                        format!("c{i}@firm.example")
                    };
                    Record::from_json(json!({
                        "Id": format!("003{i:06}"),
                        "AccountId": account,
                        "Email": email,
                        "SystemModstamp": "2026-12-07T10:00:00.000+0000",
                    }))
                    .unwrap()
                })
                .collect(),
        )
    }

    #[test]
    fn rates_are_measured_exactly_and_the_gate_trips_on_fail_checks_only() {
        let mut checks = DatasetChecks::new();
        checks
            .declare(
                "Contact",
                specs(
                    r#"checks = [
                      { check = "validity", mostly = 0.995, rule = { rule = "pattern", field = "Email", regex = "^[^@\\s]+@[^@\\s]+$" } },
                      { check = "references", field = "AccountId", stream = "Account", key = "Id", severity = "warn" },
                      { check = "row_count", min = 1, max = 1000 },
                      { check = "unique", fields = ["Id"] },
                    ]"#,
                ),
            )
            .unwrap();
        checks.observe(&RecordBatch::new(
            "Account",
            (0..50)
                .map(|i| Record::from_json(json!({"Id": format!("001{i:04}")})).unwrap())
                .collect(),
        ));
        // 1 in 200 bad: 0.5 %; every 100th Contact an orphan: 1 %.
        checks.observe(&contacts(1000, 100, 200));
        let out = checks.evaluate("Contact");
        assert_eq!(out[0].observed, 0.995);
        assert!(out[0].passed, "{}", out[0]);
        assert_eq!(out[1].observed, 0.99);
        assert!(!out[1].passed);
        assert_eq!(out[2].observed, 1000.0);
        assert!(out[3].passed);
        // The failed check is a warning: the gate holds.
        DatasetChecks::gate(&out).unwrap();

        // 0.6 % bad trips it; 0.4 % does not.
        for (every, trips) in [(167, true), (250, false)] {
            let mut checks = DatasetChecks::new();
            checks
                .declare(
                    "Contact",
                    specs(
                        r#"checks = [{ check = "validity", mostly = 0.995, rule = { rule = "pattern", field = "Email", regex = "^[^@\\s]+@[^@\\s]+$" } }]"#,
                    ),
                )
                .unwrap();
            checks.observe(&contacts(1000, 0, every));
            let out = checks.evaluate("Contact");
            let gate = DatasetChecks::gate(&out);
            assert_eq!(gate.is_err(), trips, "every {every}: {}", out[0]);
            if let Err(e) = gate {
                assert!(e.to_string().contains("validity (pattern of Email)"), "{e}");
            }
        }
    }

    #[test]
    fn freshness_reads_salesforce_timestamps() {
        let mut checks = DatasetChecks::new();
        checks
            .declare(
                "Contact",
                specs(r#"checks = [{ check = "freshness", field = "SystemModstamp", max_age_secs = 60 }]"#),
            )
            .unwrap();
        checks.observe(&contacts(3, 0, 0));
        let out = checks.evaluate("Contact");
        assert!(!out[0].passed, "{}", out[0]);
        assert!(out[0].observed > 60.0);
    }

    #[test]
    fn a_key_no_check_knows_is_refused() {
        let refusal = |text: &str| {
            let table: toml::Table = text.parse().unwrap();
            table["checks"]
                .clone()
                .try_into::<Vec<CheckSpec>>()
                .unwrap_err()
                .to_string()
        };
        let err =
            refusal(r#"checks = [{ check = "completeness", field = "Email", mostyl = 0.9 }]"#);
        assert!(err.contains("mostyl"), "{err}");
        let err = refusal(r#"checks = [{ check = "unique", fields = ["Id"], severity = "loud" }]"#);
        assert!(err.contains("loud"), "{err}");
    }

    #[test]
    fn every_bad_check_is_named_at_once() {
        let mut checks = DatasetChecks::new();
        let err = checks
            .declare(
                "Contact",
                specs(
                    r#"checks = [
                      { check = "completeness", field = "Email", mostly = 1.5 },
                      { check = "unique", fields = [] },
                      { check = "row_count", min = 10, max = 1 },
                    ]"#,
                ),
            )
            .unwrap_err()
            .to_string();
        for part in [
            "checks.Contact[0].mostly",
            "checks.Contact[1].fields",
            "checks.Contact[2].min",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }
}
