//! Field mapping declared in config: rename, cast, default, drop, constant and simple
//! computed fields, applied in the order written.
//!
//! ```toml
//! mapping = [
//!   { op = "rename",   from = "Name", to = "account_name" },
//!   { op = "cast",     field = "NumberOfEmployees", to = "integer" },
//!   { op = "default",  field = "Industry", value = "Legal" },
//!   { op = "drop",     field = "attributes" },
//!   { op = "constant", field = "source", value = "salesforce" },
//!   { op = "computed", field = "full_name", template = "{FirstName} {LastName}" },
//! ]
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Validator;
use crate::record::Record;

/// A type a field can be cast to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CastType {
    /// Text: numbers and booleans become their JSON text.
    String,
    /// A whole number: from a number without fraction, or text such as `" 42 "`.
    Integer,
    /// A floating-point number: from a number or numeric text.
    Number,
    /// `true`/`false`: from a boolean, `"true"`/`"false"`/`"1"`/`"0"`/`"yes"`/`"no"`, or 0/1.
    Boolean,
}

/// One mapping step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum MapStep {
    /// Move `from` to `to` (a missing `from` is not an error; an existing `to` is replaced).
    Rename {
        /// The source field.
        from: String,
        /// The new name.
        to: String,
    },
    /// Convert `field` to `to`; a value that cannot be converted fails the record.
    Cast {
        /// The field.
        field: String,
        /// The target type.
        to: CastType,
    },
    /// Set `field` to `value` when it is missing or null.
    Default {
        /// The field.
        field: String,
        /// The value.
        value: Value,
    },
    /// Remove `field`.
    Drop {
        /// The field.
        field: String,
    },
    /// Set `field` to `value` always.
    Constant {
        /// The field.
        field: String,
        /// The value.
        value: Value,
    },
    /// Set `field` to `template` with each `{Field}` replaced by that field's text (empty
    /// for missing or null). `{{` and `}}` are literal braces.
    Computed {
        /// The field.
        field: String,
        /// The template.
        template: String,
    },
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    Field(String),
}

/// Mapping steps checked and prepared for use.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    steps: Vec<Prepared>,
}

#[derive(Debug, Clone)]
enum Prepared {
    Step(MapStep),
    Computed { field: String, pieces: Vec<Piece> },
}

impl Mapping {
    /// Check `steps`, adding every problem to `v` (paths relative to its current place).
    pub fn compile(steps: &[MapStep], v: &mut Validator) -> Mapping {
        let mut prepared = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            v.nested(format!("mapping[{i}]"), |v| {
                let empty = |name: &str, v: &mut Validator| {
                    v.problem(name, "is empty", "name the field this step applies to");
                };
                match step {
                    MapStep::Rename { from, to } => {
                        if from.is_empty() {
                            empty("from", v);
                        }
                        if to.is_empty() {
                            empty("to", v);
                        }
                    }
                    MapStep::Cast { field, .. }
                    | MapStep::Default { field, .. }
                    | MapStep::Drop { field }
                    | MapStep::Constant { field, .. }
                    | MapStep::Computed { field, .. } => {
                        if field.is_empty() {
                            empty("field", v);
                        }
                    }
                }
                if let MapStep::Computed { field, template } = step {
                    match parse_template(template) {
                        Ok(pieces) => prepared.push(Prepared::Computed {
                            field: field.clone(),
                            pieces,
                        }),
                        Err(problem) => v.problem(
                            "template",
                            problem,
                            "write fields as {Name}, literal braces as {{ and }}",
                        ),
                    }
                } else {
                    prepared.push(Prepared::Step(step.clone()));
                }
            });
        }
        Mapping { steps: prepared }
    }

    /// The steps, in order, templates parsed.
    pub(crate) fn steps(&self) -> impl Iterator<Item = StepRef<'_>> {
        self.steps.iter().filter_map(|step| match step {
            Prepared::Computed { field, pieces } => Some(StepRef::Computed { field, pieces }),
            // A computed step that did not parse never reaches a run.
            Prepared::Step(MapStep::Computed { .. }) => None,
            Prepared::Step(step) => Some(StepRef::Step(step)),
        })
    }

    /// `true` when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Apply every step to `record`; `Err` says which step failed and why.
    pub fn apply(&self, record: &mut Record) -> Result<(), String> {
        for step in &self.steps {
            match step {
                Prepared::Step(MapStep::Rename { from, to }) => {
                    if let Some(value) = record.remove(from) {
                        record.set(to.clone(), value);
                    }
                }
                Prepared::Step(MapStep::Cast { field, to }) => {
                    if let Some(value) = record.fields_mut().get_mut(field)
                        && !value.is_null()
                    {
                        *value = cast(value, *to)
                            .map_err(|why| format!("cannot cast {field} to {to:?}: {why}"))?;
                    }
                }
                Prepared::Step(MapStep::Default { field, value }) => {
                    if record.get(field).is_none_or(Value::is_null) {
                        record.set(field.clone(), value.clone());
                    }
                }
                Prepared::Step(MapStep::Drop { field }) => {
                    record.remove(field);
                }
                Prepared::Step(MapStep::Constant { field, value }) => {
                    record.set(field.clone(), value.clone());
                }
                Prepared::Computed { field, pieces } => {
                    let mut out = String::new();
                    for piece in pieces {
                        match piece {
                            Piece::Text(t) => out.push_str(t),
                            Piece::Field(name) => match record.get(name) {
                                None | Some(Value::Null) => {}
                                Some(Value::String(s)) => out.push_str(s),
                                Some(other) => out.push_str(&other.to_string()),
                            },
                        }
                    }
                    record.set(field.clone(), Value::String(out));
                }
                Prepared::Step(MapStep::Computed { .. }) => {}
            }
        }
        Ok(())
    }
}

/// One prepared step, as [`Mapping::steps`] yields it.
pub(crate) enum StepRef<'a> {
    /// Any step but a computed one.
    Step(&'a MapStep),
    /// A computed field and its parsed template.
    Computed { field: &'a str, pieces: &'a [Piece] },
}

fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("unclosed {{ in {template:?}")),
                    }
                }
                if name.is_empty() {
                    return Err(format!("empty {{}} in {template:?}"));
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field(name));
            }
            '}' => return Err(format!("unmatched }} in {template:?}")),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

pub(crate) fn cast(value: &Value, to: CastType) -> Result<Value, String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    };
    match to {
        CastType::String => Ok(match value {
            Value::String(_) => value.clone(),
            other => Value::String(other.to_string()),
        }),
        CastType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
                _ => Err(format!("{n} is not a whole number")),
            },
            Value::String(_) => text(value)
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{value} is not a whole number")),
            Value::Bool(b) => Ok(Value::from(i64::from(*b))),
            other => Err(format!("{other} is not a whole number")),
        },
        CastType::Number => match value {
            Value::Number(_) => Ok(value.clone()),
            Value::String(_) => text(value)
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("{value} is not a number")),
            other => Err(format!("{other} is not a number")),
        },
        CastType::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            Value::Number(n) if n.as_i64() == Some(0) => Ok(Value::Bool(false)),
            Value::Number(n) if n.as_i64() == Some(1) => Ok(Value::Bool(true)),
            Value::String(_) => match text(value).to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Value::Bool(true)),
                "false" | "0" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!("{value} is not a boolean")),
            },
            other => Err(format!("{other} is not a boolean")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(toml_steps: &str) -> Mapping {
        #[derive(Deserialize)]
        struct Steps {
            mapping: Vec<MapStep>,
        }
        let steps: Steps = toml::from_str(toml_steps).unwrap();
        let mut v = Validator::new();
        let m = Mapping::compile(&steps.mapping, &mut v);
        v.finish().unwrap();
        m
    }

    fn rec(v: Value) -> Record {
        Record::from_json(v).unwrap()
    }

    #[test]
    fn steps_apply_in_order_as_declared_in_toml() {
        let m = mapping(
            r#"mapping = [
              { op = "rename", from = "Name", to = "name" },
              { op = "cast", field = "Employees", to = "integer" },
              { op = "default", field = "Industry", value = "Legal" },
              { op = "drop", field = "attributes" },
              { op = "constant", field = "source", value = "salesforce" },
              { op = "computed", field = "label", template = "{name} ({Industry}) {{x}}" },
            ]"#,
        );
        let mut r = rec(
            json!({"Name": "Acme", "Employees": " 42 ", "Industry": null,
                                "attributes": {"type": "Account"}}),
        );
        m.apply(&mut r).unwrap();
        assert_eq!(
            r,
            rec(json!({"Employees": 42, "Industry": "Legal", "name": "Acme",
                       "source": "salesforce", "label": "Acme (Legal) {x}"}))
        );
    }

    #[test]
    fn a_value_that_cannot_be_cast_fails_the_record_naming_field_and_value() {
        let m = mapping(r#"mapping = [{ op = "cast", field = "Amount", to = "number" }]"#);
        let err = m.apply(&mut rec(json!({"Amount": "twelve"}))).unwrap_err();
        assert!(err.contains("Amount") && err.contains("twelve"), "{err}");
        // Null stays null.
        let mut r = rec(json!({"Amount": null}));
        m.apply(&mut r).unwrap();
        assert_eq!(r.get("Amount"), Some(&Value::Null));
    }

    #[test]
    fn casts_convert_what_they_reasonably_can() {
        assert_eq!(cast(&json!("yes"), CastType::Boolean), Ok(json!(true)));
        assert_eq!(cast(&json!(0), CastType::Boolean), Ok(json!(false)));
        assert_eq!(cast(&json!(3.0), CastType::Integer), Ok(json!(3)));
        assert!(cast(&json!(3.5), CastType::Integer).is_err());
        assert_eq!(cast(&json!(7), CastType::String), Ok(json!("7")));
        assert_eq!(cast(&json!("2.5"), CastType::Number), Ok(json!(2.5)));
    }

    #[test]
    fn every_bad_step_is_reported_at_once_with_its_path() {
        let steps = vec![
            MapStep::Rename {
                from: String::new(),
                to: "x".into(),
            },
            MapStep::Computed {
                field: "f".into(),
                template: "{open".into(),
            },
        ];
        let mut v = Validator::new();
        Mapping::compile(&steps, &mut v);
        let problems = v.finish().unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["mapping[0].from", "mapping[1].template"]);
    }
}
