//! DynamoDB tables as a [`SyncSink`]. See the [module docs](super).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, PutRequest,
    ReturnValue, ScalarAttributeType, WriteRequest,
};
use futures::{StreamExt, TryStreamExt};
use moodbridge_core::{
    DELETED, DELETED_AT, Error, ErrorKind, FailureKind, FieldType, Record, RecordBatch,
    RecordFailure, RecordKey, RecordOutcome, Result, StreamDescriptor, SyncSink, WriteAction,
    WriteMode, WriteReport,
};

use super::value::{self, Item, MAX_ITEM_BYTES};
use super::{DynamoDb, PLATFORM, TableInfo, built, condition_failed};

/// Items per `BatchWriteItem` call (the service's limit).
pub const WRITE_BATCH: usize = 25;
/// Keys per `BatchGetItem` call (the service's limit).
pub const GET_BATCH: usize = 100;
/// Calls for items DynamoDB leaves unprocessed before they fail as temporary.
pub(crate) const UNPROCESSED_ATTEMPTS: u32 = 8;
/// Single-item requests in flight at once.
const CONCURRENCY: usize = 16;
/// `BatchWriteItem` calls of one batch in flight at once.
pub const WRITES_IN_FLIGHT: usize = 4;
/// `BatchGetItem` calls of one batch in flight at once.
pub const READS_IN_FLIGHT: usize = 4;

/// How a [`DynamoDb::write_batch`] ended.
pub(crate) enum BatchWritten {
    /// Every request was processed.
    Done,
    /// A call failed: the requests it carried (none of them known to be written), and why.
    Failed(Vec<WriteRequest>, Error),
    /// DynamoDB still left these unprocessed after every retry.
    Unprocessed(Vec<WriteRequest>),
}

/// One record of a batch, ready to send.
struct Prepared {
    index: usize,
    key: Item,
    item: Item,
    /// The key as written in outcomes and as the identity within a batch.
    record_key: RecordKey,
}

/// The backoff before the `attempt`th retry of unprocessed items: 50 ms doubling to 2 s.
fn unprocessed_backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(2))
}

fn temporary(message: impl Into<String>) -> RecordFailure {
    RecordFailure::new(FailureKind::Temporary, message)
}

fn failure_of(err: &Error) -> RecordFailure {
    let mut f = RecordFailure::new(err.kind().into(), err.message().to_owned());
    f.code = err
        .message()
        .split_whitespace()
        .next()
        .filter(|c| c.ends_with("Exception"))
        .map(str::to_owned);
    f
}

impl DynamoDb {
    /// Key and item of `record` for `info`'s table, or why DynamoDB cannot hold it.
    fn prepare(
        info: &TableInfo,
        index: usize,
        record: &Record,
    ) -> std::result::Result<Prepared, RecordFailure> {
        let invalid = |m: String| {
            let mut f = RecordFailure::new(FailureKind::InvalidInput, m);
            f.fields = info.key_names();
            f
        };
        let mut key = Item::new();
        let mut parts = Vec::with_capacity(info.key.len());
        for (field, kind) in &info.key {
            let v = value::key_value(field, record.get(field), kind)
                .map_err(|m| invalid(format!("{m} (table {})", info.name)))?;
            parts.push(match &v {
                AttributeValue::S(s) | AttributeValue::N(s) => s.clone(),
                other => value::tagged(other).to_string(),
            });
            key.insert(field.clone(), v);
        }
        let mut item: Item = record
            .fields()
            .iter()
            .map(|(k, v)| (k.clone(), value::from_json(v)))
            .collect();
        item.extend(key.clone());
        let bytes = value::item_bytes(&item);
        if bytes > MAX_ITEM_BYTES {
            return Err(RecordFailure::new(
                FailureKind::InvalidInput,
                format!(
                    "the item is {bytes} bytes, over DynamoDB's 400 KB (table {}): keep large values in object storage and store their key",
                    info.name
                ),
            ));
        }
        Ok(Prepared {
            index,
            key,
            item,
            record_key: RecordKey::new(parts),
        })
    }

    /// The table of `stream`, created when missing and allowed.
    async fn sink_table(&self, stream: &StreamDescriptor) -> Result<std::sync::Arc<TableInfo>> {
        match self.table_info(&stream.name).await {
            Err(e) if e.kind() == ErrorKind::NotFound && self.inner.settings.create_tables => {
                self.create_table(stream).await?;
                self.table_info(&stream.name).await
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::not_found(format!(
                "DynamoDB table {} of stream {} does not exist",
                self.table_of(&stream.name),
                stream.name
            ))
            .with_connector(PLATFORM)
            .with_hint("create it keyed by the stream's primary key, or set create_tables = true")),
            other => other,
        }
    }

    /// Create `stream`'s table (on-demand capacity) keyed by its primary key, with its
    /// cursor index when configured, and wait until it is active.
    async fn create_table(&self, stream: &StreamDescriptor) -> Result<()> {
        let table = self.table_of(&stream.name);
        let key = &stream.primary_key;
        if key.is_empty() || key.len() > 2 {
            return Err(Error::config(format!(
                "cannot create DynamoDB table {table}: stream {} has {} primary key fields",
                stream.name,
                key.len()
            ))
            .with_connector(PLATFORM)
            .with_hint("a DynamoDB key is one or two attributes: create the table yourself with a composite key attribute"));
        }
        let scalar = |field: &str| match stream.field_named(field).map(|f| &f.field_type) {
            Some(FieldType::Integer | FieldType::Number) => ScalarAttributeType::N,
            _ => ScalarAttributeType::S,
        };
        let mut definitions: Vec<(String, ScalarAttributeType)> =
            key.iter().map(|k| (k.clone(), scalar(k))).collect();
        let element = |name: &str, kind: KeyType| {
            built(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build(),
            )
        };
        let mut request = self
            .inner
            .client
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(element(&key[0], KeyType::Hash)?);
        if let Some(range) = key.get(1) {
            request = request.key_schema(element(range, KeyType::Range)?);
        }
        let mapping = self.mapping(&stream.name);
        if let (Some(index), Some(partition), Some(cursor)) =
            (&mapping.index, &mapping.partition, &mapping.cursor)
        {
            for (name, kind) in [
                (partition.attribute.clone(), ScalarAttributeType::S),
                (cursor.clone(), scalar(cursor)),
            ] {
                if !definitions.iter().any(|(n, _)| *n == name) {
                    definitions.push((name, kind));
                }
            }
            request = request.global_secondary_indexes(built(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(element(&partition.attribute, KeyType::Hash)?)
                    .key_schema(element(cursor, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build(),
            )?);
        }
        for (name, kind) in definitions {
            request = request.attribute_definitions(built(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(kind)
                    .build(),
            )?);
        }
        let created = self
            .call("create_table", &table, false, || request.clone().send())
            .await;
        match created {
            Ok(_) => {}
            // Created by someone else meanwhile.
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(e),
        }
        tracing::info!(table = %table, stream = %stream.name, "created DynamoDB table");
        self.wait_active(&table).await?;
        self.forget(&stream.name);
        Ok(())
    }

    /// The stored items of `keys`, by their key; items DynamoDB leaves unprocessed are
    /// asked for again.
    async fn batch_get(&self, table: &str, keys: Vec<Item>) -> Result<HashMap<String, Item>> {
        let Some(names) = keys.first().map(|k| k.keys().cloned().collect::<Vec<_>>()) else {
            return Ok(HashMap::new());
        };
        let calls: Vec<_> = keys
            .chunks(GET_BATCH)
            .map(|chunk| self.get_chunk(table, chunk))
            .collect();
        let pages: Vec<Vec<Item>> = futures::stream::iter(calls)
            .buffer_unordered(READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(pages
            .into_iter()
            .flatten()
            .map(|item| (value::key_text(&item, &names), item))
            .collect())
    }

    /// The stored items of up to 100 `keys` (one `BatchGetItem` and its retries of
    /// unprocessed keys).
    pub(crate) async fn get_chunk(&self, table: &str, keys: &[Item]) -> Result<Vec<Item>> {
        let mut found = Vec::new();
        let mut pending: Vec<Item> = keys.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            let ask = built(
                KeysAndAttributes::builder()
                    .set_keys(Some(pending.clone()))
                    .consistent_read(true)
                    .build(),
            )?;
            let out = self
                .call("batch_get_item", table, true, || {
                    self.inner
                        .client
                        .batch_get_item()
                        .request_items(table, ask.clone())
                        .send()
                })
                .await?;
            found.extend(
                out.responses()
                    .and_then(|r| r.get(table))
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            pending = out
                .unprocessed_keys()
                .and_then(|u| u.get(table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if !pending.is_empty() {
                attempt += 1;
                if attempt >= UNPROCESSED_ATTEMPTS {
                    return Err(Error::new(
                        ErrorKind::RateLimited { retry_after: None },
                        format!(
                            "DynamoDB left {} keys of table {table} unread after {attempt} calls",
                            pending.len()
                        ),
                    )
                    .with_connector(PLATFORM)
                    .with_hint(super::hint(ErrorKind::RateLimited { retry_after: None })));
                }
                tokio::time::sleep(unprocessed_backoff(attempt)).await;
            }
        }
        Ok(found)
    }

    /// Put `items` in calls of 25, up to [`WRITES_IN_FLIGHT`] calls at once, asking again
    /// for what DynamoDB leaves unprocessed; the positions (in `items`) that could not be
    /// written, with why. The items' keys are distinct, so the calls' order does not
    /// matter.
    async fn batch_put(&self, table: &str, items: &[&Prepared]) -> Vec<(usize, RecordFailure)> {
        let calls: Vec<_> = items
            .chunks(WRITE_BATCH)
            .enumerate()
            .map(|(c, chunk)| self.put_chunk(table, chunk, c * WRITE_BATCH))
            .collect();
        futures::stream::iter(calls)
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One call of up to 25 puts (`chunk`, at `base` in the caller's items) and its
    /// retries of unprocessed items; the failures.
    async fn put_chunk(
        &self,
        table: &str,
        chunk: &[&Prepared],
        base: usize,
    ) -> Vec<(usize, RecordFailure)> {
        let mut failed = Vec::new();
        let requests: Result<Vec<WriteRequest>> = chunk
            .iter()
            .map(|p| {
                let put = built(PutRequest::builder().set_item(Some(p.item.clone())).build())?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect();
        let pending = match requests {
            Ok(r) => r,
            Err(e) => {
                failed.extend((0..chunk.len()).map(|i| (base + i, failure_of(&e))));
                return failed;
            }
        };
        match self.write_batch(table, pending).await {
            BatchWritten::Done => {}
            // One item the service refuses fails the call: write these one by one so the
            // bad one fails alone.
            BatchWritten::Failed(sent, e) if e.kind() == ErrorKind::InvalidInput => {
                failed.extend(self.put_each(table, chunk, &sent, base).await);
            }
            BatchWritten::Failed(sent, e) => {
                let left = unsent_positions(chunk, &sent, base);
                failed.extend(left.into_iter().map(|i| (i, failure_of(&e))));
            }
            BatchWritten::Unprocessed(left) => {
                let left = unsent_positions(chunk, &left, base);
                failed.extend(left.into_iter().map(|i| {
                    (i, temporary(format!("DynamoDB left the item unprocessed {UNPROCESSED_ATTEMPTS} times (throttled): write it again later")))
                }));
            }
        }
        failed
    }

    /// One `BatchWriteItem` of `requests` (25 at most), sending again what DynamoDB leaves
    /// unprocessed, with backoff, [`UNPROCESSED_ATTEMPTS`] calls at most.
    pub(crate) async fn write_batch(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> BatchWritten {
        let mut pending = requests;
        let mut attempt = 0;
        while !pending.is_empty() {
            let sent = pending;
            let out = self
                .call("batch_write_item", table, true, || {
                    self.inner
                        .client
                        .batch_write_item()
                        .request_items(table, sent.clone())
                        .send()
                })
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) => return BatchWritten::Failed(sent, e),
            };
            pending = out
                .unprocessed_items()
                .and_then(|u| u.get(table))
                .cloned()
                .unwrap_or_default();
            if pending.is_empty() {
                break;
            }
            attempt += 1;
            tracing::debug!(table = %table, unprocessed = pending.len(), attempt, "DynamoDB left items unprocessed");
            if attempt >= UNPROCESSED_ATTEMPTS {
                return BatchWritten::Unprocessed(pending);
            }
            tokio::time::sleep(unprocessed_backoff(attempt)).await;
        }
        BatchWritten::Done
    }

    /// `PutItem` each of `sent` (a part of `chunk`); the failures.
    async fn put_each(
        &self,
        table: &str,
        chunk: &[&Prepared],
        sent: &[WriteRequest],
        base: usize,
    ) -> Vec<(usize, RecordFailure)> {
        let positions = unsent_positions(chunk, sent, base);
        let results: Vec<(usize, Result<()>)> = futures::stream::iter(positions)
            .map(|i| async move {
                let item = chunk[i - base].item.clone();
                let r = self
                    .call("put_item", table, true, || {
                        self.inner
                            .client
                            .put_item()
                            .table_name(table)
                            .set_item(Some(item.clone()))
                            .send()
                    })
                    .await
                    .map(|_| ());
                (i, r)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        results
            .into_iter()
            .filter_map(|(i, r)| r.err().map(|e| (i, failure_of(&e))))
            .collect()
    }

    /// Upsert without conditions: read what is stored, write what changed.
    async fn upsert_batch(
        &self,
        info: &TableInfo,
        round: &[Prepared],
        outcomes: &mut [Option<RecordOutcome>],
        wrote_any: &mut bool,
    ) -> Result<()> {
        let stored = match self
            .batch_get(&info.name, round.iter().map(|p| p.key.clone()).collect())
            .await
        {
            Ok(s) => s,
            Err(e) if !*wrote_any => return Err(e),
            Err(e) => {
                for p in round {
                    outcomes[p.index] = Some(RecordOutcome::failed(p.index, failure_of(&e)));
                }
                return Ok(());
            }
        };
        let names = info.key_names();
        let mut to_write: Vec<&Prepared> = Vec::new();
        for p in round {
            let before = stored.get(&value::key_text(&p.key, &names));
            let outcome = match before {
                None => RecordOutcome::ok(p.index, WriteAction::Created),
                Some(b) if *b == p.item => RecordOutcome::ok(p.index, WriteAction::Unchanged),
                Some(b) => RecordOutcome::ok(p.index, WriteAction::Updated)
                    .with_before(value::record_of(b)),
            };
            if outcome.result != Ok(WriteAction::Unchanged) {
                to_write.push(p);
            }
            outcomes[p.index] = Some(outcome.with_key(p.record_key.clone()));
        }
        let failed = self.batch_put(&info.name, &to_write).await;
        if failed.len() < to_write.len() {
            *wrote_any = true;
        } else if !*wrote_any
            && let Some((_, f)) = failed.first()
            && f.kind != FailureKind::InvalidInput
            && f.kind != FailureKind::Temporary
        {
            // Nothing of the batch was written and the cause is not the records': the
            // whole write failed.
            return Err(
                Error::new(kind_of_failure(f.kind), f.message.clone()).with_connector(PLATFORM)
            );
        }
        for (i, f) in failed {
            let p = to_write[i];
            outcomes[p.index] =
                Some(RecordOutcome::failed(p.index, f).with_key(p.record_key.clone()));
        }
        Ok(())
    }

    /// A conditional put of each record: `condition` over `#k` (the partition key) and,
    /// with a cursor, `#c` / `:c`. A failed condition is `on_condition(stored)`.
    async fn conditional_puts(
        &self,
        info: &TableInfo,
        prepared: Vec<Prepared>,
        cursor: Option<&str>,
        outcomes: &mut [Option<RecordOutcome>],
    ) {
        let partition_key = info.key[0].0.clone();
        let table = info.name.clone();
        let results: Vec<(Prepared, Result<Option<Item>>)> = futures::stream::iter(prepared)
            .map(|p| {
                let (table, partition_key) = (table.clone(), partition_key.clone());
                async move {
                    let mut request = self
                        .inner
                        .client
                        .put_item()
                        .table_name(&table)
                        .set_item(Some(p.item.clone()))
                        .return_values(ReturnValue::AllOld)
                        .expression_attribute_names("#k", &partition_key);
                    request = match cursor {
                        None => request.condition_expression("attribute_not_exists(#k)"),
                        Some(c) => match p.item.get(c) {
                            Some(v) => request
                                .condition_expression("attribute_not_exists(#k) OR #c < :c")
                                .expression_attribute_names("#c", c)
                                .expression_attribute_values(":c", v.clone()),
                            None => {
                                let e = Error::invalid_input(format!(
                                    "the record has no cursor {c}, which only_newer compares"
                                ));
                                return (p, Err(e));
                            }
                        },
                    };
                    let r = self
                        .call("put_item", &table, true, || request.clone().send())
                        .await
                        .map(|out| out.attributes().cloned());
                    (p, r)
                }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        for (p, r) in results {
            let outcome = match r {
                Ok(None) => RecordOutcome::ok(p.index, WriteAction::Created),
                Ok(Some(before)) if before == p.item => {
                    RecordOutcome::ok(p.index, WriteAction::Unchanged)
                }
                Ok(Some(before)) => RecordOutcome::ok(p.index, WriteAction::Updated)
                    .with_before(value::record_of(&before)),
                Err(e) if condition_failed(&e) => self.lost_condition(&info.name, &p, cursor).await,
                Err(e) => RecordOutcome::failed(p.index, failure_of(&e)),
            };
            outcomes[p.index] = Some(outcome.with_key(p.record_key));
        }
    }

    /// What a failed condition means for `p`: with a cursor, the stored item is as new or
    /// newer (`Unchanged`); for an append, the item exists — `Unchanged` when it is this
    /// very record (a retried put whose answer was lost), else a conflict.
    async fn lost_condition(
        &self,
        table: &str,
        p: &Prepared,
        cursor: Option<&str>,
    ) -> RecordOutcome {
        if cursor.is_some() {
            return RecordOutcome::ok(p.index, WriteAction::Unchanged);
        }
        match self.stored(table, &p.key).await {
            Ok(item) if item.as_ref() == Some(&p.item) => {
                RecordOutcome::ok(p.index, WriteAction::Unchanged)
            }
            Ok(_) => {
                let mut f = RecordFailure::new(
                    FailureKind::Conflict,
                    format!(
                        "an item with key {} already exists in table {table}: an append never changes it (upsert to change it)",
                        p.record_key
                    ),
                );
                f.code = Some("ConditionalCheckFailedException".into());
                RecordOutcome::failed(p.index, f)
            }
            Err(e) => RecordOutcome::failed(p.index, failure_of(&e)),
        }
    }

    /// The stored item of `key` (a strongly consistent read).
    async fn stored(&self, table: &str, key: &Item) -> Result<Option<Item>> {
        let out = self
            .call("get_item", table, true, || {
                self.inner
                    .client
                    .get_item()
                    .table_name(table)
                    .set_key(Some(key.clone()))
                    .consistent_read(true)
                    .send()
            })
            .await?;
        Ok(out.item().cloned())
    }

    /// Prepare `batch` for `info`'s table: the records DynamoDB can hold, and a failure
    /// outcome for each other.
    fn prepare_all(
        info: &TableInfo,
        batch: &RecordBatch,
        outcomes: &mut [Option<RecordOutcome>],
    ) -> Vec<Prepared> {
        let mut ready = Vec::with_capacity(batch.len());
        for (i, record) in batch.records.iter().enumerate() {
            match Self::prepare(info, i, record) {
                Ok(p) => ready.push(p),
                Err(f) => outcomes[i] = Some(RecordOutcome::failed(i, f)),
            }
        }
        ready
    }

    fn check_key(info: &TableInfo, stream: &str, key: &[String]) -> Result<()> {
        let mut want = info.key_names();
        let mut given = key.to_vec();
        want.sort();
        given.sort();
        if want != given {
            return Err(Error::config(format!(
                "stream {stream} is keyed by {key:?}, table {} by {:?}",
                info.name,
                info.key_names()
            ))
            .with_connector(PLATFORM)
            .with_hint("DynamoDB writes by the table's key: make the stream's primary key the table's key attributes"));
        }
        Ok(())
    }
}

/// The outcome of a record whose key `table` does not hold.
fn missing(table: &str, p: &Prepared) -> RecordOutcome {
    RecordOutcome::failed(
        p.index,
        RecordFailure::new(
            FailureKind::NotFound,
            format!("table {table} holds no item with key {}", p.record_key),
        ),
    )
}

fn kind_of_failure(kind: FailureKind) -> ErrorKind {
    match kind {
        FailureKind::InvalidInput => ErrorKind::InvalidInput,
        FailureKind::Conflict => ErrorKind::Conflict,
        FailureKind::NotFound => ErrorKind::NotFound,
        FailureKind::Forbidden => ErrorKind::Forbidden,
        FailureKind::Temporary => ErrorKind::Unavailable,
        FailureKind::Other => ErrorKind::Internal,
    }
}

/// The positions (offset by `base`) of `chunk`'s items among `requests`.
fn unsent_positions(chunk: &[&Prepared], requests: &[WriteRequest], base: usize) -> Vec<usize> {
    let items: Vec<&Item> = requests
        .iter()
        .filter_map(|r| r.put_request().map(PutRequest::item))
        .collect();
    chunk
        .iter()
        .enumerate()
        .filter(|(_, p)| items.contains(&&p.item))
        .map(|(i, _)| base + i)
        .collect()
}

/// Split prepared records into rounds in which no key repeats (DynamoDB refuses a batch
/// naming one key twice); order is kept.
fn rounds(prepared: Vec<Prepared>) -> Vec<Vec<Prepared>> {
    let mut out: Vec<Vec<Prepared>> = vec![Vec::new()];
    let mut seen = HashSet::new();
    for p in prepared {
        if !seen.insert(p.record_key.clone()) {
            out.push(Vec::new());
            seen.clear();
            seen.insert(p.record_key.clone());
        }
        if let Some(last) = out.last_mut() {
            last.push(p);
        }
    }
    out
}

fn finish(outcomes: Vec<Option<RecordOutcome>>) -> Result<WriteReport> {
    let n = outcomes.len();
    let outcomes: Vec<RecordOutcome> = outcomes.into_iter().flatten().collect();
    let report = WriteReport::new(outcomes);
    report.check_complete(n)?;
    Ok(report)
}

#[async_trait]
impl SyncSink for DynamoDb {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        if *mode == WriteMode::Overwrite {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "DynamoDB cannot replace the contents of table {} in one step",
                    self.table_of(&stream.name)
                ),
            )
            .with_connector(PLATFORM)
            .with_hint("upsert into the table, or write to a new table and switch readers to it"));
        }
        let info = self.sink_table(stream).await?;
        if let WriteMode::Upsert { key } = mode {
            Self::check_key(&info, &stream.name, key)?;
        }
        Ok(())
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        let mapping = self.mapping(&batch.stream);
        let info = self.table_info(&batch.stream).await?;
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; batch.len()];
        match mode {
            WriteMode::Overwrite => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "DynamoDB cannot replace the contents of table {}",
                        info.name
                    ),
                )
                .with_connector(PLATFORM)
                .with_hint("upsert into the table instead"));
            }
            WriteMode::Append => {
                let ready = Self::prepare_all(&info, batch, &mut outcomes);
                self.conditional_puts(&info, ready, None, &mut outcomes)
                    .await;
            }
            WriteMode::Upsert { key } => {
                Self::check_key(&info, &batch.stream, key)?;
                let ready = Self::prepare_all(&info, batch, &mut outcomes);
                if mapping.only_newer {
                    self.conditional_puts(&info, ready, mapping.cursor.as_deref(), &mut outcomes)
                        .await;
                } else {
                    let mut wrote_any = false;
                    for round in rounds(ready) {
                        self.upsert_batch(&info, &round, &mut outcomes, &mut wrote_any)
                            .await?;
                    }
                }
            }
        }
        finish(outcomes)
    }

    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        let info = self.table_info(&batch.stream).await?;
        Self::check_key(&info, &batch.stream, key)?;
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; batch.len()];
        let ready = Self::prepare_all(&info, batch, &mut outcomes);
        let table = info.name.clone();
        let results: Vec<(Prepared, Result<Option<Item>>)> = futures::stream::iter(ready)
            .map(|p| {
                let table = table.clone();
                async move {
                    let r = self
                        .call("delete_item", &table, true, || {
                            self.inner
                                .client
                                .delete_item()
                                .table_name(&table)
                                .set_key(Some(p.key.clone()))
                                .return_values(ReturnValue::AllOld)
                                .send()
                        })
                        .await
                        .map(|out| out.attributes().cloned());
                    (p, r)
                }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        for (p, r) in results {
            let outcome = match r {
                Ok(Some(before)) => RecordOutcome::ok(p.index, WriteAction::Deleted)
                    .with_before(value::record_of(&before)),
                Ok(None) => missing(&table, &p),
                Err(e) => RecordOutcome::failed(p.index, failure_of(&e)),
            };
            outcomes[p.index] = Some(outcome.with_key(p.record_key));
        }
        finish(outcomes)
    }

    async fn soft_delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        let info = self.table_info(&batch.stream).await?;
        Self::check_key(&info, &batch.stream, key)?;
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; batch.len()];
        let ready = Self::prepare_all(&info, batch, &mut outcomes);
        let table = info.name.clone();
        let partition_key = info.key[0].0.clone();
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let results: Vec<(Prepared, Result<Option<Item>>)> = futures::stream::iter(ready)
            .map(|p| {
                let (table, partition_key) = (table.clone(), partition_key.clone());
                let at = p
                    .item
                    .get(DELETED_AT)
                    .cloned()
                    .unwrap_or_else(|| AttributeValue::S(now.clone()));
                async move {
                    let r = self
                        .call("update_item", &table, true, || {
                            self.inner
                                .client
                                .update_item()
                                .table_name(&table)
                                .set_key(Some(p.key.clone()))
                                .update_expression("SET #d = :t, #at = :at")
                                .condition_expression(
                                    "attribute_exists(#k) AND (attribute_not_exists(#d) OR #d <> :t)",
                                )
                                .expression_attribute_names("#k", &partition_key)
                                .expression_attribute_names("#d", DELETED)
                                .expression_attribute_names("#at", DELETED_AT)
                                .expression_attribute_values(":t", AttributeValue::Bool(true))
                                .expression_attribute_values(":at", at.clone())
                                .return_values(ReturnValue::AllOld)
                                .send()
                        })
                        .await
                        .map(|out| out.attributes().cloned());
                    (p, r)
                }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        for (p, r) in results {
            let outcome = match r {
                Ok(before) => {
                    let o = RecordOutcome::ok(p.index, WriteAction::Deleted);
                    match before {
                        Some(b) => o.with_before(value::record_of(&b)),
                        None => o,
                    }
                }
                Err(e) if condition_failed(&e) => {
                    // Already marked, or not there at all: the stored item tells.
                    match self.stored(&table, &p.key).await {
                        Ok(Some(_)) => RecordOutcome::ok(p.index, WriteAction::Unchanged),
                        Ok(None) => missing(&table, &p),
                        Err(e) => RecordOutcome::failed(p.index, failure_of(&e)),
                    }
                }
                Err(e) => RecordOutcome::failed(p.index, failure_of(&e)),
            };
            outcomes[p.index] = Some(outcome.with_key(p.record_key));
        }
        finish(outcomes)
    }
}

/// `DeleteRequest`s of `keys` (for tables this crate empties, such as a state table's
/// rows of one consumer).
pub(crate) fn delete_requests(keys: Vec<Item>) -> Result<Vec<WriteRequest>> {
    keys.into_iter()
        .map(|k| {
            let d = built(DeleteRequest::builder().set_key(Some(k)).build())?;
            Ok(WriteRequest::builder().delete_request(d).build())
        })
        .collect()
}
