//! The data-movement contracts every [`SyncSource`] and [`SyncSink`] passes.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;

use crate::catalog::{FieldDescriptor, FieldType, StreamDescriptor, SyncMode};
use crate::error::{ErrorKind, Result};
use crate::record::{Record, RecordBatch, RecordKey};
use crate::sync::{
    Checkpoint, ReadRequest, SourceMessage, SyncSink, SyncSource, WriteAction, WriteMode,
};

/// What [`sync_source_contract`] reads.
#[derive(Debug, Clone, Copy)]
pub struct SourceContract<'a> {
    /// A stream that supports full and incremental reads, has a primary key and a cursor
    /// field, and holds at least 3 records.
    pub stream: &'a str,
    /// Records per batch asked for: small, so a read yields several batches and
    /// checkpoints (2 is a good value).
    pub batch_size: usize,
}

/// One read, collected: its records in order and its checkpoints with the number of
/// records read before each.
struct Read {
    records: Vec<Record>,
    /// Tombstones ([`SourceMessage::Deletes`]).
    deletes: Vec<Record>,
    checkpoints: Vec<(usize, Checkpoint)>,
}

async fn read_all<S: SyncSource + ?Sized>(source: &S, request: ReadRequest) -> Result<Read> {
    let stream = request.stream.clone();
    let mut messages = source.read(request).await?;
    let mut read = Read {
        records: Vec::new(),
        deletes: Vec::new(),
        checkpoints: Vec::new(),
    };
    while let Some(message) = messages.try_next().await? {
        let batch = match message {
            SourceMessage::Records(batch) => batch,
            SourceMessage::Rows(rows) => rows.to_records(),
            SourceMessage::Deletes(batch) => {
                assert_eq!(
                    batch.stream, stream,
                    "a delete batch of a read of {stream} names its stream"
                );
                read.deletes.extend(batch.records);
                continue;
            }
            SourceMessage::Checkpoint(checkpoint) => {
                assert_eq!(
                    checkpoint.stream, stream,
                    "a checkpoint of a read of {stream} names its stream"
                );
                read.checkpoints.push((read.records.len(), checkpoint));
                continue;
            }
        };
        assert_eq!(
            batch.stream, stream,
            "a batch of a read of {stream} names its stream"
        );
        read.records.extend(batch.records);
    }
    Ok(read)
}

fn keys_of(records: &[Record], key: &[String], what: &str) -> BTreeSet<RecordKey> {
    let mut keys = BTreeSet::new();
    for record in records {
        let k = record
            .key(key)
            .unwrap_or_else(|| panic!("{what}: a record lacks its key {key:?}: {record:?}"));
        assert!(keys.insert(k.clone()), "{what}: record {k} read twice");
    }
    keys
}

/// The [`SyncSource`] contract on `case.stream`:
///
/// 1. `discover` lists the stream (full and incremental, a primary key, a cursor);
///    `discover_streams` returns the streams asked for and leaves out an unknown name.
/// 2. A full read yields every record once, each with its key, in batches and
///    checkpoints that name the stream; `count_hint`, when known, is exact.
/// 3. A read with another stream's checkpoint is refused (`InvalidInput`).
/// 4. An incremental read from scratch yields the same records and ends with a
///    checkpoint; resumed from it with nothing changed, it yields nothing; resumed from
///    an earlier checkpoint, nothing is lost.
/// 5. After `change` (which changes or adds records in the platform and returns their
///    keys), an incremental read resumed from the last checkpoint yields exactly those.
pub async fn sync_source_contract<S: SyncSource + ?Sized>(
    source: &S,
    case: &SourceContract<'_>,
    change: impl AsyncFnOnce() -> Result<Vec<RecordKey>>,
) {
    let name = case.stream;
    // 1. Discovery.
    let catalog = source.discover().await.expect("discover");
    let stream = catalog
        .stream(name)
        .unwrap_or_else(|| panic!("discover lists {name}"))
        .clone();
    assert!(
        stream.supports(SyncMode::FullRefresh) && stream.supports(SyncMode::Incremental),
        "{name} supports full and incremental reads: {:?}",
        stream.sync_modes
    );
    assert!(!stream.primary_key.is_empty(), "{name} has a primary key");
    assert!(stream.cursor_field.is_some(), "{name} has a cursor field");
    let some = source
        .discover_streams(&[name, "NoSuchStreamOfTheContract"])
        .await
        .expect("discover_streams");
    let names: Vec<&str> = some.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [name],
        "discover_streams leaves out what the source lacks"
    );
    let key = stream.primary_key.clone();

    // 2. A full read.
    let request = ReadRequest::new(name, SyncMode::FullRefresh).batch_size(case.batch_size);
    let hint = source.count_hint(&request).await.expect("count_hint");
    let full = read_all(source, request).await.expect("a full read");
    let all = keys_of(&full.records, &key, "full read");
    assert!(
        all.len() >= 3,
        "{name} holds at least 3 records for the contract"
    );
    if let Some(n) = hint {
        assert_eq!(n, all.len() as u64, "count_hint is exact");
    }

    // 3. Someone else's checkpoint.
    let foreign = ReadRequest::new(name, SyncMode::Incremental)
        .resume_from(Checkpoint::new("SomeOtherStream", serde_json::json!({})));
    let refused = match source.read(foreign).await {
        Err(e) => e,
        Ok(mut messages) => match messages.try_next().await {
            Err(e) => e,
            Ok(_) => {
                panic!("a read of {name} resumed from another stream's checkpoint was accepted")
            }
        },
    };
    assert_eq!(refused.kind(), ErrorKind::InvalidInput, "{refused}");

    // 4. Incremental from scratch, then resumed.
    let request = ReadRequest::new(name, SyncMode::Incremental).batch_size(case.batch_size);
    let first = read_all(source, request.clone())
        .await
        .expect("an incremental read");
    assert_eq!(
        keys_of(&first.records, &key, "incremental read"),
        all,
        "an incremental read from scratch yields every record"
    );
    let (_, last) = first
        .checkpoints
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("an incremental read of {name} ends with a checkpoint"));
    let again = read_all(source, request.clone().resume_from(last.clone()))
        .await
        .expect("an incremental read resumed");
    assert!(
        again.records.is_empty(),
        "nothing changed, yet a resumed read yielded {} record(s)",
        again.records.len()
    );
    if let Some((before, early)) = first.checkpoints.first().cloned()
        && before < first.records.len()
    {
        let rest = read_all(source, request.clone().resume_from(early))
            .await
            .expect("a read resumed from an early checkpoint");
        let mut seen = keys_of(&first.records[..before], &key, "before the checkpoint");
        seen.extend(keys_of(&rest.records, &key, "after the checkpoint"));
        assert_eq!(
            seen, all,
            "resumed from an early checkpoint, nothing is lost"
        );
    }

    // 5. Changes, and only they, come next.
    let changed: BTreeSet<RecordKey> = change().await.expect("change").into_iter().collect();
    assert!(
        !changed.is_empty(),
        "the contract's change changes something"
    );
    let next = read_all(source, request.resume_from(last))
        .await
        .expect("an incremental read after changes");
    assert_eq!(
        keys_of(&next.records, &key, "read after changes"),
        changed,
        "an incremental read yields exactly the changed records"
    );
    assert!(
        !next.checkpoints.is_empty(),
        "a read that yielded records ends with a checkpoint"
    );
}

/// What [`sync_sink_contract`] writes.
pub struct SinkContract<'a> {
    /// The stream written; must start empty. Its `primary_key` is the upsert key.
    pub stream: StreamDescriptor,
    /// Record `i` at version `v`: a valid record with key `i`; other fields depend on
    /// `v` (the contract compares the fields it gave with what it reads back).
    pub record: &'a (dyn Fn(u64, u32) -> Record + Send + Sync),
    /// A record the sink refuses (a missing required field, a value it cannot hold …).
    pub bad_record: Record,
    /// Whether the sink replaces a stream's contents ([`WriteMode::Overwrite`]); a sink
    /// that cannot must say so with [`ErrorKind::Unsupported`].
    pub overwrite: bool,
}

impl SinkContract<'static> {
    /// The contract on a keyed stream of matters, for a sink that keeps any stream (a
    /// table per stream): `Matter`, keyed by `Docket` (`D-0001` …), whose `Title` changes
    /// with the version; the bad record has no `Docket`.
    ///
    /// ```
    /// let case = moodbridge_core::testing::SinkContract::matters(true);
    /// assert_eq!(case.stream.primary_key, ["Docket"]);
    /// assert!((case.record)(1, 2).get("Docket").is_some());
    /// assert!(case.bad_record.get("Docket").is_none());
    /// ```
    pub fn matters(overwrite: bool) -> Self {
        fn matter(i: u64, version: u32) -> Record {
            let mut r = Record::new();
            r.set("Docket", format!("D-{i:04}").into());
            r.set("Title", format!("Matter {i}, version {version}").into());
            r
        }
        let mut bad_record = Record::new();
        bad_record.set("Title", "a matter without a docket".into());
        SinkContract {
            stream: StreamDescriptor::new("Matter")
                .field(FieldDescriptor::new("Docket", FieldType::String).required())
                .field(FieldDescriptor::new("Title", FieldType::String))
                .primary_key(["Docket"]),
            record: &matter,
            bad_record,
            overwrite,
        }
    }
}

impl std::fmt::Debug for SinkContract<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkContract")
            .field("stream", &self.stream.name)
            .field("overwrite", &self.overwrite)
            .finish_non_exhaustive()
    }
}

/// The [`SyncSink`] contract. `read_back(stream)` returns the stream's records as the
/// platform holds them.
///
/// 1. Append: records written and flushed are durable (read back before
///    `commit_stream`), one outcome per record, all `Created`.
/// 2. Upsert by the primary key: a changed record is updated in place, a new one created.
/// 3. Re-delivering the same batch (a retried write) leaves the same end state: no
///    duplicate, no error.
/// 4. A bad record fails alone, with its reason; the rest of its batch is written.
/// 5. Overwrite: staged until `commit_stream`, then the stream holds exactly this
///    run's records — or, for a sink that cannot, `Unsupported`.
pub async fn sync_sink_contract<S: SyncSink + ?Sized>(
    sink: &S,
    case: &SinkContract<'_>,
    read_back: impl AsyncFn(&str) -> Result<Vec<Record>>,
) {
    let name = case.stream.name.clone();
    let key = case.stream.primary_key.clone();
    assert!(!key.is_empty(), "the contract's stream has a primary key");
    let record = |i: u64, v: u32| (case.record)(i, v);
    let batch = |records: Vec<Record>| RecordBatch::new(&name, records);
    let upsert = WriteMode::Upsert { key: key.clone() };

    // Expected contents: key → record as written.
    let expect = |records: &[Record]| -> BTreeMap<RecordKey, Record> {
        records
            .iter()
            .map(|r| {
                (
                    r.key(&key).expect("the case's records have keys"),
                    r.clone(),
                )
            })
            .collect()
    };
    let check = async |expected: &BTreeMap<RecordKey, Record>, when: &str| {
        let held = read_back(&name).await.expect("read_back");
        let mut by_key = BTreeMap::new();
        for r in held {
            let k = r
                .key(&key)
                .unwrap_or_else(|| panic!("{when}: a stored record lacks its key: {r:?}"));
            assert!(
                by_key.insert(k.clone(), r).is_none(),
                "{when}: record {k} is stored twice"
            );
        }
        assert_eq!(
            by_key.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{when}: the stream holds exactly the expected records"
        );
        for (k, want) in expected {
            let got = &by_key[k];
            for (field, value) in want.fields() {
                assert_eq!(
                    got.get(field),
                    Some(value),
                    "{when}: field {field} of record {k}"
                );
            }
        }
    };
    let write = async |records: Vec<Record>, mode: &WriteMode, when: &str| {
        let n = records.len();
        let report = sink
            .write(&batch(records), mode)
            .await
            .unwrap_or_else(|e| panic!("{when}: write failed: {e}"));
        report
            .check_complete(n)
            .unwrap_or_else(|e| panic!("{when}: {e}"));
        for (i, outcome) in report.outcomes.iter().enumerate() {
            assert_eq!(
                outcome.index, i,
                "{when}: outcomes follow the batch's order"
            );
        }
        report
    };

    // 1. Append, durable at flush.
    let v1: Vec<Record> = (0..3).map(|i| record(i, 1)).collect();
    sink.begin_stream(&case.stream, &WriteMode::Append)
        .await
        .expect("begin_stream (append)");
    let report = write(v1.clone(), &WriteMode::Append, "append").await;
    for o in &report.outcomes {
        assert_eq!(o.result, Ok(WriteAction::Created), "append creates: {o:?}");
    }
    sink.flush(&name).await.expect("flush");
    let mut expected = expect(&v1);
    check(&expected, "after append and flush").await;
    sink.commit_stream(&name, &WriteMode::Append)
        .await
        .expect("commit_stream (append)");

    // 2. Upsert: one changed, one new.
    sink.begin_stream(&case.stream, &upsert)
        .await
        .expect("begin_stream (upsert)");
    let changes = vec![record(1, 2), record(3, 1)];
    let report = write(changes.clone(), &upsert, "upsert").await;
    assert_eq!(
        report.outcomes[0].result,
        Ok(WriteAction::Updated),
        "{report:?}"
    );
    assert_eq!(
        report.outcomes[1].result,
        Ok(WriteAction::Created),
        "{report:?}"
    );
    sink.flush(&name).await.expect("flush");
    expected.extend(expect(&changes));
    check(&expected, "after upsert").await;

    // 3. The same batch again.
    let report = write(changes, &upsert, "re-delivered upsert").await;
    assert_eq!(
        report.succeeded(),
        2,
        "a re-delivered batch is written again without error: {report:?}"
    );
    sink.flush(&name).await.expect("flush");
    check(&expected, "after re-delivery").await;

    // 4. A bad record among good ones.
    let mixed = vec![record(4, 1), case.bad_record.clone(), record(5, 1)];
    let report = write(mixed, &upsert, "a batch with a bad record").await;
    assert!(report.outcomes[0].result.is_ok(), "{report:?}");
    assert!(report.outcomes[2].result.is_ok(), "{report:?}");
    match &report.outcomes[1].result {
        Ok(action) => panic!("the bad record was accepted ({action:?})"),
        Err(failure) => assert!(
            !failure.message.trim().is_empty(),
            "a failed record says why: {failure:?}"
        ),
    }
    sink.flush(&name).await.expect("flush");
    expected.extend(expect(&[record(4, 1), record(5, 1)]));
    check(&expected, "after a batch with a bad record").await;
    sink.commit_stream(&name, &upsert)
        .await
        .expect("commit_stream (upsert)");

    // 5. Overwrite.
    let begun = sink.begin_stream(&case.stream, &WriteMode::Overwrite).await;
    if !case.overwrite {
        let err = match begun {
            Err(e) => e,
            Ok(()) => sink
                .write(&batch(vec![record(0, 3)]), &WriteMode::Overwrite)
                .await
                .expect_err("a sink that cannot overwrite refuses an overwrite"),
        };
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        check(&expected, "after a refused overwrite").await;
        return;
    }
    begun.expect("begin_stream (overwrite)");
    let run = vec![record(0, 3), record(6, 1)];
    write(run.clone(), &WriteMode::Overwrite, "overwrite").await;
    sink.flush(&name).await.expect("flush");
    check(&expected, "an overwrite before its commit").await;
    sink.commit_stream(&name, &WriteMode::Overwrite)
        .await
        .expect("commit_stream (overwrite)");
    check(&expect(&run), "after the overwrite's commit").await;
}

/// The delete contract of a [`SyncSource`] that reports deletes, on `case.stream`:
/// after an incremental read to its end, `delete` deletes records in the platform and
/// returns their keys; the read resumed from the last checkpoint yields a tombstone
/// ([`SourceMessage::Deletes`]) for exactly those keys — each carrying the key fields —
/// and none of them as a live record, then a checkpoint; resumed from that, nothing.
pub async fn sync_source_deletes_contract<S: SyncSource + ?Sized>(
    source: &S,
    case: &SourceContract<'_>,
    delete: impl AsyncFnOnce() -> Result<Vec<RecordKey>>,
) {
    let name = case.stream;
    let catalog = source
        .discover_streams(&[name])
        .await
        .expect("discover_streams");
    let key = catalog
        .stream(name)
        .unwrap_or_else(|| panic!("discover lists {name}"))
        .primary_key
        .clone();
    let request = ReadRequest::new(name, SyncMode::Incremental).batch_size(case.batch_size);
    let first = read_all(source, request.clone())
        .await
        .expect("an incremental read");
    let (_, last) = first
        .checkpoints
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("an incremental read of {name} ends with a checkpoint"));
    let deleted: BTreeSet<RecordKey> = delete().await.expect("delete").into_iter().collect();
    assert!(
        !deleted.is_empty(),
        "the contract's delete deletes something"
    );
    let next = read_all(source, request.clone().resume_from(last))
        .await
        .expect("an incremental read after deletes");
    assert_eq!(
        keys_of(&next.deletes, &key, "tombstones"),
        deleted,
        "an incremental read reports exactly the deleted records"
    );
    for record in &next.records {
        let k = record.key(&key);
        assert!(
            k.as_ref().is_none_or(|k| !deleted.contains(k)),
            "a deleted record came back live: {record:?}"
        );
    }
    let (_, after) = next
        .checkpoints
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("a read that yielded tombstones ends with a checkpoint"));
    let again = read_all(source, request.resume_from(after))
        .await
        .expect("a read resumed after the tombstones");
    assert!(
        again.deletes.is_empty() && again.records.is_empty(),
        "resumed after its tombstones, a read yields nothing ({} tombstones, {} records)",
        again.deletes.len(),
        again.records.len()
    );
}

/// Whether a stored value marks a record deleted: `true`, or `1` where booleans are
/// integers.
fn marked(value: Option<&serde_json::Value>) -> bool {
    matches!(value, Some(serde_json::Value::Bool(true)))
        || value.and_then(serde_json::Value::as_i64) == Some(1)
}

/// The report of deleting a held record then a key the sink does not hold: one outcome
/// each, `Deleted` and a `NotFound` failure.
fn held_then_missing(report: &crate::sync::WriteReport, how: &str) {
    report.check_complete(2).expect("one outcome per tombstone");
    assert_eq!(
        report.outcomes[0].result,
        Ok(WriteAction::Deleted),
        "{report:?}"
    );
    match &report.outcomes[1].result {
        Err(f) => assert_eq!(f.kind, crate::sync::FailureKind::NotFound, "{f:?}"),
        Ok(a) => panic!("a key the sink does not hold was {how} ({a:?})"),
    }
}

/// The delete contract of a [`SyncSink`] on `case.stream` (which must start empty;
/// `read_back` as for [`sync_sink_contract`]):
///
/// 1. Soft delete (when `soft`): the record stays, [`DELETED`](crate::DELETED) marks it
///    and [`DELETED_AT`](crate::DELETED_AT) holds the tombstone's time; the other records
///    are untouched; the same tombstone again is `Unchanged`; a key the sink does not
///    hold fails alone with [`FailureKind::NotFound`](crate::FailureKind::NotFound);
///    the record written again is live. A sink that cannot says `Unsupported`.
/// 2. Hard delete: the record is gone, one outcome per tombstone, a missing key
///    `NotFound`.
pub async fn sync_sink_deletes_contract<S: SyncSink + ?Sized>(
    sink: &S,
    case: &SinkContract<'_>,
    soft: bool,
    read_back: impl AsyncFn(&str) -> Result<Vec<Record>>,
) {
    use crate::sync::{DELETED, DELETED_AT};
    let name = case.stream.name.clone();
    let key = case.stream.primary_key.clone();
    let record = |i: u64, v: u32| (case.record)(i, v);
    let upsert = WriteMode::Upsert { key: key.clone() };
    let tombstone = |i: u64, at: &str| {
        let mut t = Record::new();
        let full = record(i, 1);
        for k in &key {
            t.set(k, full.get(k).cloned().unwrap_or_default());
        }
        t.set(DELETED_AT, at.into());
        t
    };
    let held = async || -> BTreeMap<RecordKey, Record> {
        read_back(&name)
            .await
            .expect("read_back")
            .into_iter()
            .map(|r| (r.key(&key).expect("a stored record has its key"), r))
            .collect()
    };
    let key_of = |i: u64| {
        record(i, 1)
            .key(&key)
            .expect("the case's records have keys")
    };
    sink.begin_stream(&case.stream, &upsert)
        .await
        .expect("begin_stream");
    let report = sink
        .write(
            &RecordBatch::new(&name, (0..3).map(|i| record(i, 1)).collect()),
            &upsert,
        )
        .await
        .expect("write");
    assert_eq!(report.succeeded(), 3, "{report:?}");
    sink.flush(&name).await.expect("flush");

    // 1. Soft delete.
    let at = "2026-11-30T10:00:00.000Z";
    let batch = RecordBatch::new(&name, vec![tombstone(1, at), tombstone(99, at)]);
    match sink.soft_delete(&batch, &key).await {
        Err(e) => {
            assert!(!soft, "soft delete failed: {e}");
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        }
        Ok(report) => {
            assert!(
                soft,
                "the case says the sink cannot soft-delete, yet it did"
            );
            held_then_missing(&report, "soft-deleted");
            sink.flush(&name).await.expect("flush");
            let now = held().await;
            assert_eq!(now.len(), 3, "a soft-deleted record stays");
            let gone = &now[&key_of(1)];
            assert!(marked(gone.get(DELETED)), "{DELETED} marks it: {gone:?}");
            assert_eq!(
                gone.get(DELETED_AT).and_then(serde_json::Value::as_str),
                Some(at),
                "{DELETED_AT} holds the tombstone's time: {gone:?}"
            );
            for i in [0, 2] {
                let live = &now[&key_of(i)];
                assert!(
                    !marked(live.get(DELETED)),
                    "record {i} is untouched: {live:?}"
                );
            }
            let again = sink
                .soft_delete(&RecordBatch::new(&name, vec![tombstone(1, at)]), &key)
                .await
                .expect("soft delete again");
            assert_eq!(
                again.outcomes[0].result,
                Ok(WriteAction::Unchanged),
                "{again:?}"
            );
            let report = sink
                .write(&RecordBatch::new(&name, vec![record(1, 2)]), &upsert)
                .await
                .expect("write again");
            assert_eq!(report.succeeded(), 1, "{report:?}");
            sink.flush(&name).await.expect("flush");
            let back = &held().await[&key_of(1)];
            assert!(
                !marked(back.get(DELETED)),
                "written again, it is live: {back:?}"
            );
        }
    }

    // 2. Hard delete.
    let report = sink
        .delete(
            &RecordBatch::new(&name, vec![tombstone(2, at), tombstone(98, at)]),
            &key,
        )
        .await
        .expect("delete");
    held_then_missing(&report, "deleted");
    sink.flush(&name).await.expect("flush");
    let now = held().await;
    assert!(!now.contains_key(&key_of(2)), "a deleted record is gone");
    assert_eq!(now.len(), 2);
    sink.commit_stream(&name, &upsert)
        .await
        .expect("commit_stream");
}
