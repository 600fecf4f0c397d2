//! A statement's result: its columns as Snowflake types them, and its rows as Arrow
//! record batches (an Arrow rowset decoded as it is; a JSON rowset converted to text
//! columns of the same shape).

use std::collections::HashMap;
use std::io::Read as _;
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
    chunks: Vec<ChunkData>,
    #[serde(default)]
    chunk_headers: Option<HashMap<String, String>>,
    #[serde(default)]
    qrmk: Option<String>,
    #[serde(default)]
    result_ids: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChunkData {
    url: String,
    row_count: usize,
}

/// A chunk of a result still to be downloaded.
#[derive(Debug, Clone)]
pub(crate) struct ChunkRef {
    pub url: String,
    pub rows: usize,
}

/// A result's first answer: its header, the rows that came inline, and the chunks to
/// fetch (with the headers their download needs).
#[derive(Debug)]
pub(crate) struct Rowset {
    pub query_id: String,
    pub columns: Vec<Column>,
    pub total: Option<u64>,
    pub arrow: bool,
    pub inline: Vec<RecordBatch>,
    pub chunks: Vec<ChunkRef>,
    /// Headers of chunk downloads; values are secrets (an SSE-C key).
    pub chunk_headers: Vec<(String, String)>,
    /// The children of a multi-statement request.
    pub result_ids: Vec<String>,
}

fn protocol(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::Protocol, what.into()).with_connector(PLATFORM)
}

impl Rowset {
    /// The rowset in a query response's `data`.
    pub(crate) fn from_data(data: serde_json::Value) -> Result<Rowset> {
        let data: Data = serde_json::from_value(data)
            .map_err(|e| protocol(format!("a Snowflake query response does not read: {e}")))?;
        let arrow = data.query_result_format.as_deref() == Some("arrow");
        let inline = if arrow {
            decode_arrow_base64(data.rowset_base64.as_deref().unwrap_or_default())?
        } else {
            json_batch(&data.rowtype, data.rowset.unwrap_or_default())?
                .into_iter()
                .collect()
        };
        let mut chunk_headers: Vec<(String, String)> =
            data.chunk_headers.unwrap_or_default().into_iter().collect();
        if chunk_headers.is_empty()
            && let Some(qrmk) = data.qrmk
        {
            chunk_headers.push((
                "x-amz-server-side-encryption-customer-algorithm".to_owned(),
                "AES256".to_owned(),
            ));
            chunk_headers.push(("x-amz-server-side-encryption-customer-key".to_owned(), qrmk));
        }
        let chunks: Vec<ChunkRef> = data
            .chunks
            .into_iter()
            .map(|c| ChunkRef {
                url: c.url,
                rows: c.row_count,
            })
            .collect();
        let rowset = Rowset {
            query_id: data.query_id,
            columns: data.rowtype,
            total: data.total,
            arrow,
            inline,
            chunks,
            chunk_headers,
            result_ids: data
                .result_ids
                .map(|ids| {
                    ids.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        };
        if let Some(total) = rowset.total {
            let inline: usize = rowset.inline.iter().map(RecordBatch::num_rows).sum();
            let chunked: usize = rowset.chunks.iter().map(|c| c.rows).sum();
            if (inline + chunked) as u64 != total {
                return Err(protocol(format!(
                    "Snowflake promised {total} rows but sent {inline} inline and {chunked} in chunks"
                )));
            }
        }
        Ok(rowset)
    }

    /// The body of a downloaded chunk as batches: an Arrow IPC stream, or JSON rows
    /// without their enclosing brackets; gzip-compressed or not.
    pub(crate) fn decode_chunk(
        &self,
        body: &[u8],
        expected_rows: usize,
    ) -> Result<Vec<RecordBatch>> {
        let mut plain;
        let mut bytes = body;
        if body.starts_with(&[0x1f, 0x8b]) {
            plain = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut plain)
                .map_err(|e| protocol(format!("a Snowflake result chunk does not gunzip: {e}")))?;
            bytes = &plain;
        }
        let batches = if self.arrow {
            decode_arrow(bytes)?
        } else {
            let mut text = Vec::with_capacity(bytes.len() + 2);
            text.push(b'[');
            text.extend_from_slice(bytes);
            text.push(b']');
            let rows: Vec<Vec<Option<String>>> = serde_json::from_slice(&text).map_err(|e| {
                protocol(format!("a Snowflake JSON result chunk does not read: {e}"))
            })?;
            json_batch(&self.columns, rows)?.into_iter().collect()
        };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows != expected_rows {
            return Err(Error::unavailable(format!(
                "a Snowflake result chunk holds {rows} rows where {expected_rows} were promised"
            ))
            .with_connector(PLATFORM)
            .with_hint("the download was cut short; it is fetched again"));
        }
        Ok(batches)
    }
}

impl QueryResult {
    /// The rows as the engine's column-shaped rows of stream `stream`, one
    /// [`RowBatch`](moodbridge_core::RowBatch) per Arrow batch ([`rows`](crate::rows)).
    ///
    /// # Errors
    /// An encoding that does not match its Snowflake type.
    pub fn row_batches(&self, stream: &str) -> Result<Vec<moodbridge_core::RowBatch>> {
        self.batches
            .iter()
            .map(|batch| crate::rows::row_batch(stream, &self.columns, batch))
            .collect()
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
fn decode_arrow_base64(base64_text: &str) -> Result<Vec<RecordBatch>> {
    if base64_text.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_text)
        .map_err(|e| protocol(format!("a Snowflake Arrow rowset is not base64: {e}")))?;
    decode_arrow(&bytes)
}

/// An Arrow IPC stream (schema, record batches, end marker).
fn decode_arrow(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
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
