//! Results as the engine's column-shaped rows ([`RowBatch`]): the columns once, every
//! cell as text, with no map per record — what the sync engine maps, validates and
//! writes by position.
//!
//! | Snowflake type | [`ColumnKind`] | cell text |
//! |---|---|---|
//! | `NUMBER(p, 0)` | `Integer` | `42` (a value beyond 64 bits reads as text, whole) |
//! | `NUMBER(p, s > 0)` | `Text` | the exact decimal, `12.50` |
//! | `FLOAT` | `Number` | `2.5` |
//! | `BOOLEAN` | `Boolean` | `true` / `false` |
//! | `VARCHAR`, `VARIANT`, `OBJECT`, `ARRAY` | `Text` | as stored (JSON text for the semi-structured) |
//! | `DATE`, `TIME`, `TIMESTAMP_*` | `Text` | ISO 8601, as [`value::json`] gives it |

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use moodbridge_core::{ColumnKind, Error, ErrorKind, Result, RowBatch};

use crate::PLATFORM;
use crate::column::Column;
use crate::value;

/// The engine's kind of a Snowflake column (see the [module docs](self)).
///
/// ```
/// use connector_snowflake::{Column, rows};
/// use moodbridge_core::ColumnKind;
/// let id = Column { name: "ID".into(), kind: "fixed".into(), precision: Some(38), scale: Some(0), nullable: false };
/// assert_eq!(rows::column_kind(&id), ColumnKind::Integer);
/// let amount = Column { name: "AMOUNT".into(), kind: "fixed".into(), precision: Some(12), scale: Some(2), nullable: true };
/// assert_eq!(rows::column_kind(&amount), ColumnKind::Text);
/// ```
pub fn column_kind(column: &Column) -> ColumnKind {
    match column.kind.as_str() {
        "fixed" if column.scale.unwrap_or(0) == 0 => ColumnKind::Integer,
        "real" => ColumnKind::Number,
        "boolean" => ColumnKind::Boolean,
        _ => ColumnKind::Text,
    }
}

/// One column's cells: borrowed from the Arrow text, or made once per cell.
enum Cells<'a> {
    Text(&'a arrow_array::StringArray),
    Made(Vec<Option<String>>),
}

impl Cells<'_> {
    fn get(&self, row: usize) -> Option<&str> {
        match self {
            Cells::Text(array) => (!array.is_null(row)).then(|| array.value(row)),
            Cells::Made(cells) => cells[row].as_deref(),
        }
    }
}

fn cells<'a>(column: &Column, array: &'a ArrayRef) -> Result<Cells<'a>> {
    let rows = array.len();
    let kind = column.kind.as_str();
    if matches!(kind, "text" | "variant" | "object" | "array")
        && let DataType::Utf8 = array.data_type()
    {
        return Ok(Cells::Text(array.as_string::<i32>()));
    }
    if kind == "fixed"
        && column.scale.unwrap_or(0) == 0
        && let DataType::Int64 = array.data_type()
    {
        let ints = array.as_primitive::<Int64Type>();
        return Ok(Cells::Made(
            (0..rows)
                .map(|row| (!ints.is_null(row)).then(|| ints.value(row).to_string()))
                .collect(),
        ));
    }
    let mut made = Vec::with_capacity(rows);
    for row in 0..rows {
        made.push(match value::json(column, array, row)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(text) => Some(text),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            other => Some(other.to_string()),
        });
    }
    Ok(Cells::Made(made))
}

/// `batch`, a batch of a result with `columns`, as the rows of stream `stream`.
///
/// # Errors
/// A batch whose columns do not match `columns`, or an encoding that does not match its
/// Snowflake type.
pub fn row_batch(stream: &str, columns: &[Column], batch: &RecordBatch) -> Result<RowBatch> {
    if batch.num_columns() != columns.len() {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "a Snowflake batch has {} columns where the result has {}",
                batch.num_columns(),
                columns.len()
            ),
        )
        .with_connector(PLATFORM));
    }
    let engine_columns: Vec<moodbridge_core::Column> = columns
        .iter()
        .map(|c| moodbridge_core::Column::new(&c.name, column_kind(c)))
        .collect();
    let all: Vec<Cells<'_>> = columns
        .iter()
        .zip(batch.columns())
        .map(|(column, array)| cells(column, array))
        .collect::<Result<_>>()?;
    let mut rows = RowBatch::with_capacity(
        stream,
        engine_columns,
        batch.num_rows(),
        batch.num_rows() * columns.len() * 16,
    );
    for row in 0..batch.num_rows() {
        rows.push_row(all.iter().map(|c| c.get(row)))?;
    }
    Ok(rows)
}
