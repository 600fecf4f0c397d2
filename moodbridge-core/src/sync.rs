//! The data-movement contracts: [`SyncSource`] reads, [`SyncSink`] writes.
//!
//! The semantics follow the Airbyte protocol:
//! - A source reads one stream at a time, in [`SyncMode::FullRefresh`] or
//!   [`SyncMode::Incremental`] mode, and yields [`SourceMessage`]s: record batches
//!   interleaved with [`Checkpoint`]s.
//! - A checkpoint's state is opaque to everyone but the source that made it. Passing it
//!   back in a [`ReadRequest`] resumes the read just after the records that preceded it.
//! - A checkpoint is only *final* once every record before it has been durably written by
//!   the sink (the sync engine calls [`SyncSink::flush`] before committing it). After a
//!   crash the engine resumes from the last committed checkpoint, so delivery is
//!   at-least-once; sinks that upsert by primary key make the end state exact.
//! - A sink reports one [`RecordOutcome`] per record, so one bad record never fails or
//!   hides the others.

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, StreamDescriptor, SyncMode};
use crate::error::{Error, ErrorKind, Result};
use crate::record::{Record, RecordBatch, RecordKey};
use crate::rows::RowBatch;

/// A resumption point in a stream, made by the source.
///
/// ```
/// use moodbridge_core::Checkpoint;
/// use serde_json::json;
///
/// let cp = Checkpoint::new("Case", json!({"cursor": "2026-11-20T10:00:00Z", "ids_at_cursor": ["500A"]}));
/// assert_eq!(cp.stream, "Case");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The stream it belongs to.
    pub stream: String,
    /// Source-defined state; the engine stores it and hands it back, never reads it.
    pub state: serde_json::Value,
}

impl Checkpoint {
    /// A checkpoint of `stream` with opaque `state`.
    pub fn new(stream: impl Into<String>, state: serde_json::Value) -> Self {
        Checkpoint {
            stream: stream.into(),
            state,
        }
    }
}

/// What to read.
///
/// ```
/// use moodbridge_core::{ReadRequest, SyncMode};
/// let req = ReadRequest::new("Account", SyncMode::Incremental).batch_size(500);
/// assert!(req.checkpoint.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The stream to read.
    pub stream: String,
    /// How to read it.
    pub mode: SyncMode,
    /// Where to resume; `None` reads from the beginning.
    pub checkpoint: Option<Checkpoint>,
    /// The fields wanted; empty means all.
    #[serde(default)]
    pub fields: Vec<String>,
    /// The preferred number of records per batch (a hint; sources may use the platform's
    /// page size instead).
    pub batch_size: usize,
}

impl ReadRequest {
    /// Default records per batch.
    pub const DEFAULT_BATCH_SIZE: usize = 2_000;

    /// Read `stream` in `mode` from the beginning.
    pub fn new(stream: impl Into<String>, mode: SyncMode) -> Self {
        ReadRequest {
            stream: stream.into(),
            mode,
            checkpoint: None,
            fields: Vec::new(),
            batch_size: Self::DEFAULT_BATCH_SIZE,
        }
    }

    /// Resume from `checkpoint`.
    pub fn resume_from(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// Set the preferred batch size (at least 1).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// Check the request against the stream's descriptor: the mode must be supported and a
    /// checkpoint must belong to this stream.
    pub fn check_against(&self, stream: &StreamDescriptor) -> Result<()> {
        if !stream.supports(self.mode) {
            return Err(Error::invalid_input(format!(
                "stream {} does not support {:?} reads",
                stream.name, self.mode
            ))
            .with_hint("read it with a mode listed in its sync_modes"));
        }
        if let Some(cp) = &self.checkpoint
            && cp.stream != self.stream
        {
            return Err(Error::invalid_input(format!(
                "checkpoint of stream {} passed to a read of {}",
                cp.stream, self.stream
            )));
        }
        Ok(())
    }
}

/// One message of a source's read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum SourceMessage {
    /// Records, in source order.
    Records(RecordBatch),
    /// Records sharing one set of columns, in source order: what a table-shaped result
    /// yields without a map per record (see [`RowBatch`]).
    Rows(RowBatch),
    /// Records deleted at the source (tombstones), in source order: each carries the
    /// stream's primary key fields and, when the source knows it, the time of deletion
    /// in [`DELETED_AT`] (RFC 3339). What the sink does with them is the stream's
    /// [`DeleteMode`](crate::engine::DeleteMode).
    Deletes(RecordBatch),
    /// A resumption point after every record yielded so far.
    Checkpoint(Checkpoint),
}

/// The field a tombstone ([`SourceMessage::Deletes`]) carries its time of deletion in,
/// and the column a soft-deleting sink keeps it in.
pub const DELETED_AT: &str = "_deleted_at";

/// The column a soft-deleting sink marks a deleted record with (`true`); a record
/// written again afterwards (undeleted at the source) is live again.
pub const DELETED: &str = "_deleted";

/// The stream of messages a read yields.
pub type SourceStream = BoxStream<'static, Result<SourceMessage>>;

/// A platform that data can be read from.
///
/// ```
/// use async_trait::async_trait;
/// use futures::StreamExt;
/// use moodbridge_core::{
///     Catalog, Checkpoint, ReadRequest, Record, RecordBatch, Result, SourceMessage,
///     SourceStream, StreamDescriptor, SyncSource,
/// };
///
/// struct OneAccount;
///
/// #[async_trait]
/// impl SyncSource for OneAccount {
///     async fn discover(&self) -> Result<Catalog> {
///         Ok(Catalog::new(vec![StreamDescriptor::new("Account").primary_key(["Id"])]))
///     }
///     async fn read(&self, req: ReadRequest) -> Result<SourceStream> {
///         let record = Record::from_json(serde_json::json!({"Id": "001"}))?;
///         let messages = vec![
///             Ok(SourceMessage::Records(RecordBatch::new(&req.stream, vec![record]))),
///             Ok(SourceMessage::Checkpoint(Checkpoint::new(&req.stream, serde_json::json!({"done": true})))),
///         ];
///         Ok(futures::stream::iter(messages).boxed())
///     }
/// }
/// ```
#[async_trait]
pub trait SyncSource: Send + Sync {
    /// The streams this source offers.
    async fn discover(&self) -> Result<Catalog>;

    /// The catalog of the streams named (what a pipeline moves). The default discovers
    /// everything and keeps those; a source with many streams (every object of an org)
    /// describes only the ones asked for. A name the source does not offer is left out,
    /// and the caller reports it.
    async fn discover_streams(&self, names: &[&str]) -> Result<Catalog> {
        let mut catalog = self.discover().await?;
        catalog.streams.retain(|s| names.contains(&s.name.as_str()));
        Ok(catalog)
    }

    /// Read one stream, resuming from the request's checkpoint.
    async fn read(&self, request: ReadRequest) -> Result<SourceStream>;

    /// Where this source's streams live, as an OpenLineage dataset namespace
    /// (`salesforce://acme.my.salesforce.com`): the engine hands it to a run's sinks
    /// ([`RunScope::source`](crate::observe::RunScope::source)) so their lineage starts
    /// at the source. `None` (the default) when the source does not say. A source that
    /// reads through jobs of its own names them with
    /// [`RunScope::note_source_job`](crate::observe::RunScope::note_source_job).
    async fn lineage_namespace(&self) -> Option<String> {
        None
    }

    /// How many records `request` will yield, when the source can tell cheaply (for
    /// progress and time-left estimates). The default does not know.
    async fn count_hint(&self, request: &ReadRequest) -> Result<Option<u64>> {
        let _ = request;
        Ok(None)
    }
}

/// How a sink applies a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum WriteMode {
    /// Add the records; never touch existing ones.
    Append,
    /// Insert or update by the given key fields.
    Upsert {
        /// The fields that identify a record.
        key: Vec<String>,
    },
    /// Replace the stream's contents with the records written in this sync run: the sink
    /// stages what it receives and swaps it in at [`SyncSink::commit_stream`].
    Overwrite,
}

impl WriteMode {
    /// `true` when writing the same batch twice leaves the same end state, so a write may
    /// safely be retried after a timeout.
    pub fn is_idempotent(&self) -> bool {
        matches!(self, WriteMode::Upsert { .. })
    }
}

/// What a sink did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteAction {
    /// A new record was created.
    Created,
    /// An existing record was changed.
    Updated,
    /// The record was already as given.
    Unchanged,
    /// The record was deleted.
    Deleted,
}

/// Why one record could not be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFailure {
    /// The class of failure.
    pub kind: FailureKind,
    /// What went wrong, from the platform, without secrets.
    pub message: String,
    /// The platform's error code, if any (`DUPLICATE_VALUE` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The fields at fault, if the platform named them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// The serializable subset of [`ErrorKind`] that describes a record-level failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The record is invalid for the target.
    InvalidInput,
    /// It conflicts with existing data (duplicate key, version).
    Conflict,
    /// The target record does not exist (update or delete of a missing record).
    NotFound,
    /// The principal may not write it.
    Forbidden,
    /// A temporary failure; writing it again later may succeed.
    Temporary,
    /// Anything else.
    Other,
}

impl From<ErrorKind> for FailureKind {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidInput => FailureKind::InvalidInput,
            ErrorKind::Conflict => FailureKind::Conflict,
            ErrorKind::NotFound => FailureKind::NotFound,
            ErrorKind::Forbidden => FailureKind::Forbidden,
            k if k.default_status().is_temporary() => FailureKind::Temporary,
            _ => FailureKind::Other,
        }
    }
}

impl RecordFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        RecordFailure {
            kind,
            message: message.into(),
            code: None,
            fields: Vec::new(),
        }
    }
}

/// The outcome for one record of a batch.
///
/// ```
/// use moodbridge_core::{Record, RecordOutcome, WriteAction};
/// let before = Record::from_json(serde_json::json!({"Id": "001", "Name": "Acme"})).unwrap();
/// let outcome = RecordOutcome::ok(0, WriteAction::Updated).with_before(before);
/// assert!(outcome.before.is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordOutcome {
    /// The record's position in the batch.
    pub index: usize,
    /// The record's key, when the sink knows it (the target id after a create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RecordKey>,
    /// What happened.
    pub result: std::result::Result<WriteAction, RecordFailure>,
    /// The record as it was in the target before this write, when the sink can tell
    /// (`None` for a create). The engine keeps it in the audit log, so a run can be
    /// rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Record>,
}

impl RecordOutcome {
    /// Record `index` was written: `action`.
    pub fn ok(index: usize, action: WriteAction) -> Self {
        RecordOutcome {
            index,
            key: None,
            result: Ok(action),
            before: None,
        }
    }

    /// Record `index` was not written: `failure`.
    pub fn failed(index: usize, failure: RecordFailure) -> Self {
        RecordOutcome {
            index,
            key: None,
            result: Err(failure),
            before: None,
        }
    }

    /// With the record's key in the target.
    pub fn with_key(mut self, key: RecordKey) -> Self {
        self.key = Some(key);
        self
    }

    /// With the record's image before the write.
    pub fn with_before(mut self, before: Record) -> Self {
        self.before = Some(before);
        self
    }
}

/// The per-record outcome of a [`SyncSink::write`].
///
/// ```
/// use moodbridge_core::{FailureKind, RecordFailure, RecordOutcome, WriteAction, WriteReport};
///
/// let report = WriteReport::new(vec![
///     RecordOutcome::ok(0, WriteAction::Created),
///     RecordOutcome::failed(1, RecordFailure::new(FailureKind::InvalidInput, "Name is required")),
/// ]);
/// assert_eq!(report.succeeded(), 1);
/// assert_eq!(report.failures().count(), 1);
/// assert!(report.check_complete(2).is_ok());
/// assert!(report.check_complete(3).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteReport {
    /// One outcome per record of the batch.
    pub outcomes: Vec<RecordOutcome>,
}

impl WriteReport {
    /// A report of `outcomes`.
    pub fn new(outcomes: Vec<RecordOutcome>) -> Self {
        WriteReport { outcomes }
    }

    /// Number of records written (created, updated, unchanged or deleted).
    pub fn succeeded(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_ok()).count()
    }

    /// The failed records.
    pub fn failures(&self) -> impl Iterator<Item = (&RecordOutcome, &RecordFailure)> {
        self.outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().err().map(|f| (o, f)))
    }

    /// Verify that the sink reported exactly one outcome for each of `batch_len` records,
    /// so no record is silently lost. A sink that breaks this rule has a bug: the error is
    /// [`ErrorKind::Protocol`].
    pub fn check_complete(&self, batch_len: usize) -> Result<()> {
        let mut seen = vec![false; batch_len];
        for o in &self.outcomes {
            match seen.get_mut(o.index) {
                Some(s) if !*s => *s = true,
                Some(_) => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("sink reported record {} twice", o.index),
                    ));
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("sink reported record {} of a batch of {batch_len}", o.index),
                    ));
                }
            }
        }
        match seen.iter().position(|s| !s) {
            Some(missing) => Err(Error::new(
                ErrorKind::Protocol,
                format!("sink reported no outcome for record {missing} of {batch_len}"),
            )),
            None => Ok(()),
        }
    }
}

/// A platform that data can be written to.
///
/// The engine calls, per stream and run: [`begin_stream`](SyncSink::begin_stream) once,
/// [`write`](SyncSink::write) per batch, [`flush`](SyncSink::flush) before committing each
/// checkpoint, and [`commit_stream`](SyncSink::commit_stream) at the end.
///
/// ```
/// use async_trait::async_trait;
/// use moodbridge_core::{RecordBatch, RecordOutcome, Result, SyncSink, WriteAction, WriteMode, WriteReport};
///
/// struct Discard;
///
/// #[async_trait]
/// impl SyncSink for Discard {
///     async fn write(&self, batch: &RecordBatch, _mode: &WriteMode) -> Result<WriteReport> {
///         Ok(WriteReport::new(
///             (0..batch.len())
///                 .map(|index| RecordOutcome::ok(index, WriteAction::Unchanged))
///                 .collect(),
///         ))
///     }
/// }
/// ```
#[async_trait]
pub trait SyncSink: Send + Sync {
    /// Prepare to receive `stream` in `mode` (create the table, open a staging area).
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        let _ = (stream, mode);
        Ok(())
    }

    /// Write a batch; return one outcome per record. An `Err` means the whole batch failed
    /// and nothing of it was written.
    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport>;

    /// Write rows that share their columns; one outcome per row, as
    /// [`write`](Self::write). The default turns them into records and calls `write`; a
    /// sink that binds values by position (a table) can write from the rows directly.
    ///
    /// ```
    /// # use async_trait::async_trait;
    /// # use moodbridge_core::{RecordBatch, Result, SyncSink, WriteMode, WriteReport, RecordOutcome, WriteAction};
    /// use moodbridge_core::{Column, ColumnKind, RowBatch};
    /// struct Count;
    /// #[async_trait]
    /// impl SyncSink for Count {
    ///     async fn write(&self, batch: &RecordBatch, _: &WriteMode) -> Result<WriteReport> {
    ///         Ok(WriteReport::new(
    ///             (0..batch.len()).map(|i| RecordOutcome::ok(i, WriteAction::Created)).collect(),
    ///         ))
    ///     }
    /// }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut rows = RowBatch::new("Case", vec![Column::new("Id", ColumnKind::Text)]);
    /// rows.push_row([Some("500A")]).unwrap();
    /// let report = Count.write_rows(&rows, &WriteMode::Append).await.unwrap();
    /// assert_eq!(report.succeeded(), 1);
    /// # });
    /// ```
    async fn write_rows(&self, rows: &RowBatch, mode: &WriteMode) -> Result<WriteReport> {
        self.write(&rows.to_records(), mode).await
    }

    /// Make everything written so far durable. The default is for sinks whose writes are
    /// durable when `write` returns.
    async fn flush(&self, stream: &str) -> Result<()> {
        let _ = stream;
        Ok(())
    }

    /// Finish the stream for this run (for [`WriteMode::Overwrite`], swap the staged data in).
    async fn commit_stream(&self, stream: &str, mode: &WriteMode) -> Result<()> {
        let _ = (stream, mode);
        Ok(())
    }

    /// Delete the records of `batch`, identified by their `key` fields (other fields are
    /// ignored); one outcome per record, [`WriteAction::Deleted`] or a failure (deleting
    /// a missing record is [`FailureKind::NotFound`]). Rollback of a run that created
    /// records needs it. The default says the sink cannot delete.
    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        let _ = key;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("this sink cannot delete records (stream {})", batch.stream),
        ))
    }

    /// Mark the records of `batch` (tombstones: their `key` fields and, when known,
    /// [`DELETED_AT`]) deleted without removing them: [`DELETED`] set to `true` and
    /// [`DELETED_AT`] to the tombstone's time (or now). One outcome per record:
    /// [`WriteAction::Deleted`], [`WriteAction::Unchanged`] for a record already marked,
    /// or a failure ([`FailureKind::NotFound`] for a record the sink does not hold). A
    /// record written again later is live again. The default says the sink cannot.
    async fn soft_delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        let _ = key;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "this sink cannot soft-delete records (stream {})",
                batch.stream
            ),
        )
        .with_hint("set the stream's deletes = \"hard\" (or \"ignore\")"))
    }
}

/// A shared source is a source.
#[async_trait]
impl<T: SyncSource + ?Sized> SyncSource for std::sync::Arc<T> {
    async fn discover(&self) -> Result<Catalog> {
        (**self).discover().await
    }

    async fn discover_streams(&self, names: &[&str]) -> Result<Catalog> {
        (**self).discover_streams(names).await
    }

    async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
        (**self).read(request).await
    }

    async fn count_hint(&self, request: &ReadRequest) -> Result<Option<u64>> {
        (**self).count_hint(request).await
    }
}

/// A shared sink is a sink.
#[async_trait]
impl<T: SyncSink + ?Sized> SyncSink for std::sync::Arc<T> {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        (**self).begin_stream(stream, mode).await
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        (**self).write(batch, mode).await
    }

    async fn write_rows(&self, rows: &RowBatch, mode: &WriteMode) -> Result<WriteReport> {
        (**self).write_rows(rows, mode).await
    }

    async fn flush(&self, stream: &str) -> Result<()> {
        (**self).flush(stream).await
    }

    async fn commit_stream(&self, stream: &str, mode: &WriteMode) -> Result<()> {
        (**self).commit_stream(stream, mode).await
    }

    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        (**self).delete(batch, key).await
    }

    async fn soft_delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        (**self).soft_delete(batch, key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::StreamDescriptor;

    #[test]
    fn source_messages_serialize_with_a_type_tag() {
        let msg = SourceMessage::Checkpoint(Checkpoint::new("Case", serde_json::json!(7)));
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            serde_json::json!({"type": "checkpoint", "stream": "Case", "state": 7})
        );
    }

    #[test]
    fn read_request_rejects_unsupported_mode_and_foreign_checkpoint() {
        let stream = StreamDescriptor::new("Lead");
        let err = ReadRequest::new("Lead", SyncMode::Incremental)
            .check_against(&stream)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);

        let err = ReadRequest::new("Lead", SyncMode::FullRefresh)
            .resume_from(Checkpoint::new("Case", serde_json::Value::Null))
            .check_against(&stream)
            .unwrap_err();
        assert!(err.message().contains("checkpoint of stream Case"), "{err}");
    }

    #[test]
    fn report_with_duplicate_or_out_of_range_index_is_a_protocol_error() {
        let ok = |index| RecordOutcome::ok(index, WriteAction::Created);
        assert!(
            WriteReport::new(vec![ok(0), ok(0)])
                .check_complete(2)
                .is_err()
        );
        assert!(
            WriteReport::new(vec![ok(0), ok(5)])
                .check_complete(2)
                .is_err()
        );
        assert!(
            WriteReport::new(vec![ok(1), ok(0)])
                .check_complete(2)
                .is_ok()
        );
    }

    #[test]
    fn only_upsert_is_idempotent() {
        assert!(
            WriteMode::Upsert {
                key: vec!["Id".into()]
            }
            .is_idempotent()
        );
        assert!(!WriteMode::Append.is_idempotent());
        assert!(!WriteMode::Overwrite.is_idempotent());
    }
}
