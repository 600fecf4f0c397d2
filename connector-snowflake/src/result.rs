//! A statement's result: its columns as Snowflake types them, and its rows as Arrow
//! record batches (an Arrow rowset decoded as it is; a JSON rowset converted to text
//! columns of the same shape).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use base64::Engine as _;
use moodbridge_core::{Error, ErrorKind, Result};
use serde::Deserialize;

use crate::PLATFORM;
use crate::column::Column;
use crate::value;

/// What a statement returned: its columns as Snowflake types them, and its rows as Arrow
/// record batches. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Snowflake's id of the statement.
    pub query_id: String,
    /// The columns, in order.
    pub columns: Vec<Column>,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Rows in the result, as Snowflake counts them.
    pub total: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    query_id: String,
    #[serde(default)]
    rowtype: Vec<Column>,
    #[serde(default)]
    query_result_format: Option<String>,
    #[serde(default)]
    rowset_base64: Option<String>,
    #[serde(default)]
    rowset: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    chunks: Option<Vec<serde_json::Value>>,
}

fn protocol(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::Protocol, what.into()).with_connector(PLATFORM)
}

impl QueryResult {
    /// The result in a query response's `data`.
    pub(crate) fn from_data(data: serde_json::Value) -> Result<QueryResult> {
        let data: Data = serde_json::from_value(data)
            .map_err(|e| protocol(format!("a Snowflake query response does not read: {e}")))?;
        if data.chunks.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "the result came in chunks, which this client does not read yet",
            )
            .with_connector(PLATFORM)
            .with_hint("select fewer rows at once (add a LIMIT or a key range)"));
        }
        let batches = match data.query_result_format.as_deref() {
            Some("arrow") => decode_arrow(data.rowset_base64.as_deref().unwrap_or_default())?,
            _ => json_batch(&data.rowtype, data.rowset.unwrap_or_default())?
                .into_iter()
                .collect(),
        };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        Ok(QueryResult {
            query_id: data.query_id,
            columns: data.rowtype,
            total: data.total.unwrap_or(rows as u64),
            batches,
        })
    }

    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The rows as JSON objects keyed by column name, each value decoded from
    /// Snowflake's encoding ([`value::json`]). For small results: a large one is read
    /// batch by batch, column by column.
    ///
    /// # Errors
    /// A column whose encoding does not match its Snowflake type.
    pub fn json_rows(&self) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::with_capacity(self.num_rows());
        for batch in &self.batches {
            for row in 0..batch.num_rows() {
                let mut object = serde_json::Map::new();
                for (i, column) in self.columns.iter().enumerate() {
                    let array = batch.columns().get(i).ok_or_else(|| {
                        protocol(format!(
                            "the result has no column {} ({})",
                            i + 1,
                            column.name
                        ))
                    })?;
                    object.insert(column.name.clone(), value::json(column, array, row)?);
                }
                out.push(serde_json::Value::Object(object));
            }
        }
        Ok(out)
    }

    /// Rows a DML statement changed: the sum of its result's number columns
    /// (`number of rows inserted`, `… updated`, `… deleted`), or `None` for a query.
    pub fn rows_affected(&self) -> Option<u64> {
        let counts: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name.starts_with("number of rows"))
            .map(|(i, _)| i)
            .collect();
        if counts.is_empty() {
            return None;
        }
        let rows = self.json_rows().ok()?;
        Some(
            rows.iter()
                .flat_map(|r| counts.iter().map(move |i| (r, *i)))
                .filter_map(|(r, i)| {
                    let name = &self.columns[i].name;
                    match &r[name] {
                        serde_json::Value::Number(n) => n.as_u64(),
                        serde_json::Value::String(s) => s.parse().ok(),
                        _ => None,
                    }
                })
                .sum(),
        )
    }
}

/// An Arrow IPC stream (schema, record batches, end marker) in base64.
fn decode_arrow(base64_text: &str) -> Result<Vec<RecordBatch>> {
    if base64_text.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_text)
        .map_err(|e| protocol(format!("a Snowflake Arrow rowset is not base64: {e}")))?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| protocol(format!("a Snowflake Arrow rowset does not read: {e}")))?;
    reader
        .map(|b| b.map_err(|e| protocol(format!("a Snowflake Arrow batch does not read: {e}"))))
        .collect()
}

/// A JSON rowset (every value text or null) as one batch of text columns, each field
/// carrying the column's Snowflake type in its metadata (`logicalType`, `scale`).
fn json_batch(columns: &[Column], rows: Vec<Vec<Option<String>>>) -> Result<Option<RecordBatch>> {
    if columns.is_empty() {
        return Ok(None);
    }
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let mut metadata = HashMap::new();
        metadata.insert("logicalType".to_owned(), column.kind.to_ascii_uppercase());
        if let Some(scale) = column.scale {
            metadata.insert("scale".to_owned(), scale.to_string());
        }
        fields.push(Field::new(&column.name, DataType::Utf8, true).with_metadata(metadata));
        let values: Vec<Option<&str>> = rows
            .iter()
            .map(|r| r.get(i).and_then(|v| v.as_deref()))
            .collect();
        arrays.push(Arc::new(StringArray::from(values)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map(Some)
        .map_err(|e| {
            protocol(format!(
                "a Snowflake JSON rowset does not fit its row type: {e}"
            ))
        })
}
