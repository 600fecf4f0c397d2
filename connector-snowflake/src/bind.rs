//! Bind values of a statement's `?` placeholders, typed as Snowflake binds are.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The key under which a statement's bind stage travels with its parameters inside the
/// client (never a real parameter name: it has a space).
pub(crate) const BIND_STAGE_KEY: &str = "bind stage";

/// A bind value of a statement's `?` placeholder, typed as Snowflake binds are. An
/// array bind (`texts`, `fixeds`) runs the statement once per element, in one request.
///
/// ```
/// use connector_snowflake::Bind;
/// assert_eq!(Bind::fixed(42).to_json(), serde_json::json!({"type": "FIXED", "value": "42"}));
/// assert_eq!(
///     Bind::texts(["a", "b"]).to_json(),
///     serde_json::json!({"type": "TEXT", "value": ["a", "b"]})
/// );
/// assert_eq!(Bind::null().to_json(), serde_json::json!({"type": "ANY", "value": null}));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    kind: &'static str,
    value: Value,
}

impl Bind {
    /// Text (`VARCHAR`).
    pub fn text(value: impl Into<String>) -> Self {
        Bind {
            kind: "TEXT",
            value: Value::String(value.into()),
        }
    }

    /// An integer (`NUMBER(38, 0)`).
    pub fn fixed(value: i64) -> Self {
        Bind {
            kind: "FIXED",
            value: Value::String(value.to_string()),
        }
    }

    /// An exact decimal (`"12.50"`) for a `NUMBER(p, s)`: sent as text, which Snowflake
    /// converts to the column's type without rounding through a float.
    pub fn decimal(value: impl Into<String>) -> Self {
        Bind {
            kind: "TEXT",
            value: Value::String(value.into()),
        }
    }

    /// A float (`FLOAT`).
    pub fn real(value: f64) -> Self {
        Bind {
            kind: "REAL",
            value: Value::String(value.to_string()),
        }
    }

    /// A boolean.
    pub fn boolean(value: bool) -> Self {
        Bind {
            kind: "BOOLEAN",
            value: Value::String(value.to_string()),
        }
    }

    /// A `TIMESTAMP_NTZ`: `at` in UTC, to the nanosecond.
    pub fn timestamp_ntz(at: SystemTime) -> Self {
        let nanos = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Bind {
            kind: "TIMESTAMP_NTZ",
            value: Value::String(nanos.to_string()),
        }
    }

    /// SQL NULL.
    pub fn null() -> Self {
        Bind {
            kind: "ANY",
            value: Value::Null,
        }
    }

    /// An array bind of text, `None` for NULL.
    pub fn texts<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Self {
        Self::array("TEXT", values.into_iter().map(|v| Some(v.into())))
    }

    /// An array bind of optional text.
    pub fn optional_texts(values: impl IntoIterator<Item = Option<String>>) -> Self {
        Self::array("TEXT", values)
    }

    /// An array bind of integers.
    pub fn fixeds(values: impl IntoIterator<Item = i64>) -> Self {
        Self::array("FIXED", values.into_iter().map(|v| Some(v.to_string())))
    }

    /// The value for row `row` as text: an array's element, or the single value (any
    /// row); `None` for NULL.
    pub(crate) fn cell(&self, row: usize) -> Option<&str> {
        match &self.value {
            Value::Array(values) => values.get(row).and_then(Value::as_str),
            other => other.as_str(),
        }
    }

    fn array(kind: &'static str, values: impl IntoIterator<Item = Option<String>>) -> Self {
        Bind {
            kind,
            value: Value::Array(
                values
                    .into_iter()
                    .map(|v| v.map_or(Value::Null, Value::String))
                    .collect(),
            ),
        }
    }

    /// The bind as the query request carries it.
    pub fn to_json(&self) -> Value {
        json!({"type": self.kind, "value": self.value})
    }

    pub(crate) fn rows(&self) -> Option<usize> {
        match &self.value {
            Value::Array(values) => Some(values.len()),
            _ => None,
        }
    }
}
