//! The sandbox's tables: columns typed as Snowflake types them, rows kept as Arrow
//! record batches already in Snowflake's result encoding, so a query's result is a slice
//! of them and a chunk is an IPC stream of those slices.
//!
//! | kind | Arrow | field metadata |
//! |---|---|---|
//! | `FIXED(p, s)` | `Int64`, the value times 10^s | `logicalType=FIXED`, `precision`, `scale` |
//! | `TEXT`, `VARIANT` | `Utf8` | `logicalType`, `charLength` |
//! | `REAL` | `Float64` | `logicalType=REAL` |
//! | `BOOLEAN` | `Boolean` | `logicalType=BOOLEAN` |
//! | `DATE` | `Date32` (days) | `logicalType=DATE` |
//! | `TIMESTAMP_NTZ(9)` | `Struct{epoch: Int64, fraction: Int32}` | `logicalType=TIMESTAMP_NTZ`, `scale=9` |

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use serde_json::{Value, json};

/// A column's Snowflake type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `NUMBER(precision, scale)`.
    Fixed {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// `VARCHAR`.
    Text,
    /// `FLOAT`.
    Real,
    /// `BOOLEAN`.
    Boolean,
    /// `DATE`.
    Date,
    /// `TIMESTAMP_NTZ(9)`.
    TimestampNtz,
    /// `VARIANT` (JSON text).
    Variant,
}

impl ColumnKind {
    /// The type's name in a row type (`fixed`, `text`, …).
    pub fn rowtype_name(self) -> &'static str {
        match self {
            ColumnKind::Fixed { .. } => "fixed",
            ColumnKind::Text => "text",
            ColumnKind::Real => "real",
            ColumnKind::Boolean => "boolean",
            ColumnKind::Date => "date",
            ColumnKind::TimestampNtz => "timestamp_ntz",
            ColumnKind::Variant => "variant",
        }
    }

    fn arrow_type(self) -> DataType {
        match self {
            ColumnKind::Fixed { .. } => DataType::Int64,
            ColumnKind::Text | ColumnKind::Variant => DataType::Utf8,
            ColumnKind::Real => DataType::Float64,
            ColumnKind::Boolean => DataType::Boolean,
            ColumnKind::Date => DataType::Date32,
            ColumnKind::TimestampNtz => DataType::Struct(timestamp_fields()),
        }
    }
}

fn timestamp_fields() -> Fields {
    Fields::from(vec![
        Field::new("epoch", DataType::Int64, true),
        Field::new("fraction", DataType::Int32, true),
    ])
}

/// A column: its name (upper case, as Snowflake stores unquoted names) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// The name.
    pub name: String,
    /// The type.
    pub kind: ColumnKind,
}

impl ColumnDef {
    /// A column named `name` (upper-cased) of `kind`.
    pub fn new(name: &str, kind: ColumnKind) -> Self {
        ColumnDef {
            name: name.to_ascii_uppercase(),
            kind,
        }
    }

    /// The column as a result's `rowtype` entry describes it.
    pub(crate) fn rowtype(&self, table: &str) -> Value {
        let (precision, scale) = match self.kind {
            ColumnKind::Fixed { precision, scale } => (json!(precision), json!(scale)),
            ColumnKind::TimestampNtz => (json!(0), json!(9)),
            _ => (Value::Null, Value::Null),
        };
        let length = match self.kind {
            ColumnKind::Text | ColumnKind::Variant => json!(16_777_216),
            _ => Value::Null,
        };
        json!({
            "name": self.name,
            "database": "SANDBOX",
            "schema": "PUBLIC",
            "table": table,
            "type": self.kind.rowtype_name(),
            "nullable": true,
            "precision": precision,
            "scale": scale,
            "length": length,
            "byteLength": length,
            "collation": null,
        })
    }

    pub(crate) fn field(&self) -> Field {
        let mut metadata = HashMap::new();
        metadata.insert(
            "logicalType".to_owned(),
            self.kind.rowtype_name().to_ascii_uppercase(),
        );
        match self.kind {
            ColumnKind::Fixed { precision, scale } => {
                metadata.insert("precision".to_owned(), precision.to_string());
                metadata.insert("scale".to_owned(), scale.to_string());
                metadata.insert("physicalType".to_owned(), "SB8".to_owned());
            }
            ColumnKind::TimestampNtz => {
                metadata.insert("scale".to_owned(), "9".to_owned());
            }
            ColumnKind::Text | ColumnKind::Variant => {
                metadata.insert("charLength".to_owned(), "16777216".to_owned());
            }
            _ => {}
        }
        Field::new(&self.name, self.kind.arrow_type(), true).with_metadata(metadata)
    }
}

/// A table: its columns and rows.
///
/// ```
/// use snowflake_sandbox::{ColumnDef, ColumnKind, Table};
/// let table = Table::new(
///     "matters",
///     vec![
///         ColumnDef::new("id", ColumnKind::Fixed { precision: 38, scale: 0 }),
///         ColumnDef::new("title", ColumnKind::Text),
///     ],
/// );
/// assert_eq!(table.name(), "MATTERS");
/// assert_eq!(table.num_rows(), 0);
/// assert_eq!(Table::accounts("ACCOUNTS", 1000).num_rows(), 1000);
/// ```
#[derive(Debug, Clone)]
pub struct Table {
    name: String,
    columns: Vec<ColumnDef>,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl Table {
    /// An empty table named `name` (upper-cased).
    pub fn new(name: &str, columns: Vec<ColumnDef>) -> Self {
        let schema = Arc::new(Schema::new(
            columns.iter().map(ColumnDef::field).collect::<Vec<_>>(),
        ));
        Table {
            name: name.to_ascii_uppercase(),
            columns,
            schema,
            batches: Vec::new(),
        }
    }

    /// A table of `rows` Salesforce-shaped accounts, the same for the same `rows`:
    /// `ID NUMBER(38,0)`, `NAME VARCHAR`, `AMOUNT NUMBER(12,2)`, `ACTIVE BOOLEAN`,
    /// `CREATED TIMESTAMP_NTZ(9)`, `NOTE VARCHAR` (NULL on every seventh row). Row `i`
    /// (from 0) has `ID = i + 1`, `NAME = "Account {i:07}"`, `AMOUNT` = `(i * 1237) %
    /// 10_000_000` cents, `ACTIVE = i % 3 != 0`, `CREATED` = 1,700,000,000 s + `i` s +
    /// `(i * 7919) % 10^9` ns, `NOTE = "note {i}"`.
    pub fn accounts(name: &str, rows: usize) -> Self {
        let mut table = Table::new(
            name,
            vec![
                ColumnDef::new(
                    "ID",
                    ColumnKind::Fixed {
                        precision: 38,
                        scale: 0,
                    },
                ),
                ColumnDef::new("NAME", ColumnKind::Text),
                ColumnDef::new(
                    "AMOUNT",
                    ColumnKind::Fixed {
                        precision: 12,
                        scale: 2,
                    },
                ),
                ColumnDef::new("ACTIVE", ColumnKind::Boolean),
                ColumnDef::new("CREATED", ColumnKind::TimestampNtz),
                ColumnDef::new("NOTE", ColumnKind::Text),
            ],
        );
        let mut start = 0;
        while start < rows {
            let end = (start + 65_536).min(rows);
            let mut id = Int64Builder::new();
            let mut name = StringBuilder::new();
            let mut amount = Int64Builder::new();
            let mut active = BooleanBuilder::new();
            let mut epoch = Int64Builder::new();
            let mut fraction = Int32Builder::new();
            let mut note = StringBuilder::new();
            for i in start..end {
                let n = i as i64;
                id.append_value(n + 1);
                name.append_value(format!("Account {i:07}"));
                amount.append_value((n * 1237) % 10_000_000);
                active.append_value(i % 3 != 0);
                epoch.append_value(1_700_000_000 + n);
                fraction.append_value(((n * 7919) % 1_000_000_000) as i32);
                if i % 7 == 0 {
                    note.append_null();
                } else {
                    note.append_value(format!("note {i}"));
                }
            }
            let created = StructArray::new(
                timestamp_fields(),
                vec![
                    Arc::new(epoch.finish()) as ArrayRef,
                    Arc::new(fraction.finish()),
                ],
                None,
            );
            let arrays: Vec<ArrayRef> = vec![
                Arc::new(id.finish()),
                Arc::new(name.finish()),
                Arc::new(amount.finish()),
                Arc::new(active.finish()),
                Arc::new(created),
                Arc::new(note.finish()),
            ];
            let batch = RecordBatch::try_new(table.schema.clone(), arrays)
                .expect("the generated columns match the schema");
            table.batches.push(batch);
            start = end;
        }
        table
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The columns.
    pub fn columns(&self) -> &[ColumnDef] {
        &self.columns
    }

    /// Rows in the table.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    pub(crate) fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The first `limit` rows (all without one), as slices of the stored batches.
    pub(crate) fn rows(&self, limit: Option<usize>) -> Vec<RecordBatch> {
        let mut left = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for batch in &self.batches {
            if left == 0 {
                break;
            }
            let take = batch.num_rows().min(left);
            out.push(batch.slice(0, take));
            left -= take;
        }
        out
    }

    /// Append rows of text values (`None` for NULL) for `columns` (every column when
    /// empty); the others are NULL. Nothing is appended when a value does not convert.
    pub(crate) fn insert(
        &mut self,
        columns: &[String],
        rows: &[Vec<Option<String>>],
    ) -> Result<usize, String> {
        let positions: Vec<usize> = if columns.is_empty() {
            (0..self.columns.len()).collect()
        } else {
            columns
                .iter()
                .map(|name| {
                    self.columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(name))
                        .ok_or_else(|| format!("invalid identifier '{}'", name.to_uppercase()))
                })
                .collect::<Result<_, _>>()?
        };
        for row in rows {
            if row.len() != positions.len() {
                return Err(format!(
                    "Insert value list does not match column list expecting {} but got {}",
                    positions.len(),
                    row.len()
                ));
            }
        }
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (index, column) in self.columns.iter().enumerate() {
            let source = positions.iter().position(|p| *p == index);
            let values: Vec<Option<&str>> = rows
                .iter()
                .map(|row| source.and_then(|s| row[s].as_deref()))
                .collect();
            arrays.push(column_array(column, &values)?);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| e.to_string())?;
        self.batches.push(batch);
        Ok(rows.len())
    }
}

fn not_recognized(value: &str, kind: &str) -> String {
    format!("{kind} '{value}' is not recognized")
}

/// `"12.5"` at scale 2 as 1250.
fn scaled(value: &str, scale: u8) -> Result<i64, String> {
    let bad = || not_recognized(value, "Numeric value");
    let (negative, digits) = match value.trim().strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value.trim()),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > usize::from(scale)
    {
        return Err(bad());
    }
    let padded = format!("{whole}{fraction:0<width$}", width = usize::from(scale));
    let magnitude: i64 = padded.parse().map_err(|_| bad())?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// A column's values from text, in the column's encoding.
fn column_array(column: &ColumnDef, values: &[Option<&str>]) -> Result<ArrayRef, String> {
    Ok(match column.kind {
        ColumnKind::Fixed { scale, .. } => {
            let mut b = Int64Builder::new();
            for v in values {
                b.append_option(v.map(|v| scaled(v, scale)).transpose()?);
            }
            Arc::new(b.finish())
        }
        ColumnKind::Text | ColumnKind::Variant => {
            Arc::new(values.iter().copied().collect::<arrow_array::StringArray>())
        }
        ColumnKind::Real => {
            let mut b = Float64Builder::new();
            for v in values {
                b.append_option(
                    v.map(|v| {
                        v.parse::<f64>()
                            .map_err(|_| not_recognized(v, "Numeric value"))
                    })
                    .transpose()?,
                );
            }
            Arc::new(b.finish())
        }
        ColumnKind::Boolean => {
            let mut b = BooleanBuilder::new();
            for v in values {
                b.append_option(
                    v.map(|v| match v.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "on" => Ok(true),
                        "false" | "0" | "no" | "off" => Ok(false),
                        _ => Err(not_recognized(v, "Boolean value")),
                    })
                    .transpose()?,
                );
            }
            Arc::new(b.finish())
        }
        ColumnKind::Date => {
            let mut b = Date32Builder::new();
            for v in values {
                b.append_option(v.map(date_days).transpose()?);
            }
            Arc::new(b.finish())
        }
        ColumnKind::TimestampNtz => {
            let mut epoch = Int64Builder::new();
            let mut fraction = Int32Builder::new();
            let mut valid = Vec::with_capacity(values.len());
            for v in values {
                match v.map(timestamp_nanos).transpose()? {
                    Some(nanos) => {
                        epoch.append_value(nanos.div_euclid(1_000_000_000) as i64);
                        fraction.append_value(nanos.rem_euclid(1_000_000_000) as i32);
                        valid.push(true);
                    }
                    None => {
                        epoch.append_null();
                        fraction.append_null();
                        valid.push(false);
                    }
                }
            }
            Arc::new(StructArray::new(
                timestamp_fields(),
                vec![Arc::new(epoch.finish()), Arc::new(fraction.finish())],
                Some(valid.into()),
            ))
        }
    })
}

/// A date as days since 1970-01-01: `YYYY-MM-DD`, or milliseconds since the epoch (a
/// `DATE` bind).
fn date_days(value: &str) -> Result<i32, String> {
    if let Ok(millis) = value.parse::<i64>() {
        return Ok(millis.div_euclid(86_400_000) as i32);
    }
    let date = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| not_recognized(value, "Date"))?;
    Ok((date - chrono::NaiveDate::default()).num_days() as i32)
}

/// A timestamp as nanoseconds since the epoch: `YYYY-MM-DD HH:MM:SS[.fff]` (or with a
/// `T`), or nanoseconds since the epoch (a `TIMESTAMP_NTZ` bind).
fn timestamp_nanos(value: &str) -> Result<i128, String> {
    if let Ok(nanos) = value.parse::<i128>() {
        return Ok(nanos);
    }
    let text = value.replace('T', " ");
    let at = chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|_| not_recognized(value, "Timestamp"))?;
    let utc = at.and_utc();
    Ok(i128::from(utc.timestamp()) * 1_000_000_000 + i128::from(utc.timestamp_subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_scaled_exactly_and_too_many_digits_are_refused() {
        assert_eq!(scaled("12.5", 2), Ok(1250));
        assert_eq!(scaled("-0.01", 2), Ok(-1));
        assert_eq!(scaled("7", 0), Ok(7));
        assert!(scaled("1.234", 2).is_err());
        assert!(scaled("abc", 2).is_err());
        assert!(scaled("", 2).is_err());
    }

    #[test]
    fn inserted_rows_take_the_column_encoding_and_a_bad_value_appends_nothing() {
        let mut table = Table::accounts("A", 0);
        let row = |id: &str| {
            vec![
                Some(id.to_owned()),
                Some("Acme".to_owned()),
                Some("12.50".to_owned()),
                Some("true".to_owned()),
                Some("2024-01-31 10:00:00.5".to_owned()),
                None,
            ]
        };
        assert_eq!(table.insert(&[], &[row("1"), row("2")]), Ok(2));
        assert!(table.insert(&[], &[row("x")]).is_err());
        assert_eq!(table.num_rows(), 2);
        assert!(
            table
                .insert(&["NOPE".to_owned()], &[vec![Some("1".to_owned())]])
                .unwrap_err()
                .contains("NOPE")
        );
    }

    #[test]
    fn generated_accounts_follow_the_documented_formula() {
        let table = Table::accounts("A", 70_000);
        assert_eq!(table.num_rows(), 70_000);
        let rows = table.rows(Some(10));
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 10);
        let names = rows[0]
            .column(1)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        assert_eq!(names.value(3), "Account 0000003");
        assert!(rows[0].column(5).is_null(0));
    }
}
