//! Data quality declared in config: sanitisation (trim, whitespace and case
//! normalisation, control characters) and validation rules (required, type, length,
//! pattern, enum, range). A record that breaks a rule becomes a dead letter naming every
//! rule it broke; the run goes on.
//!
//! ```toml
//! sanitize = { trim = true, strip_control = true, collapse_whitespace = ["Subject"], lowercase = ["Email"] }
//! validate = [
//!   { rule = "required", field = "LastName" },
//!   { rule = "type",     field = "NumberOfEmployees", type = "integer" },
//!   { rule = "length",   field = "Subject", max = 255 },
//!   { rule = "pattern",  field = "Email", regex = "^[^@\\s]+@[^@\\s]+$" },
//!   { rule = "enum",     field = "Status", values = ["New", "Working", "Closed"] },
//!   { rule = "range",    field = "Amount", min = 0 },
//! ]
//! ```

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Validator;
use crate::record::Record;

/// A JSON type a field's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A string.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// A boolean.
    Boolean,
    /// An object.
    Object,
    /// An array.
    Array,
}

impl ValueType {
    fn matches(self, v: &Value) -> bool {
        match self {
            ValueType::String => v.is_string(),
            ValueType::Integer => v.is_i64() || v.is_u64(),
            ValueType::Number => v.is_number(),
            ValueType::Boolean => v.is_boolean(),
            ValueType::Object => v.is_object(),
            ValueType::Array => v.is_array(),
        }
    }
}

/// One validation rule. Rules other than `required` pass when the field is missing or
/// null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum Rule {
    /// The field is present, not null, and not an empty string.
    Required {
        /// The field.
        field: String,
    },
    /// The value has this JSON type.
    Type {
        /// The field.
        field: String,
        /// The type.
        #[serde(rename = "type")]
        value_type: ValueType,
    },
    /// A string's length in characters (or an array's in items) is within bounds.
    Length {
        /// The field.
        field: String,
        /// At least this many.
        #[serde(default)]
        min: Option<usize>,
        /// At most this many.
        #[serde(default)]
        max: Option<usize>,
    },
    /// A string matches a regular expression (Rust `regex` syntax; anchor it with `^…$`
    /// to match the whole value).
    Pattern {
        /// The field.
        field: String,
        /// The expression.
        regex: String,
    },
    /// The value is one of these.
    Enum {
        /// The field.
        field: String,
        /// The allowed values.
        values: Vec<Value>,
    },
    /// A number is within bounds (inclusive).
    Range {
        /// The field.
        field: String,
        /// At least this.
        #[serde(default)]
        min: Option<f64>,
        /// At most this.
        #[serde(default)]
        max: Option<f64>,
    },
}

impl Rule {
    /// The field the rule checks.
    ///
    /// ```
    /// use moodbridge_core::engine::Rule;
    /// let rule = Rule::Required { field: "LastName".into() };
    /// assert_eq!(rule.field(), "LastName");
    /// ```
    pub fn field(&self) -> &str {
        match self {
            Rule::Required { field }
            | Rule::Type { field, .. }
            | Rule::Length { field, .. }
            | Rule::Pattern { field, .. }
            | Rule::Enum { field, .. }
            | Rule::Range { field, .. } => field,
        }
    }
}

/// What to clean in string values before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sanitize {
    /// Trim leading and trailing whitespace of every string field.
    #[serde(default)]
    pub trim: bool,
    /// Remove control characters (other than tab, line feed and carriage return) from every
    /// string field.
    #[serde(default)]
    pub strip_control: bool,
    /// Fields whose runs of whitespace become one space.
    #[serde(default)]
    pub collapse_whitespace: Vec<String>,
    /// Fields made lower case.
    #[serde(default)]
    pub lowercase: Vec<String>,
    /// Fields made upper case.
    #[serde(default)]
    pub uppercase: Vec<String>,
}

impl Sanitize {
    /// Clean `record` in place.
    pub fn apply(&self, record: &mut Record) {
        if self.is_noop() {
            return;
        }
        for (name, value) in record.fields_mut().iter_mut() {
            let Value::String(s) = value else { continue };
            // A borrowed result is the value or a trimmed slice of it.
            match self.clean(name, Cow::Borrowed(s.as_str())) {
                Cow::Owned(cleaned) => *s = cleaned,
                Cow::Borrowed(trimmed) if trimmed.len() != s.len() => *s = trimmed.to_owned(),
                Cow::Borrowed(_) => {}
            }
        }
    }

    /// The string value of field `name` cleaned; borrowed still when nothing changed
    /// (a trimmed borrowed string stays borrowed).
    pub(crate) fn clean<'a>(&self, name: &str, mut s: Cow<'a, str>) -> Cow<'a, str> {
        if self.strip_control && s.chars().any(is_stray_control) {
            s.to_mut().retain(|c| !is_stray_control(c));
        }
        if self.trim && s.trim().len() != s.len() {
            s = match s {
                Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
                Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
            };
        }
        if self.collapse_whitespace.iter().any(|f| f == name) {
            s = Cow::Owned(s.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        if self.lowercase.iter().any(|f| f == name) {
            s = Cow::Owned(s.to_lowercase());
        }
        if self.uppercase.iter().any(|f| f == name) {
            s = Cow::Owned(s.to_uppercase());
        }
        s
    }

    /// `true` when no step is asked for.
    pub(crate) fn is_noop(&self) -> bool {
        *self == Sanitize::default()
    }
}

fn is_stray_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Rules checked and prepared (regexes compiled).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<(Rule, Option<regex::Regex>)>,
}

impl Rules {
    /// Check `rules`, adding every problem to `v`.
    pub fn compile(rules: &[Rule], v: &mut Validator) -> Rules {
        let mut out = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            v.nested(format!("validate[{i}]"), |v| {
                if rule.field().is_empty() {
                    v.problem("field", "is empty", "name the field this rule checks");
                }
                let mut compiled = None;
                match rule {
                    Rule::Pattern { regex, .. } => match regex::Regex::new(regex) {
                        Ok(r) => compiled = Some(r),
                        Err(e) => v.problem(
                            "regex",
                            format!("is not a valid regular expression: {e}"),
                            "fix the expression (Rust regex syntax)",
                        ),
                    },
                    Rule::Length {
                        min: Some(lo),
                        max: Some(hi),
                        ..
                    } if lo > hi => v.problem("min", "is above max", "swap min and max"),
                    Rule::Range {
                        min: Some(lo),
                        max: Some(hi),
                        ..
                    } if lo > hi => v.problem("min", "is above max", "swap min and max"),
                    Rule::Enum { values, .. } if values.is_empty() => v.problem(
                        "values",
                        "is empty: no value could pass",
                        "list the allowed values",
                    ),
                    _ => {}
                }
                out.push((rule.clone(), compiled));
            });
        }
        Rules { rules: out }
    }

    /// `true` when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Check `record`; `Err` lists every broken rule, `; `-separated.
    pub fn check(&self, record: &Record) -> Result<(), String> {
        self.check_fields(|field| record.get(field))
    }

    /// The fields every rule reads, in rule order (repeats included).
    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(rule, _)| rule.field())
    }

    /// Check the values `get` finds by field name (`None` for a missing field); `Err`
    /// lists every broken rule, `; `-separated.
    pub(crate) fn check_fields<'v, V: FieldValue + 'v>(
        &self,
        get: impl Fn(&str) -> Option<&'v V>,
    ) -> Result<(), String> {
        let mut broken: Vec<String> = Vec::new();
        for (rule, regex) in &self.rules {
            let field = rule.field();
            let value = get(field).filter(|v| !v.is_null());
            let Some(value) = value else {
                if matches!(rule, Rule::Required { .. }) {
                    broken.push(format!("{field} is required"));
                }
                continue;
            };
            match rule {
                Rule::Required { .. } => {
                    if value.as_str().is_some_and(str::is_empty) {
                        broken.push(format!("{field} is required (it is empty)"));
                    }
                }
                Rule::Type { value_type, .. } => {
                    if !value.is_type(*value_type) {
                        broken.push(format!(
                            "{field} must be of type {value_type:?}, got {}",
                            value.to_json()
                        ));
                    }
                }
                Rule::Length { min, max, .. } => match value.length() {
                    None => broken.push(format!("{field} has no length (not text)")),
                    Some(n) if min.is_some_and(|m| n < m) => {
                        broken.push(format!("{field} is {n} long, under the minimum {min:?}"));
                    }
                    Some(n) if max.is_some_and(|m| n > m) => {
                        broken.push(format!("{field} is {n} long, over the maximum {max:?}"));
                    }
                    Some(_) => {}
                },
                Rule::Pattern { regex: text, .. } => match (value.as_str(), regex) {
                    (Some(s), Some(re)) if re.is_match(s) => {}
                    _ => broken.push(format!("{field} does not match {text:?}")),
                },
                Rule::Enum { values, .. } => {
                    if !values.iter().any(|allowed| value.equals(allowed)) {
                        broken.push(format!(
                            "{field} is {}, not one of the allowed values",
                            value.to_json()
                        ));
                    }
                }
                Rule::Range { min, max, .. } => match value.as_f64() {
                    None => broken.push(format!("{field} is not a number")),
                    Some(n) if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) => {
                        broken.push(format!("{field} is {n}, outside [{min:?}, {max:?}]"));
                    }
                    Some(_) => {}
                },
            }
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(broken.join("; "))
        }
    }
}

/// What a validation rule reads of a value: a record's JSON value, or a row's cell on
/// its way through the row path.
pub(crate) trait FieldValue {
    /// `true` for null.
    fn is_null(&self) -> bool;
    /// The text, for a string.
    fn as_str(&self) -> Option<&str>;
    /// Whether the value has the JSON type `t`.
    fn is_type(&self, t: ValueType) -> bool;
    /// A string's length in characters, an array's in items.
    fn length(&self) -> Option<usize>;
    /// The value as a float, for a number.
    fn as_f64(&self) -> Option<f64>;
    /// Whether the value equals the JSON value `other`.
    fn equals(&self, other: &Value) -> bool;
    /// The value as JSON (for messages).
    fn to_json(&self) -> Value;
}

impl FieldValue for Value {
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }

    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }

    fn is_type(&self, t: ValueType) -> bool {
        t.matches(self)
    }

    fn length(&self) -> Option<usize> {
        match self {
            Value::String(s) => Some(s.chars().count()),
            Value::Array(a) => Some(a.len()),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        Value::as_f64(self)
    }

    fn equals(&self, other: &Value) -> bool {
        self == other
    }

    fn to_json(&self) -> Value {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(toml_rules: &str) -> Rules {
        #[derive(Deserialize)]
        struct R {
            validate: Vec<Rule>,
        }
        let r: R = toml::from_str(toml_rules).unwrap();
        let mut v = Validator::new();
        let compiled = Rules::compile(&r.validate, &mut v);
        v.finish().unwrap();
        compiled
    }

    fn rec(v: Value) -> Record {
        Record::from_json(v).unwrap()
    }

    #[test]
    fn every_broken_rule_is_named() {
        let r = rules(
            r#"validate = [
              { rule = "required", field = "LastName" },
              { rule = "type", field = "Employees", type = "integer" },
              { rule = "length", field = "Subject", max = 5 },
              { rule = "pattern", field = "Email", regex = "^[^@]+@[^@]+$" },
              { rule = "enum", field = "Status", values = ["New", "Closed"] },
              { rule = "range", field = "Amount", min = 0 },
            ]"#,
        );
        let err = r
            .check(&rec(
                json!({"LastName": "", "Employees": 1.5, "Subject": "too long",
                              "Email": "nope", "Status": "Lost", "Amount": -1}),
            ))
            .unwrap_err();
        for part in [
            "LastName is required",
            "Employees must be of type Integer",
            "Subject is 8 long",
            "Email does not match",
            "Status is \"Lost\"",
            "Amount is -1",
        ] {
            assert!(err.contains(part), "{part:?} missing from {err}");
        }
        assert!(
            r.check(&rec(
                json!({"LastName": "Doe", "Employees": 3, "Subject": "Hi",
                                "Email": "a@b", "Status": "New", "Amount": 0})
            ))
            .is_ok()
        );
    }

    #[test]
    fn only_required_cares_about_missing_fields() {
        let r = rules(r#"validate = [{ rule = "range", field = "Amount", max = 10 }]"#);
        assert!(r.check(&rec(json!({}))).is_ok());
        assert!(r.check(&rec(json!({"Amount": null}))).is_ok());
    }

    #[test]
    fn sanitising_trims_strips_collapses_and_changes_case() {
        let s = Sanitize {
            trim: true,
            strip_control: true,
            collapse_whitespace: vec!["Subject".into()],
            lowercase: vec!["Email".into()],
            uppercase: vec!["Code".into()],
        };
        let mut r = rec(
            json!({"Subject": "  Contract \u{0}  review\t\n", "Email": " A@B.COM ",
                              "Code": "ab", "Body": "line1\nline2\u{7}", "N": 3}),
        );
        s.apply(&mut r);
        assert_eq!(
            r,
            rec(
                json!({"Subject": "Contract review", "Email": "a@b.com", "Code": "AB",
                       "Body": "line1\nline2", "N": 3})
            )
        );
    }

    #[test]
    fn an_invalid_regex_or_inverted_bounds_are_config_problems() {
        let mut v = Validator::new();
        Rules::compile(
            &[
                Rule::Pattern {
                    field: "x".into(),
                    regex: "(".into(),
                },
                Rule::Range {
                    field: "y".into(),
                    min: Some(5.0),
                    max: Some(1.0),
                },
            ],
            &mut v,
        );
        let problems = v.finish().unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["validate[0].regex", "validate[1].min"]);
    }
}
