//! Whether Snowflake will take a text as a value of a typed column, checked before a
//! batch is staged: a row `COPY` or `MERGE` would reject fails alone, with its reason,
//! instead of failing the whole batch's statement.
//!
//! The formats are those Snowflake's `AUTO` input formats read (ISO 8601 dates, times
//! and timestamps, with `T` or a space, with or without an offset — `+0000` as
//! Salesforce writes it too), and plain or exponent decimals whose integer part fits
//! the column's precision.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use moodbridge_core::FieldType;

/// How a text-held column's values are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextType {
    /// Any text.
    Free,
    /// `DATE`.
    Date,
    /// `TIMESTAMP_TZ`.
    Timestamp,
    /// `TIME`.
    Time,
    /// `NUMBER(38, scale)`.
    Decimal { scale: u32 },
}

impl TextType {
    /// The check for a field of `field_type` held as text.
    pub(crate) fn of(field_type: &FieldType) -> TextType {
        match field_type {
            FieldType::Date => TextType::Date,
            FieldType::DateTime => TextType::Timestamp,
            FieldType::Time => TextType::Time,
            FieldType::Decimal { scale } => TextType::Decimal {
                scale: (*scale).min(37),
            },
            _ => TextType::Free,
        }
    }

    /// Whether a column of this type takes `text`.
    pub(crate) fn accepts(self, text: &str) -> bool {
        let t = text.trim();
        match self {
            TextType::Free => true,
            TextType::Date => NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok(),
            TextType::Time => ["%H:%M:%S%.f", "%H:%M"]
                .iter()
                .any(|f| NaiveTime::parse_from_str(t, f).is_ok()),
            TextType::Timestamp => {
                DateTime::parse_from_rfc3339(t).is_ok()
                    || ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"]
                        .iter()
                        .any(|f| DateTime::parse_from_str(t, f).is_ok())
                    || ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                        .iter()
                        .any(|f| NaiveDateTime::parse_from_str(t, f).is_ok())
                    || NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok()
            }
            TextType::Decimal { scale } => decimal_fits(t, scale),
        }
    }
}

/// A decimal (`-12.5`, `1e3`) whose integer part has at most `38 - scale` digits.
fn decimal_fits(text: &str, scale: u32) -> bool {
    let Ok(value) = text.parse::<f64>() else {
        return false;
    };
    if !value.is_finite() {
        return false;
    }
    let digits = if text.contains(['e', 'E']) {
        // An exponent form: count the digits of its value's integer part.
        format!("{:.0}", value.abs().trunc())
            .trim_start_matches('0')
            .len()
    } else {
        let unsigned = text.trim_start_matches(['-', '+']);
        let integer = unsigned.split('.').next().unwrap_or_default();
        integer.trim_start_matches('0').len()
    };
    digits <= (38 - scale) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_snowflake_reads_passes_and_the_rest_does_not() {
        let ts = TextType::Timestamp;
        for good in [
            "2026-12-01T10:00:00Z",
            "2026-12-01T10:00:00.000+0000",
            "2026-12-01 10:00:00.123456",
            "2026-12-01T10:00:00+05:30",
            "2026-12-01",
        ] {
            assert!(ts.accepts(good), "{good}");
        }
        for bad in ["yesterday", "2026-13-01T00:00:00Z", "01/12/2026"] {
            assert!(!ts.accepts(bad), "{bad}");
        }
        assert!(TextType::Date.accepts("2024-02-29"));
        assert!(!TextType::Date.accepts("2026-02-30"));
        assert!(TextType::Time.accepts("23:59:59.5"));
        assert!(!TextType::Time.accepts("25:00"));
        let money = TextType::Decimal { scale: 2 };
        assert!(money.accepts("-1234.567"));
        assert!(money.accepts("1e3"));
        assert!(money.accepts(&"9".repeat(36)));
        assert!(!money.accepts(&"9".repeat(37)));
        assert!(!money.accepts("12abc"));
        assert!(!money.accepts("NaN"));
    }
}
