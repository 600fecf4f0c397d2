//! The engine's pure parts (schedules, config checks). Its behaviour with a state store
//! is tested by every backend in `tests/engine_common`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use super::*;
use crate::config::Validate;
use crate::testing::{MemorySink, MemorySource};

fn two_way(conflicts: ConflictPolicy) -> BidirectionalConfig {
    BidirectionalConfig {
        name: "two-way".into(),
        stream: "Account".into(),
        key: vec!["Id".into()],
        ignore: vec!["SystemModstamp".into()],
        conflicts,
        batch_size: None,
    }
}

#[test]
fn schedules_give_the_next_slot_after_the_last_run() {
    let last = std::time::UNIX_EPOCH + Duration::from_secs(1_763_600_000); // 2025-11-20T00:53:20Z
    let every = Schedule::every(Duration::from_secs(900));
    assert_eq!(
        every.next_after(Some(last)).unwrap(),
        last + Duration::from_secs(900)
    );
    let hourly = Schedule::cron("0 0 * * * *").unwrap();
    assert_eq!(
        hourly.next_after(Some(last)).unwrap(),
        std::time::UNIX_EPOCH + Duration::from_secs(1_763_600_400) // 01:00:00Z
    );
    let err = Schedule::cron("61 * * * * *").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn a_bidirectional_config_reports_every_problem() {
    let mut config = two_way(ConflictPolicy::LastWriterWins {
        field: String::new(),
    });
    config.ignore.push("Id".into());
    let err = Error::from(config.validate().unwrap_err()).to_string();
    for part in ["ignore: lists key field Id", "conflicts.field: is empty"] {
        assert!(err.contains(part), "{part:?} missing from {err}");
    }
}

/// A state store in a temporary directory (kept while the first is held) and a pipeline
/// `name` of one stream, Account, in batches of 100.
async fn engine_setup(
    name: &str,
) -> (
    tempfile::TempDir,
    std::sync::Arc<crate::state::SqliteStateStore>,
    Pipeline,
) {
    let dir = tempfile::tempdir().unwrap();
    let state = std::sync::Arc::new(
        crate::state::SqliteStateStore::open(&dir.path().join("s.db"))
            .await
            .unwrap(),
    );
    let pipeline = Pipeline::from_toml(&format!(
        "name = \"{name}\"\n[[streams]]\nname = \"Account\"\nbatch_size = 100\n"
    ))
    .unwrap();
    (dir, state, pipeline)
}

#[test]
fn runs_count_records_checkpoints_and_runs_as_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let (_dir, state, pipeline) = engine_setup("m").await;
                SyncEngine::new(state)
                    .run(&pipeline, &MemorySource::accounts(250), &MemorySink::new())
                    .await
                    .unwrap();
            });
    });
    let mut seen = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if let DebugValue::Counter(n) = value {
            seen.insert(format!("{}{{{}}}", key.key().name(), labels.join(",")), n);
        }
    }
    let get = |k: &str| {
        seen.get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing from {seen:?}"))
    };
    assert_eq!(
        get("moodbridge_sync_records_total{pipeline=m,stream=Account,outcome=read}"),
        250
    );
    assert_eq!(
        get("moodbridge_sync_records_total{pipeline=m,stream=Account,outcome=written}"),
        250
    );
    assert_eq!(
        get("moodbridge_sync_checkpoints_total{pipeline=m,stream=Account}"),
        3
    );
    assert_eq!(
        get("moodbridge_sync_runs_total{pipeline=m,status=succeeded}"),
        1
    );
}

/// A stream that maps, sanitises and validates ends exactly the same read as rows (the
/// row path) as read as records: the sink's records, every dead letter (its source
/// record, stage and reason) and every audit entry.
#[test]
fn a_stream_read_as_rows_ends_as_read_as_records() {
    const PIPELINE: &str = r#"
name = "rows-or-records"
[[streams]]
name = "Account"
target = "accounts"
batch_size = 128
mapping = [
  { op = "rename", from = "BillingPostalCode", to = "postal_code" },
  { op = "cast", field = "NumberOfEmployees", to = "integer" },
  { op = "constant", field = "source", value = "salesforce" },
  { op = "default", field = "Fax", value = "none" },
  { op = "computed", field = "label", template = "{Name} ({BillingCity})" },
  { op = "drop", field = "IsDeleted" },
]
sanitize = { trim = true, strip_control = true, uppercase = ["BillingState"] }
validate = [
  { rule = "required", field = "Name" },
  { rule = "enum", field = "Rating", values = ["Hot", "Warm"] },
  { rule = "range", field = "AnnualRevenue", max = 100000000 },
]
"#;
    let run = |source: MemorySource| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let dir = tempfile::tempdir().unwrap();
                let state = std::sync::Arc::new(
                    crate::state::SqliteStateStore::open(&dir.path().join("s.db"))
                        .await
                        .unwrap(),
                );
                let sink = MemorySink::new();
                sink.reject_when(Some(std::sync::Arc::new(|r: &Record| {
                    (r.get("NumberOfEmployees")?.as_u64()? % 7 == 0)
                        .then(|| "refused: a multiple of seven".to_owned())
                })));
                let pipeline = Pipeline::from_toml(PIPELINE).unwrap();
                let report = SyncEngine::new(state.clone())
                    .run(&pipeline, &source, &sink)
                    .await
                    .unwrap();
                let letters: Vec<_> = state
                    .dead_letters("rows-or-records", None, 10_000)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|l| (serde_json::to_string(&l.record).unwrap(), l.stage, l.reason))
                    .collect();
                let audit: Vec<_> = state
                    .audit(report.run)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|a| (a.entry.record_key, a.entry.after, a.entry.after_sha256))
                    .collect();
                let held: Vec<String> = sink
                    .snapshot("accounts")
                    .values()
                    .map(|r| serde_json::to_string(r).unwrap())
                    .collect();
                (report.counts, held, letters, audit)
            })
    };
    let (counts, held, letters, audit) = run(MemorySource::accounts(1_000));
    let by_rows = run(MemorySource::account_rows(1_000));
    assert!(counts.written > 0 && counts.failed > 0, "{counts:?}");
    assert!(
        letters.iter().any(|l| l.1 == FailureStage::Write)
            && letters.iter().any(|l| l.1 == FailureStage::Validation),
        "both kinds of dead letter"
    );
    // A dead letter from the sink is the record as the source gave it.
    assert!(
        letters
            .iter()
            .all(|l| l.0.contains("\"BillingPostalCode\""))
    );
    assert_eq!(by_rows.0, counts);
    assert_eq!(by_rows.1, held);
    assert_eq!(by_rows.2, letters);
    assert_eq!(by_rows.3, audit);
}

#[test]
fn generated_account_rows_hold_the_accounts_values() {
    let mut rows = crate::rows::RowBatch::new("Account", crate::testing::account_columns());
    for i in [0, 1, 7, 12_345, 999_999] {
        crate::testing::push_account_row(i, &mut rows);
    }
    for (row, i) in rows.rows().zip([0, 1, 7, 12_345, 999_999]) {
        assert_eq!(
            serde_json::to_string(&row.to_record()).unwrap(),
            serde_json::to_string(&crate::testing::account(i)).unwrap()
        );
    }
}

/// A sink that notes the run in scope at each write, then writes to memory.
struct ScopeSeeing {
    inner: MemorySink,
    seen: std::sync::Mutex<Vec<Option<String>>>,
}

#[async_trait::async_trait]
impl SyncSink for ScopeSeeing {
    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        self.seen
            .lock()
            .unwrap()
            .push(crate::observe::RunScope::current().map(|s| {
                format!(
                    "{} from {} by {:?}",
                    s.tag(),
                    s.source().unwrap_or("?"),
                    s.source_jobs(&batch.stream)
                )
            }));
        self.inner.write(batch, mode).await
    }
}

/// A memory source that names where its streams live.
struct Named(MemorySource);

#[async_trait::async_trait]
impl SyncSource for Named {
    async fn discover(&self) -> Result<crate::Catalog> {
        self.0.discover().await
    }

    /// Notes a job of its own, as a source with server-side jobs does, from the stream's
    /// task.
    async fn read(&self, request: crate::sync::ReadRequest) -> Result<crate::sync::SourceStream> {
        use futures::StreamExt as _;
        let scope = crate::observe::RunScope::current();
        let stream = request.stream.clone();
        let messages = self.0.read(request).await?;
        Ok(messages
            .inspect(move |_| {
                if let Some(scope) = &scope {
                    scope.note_source_job(&stream, "job-7");
                }
            })
            .boxed())
    }

    async fn lineage_namespace(&self) -> Option<String> {
        Some("memory://accounts".into())
    }
}

#[tokio::test]
async fn a_sink_writes_inside_its_runs_scope() {
    let (_dir, state, pipeline) = engine_setup("scoped").await;
    let sink = ScopeSeeing {
        inner: MemorySink::new(),
        seen: std::sync::Mutex::new(Vec::new()),
    };
    let engine = SyncEngine::new(state);
    let first = engine
        .run(&pipeline, &Named(MemorySource::accounts(150)), &sink)
        .await
        .unwrap();
    let tag = format!(
        "moodbridge:scoped:run-{} from memory://accounts by [\"job-7\"]",
        first.run.0
    );
    assert_eq!(*sink.seen.lock().unwrap(), [Some(tag.clone()), Some(tag)]);
    assert!(crate::observe::RunScope::current().is_none());
}
