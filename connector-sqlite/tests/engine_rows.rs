//! The engine writing rows (column-shaped batches) into the SQLite warehouse: passed
//! through as rows when the stream does not map, as records when it does; the audit keeps
//! each row's digest (or its image, when asked), the dead letters are the rows as
//! records, and a run of rows is rolled back exactly.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;

use connector_sqlite::SqliteTableSink;
use futures::StreamExt;
use moodbridge_core::engine::{Pipeline, SyncEngine};
use moodbridge_core::state::{AuditLevel, AuditOperation, StateStore, image_sha256};
use moodbridge_core::{
    Checkpoint, ReadRequest, Record, RecordBatch, Result, RowBatch, SourceMessage,
    StreamDescriptor, SyncSink, SyncSource, WriteMode, WriteReport,
};

/// A source whose read yields the given rows, then a checkpoint.
struct RowsSource {
    descriptor: StreamDescriptor,
    rows: Vec<RowBatch>,
}

#[async_trait::async_trait]
impl SyncSource for RowsSource {
    async fn discover(&self) -> Result<moodbridge_core::Catalog> {
        Ok(moodbridge_core::Catalog::new(vec![self.descriptor.clone()]))
    }

    async fn read(&self, request: ReadRequest) -> Result<moodbridge_core::sync::SourceStream> {
        let mut messages: Vec<Result<SourceMessage>> = self
            .rows
            .iter()
            .cloned()
            .map(|r| Ok(SourceMessage::Rows(r)))
            .collect();
        messages.push(Ok(SourceMessage::Checkpoint(Checkpoint::new(
            &request.stream,
            serde_json::json!({"done": true}),
        ))));
        Ok(futures::stream::iter(messages).boxed())
    }
}

/// A warehouse that counts the batches it was given as records and as rows.
struct Counting {
    inner: SqliteTableSink,
    records: std::sync::atomic::AtomicUsize,
    rows: std::sync::atomic::AtomicUsize,
}

impl Counting {
    async fn open(path: &std::path::Path) -> Self {
        Counting {
            inner: SqliteTableSink::open(path).await.unwrap(),
            records: Default::default(),
            rows: Default::default(),
        }
    }

    fn calls(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.records.load(SeqCst), self.rows.load(SeqCst))
    }
}

#[async_trait::async_trait]
impl SyncSink for Counting {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        self.inner.begin_stream(stream, mode).await
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        self.records
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.write(batch, mode).await
    }

    async fn write_rows(&self, rows: &RowBatch, mode: &WriteMode) -> Result<WriteReport> {
        self.rows.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.write_rows(rows, mode).await
    }

    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        self.inner.delete(batch, key).await
    }

    async fn flush(&self, stream: &str) -> Result<()> {
        self.inner.flush(stream).await
    }
}

/// A state store and a counting warehouse in a temporary directory.
async fn warehouse() -> (
    tempfile::TempDir,
    Arc<moodbridge_core::state::SqliteStateStore>,
    Counting,
) {
    let dir = tempfile::tempdir().unwrap();
    let state = moodbridge_core::state::SqliteStateStore::open(&dir.path().join("s.db"))
        .await
        .unwrap();
    let sink = Counting::open(&dir.path().join("w.db")).await;
    (dir, Arc::new(state), sink)
}

fn contact_rows() -> RowsSource {
    use moodbridge_core::{Column, ColumnKind, FieldDescriptor, FieldType};
    let mut rows = RowBatch::new(
        "Contact",
        vec![
            Column::new("Id", ColumnKind::Text),
            Column::new("Name", ColumnKind::Text),
            Column::new("Age", ColumnKind::Integer),
        ],
    );
    rows.push_row([Some("003A"), Some("Ann"), Some("41")])
        .unwrap();
    rows.push_row([Some("003B"), Some("Bob"), None]).unwrap();
    rows.push_row([None, Some("Nobody"), Some("3")]).unwrap();
    RowsSource {
        descriptor: StreamDescriptor::new("Contact")
            .field(FieldDescriptor::new("Id", FieldType::String))
            .field(FieldDescriptor::new("Name", FieldType::String))
            .field(FieldDescriptor::new("Age", FieldType::Integer))
            .primary_key(["Id"]),
        rows: vec![rows],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_reach_the_warehouse_as_they_are_with_audit_and_dead_letters() {
    let (_dir, state, sink) = warehouse().await;
    let source = contact_rows();
    let pipeline =
        Pipeline::from_toml("name = \"rows\"\n[[streams]]\nname = \"Contact\"\n").unwrap();
    let report = SyncEngine::new(state.clone())
        .run(&pipeline, &source, &sink)
        .await
        .unwrap();
    assert_eq!(
        (
            report.counts.read,
            report.counts.written,
            report.counts.failed
        ),
        (3, 2, 1)
    );
    assert_eq!(sink.calls(), (0, 1), "the rows were written as rows");
    let expected = source.rows[0].to_records().records;
    // (The warehouse's rows leave out null fields.)
    assert_eq!(
        sink.inner.rows("Contact").await.unwrap(),
        [
            serde_json::json!({"Id": "003A", "Name": "Ann", "Age": 41}),
            serde_json::json!({"Id": "003B", "Name": "Bob"})
        ]
        .map(|v| Record::from_json(v).unwrap())
    );
    // A compact audit keeps each create's key and its row's digest as a record; the
    // dead letter is the row as a record.
    let audit = state.audit(report.run).await.unwrap();
    let after: Vec<_> = audit
        .iter()
        .map(|a| (a.entry.after.clone(), a.entry.after_sha256.clone()))
        .collect();
    assert_eq!(
        after,
        [
            (
                Some(serde_json::json!({"Id": "003A"})),
                Some(image_sha256(expected[0].fields()))
            ),
            (
                Some(serde_json::json!({"Id": "003B"})),
                Some(image_sha256(expected[1].fields()))
            ),
        ]
    );
    // Ann has no null field, so the warehouse's row is her image: its digest matches.
    let held = sink.inner.rows("Contact").await.unwrap();
    assert_eq!(
        Some(image_sha256(held[0].fields())),
        audit[0].entry.after_sha256
    );
    assert_eq!(audit[0].entry.record_key, "003A");
    let letters = state.dead_letters("rows", None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].record, expected[2]);
    assert!(
        letters[0].reason.contains("no value for key"),
        "{}",
        letters[0].reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_stream_that_maps_are_mapped_as_rows() {
    let (_dir, state, sink) = warehouse().await;
    let pipeline = Pipeline::from_toml(
        "name = \"mapped\"\naudit = false\n[[streams]]\nname = \"Contact\"\nmapping = [{ op = \"rename\", from = \"Name\", to = \"FullName\" }]\n",
    )
    .unwrap();
    let report = SyncEngine::new(state.clone())
        .run(&pipeline, &contact_rows(), &sink)
        .await
        .unwrap();
    assert_eq!((report.counts.written, report.counts.failed), (2, 1));
    assert_eq!(sink.calls(), (0, 1), "mapped rows are written as rows");
    let rows = sink.inner.rows("Contact").await.unwrap();
    assert_eq!(rows[0].get("FullName"), Some(&serde_json::json!("Ann")));
    assert_eq!(rows[0].get("Name"), None);
    // The row the warehouse refused (no key) is dead-lettered as the source gave it.
    let letters = state.dead_letters("mapped", None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].record,
        contact_rows().rows[0].to_records().records[2]
    );
}

/// Contacts as rows: `(Id, Name, Age)` each.
fn contacts(rows: &[(&str, &str, Option<&str>)]) -> RowsSource {
    let mut source = contact_rows();
    let mut batch = RowBatch::new("Contact", source.rows[0].columns().to_vec());
    for (id, name, age) in rows {
        batch.push_row([Some(*id), Some(*name), *age]).unwrap();
    }
    source.rows = vec![batch];
    source
}

/// Creates, then updates and more creates, rolled back run by run at every audit level
/// that keeps one: the warehouse is exactly as it was before each run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_rows_is_rolled_back_exactly_at_every_audit_level() {
    for level in ["compact", "full"] {
        let (_dir, state, sink) = warehouse().await;
        let pipeline = Pipeline::from_toml(&format!(
            "name = \"rows\"\naudit = \"{level}\"\n[[streams]]\nname = \"Contact\"\n"
        ))
        .unwrap();
        assert_ne!(pipeline.config().audit, AuditLevel::Off);
        let engine = SyncEngine::new(state.clone());
        let first = contacts(&[
            ("003A", "Ann", Some("41")),
            ("003B", "Bob", None),
            ("003C", "Cy", Some("7")),
        ]);
        let one = engine.run(&pipeline, &first, &sink).await.unwrap();
        let after_one = sink.inner.rows("Contact").await.unwrap();
        assert_eq!(after_one.len(), 3);

        // Ann changes age, Bob gains one, Cy is as he was, Dee is new.
        let second = contacts(&[
            ("003A", "Ann", Some("42")),
            ("003B", "Bob", Some("30")),
            ("003C", "Cy", Some("7")),
            ("003D", "Dee", None),
        ]);
        let two = engine.run(&pipeline, &second, &sink).await.unwrap();
        let audit = state.audit(two.run).await.unwrap();
        let ops: Vec<_> = audit.iter().map(|a| a.entry.operation).collect();
        assert_eq!(
            ops,
            [
                AuditOperation::Update,
                AuditOperation::Update,
                AuditOperation::Create
            ],
            "{level}"
        );
        if level == "compact" {
            // An update keeps its before-image and only what changed.
            assert_eq!(audit[0].entry.after, Some(serde_json::json!({"Age": 42})));
            assert_eq!(
                audit[0].entry.before.as_ref().unwrap()["Age"],
                serde_json::json!(41)
            );
            assert_eq!(audit[1].entry.after, Some(serde_json::json!({"Age": 30})));
            assert_eq!(
                audit[2].entry.after,
                Some(serde_json::json!({"Id": "003D"}))
            );
        } else {
            assert_eq!(
                audit[0].entry.after,
                Some(serde_json::json!({"Id": "003A", "Name": "Ann", "Age": 42}))
            );
            assert!(audit.iter().all(|a| a.entry.after_sha256.is_none()));
        }

        engine
            .rollback(&pipeline, two.run, &second, &sink, "ops")
            .await
            .unwrap();
        assert_eq!(
            sink.inner.rows("Contact").await.unwrap(),
            after_one,
            "{level}: as after the first run"
        );
        engine
            .rollback(&pipeline, one.run, &first, &sink, "ops")
            .await
            .unwrap();
        assert!(
            sink.inner.rows("Contact").await.unwrap().is_empty(),
            "{level}: as before the first run"
        );
        assert!(matches!(
            state.verify_audit().await.unwrap(),
            moodbridge_core::state::ChainStatus::Intact { .. }
        ));
    }
}
