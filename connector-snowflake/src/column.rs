//! A result's column, as Snowflake's `rowtype` describes it.

use serde::Deserialize;

/// A column of a result, as Snowflake's `rowtype` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Snowflake's type, lower-case: `fixed`, `real`, `text`, `boolean`, `date`, `time`,
    /// `timestamp_ntz`, `timestamp_ltz`, `timestamp_tz`, `variant`, `object`, `array`,
    /// `binary`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digits of a `fixed` column.
    #[serde(default)]
    pub precision: Option<i64>,
    /// Digits after the point of a `fixed` column; digits of fractional seconds of a time
    /// or timestamp.
    #[serde(default)]
    pub scale: Option<i64>,
    /// Whether it may be null.
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}
