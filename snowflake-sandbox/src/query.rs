//! Queries: running a statement, keeping its outcome under its query id, and the result
//! as Snowflake serves it — the first rows inline (`rowsetBase64`), the rest as chunks
//! (Arrow IPC streams, gzip-compressed, fetched with the `qrmk` key as S3's SSE-C
//! headers), or a JSON `rowset` for DML counts and multi-statement parents.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{Schema, SchemaRef};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::sql::SqlError;
use crate::table::{ColumnDef, ColumnKind};

/// `statementTypeId` of a query, of an `INSERT`, and of a multi-statement parent.
pub(crate) const SELECT: u64 = 0x1000;
pub(crate) const INSERT: u64 = 0x3100;
pub(crate) const MULTI: u64 = 0xA000;

/// Where a query is.
#[derive(Debug, Clone)]
pub(crate) enum Status {
    Running,
    Success(Arc<Rows>),
    Failed(SqlError),
    Aborted,
}

impl Status {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Success(_) => "SUCCESS",
            Status::Failed(_) => "FAILED_WITH_ERROR",
            Status::Aborted => "ABORTED",
        }
    }
}

/// A statement's rows before they are served.
#[derive(Debug, Clone)]
pub(crate) enum Rows {
    /// Arrow batches in Snowflake's encoding, with the row type.
    Arrow {
        rowtype: Vec<Value>,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        statement_type: u64,
    },
    /// A JSON rowset (DML counts, a multi-statement parent).
    Json {
        rowtype: Vec<Value>,
        rows: Vec<Vec<Option<String>>>,
        statement_type: u64,
        result_ids: Option<String>,
    },
    /// A file transfer's instructions (`PUT`, `GET`): the answer's data as it is.
    Transfer(Value),
}

impl Rows {
    /// One `FIXED` column named `name` holding `value`.
    pub(crate) fn number(name: &str, value: i64) -> Rows {
        let column = ColumnDef::new(
            name,
            ColumnKind::Fixed {
                precision: 38,
                scale: 0,
            },
        );
        let schema = single_schema(&column);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![value]))],
        );
        Rows::Arrow {
            rowtype: vec![column.rowtype("")],
            schema,
            batches: batch.into_iter().collect(),
            statement_type: SELECT,
        }
    }

    /// One `TEXT` column named `name` holding `value`.
    pub(crate) fn text(name: &str, value: &str) -> Rows {
        let column = ColumnDef::new(name, ColumnKind::Text);
        let schema = single_schema(&column);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![value]))],
        );
        Rows::Arrow {
            rowtype: vec![column.rowtype("")],
            schema,
            batches: batch.into_iter().collect(),
            statement_type: SELECT,
        }
    }

    /// `number of rows inserted`.
    pub(crate) fn inserted(count: usize) -> Rows {
        let mut rowtype = ColumnDef::new(
            "number of rows inserted",
            ColumnKind::Fixed {
                precision: 19,
                scale: 0,
            },
        )
        .rowtype("");
        rowtype["name"] = json!("number of rows inserted");
        Rows::Json {
            rowtype: vec![rowtype],
            rows: vec![vec![Some(count.to_string())]],
            statement_type: INSERT,
            result_ids: None,
        }
    }

    /// `SHOW GRANTS TO ROLE`'s JSON rowset: `created_on`, `privilege`, `granted_on`,
    /// `name`, `granted_to`, `grantee_name`, `grant_option`, `granted_by` for each
    /// `[privilege, granted_on, name, role]`.
    pub(crate) fn grants(grants: impl Iterator<Item = [String; 4]>) -> Rows {
        let column = |name: &str, kind: ColumnKind| {
            let mut rowtype = ColumnDef::new(name, kind).rowtype("");
            rowtype["name"] = json!(name);
            rowtype
        };
        let mut rowtype = vec![column("created_on", ColumnKind::TimestampNtz)];
        rowtype[0]["type"] = json!("timestamp_ltz");
        for name in [
            "privilege",
            "granted_on",
            "name",
            "granted_to",
            "grantee_name",
            "grant_option",
            "granted_by",
        ] {
            rowtype.push(column(name, ColumnKind::Text));
        }
        let rows = grants
            .map(|[privilege, granted_on, name, role]| {
                [
                    "1793000000.000000000".to_owned(),
                    privilege,
                    granted_on,
                    name,
                    "ROLE".to_owned(),
                    role,
                    "false".to_owned(),
                    "SECURITYADMIN".to_owned(),
                ]
                .into_iter()
                .map(Some)
                .collect()
            })
            .collect();
        Rows::Json {
            rowtype,
            rows,
            statement_type: SELECT,
            result_ids: None,
        }
    }

    /// A multi-statement parent: its children's ids.
    pub(crate) fn multi(children: &[String]) -> Rows {
        let mut rowtype = ColumnDef::new("x", ColumnKind::Text).rowtype("");
        rowtype["name"] = json!("multiple statement execution");
        Rows::Json {
            rowtype: vec![rowtype],
            rows: vec![vec![Some(
                "Multiple statements executed successfully.".to_owned(),
            )]],
            statement_type: MULTI,
            result_ids: Some(children.join(",")),
        }
    }
}

fn single_schema(column: &ColumnDef) -> SchemaRef {
    Arc::new(Schema::new(vec![column.field()]))
}

/// A chunk ready to be served.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub rows: usize,
    pub body: Vec<u8>,
    pub uncompressed: usize,
}

/// A served result: the inline part and the chunks.
#[derive(Debug)]
pub(crate) struct Served {
    pub data: Value,
    pub chunks: Vec<Chunk>,
    pub qrmk: Option<String>,
}

/// How results are cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub first_chunk_rows: usize,
    pub chunk_rows: usize,
    pub gzip: bool,
}

fn ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut writer =
        arrow_ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(|e| e.to_string())?;
    for batch in batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    writer.into_inner().map_err(|e| e.to_string())
}

/// Rows `start..end` of `batches`, as slices.
fn take(batches: &[RecordBatch], start: usize, end: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut offset = 0;
    for batch in batches {
        let (from, to) = (offset, offset + batch.num_rows());
        offset = to;
        let lo = start.max(from);
        let hi = end.min(to);
        if lo < hi {
            out.push(batch.slice(lo - from, hi - lo));
        }
    }
    out
}

/// Serve `rows` of query `query_id`: the `data` of the answer and the chunks it points
/// at (under `base/chunks/<query id>/<n>`).
pub(crate) fn serve(
    query_id: &str,
    rows: &Rows,
    layout: Layout,
    base: &str,
    session: &crate::session::Session,
) -> Result<Served, String> {
    let mut data = json!({
        "queryId": query_id,
        "sqlState": "00000",
        "finalDatabaseName": session.database,
        "finalSchemaName": session.schema,
        "finalWarehouseName": session.warehouse,
        "finalRoleName": session.role,
        "parameters": [{"name": "TIMEZONE", "value": "Etc/UTC"}],
        "queryResultFormat": "arrow",
    });
    match rows {
        Rows::Transfer(transfer) => {
            let mut data = transfer.clone();
            data["queryId"] = json!(query_id);
            match data.get_mut("encryptionMaterial") {
                Some(Value::Object(m)) => {
                    m.insert("queryId".into(), json!(query_id));
                }
                Some(Value::Array(list)) => {
                    for m in list.iter_mut().filter_map(Value::as_object_mut) {
                        m.insert("queryId".into(), json!(query_id));
                    }
                }
                _ => {}
            }
            Ok(Served {
                data,
                chunks: Vec::new(),
                qrmk: None,
            })
        }
        Rows::Json {
            rowtype,
            rows,
            statement_type,
            result_ids,
        } => {
            data["queryResultFormat"] = json!("json");
            data["rowtype"] = json!(rowtype);
            data["rowset"] = json!(rows);
            data["total"] = json!(rows.len());
            data["returned"] = json!(rows.len());
            data["statementTypeId"] = json!(statement_type);
            if let Some(ids) = result_ids {
                data["resultIds"] = json!(ids);
            }
            Ok(Served {
                data,
                chunks: Vec::new(),
                qrmk: None,
            })
        }
        Rows::Arrow {
            rowtype,
            schema,
            batches,
            statement_type,
        } => {
            let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let first = layout.first_chunk_rows.min(total);
            let inline = if first == 0 {
                String::new()
            } else {
                base64::engine::general_purpose::STANDARD
                    .encode(ipc(schema, &take(batches, 0, first))?)
            };
            let mut chunks = Vec::new();
            let mut start = first;
            while start < total {
                let end = (start + layout.chunk_rows.max(1)).min(total);
                let raw = ipc(schema, &take(batches, start, end))?;
                let uncompressed = raw.len();
                let body = if layout.gzip {
                    let mut encoder =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    encoder.write_all(&raw).map_err(|e| e.to_string())?;
                    encoder.finish().map_err(|e| e.to_string())?
                } else {
                    raw
                };
                chunks.push(Chunk {
                    rows: end - start,
                    body,
                    uncompressed,
                });
                start = end;
            }
            data["rowtype"] = json!(rowtype);
            data["rowsetBase64"] = json!(inline);
            data["total"] = json!(total);
            data["returned"] = json!(total);
            data["statementTypeId"] = json!(statement_type);
            let mut qrmk = None;
            if !chunks.is_empty() {
                use rand::Rng as _;
                let key: [u8; 32] = rand::rng().random();
                let key = base64::engine::general_purpose::STANDARD.encode(key);
                // Snowflake on AWS sends the key both ways: `qrmk`, and the headers
                // themselves (what newer drivers read).
                data["qrmk"] = json!(key);
                data["chunkHeaders"] = json!({
                    "x-amz-server-side-encryption-customer-algorithm": "AES256",
                    "x-amz-server-side-encryption-customer-key": key,
                });
                data["chunks"] = Value::Array(
                    chunks
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            json!({
                                "url": format!("{base}/chunks/{query_id}/{i}"),
                                "rowCount": c.rows,
                                "uncompressedSize": c.uncompressed,
                                "compressedSize": c.body.len(),
                            })
                        })
                        .collect(),
                );
                qrmk = Some(key);
            }
            Ok(Served { data, chunks, qrmk })
        }
    }
}

/// A query the sandbox ran or runs.
#[derive(Debug)]
pub(crate) struct Query {
    pub id: String,
    pub sql: String,
    pub session: u64,
    pub request_id: Option<String>,
    pub query_tag: Option<String>,
    pub requests: u32,
    /// The stage its binds came from (`bindStage`).
    pub bind_stage: Option<String>,
    pub status: watch::Sender<Status>,
    pub task: Option<tokio::task::AbortHandle>,
    pub served: Option<Arc<Served>>,
}

/// What the sandbox remembers of a query, for tests to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRecord {
    /// Its id.
    pub query_id: String,
    /// Its SQL text.
    pub sql: String,
    /// The `requestId` it came with.
    pub request_id: Option<String>,
    /// How many requests carried that `requestId` (retries included): a statement runs
    /// once however many arrive.
    pub requests: u32,
    /// Its query tag (the statement's `QUERY_TAG` parameter, else the session's).
    pub query_tag: Option<String>,
    /// `RUNNING`, `SUCCESS`, `FAILED_WITH_ERROR` or `ABORTED`.
    pub status: String,
    /// The stage its binds were read from, when the client staged them (`bindStage`).
    pub bind_stage: Option<String>,
}

/// The queries, by id and by request id.
#[derive(Debug, Default)]
pub(crate) struct Queries {
    pub by_id: HashMap<String, Query>,
    pub by_request: HashMap<String, String>,
    pub order: Vec<String>,
}

impl Queries {
    pub(crate) fn records(&self) -> Vec<QueryRecord> {
        self.order
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .map(|q| QueryRecord {
                query_id: q.id.clone(),
                sql: q.sql.clone(),
                request_id: q.request_id.clone(),
                requests: q.requests,
                query_tag: q.query_tag.clone(),
                status: q.status.borrow().name().to_owned(),
                bind_stage: q.bind_stage.clone(),
            })
            .collect()
    }
}
