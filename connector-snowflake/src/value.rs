//! Snowflake's encodings of its types, in Arrow results and JSON rowsets, decoded to JSON
//! values:
//!
//! | Snowflake type | Arrow encoding | JSON value |
//! |---|---|---|
//! | `NUMBER(p, 0)` (`fixed`) | decimal128, or int8..int64 | a number (a string beyond 64 bits) |
//! | `NUMBER(p, s > 0)` | decimal128, or an integer scaled by 10^s | the exact decimal as a string (`"12.50"`) |
//! | `FLOAT` (`real`) | float64 | a number |
//! | `VARCHAR` (`text`) | utf8 | a string |
//! | `BOOLEAN` | boolean | `true` / `false` |
//! | `DATE` | date32 (days since 1970-01-01) | `"2026-12-07"` |
//! | `TIME` | int32/int64 scaled by 10^scale | `"13:45:00.123"` |
//! | `TIMESTAMP_NTZ` / `_LTZ` | struct(epoch s, fraction ns), or int64 scaled by 10^scale | `"2026-12-07T13:45:00.123456789"` (`_LTZ`: with `Z`, UTC) |
//! | `TIMESTAMP_TZ` | struct(epoch, fraction, timezone = offset minutes + 1440) | `"2026-12-07T13:45:00+01:00"` |
//! | `VARIANT`, `OBJECT`, `ARRAY` | utf8 (JSON text) | the parsed JSON |
//! | `BINARY` | binary | lower-case hex |
//!
//! A JSON rowset carries every value as text (numbers as written, booleans as `1`/`0`
//! or `true`/`false`, dates as days, times and timestamps as seconds with a fraction);
//! the same table applies to what it means.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{ArrayRef, Decimal128Array};
//! use connector_snowflake::{Column, value};
//!
//! let column = Column { name: "AMOUNT".into(), kind: "fixed".into(), precision: Some(12), scale: Some(2), nullable: true };
//! let amounts: ArrayRef = Arc::new(Decimal128Array::from(vec![Some(1250), None]).with_precision_and_scale(12, 2).unwrap());
//! assert_eq!(value::json(&column, &amounts, 0).unwrap(), serde_json::json!("12.50"));
//! assert_eq!(value::json(&column, &amounts, 1).unwrap(), serde_json::Value::Null);
//! ```

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use moodbridge_core::{Error, ErrorKind, Result};
use serde_json::Value;

use crate::PLATFORM;
use crate::column::Column;

fn mismatch(column: &Column, found: &DataType) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!(
            "Snowflake column {} of type {} came encoded as {found}",
            column.name, column.kind
        ),
    )
    .with_connector(PLATFORM)
}

/// `units` scaled by 10^`scale`, as exact decimal text.
fn decimal_text(units: i128, scale: u32) -> String {
    if scale == 0 {
        return units.to_string();
    }
    let negative = units < 0;
    let digits = units.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{}{whole}.{fraction}", if negative { "-" } else { "" })
}

fn fixed(units: i128, scale: u32) -> Value {
    if scale == 0 {
        return i64::try_from(units).map_or_else(|_| Value::String(units.to_string()), Value::from);
    }
    Value::String(decimal_text(units, scale))
}

/// Seconds and nanoseconds since the epoch, in UTC.
fn utc(seconds: i64, nanos: u32) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, nanos)
}

fn timestamp_text(
    kind: &str,
    seconds: i64,
    nanos: u32,
    offset_minutes: Option<i32>,
) -> Option<String> {
    let at = utc(seconds, nanos)?;
    Some(match kind {
        "timestamp_tz" => {
            let offset = FixedOffset::east_opt(offset_minutes.unwrap_or(0) * 60)?;
            at.with_timezone(&offset)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
        }
        "timestamp_ltz" => at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        _ => at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
    })
}

fn split_scaled(units: i64, scale: u32) -> (i64, u32) {
    let per_second = 10_i64.pow(scale);
    let seconds = units.div_euclid(per_second);
    let fraction = units.rem_euclid(per_second);
    let nanos = fraction * 10_i64.pow(9 - scale.min(9));
    (seconds, u32::try_from(nanos).unwrap_or(0))
}

fn time_text(units: i64, scale: u32) -> String {
    let (seconds, nanos) = split_scaled(units, scale);
    let (h, m, s) = (seconds / 3600, (seconds / 60) % 60, seconds % 60);
    if nanos == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        let fraction = format!("{nanos:09}");
        format!("{h:02}:{m:02}:{s:02}.{}", fraction.trim_end_matches('0'))
    }
}

fn date_text(days: i64) -> Option<String> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some(
        epoch
            .checked_add_signed(chrono::Duration::days(days))?
            .format("%Y-%m-%d")
            .to_string(),
    )
}

/// Decode text of a JSON rowset by the column's type.
fn from_text(column: &Column, text: &str) -> Result<Value> {
    let scale = u32::try_from(column.scale.unwrap_or(0)).unwrap_or(0);
    let bad = || {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "Snowflake column {} of type {} holds {text:?}",
                column.name, column.kind
            ),
        )
        .with_connector(PLATFORM)
    };
    Ok(match column.kind.as_str() {
        "fixed" if scale == 0 => text
            .parse::<i64>()
            .map_or_else(|_| Value::String(text.to_owned()), Value::from),
        "fixed" => Value::String(text.to_owned()),
        "real" => text.parse::<f64>().map_err(|_| bad())?.into(),
        "boolean" => Value::Bool(matches!(text, "1" | "true" | "TRUE" | "True")),
        "date" => Value::String(date_text(text.parse().map_err(|_| bad())?).ok_or_else(bad)?),
        "time" | "timestamp_ntz" | "timestamp_ltz" | "timestamp_tz" => {
            // Seconds with a fraction; TIMESTAMP_TZ adds " <offset minutes + 1440>".
            let (number, zone) = match text.split_once(' ') {
                Some((n, z)) => (n, Some(z.parse::<i32>().map_err(|_| bad())? - 1440)),
                None => (text, None),
            };
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            let seconds: i64 = whole.parse().map_err(|_| bad())?;
            let digits = format!("{fraction:0<9}");
            let nanos: u32 = digits[..9].parse().map_err(|_| bad())?;
            if column.kind == "time" {
                Value::String(time_text(seconds * 1_000_000_000 + i64::from(nanos), 9))
            } else {
                Value::String(timestamp_text(&column.kind, seconds, nanos, zone).ok_or_else(bad)?)
            }
        }
        "variant" | "object" | "array" => serde_json::from_str(text).map_err(|_| bad())?,
        _ => Value::String(text.to_owned()),
    })
}

/// Row `row` of `array`, a column of type `column`, as a JSON value (null for SQL NULL).
///
/// # Errors
/// An encoding that does not match the column's type.
pub fn json(column: &Column, array: &ArrayRef, row: usize) -> Result<Value> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    let scale = u32::try_from(column.scale.unwrap_or(0)).unwrap_or(0);
    let kind = column.kind.as_str();
    let data_type = array.data_type();
    if let DataType::Utf8 = data_type
        && !matches!(kind, "text" | "variant" | "object" | "array")
    {
        return from_text(column, array.as_string::<i32>().value(row));
    }
    let integer = |array: &ArrayRef| -> Option<i64> {
        Some(match array.data_type() {
            DataType::Int8 => i64::from(array.as_primitive::<Int8Type>().value(row)),
            DataType::Int16 => i64::from(array.as_primitive::<Int16Type>().value(row)),
            DataType::Int32 => i64::from(array.as_primitive::<Int32Type>().value(row)),
            DataType::Int64 => array.as_primitive::<Int64Type>().value(row),
            _ => return None,
        })
    };
    Ok(match kind {
        "fixed" => match data_type {
            DataType::Decimal128(_, s) => fixed(
                array.as_primitive::<Decimal128Type>().value(row),
                u32::try_from(*s).unwrap_or(0),
            ),
            _ => fixed(
                i128::from(integer(array).ok_or_else(|| mismatch(column, data_type))?),
                scale,
            ),
        },
        "real" => match data_type {
            DataType::Float64 => array.as_primitive::<Float64Type>().value(row).into(),
            DataType::Float32 => f64::from(array.as_primitive::<Float32Type>().value(row)).into(),
            _ => return Err(mismatch(column, data_type)),
        },
        "boolean" => match data_type {
            DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
            _ => return Err(mismatch(column, data_type)),
        },
        "date" => match data_type {
            DataType::Date32 => Value::String(
                date_text(i64::from(array.as_primitive::<Date32Type>().value(row)))
                    .ok_or_else(|| mismatch(column, data_type))?,
            ),
            _ => return Err(mismatch(column, data_type)),
        },
        "time" => Value::String(time_text(
            integer(array).ok_or_else(|| mismatch(column, data_type))?,
            scale,
        )),
        "timestamp_ntz" | "timestamp_ltz" | "timestamp_tz" => {
            let (seconds, nanos, zone) = match data_type {
                DataType::Struct(_) => {
                    let parts = array.as_struct();
                    let field = |name: &str| parts.column_by_name(name).and_then(integer);
                    let seconds = field("epoch").ok_or_else(|| mismatch(column, data_type))?;
                    let nanos = field("fraction").unwrap_or(0);
                    let zone = field("timezone").map(|z| i32::try_from(z - 1440).unwrap_or(0));
                    (seconds, u32::try_from(nanos).unwrap_or(0), zone)
                }
                _ => {
                    let (seconds, nanos) = split_scaled(
                        integer(array).ok_or_else(|| mismatch(column, data_type))?,
                        scale,
                    );
                    (seconds, nanos, None)
                }
            };
            Value::String(
                timestamp_text(kind, seconds, nanos, zone)
                    .ok_or_else(|| mismatch(column, data_type))?,
            )
        }
        "variant" | "object" | "array" => {
            let text = match data_type {
                DataType::Utf8 => array.as_string::<i32>().value(row),
                DataType::LargeUtf8 => array.as_string::<i64>().value(row),
                _ => return Err(mismatch(column, data_type)),
            };
            serde_json::from_str(text).map_err(|_| mismatch(column, data_type))?
        }
        "binary" => match data_type {
            DataType::Binary => Value::String(
                array
                    .as_binary::<i32>()
                    .value(row)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            ),
            _ => return Err(mismatch(column, data_type)),
        },
        _ => match data_type {
            DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
            DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_owned()),
            _ => return Err(mismatch(column, data_type)),
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;

    #[test]
    fn decimals_keep_every_digit() {
        assert_eq!(decimal_text(1250, 2), "12.50");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(7, 0), "7");
        assert_eq!(
            fixed(i128::from(i64::MAX) + 1, 0),
            Value::String("9223372036854775808".into())
        );
    }

    #[test]
    fn times_and_timestamps_from_scaled_integers() {
        assert_eq!(time_text(49_500_123, 3), "13:45:00.123");
        assert_eq!(split_scaled(-1, 9), (-1, 999_999_999));
        assert_eq!(
            timestamp_text("timestamp_tz", 0, 0, Some(60)).unwrap(),
            "1970-01-01T01:00:00+01:00"
        );
        assert_eq!(
            timestamp_text("timestamp_ltz", 0, 5, None).unwrap(),
            "1970-01-01T00:00:00.000000005Z"
        );
        assert_eq!(date_text(20_429).unwrap(), "2025-12-07");
    }
}
