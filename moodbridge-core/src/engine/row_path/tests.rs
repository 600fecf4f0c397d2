use super::*;
use crate::engine::mapping::cast;
use crate::engine::pipeline::{Pipeline, PipelineConfig, StreamConfig};
use crate::engine::validation::{Rule, Sanitize};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::json;

fn pipeline(stream: StreamConfig) -> Pipeline {
    Pipeline::new(PipelineConfig::new("p", vec![stream])).unwrap()
}

fn columns(kinds: &[ColumnKind]) -> Arc<[Column]> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, k)| Column::new(((b'a' + i as u8) as char).to_string(), *k))
        .collect()
}

/// What the record path makes of each row: the transformed record or the failure.
type Outcome = std::result::Result<Record, (FailureStage, String)>;

fn by_records(plan: &StreamPlan, rows: &RowBatch) -> Vec<Outcome> {
    rows.rows()
        .map(|row| {
            let mut record = row.to_record();
            plan.transform(&mut record).map(|()| record)
        })
        .collect()
}

/// The row path's result in the record path's terms; `None` when it left the batch to
/// the record path.
fn by_rows(plan: &StreamPlan, rows: &RowBatch) -> Option<Vec<Outcome>> {
    let program = RowProgram::compile(plan, rows.shared_columns())?;
    let done = program.run(plan, rows)?;
    let out = done.rows.as_ref().unwrap_or(rows);
    let passed = done.from.clone();
    assert_eq!(passed.len(), out.len());
    let mut outcomes: Vec<Option<Outcome>> = vec![None; rows.len()];
    for (k, &i) in passed.iter().enumerate() {
        outcomes[i] = Some(Ok(out.row(k).unwrap().to_record()));
    }
    let mut rejected = done.rejected.into_iter();
    for (i, slot) in outcomes.iter_mut().enumerate() {
        if slot.is_none() {
            let (original, stage, reason) = rejected.next().expect("a rejection per row left");
            assert_eq!(
                original,
                rows.row(i).unwrap().to_record(),
                "the source's row"
            );
            *slot = Some(Err((stage, reason)));
        }
    }
    assert!(rejected.next().is_none());
    Some(outcomes.into_iter().map(Option::unwrap).collect())
}

/// The two paths agree value for value, in field order (so in the JSON an audit digest
/// hashes), failure for failure and message for message.
fn assert_same(records: &[Outcome], rows: &[Outcome]) {
    assert_eq!(records.len(), rows.len());
    for (a, b) in records.iter().zip(rows) {
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(
                serde_json::to_string(a).unwrap(),
                serde_json::to_string(b).unwrap()
            ),
            (a, b) => assert_eq!(a, b),
        }
    }
}

/// The sync bench's stream: 4 mapping steps, sanitising and 5 rules.
fn bench_stream() -> StreamConfig {
    let text = r#"
name = "Account"
mapping = [
  { op = "rename", from = "c", to = "postal_code" },
  { op = "cast", field = "d", to = "integer" },
  { op = "constant", field = "source", value = "salesforce" },
  { op = "drop", field = "e" },
]
sanitize = { trim = true, strip_control = true }
validate = [
  { rule = "required", field = "a" },
  { rule = "length", field = "a", max = 12 },
  { rule = "pattern", field = "b", regex = "^https://" },
  { rule = "enum", field = "postal_code", values = ["Hot", "Warm", "Cold"] },
  { rule = "range", field = "d", min = 0 },
]
"#;
    toml::from_str(text).unwrap()
}

#[test]
fn the_bench_pipeline_runs_as_rows_exactly_as_records() {
    let p = pipeline(bench_stream());
    let plan = p.plan("Account").unwrap();
    let kinds = [
        ColumnKind::Text,
        ColumnKind::Text,
        ColumnKind::Text,
        ColumnKind::Integer,
        ColumnKind::Boolean,
    ];
    let mut rows = RowBatch::new("Account", columns(&kinds));
    for cells in [
        [
            Some(" Acme \u{7}"),
            Some("https://a"),
            Some("Hot"),
            Some("12"),
            Some("false"),
        ],
        [
            Some("  "),
            Some("http://b"),
            Some("Lukewarm"),
            Some("-3"),
            None,
        ],
        [
            Some("Beta"),
            Some("https://b"),
            Some("Warm"),
            Some(" 7 "),
            Some("true"),
        ],
        [
            Some("Gamma"),
            None,
            Some("Cold"),
            Some("seven"),
            Some("true"),
        ],
        [
            Some("Delta Holdings Group"),
            Some("https://d"),
            Some("Cold"),
            None,
            None,
        ],
    ] {
        rows.push_row(cells).unwrap();
    }
    let done = by_rows(plan, &rows).expect("the row path takes the batch");
    assert_same(&by_records(plan, &rows), &done);
    let passed: Vec<&Record> = done.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(
        serde_json::to_value(passed).unwrap(),
        json!([
            {"a": "Acme", "b": "https://a", "postal_code": "Hot", "d": 12, "source": "salesforce"},
            {"a": "Beta", "b": "https://b", "postal_code": "Warm", "d": 7, "source": "salesforce"},
        ])
    );
    let reasons: Vec<&str> = done
        .iter()
        .filter_map(|o| o.as_ref().err())
        .map(|e| e.1.as_str())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].starts_with("a is required (it is empty); b does not match"));
    assert!(reasons[1].starts_with("cannot cast d to Integer: \"seven\""));
    assert!(reasons[2].contains("a is 20 long, over the maximum"));
}

#[test]
fn a_value_that_would_not_keep_its_columns_kind_leaves_the_batch_to_records() {
    // A text default in an integer column: "n/a" would still read as text, but 5 is an
    // integer in a text column and would come back as the string "5".
    let mut stream = StreamConfig::new("S");
    stream.mapping = vec![MapStep::Default {
        field: "a".into(),
        value: json!(5),
    }];
    let p = pipeline(stream);
    let plan = p.plan("S").unwrap();
    let mut rows = RowBatch::new("S", columns(&[ColumnKind::Text]));
    rows.push_row([Some("x")]).unwrap();
    assert!(
        by_rows(plan, &rows).is_some(),
        "no null: every value is text"
    );
    rows.push_row([None]).unwrap();
    assert!(by_rows(plan, &rows).is_none());
}

#[test]
fn steps_the_row_path_cannot_hold_leave_the_stream_to_records() {
    let mut stream = StreamConfig::new("S");
    stream.mapping = vec![MapStep::Constant {
        field: "tags".into(),
        value: json!(["a"]),
    }];
    let p = pipeline(stream);
    assert!(RowProgram::compile(p.plan("S").unwrap(), &columns(&[ColumnKind::Text])).is_none());
    let p = pipeline(StreamConfig::new("S"));
    let twice: Arc<[Column]> = vec![
        Column::new("a", ColumnKind::Text),
        Column::new("a", ColumnKind::Text),
    ]
    .into();
    assert!(RowProgram::compile(p.plan("S").unwrap(), &twice).is_none());
}

#[test]
fn rows_a_stream_leaves_unchanged_pass_through_or_are_copied_without_the_rejected() {
    let mut stream = StreamConfig::new("S");
    stream.validate = vec![Rule::Required { field: "a".into() }];
    let p = pipeline(stream);
    let plan = p.plan("S").unwrap();
    let program = RowProgram::compile(plan, &columns(&[ColumnKind::Text])).unwrap();
    let mut rows = RowBatch::new("S", columns(&[ColumnKind::Text]));
    rows.push_row([Some("x")]).unwrap();
    let done = program.run(plan, &rows).unwrap();
    assert!(done.rows.is_none() && done.rejected.is_empty());
    rows.push_row([None]).unwrap();
    rows.push_row([Some("y")]).unwrap();
    let done = program.run(plan, &rows).unwrap();
    let kept = done.rows.unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept.row(1).unwrap().text(0), Some("y"));
    assert_eq!(done.from, [0, 2]);
    assert!(!done.changed, "each kept row is its own original");
    assert_eq!(done.rejected.len(), 1);
}

fn val_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        prop::sample::select(vec![0.0, 1.0, 3.0, -0.0, 1.0e15, 1.0e20, 0.5]).prop_map(Value::from),
        "[ ]{0,2}(-?[0-9]{1,3}(\\.[0-9])?|true|FALSE|yes|no|1|0|x|inf|NaN)[ ]{0,2}"
            .prop_map(Value::String),
        ".{0,6}".prop_map(Value::String),
    ]
}

fn cast_strategy() -> impl Strategy<Value = CastType> {
    prop::sample::select(vec![
        CastType::String,
        CastType::Integer,
        CastType::Number,
        CastType::Boolean,
    ])
}

fn kind_strategy() -> impl Strategy<Value = ColumnKind> {
    prop::sample::select(vec![
        ColumnKind::Text,
        ColumnKind::Boolean,
        ColumnKind::Integer,
        ColumnKind::Number,
    ])
}

fn field_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "d", "z"]).prop_map(str::to_owned)
}

fn step_strategy() -> impl Strategy<Value = MapStep> {
    let constant = prop_oneof![
        Just(json!("k")),
        Just(json!(" 5 ")),
        Just(json!(5)),
        Just(json!(2.5)),
        Just(json!(true)),
        Just(Value::Null),
    ];
    prop_oneof![
        (field_strategy(), field_strategy()).prop_map(|(from, to)| MapStep::Rename { from, to }),
        (field_strategy(), cast_strategy()).prop_map(|(field, to)| MapStep::Cast { field, to }),
        (field_strategy(), constant.clone())
            .prop_map(|(field, value)| MapStep::Default { field, value }),
        field_strategy().prop_map(|field| MapStep::Drop { field }),
        (field_strategy(), constant).prop_map(|(field, value)| MapStep::Constant { field, value }),
        (field_strategy(), field_strategy(), field_strategy()).prop_map(|(field, x, y)| {
            MapStep::Computed {
                field,
                template: format!("<{{{x}}}|{{{y}}}>"),
            }
        }),
    ]
}

fn rule_strategy() -> impl Strategy<Value = Rule> {
    prop_oneof![
        field_strategy().prop_map(|field| Rule::Required { field }),
        (
            field_strategy(),
            prop::sample::select(vec![
                ValueType::String,
                ValueType::Integer,
                ValueType::Number,
                ValueType::Boolean,
            ])
        )
            .prop_map(|(field, value_type)| Rule::Type { field, value_type }),
        field_strategy().prop_map(|field| Rule::Length {
            field,
            min: Some(1),
            max: Some(3),
        }),
        field_strategy().prop_map(|field| Rule::Pattern {
            field,
            regex: "^[0-9]".into(),
        }),
        field_strategy().prop_map(|field| Rule::Enum {
            field,
            values: vec![json!("k"), json!(5), json!(2.5), json!(true)],
        }),
        field_strategy().prop_map(|field| Rule::Range {
            field,
            min: Some(-10.0),
            max: Some(10.0),
        }),
    ]
}

fn cell_strategy() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "-?[0-9]{1,3}",
        "-?[0-9]{1,2}\\.[0-9]{1,2}",
        "true|false|yes",
        "[ ]{0,2}[0-9]{1,2}[ ]{0,2}",
        "[ a-c\u{1}\t]{0,5}",
        "k|5|2.5",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x726f_7770),
        cases: 512,
        ..ProptestConfig::default()
    })]

    /// The row path's cast is the record path's: result and message.
    #[test]
    fn a_cast_of_a_cell_is_the_cast_of_its_json(value in val_strategy(), to in cast_strategy()) {
        let Some(val) = Val::from_json(&value) else { return Ok(()) };
        prop_assume!(!value.is_null());
        let by_val = cast_val(val, to).map(|v| v.to_json());
        prop_assert_eq!(by_val, cast(&value, to));
    }

    /// Whatever the columns, cells, steps, cleaning and rules, the row path makes of a
    /// batch exactly what the record path makes of it — or leaves it to the record path.
    #[test]
    fn the_row_path_is_the_record_path(
        kinds in prop::collection::vec(kind_strategy(), 4),
        cells in prop::collection::vec(prop::collection::vec(cell_strategy(), 4), 1..6),
        steps in prop::collection::vec(step_strategy(), 0..6),
        rules in prop::collection::vec(rule_strategy(), 0..4),
        trim in any::<bool>(),
        strip_control in any::<bool>(),
        case in prop::sample::select(vec![0, 1, 2, 3]),
    ) {
        let mut stream = StreamConfig::new("S");
        stream.mapping = steps;
        stream.validate = rules;
        stream.sanitize = Sanitize {
            trim,
            strip_control,
            collapse_whitespace: if case == 1 { vec!["a".into()] } else { Vec::new() },
            lowercase: if case == 2 { vec!["b".into(), "z".into()] } else { Vec::new() },
            uppercase: if case == 3 { vec!["c".into()] } else { Vec::new() },
        };
        let p = pipeline(stream);
        let plan = p.plan("S").unwrap();
        let mut rows = RowBatch::new("S", columns(&kinds));
        for row in &cells {
            rows.push_row(row.iter().map(Option::as_deref)).unwrap();
        }
        if let Some(done) = by_rows(plan, &rows) {
            assert_same(&by_records(plan, &rows), &done);
        }
    }
}

/// Most generated batches run on the row path: the property above is not vacuous.
#[test]
fn the_property_mostly_runs_on_the_row_path() {
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        ProptestConfig::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let strategy = (
        prop::collection::vec(kind_strategy(), 4),
        prop::collection::vec(prop::collection::vec(cell_strategy(), 4), 1..6),
        prop::collection::vec(step_strategy(), 0..6),
    );
    let (mut rows_path, mut total) = (0, 0);
    for _ in 0..300 {
        let (kinds, cells, steps) = strategy.new_tree(&mut runner).unwrap().current();
        let mut stream = StreamConfig::new("S");
        stream.mapping = steps;
        let p = pipeline(stream);
        let plan = p.plan("S").unwrap();
        let mut rows = RowBatch::new("S", columns(&kinds));
        for row in &cells {
            rows.push_row(row.iter().map(Option::as_deref)).unwrap();
        }
        total += 1;
        if by_rows(plan, &rows).is_some() {
            rows_path += 1;
        }
    }
    assert!(
        rows_path * 2 > total,
        "{rows_path} of {total} on the row path"
    );
}
