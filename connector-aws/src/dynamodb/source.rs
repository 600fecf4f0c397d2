//! DynamoDB tables as a [`SyncSource`]. See the [module docs](super).
//!
//! Checkpoints:
//! - a full read (a scan): `{"after": <the last key read, tagged>}` after every page,
//!   `{"complete": true}` at the end;
//! - an incremental read (a query of the cursor index): `{"cursor": <the last cursor
//!   value, tagged>, "keys_at_cursor": [<keys read with that value>]}`. A resumed read
//!   asks for cursor values from that one on and skips the keys already read with it,
//!   so records sharing a cursor value are neither lost nor read twice.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};
use moodbridge_core::{
    Catalog, Checkpoint, Error, FieldDescriptor, FieldType, ReadRequest, RecordBatch, Result,
    SourceMessage, SourceStream, StreamDescriptor, SyncMode, SyncSource,
};
use serde_json::{Value, json};

use super::value::{self, Item};
use super::{DynamoDb, PLATFORM, TableInfo};

/// Where a read is.
enum Position {
    /// Scanning; after this key (none: from the start).
    Scan(Option<Item>),
    /// Querying the index from `cursor` (none: from the start), skipping `seen` (keys read
    /// with that cursor value), continuing a query at `page` when set.
    Query {
        cursor: Option<AttributeValue>,
        seen: Vec<String>,
        from: Option<AttributeValue>,
        page: Option<Item>,
    },
    Done,
}

/// What a read needs to go on.
struct Reader {
    db: DynamoDb,
    stream: String,
    info: std::sync::Arc<TableInfo>,
    batch_size: i32,
    /// Index, its partition attribute and value, the cursor attribute.
    index: Option<(String, String, String, String)>,
    at: Position,
}

fn field_type(kind: &aws_sdk_dynamodb::types::ScalarAttributeType) -> FieldType {
    match kind {
        aws_sdk_dynamodb::types::ScalarAttributeType::N => FieldType::Number,
        aws_sdk_dynamodb::types::ScalarAttributeType::B => FieldType::Binary,
        _ => FieldType::String,
    }
}

impl DynamoDb {
    /// The descriptor of `stream`, from its table's description and mapping.
    async fn descriptor(&self, stream: &str) -> Result<StreamDescriptor> {
        let info = self.table_info(stream).await?;
        let mapping = self.mapping(stream);
        let mut d = StreamDescriptor::new(stream).primary_key(info.key_names());
        d.namespace = None;
        for (name, kind) in &info.key {
            d = d.field(FieldDescriptor::new(name, field_type(kind)).required());
        }
        if let (Some(index), Some(partition), Some(cursor)) =
            (&mapping.index, &mapping.partition, &mapping.cursor)
        {
            let keys = info.indexes.get(index).ok_or_else(|| {
                Error::config(format!(
                    "table {} has no global secondary index {index} (stream {stream}'s cursor index)",
                    info.name
                ))
                .with_connector(PLATFORM)
                .with_hint(format!(
                    "create it with partition key {} and sort key {cursor}, projecting all attributes",
                    partition.attribute
                ))
            })?;
            if keys.as_slice() != [partition.attribute.clone(), cursor.clone()] {
                return Err(Error::config(format!(
                    "index {index} of table {} is keyed by {keys:?}, not [{:?}, {cursor:?}]",
                    info.name, partition.attribute
                ))
                .with_connector(PLATFORM)
                .with_hint("the cursor index's partition key holds the stream's value, its sort key the cursor"));
            }
            d = d.cursor(cursor);
        }
        Ok(d)
    }

    /// The streams to describe: the configured ones, or every table under the prefix.
    async fn stream_names(&self) -> Result<Vec<String>> {
        if !self.inner.settings.streams.is_empty() {
            return Ok(self.inner.settings.streams.keys().cloned().collect());
        }
        let prefix = self.inner.settings.table_prefix.clone();
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let start = after.clone();
            let out = self
                .call("list_tables", "(all)", true, || {
                    self.inner
                        .client
                        .list_tables()
                        .set_exclusive_start_table_name(start.clone())
                        .send()
                })
                .await?;
            names.extend(
                out.table_names()
                    .iter()
                    .filter_map(|t| t.strip_prefix(prefix.as_str()))
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
            );
            match out.last_evaluated_table_name() {
                Some(t) => after = Some(t.to_owned()),
                None => break,
            }
        }
        Ok(names)
    }
}

impl Reader {
    /// One page: the messages it yields, or `None` at the end.
    async fn page(&mut self) -> Result<Option<Vec<SourceMessage>>> {
        let position = std::mem::replace(&mut self.at, Position::Done);
        match position {
            Position::Done => Ok(None),
            Position::Scan(after) => {
                let table = self.info.name.clone();
                let out = self
                    .db
                    .call("scan", &table, true, || {
                        self.db
                            .inner
                            .client
                            .scan()
                            .table_name(&table)
                            .limit(self.batch_size)
                            .consistent_read(true)
                            .set_exclusive_start_key(after.clone())
                            .send()
                    })
                    .await?;
                let records = out.items().iter().map(value::record_of).collect::<Vec<_>>();
                let mut messages = Vec::new();
                if !records.is_empty() {
                    messages.push(SourceMessage::Records(RecordBatch::new(
                        &self.stream,
                        records,
                    )));
                }
                let state = match out.last_evaluated_key() {
                    Some(last) => {
                        self.at = Position::Scan(Some(last.clone()));
                        json!({ "after": value::tagged_item(last) })
                    }
                    None => json!({ "complete": true }),
                };
                messages.push(SourceMessage::Checkpoint(Checkpoint::new(
                    &self.stream,
                    state,
                )));
                Ok(Some(messages))
            }
            Position::Query {
                cursor,
                mut seen,
                from,
                page,
            } => {
                let Some((index, partition, value_of_partition, cursor_attr)) = self.index.clone()
                else {
                    return Ok(None);
                };
                let table = self.info.name.clone();
                let condition = if from.is_some() {
                    "#p = :p AND #c >= :c"
                } else {
                    "#p = :p"
                };
                let out = self
                    .db
                    .call("query", &table, true, || {
                        let mut q = self
                            .db
                            .inner
                            .client
                            .query()
                            .table_name(&table)
                            .index_name(&index)
                            .key_condition_expression(condition)
                            .expression_attribute_names("#p", &partition)
                            .expression_attribute_values(
                                ":p",
                                AttributeValue::S(value_of_partition.clone()),
                            )
                            .scan_index_forward(true)
                            .limit(self.batch_size)
                            .set_exclusive_start_key(page.clone());
                        if let Some(c) = &from {
                            // Only with the condition that uses them: DynamoDB refuses
                            // unused names and values.
                            q = q
                                .expression_attribute_names("#c", &cursor_attr)
                                .expression_attribute_values(":c", c.clone());
                        }
                        q.send()
                    })
                    .await?;
                let mut cursor = cursor;
                let mut records = Vec::new();
                for item in out.items() {
                    let Some(c) = item.get(&cursor_attr) else {
                        continue;
                    };
                    let id = value::key_text(item, &self.info.key_names());
                    if cursor.as_ref() == Some(c) {
                        if seen.contains(&id) {
                            continue;
                        }
                    } else {
                        cursor = Some(c.clone());
                        seen.clear();
                    }
                    seen.push(id);
                    records.push(value::record_of(item));
                }
                let mut messages = Vec::new();
                if !records.is_empty() {
                    messages.push(SourceMessage::Records(RecordBatch::new(
                        &self.stream,
                        records,
                    )));
                }
                if let Some(c) = &cursor {
                    messages.push(SourceMessage::Checkpoint(Checkpoint::new(
                        &self.stream,
                        json!({ "cursor": value::tagged(c), "keys_at_cursor": seen }),
                    )));
                }
                if let Some(last) = out.last_evaluated_key() {
                    self.at = Position::Query {
                        cursor,
                        seen,
                        from,
                        page: Some(last.clone()),
                    };
                }
                Ok(Some(messages))
            }
        }
    }
}

fn bad_checkpoint(stream: &str, state: &Value) -> Error {
    Error::invalid_input(format!(
        "checkpoint {state} is not one of a DynamoDB read of {stream}"
    ))
    .with_connector(PLATFORM)
    .with_hint("resume from a checkpoint this source made for the same mode, or start over")
}

#[async_trait]
impl SyncSource for DynamoDb {
    async fn discover(&self) -> Result<Catalog> {
        let mut streams = Vec::new();
        for name in self.stream_names().await? {
            streams.push(self.descriptor(&name).await?);
        }
        Ok(Catalog::new(streams))
    }

    async fn discover_streams(&self, names: &[&str]) -> Result<Catalog> {
        let mut streams = Vec::new();
        for name in names {
            match self.descriptor(name).await {
                Ok(d) => streams.push(d),
                Err(e) if e.kind() == moodbridge_core::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Catalog::new(streams))
    }

    async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
        let descriptor = self.descriptor(&request.stream).await?;
        request.check_against(&descriptor).map_err(|e| {
            if request.mode == SyncMode::Incremental && descriptor.cursor_field.is_none() {
                Error::invalid_input(format!(
                    "stream {} has no cursor index: DynamoDB reads it in full only",
                    request.stream
                ))
                .with_connector(PLATFORM)
                .with_hint("set the stream's cursor, index and partition (a GSI keyed by partition and cursor)")
            } else {
                e
            }
        })?;
        let info = self.table_info(&request.stream).await?;
        let mapping = self.mapping(&request.stream);
        let state = request.checkpoint.as_ref().map(|c| &c.state);
        let at = match request.mode {
            SyncMode::FullRefresh => match state {
                None => Position::Scan(None),
                Some(s) if s.get("complete") == Some(&Value::Bool(true)) => Position::Done,
                Some(s) => Position::Scan(Some(
                    s.get("after")
                        .and_then(value::untagged_item)
                        .ok_or_else(|| bad_checkpoint(&request.stream, s))?,
                )),
            },
            _ => match state {
                None => Position::Query {
                    cursor: None,
                    seen: Vec::new(),
                    from: None,
                    page: None,
                },
                Some(s) => {
                    let cursor = s
                        .get("cursor")
                        .and_then(value::untagged)
                        .ok_or_else(|| bad_checkpoint(&request.stream, s))?;
                    let seen = s
                        .get("keys_at_cursor")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|k| k.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    Position::Query {
                        from: Some(cursor.clone()),
                        cursor: Some(cursor),
                        seen,
                        page: None,
                    }
                }
            },
        };
        let index = match (mapping.index, mapping.partition, mapping.cursor) {
            (Some(i), Some(p), Some(c)) => Some((i, p.attribute, p.value, c)),
            _ => None,
        };
        let reader = Reader {
            db: self.clone(),
            stream: request.stream.clone(),
            info,
            batch_size: i32::try_from(request.batch_size.clamp(1, 10_000)).unwrap_or(1_000),
            index,
            at,
        };
        let pages = futures::stream::try_unfold(reader, |mut reader| async move {
            Ok::<_, Error>(reader.page().await?.map(|messages| (messages, reader)))
        });
        Ok(pages
            .map_ok(|messages| futures::stream::iter(messages.into_iter().map(Ok)))
            .try_flatten()
            .boxed())
    }
}
