//! Scale-out with real processes: two worker processes share one pipeline through the
//! PostgreSQL state store. The one that holds the lease is killed (SIGKILL) mid-run;
//! the other takes over once the lease lapses, marks the orphaned run failed, resumes
//! from the last committed checkpoint and finishes with the exact result.
//!
//! The workers are this test binary re-run with `--ignored --exact worker_child`.
//! `scripts/test.sh` starts PostgreSQL and sets `MOODBRIDGE_TEST_POSTGRES_URL`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_sqlite::SqliteTableSink;
use moodbridge_core::engine::{
    Job, Pipeline, PipelineConfig, Schedule, StreamConfig, SyncEngine, Worker,
};
use moodbridge_core::state::{PostgresStateStore, RunStatus, StateStore};
use moodbridge_core::testing::{Faults, MemorySource, account, account_descriptor};
use moodbridge_core::{SyncSink, WriteMode};
use sqlx::Connection;

mod pg_support;

const RECORDS: u64 = 20_000;

fn pipeline() -> Pipeline {
    let mut stream = StreamConfig::new("Account");
    stream.batch_size = Some(500);
    let mut config = PipelineConfig::new("scale", vec![stream]);
    config.audit = moodbridge_core::state::AuditLevel::Off;
    Pipeline::new(config).unwrap()
}

#[test]
#[ignore = "a worker process of another_worker_resumes_the_run_of_a_killed_one"]
fn worker_child() {
    let url = std::env::var("MB_WORKER_DB").expect("run by the scale-out test only");
    let dir = std::env::var("MB_WORKER_DIR").unwrap();
    let id = std::env::var("MB_WORKER_ID").unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let state = Arc::new(PostgresStateStore::connect(&url).await.unwrap());
            let sink = SqliteTableSink::open(&Path::new(&dir).join("warehouse.db"))
                .await
                .unwrap();
            let source = MemorySource::accounts(RECORDS);
            // Slow pages, so that the run is still going when the test kills it.
            source.inject(Faults {
                error_rate: 0.0,
                latency: Duration::from_millis(40),
                seed: 1,
            });
            let job = Job::new(
                pipeline(),
                Arc::new(source),
                Arc::new(sink),
                Schedule::every(Duration::from_secs(3600)),
            );
            Worker::new(SyncEngine::new(state), id, vec![job])
                .lease_ttl(Duration::from_millis(900))
                .poll_every(Duration::from_millis(50))
                .run_until(std::future::pending::<()>())
                .await
                .unwrap();
        });
}

fn spawn_worker(url: &str, dir: &Path, id: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "worker_child", "--test-threads=1"])
        .env("MB_WORKER_DB", url)
        .env("MB_WORKER_DIR", dir)
        .env("MB_WORKER_ID", id)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills the workers however the test ends.
struct Workers(Vec<(String, Child)>);

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn lease_holder(url: &str) -> Option<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT holder FROM leases WHERE name = 'pipeline:scale'",
    )
    .fetch_optional(&mut conn)
    .await
    .unwrap()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_worker_resumes_the_run_of_a_killed_one() {
    let url = pg_support::fresh_database("scale_test").await;
    let state = PostgresStateStore::connect(&url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);

    let mut workers = Workers(vec![
        ("w1".into(), spawn_worker(&url, dir.path(), "w1")),
        ("w2".into(), spawn_worker(&url, dir.path(), "w2")),
    ]);

    // Wait until the run is under way: a checkpoint committed, the lease held.
    let holder = loop {
        assert!(Instant::now() < deadline, "no worker started the pipeline");
        if state
            .checkpoint("scale", "Account")
            .await
            .unwrap()
            .is_some()
            && let Some(h) = lease_holder(&url).await
        {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = state.recent_runs("scale", 1).await.unwrap().remove(0);
    assert_eq!(first.status, RunStatus::Running);

    // Kill the holder mid-run.
    let victim = workers.0.iter().position(|(id, _)| *id == holder).unwrap();
    let (_, mut child) = workers.0.remove(victim);
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = std::time::SystemTime::now();
    let at_kill = state.checkpoint("scale", "Account").await.unwrap().unwrap();

    // The survivor takes over and finishes.
    let runs = loop {
        assert!(
            Instant::now() < deadline,
            "the survivor did not finish the run"
        );
        let runs = state.recent_runs("scale", 10).await.unwrap();
        if runs.len() >= 2 && runs[0].status == RunStatus::Succeeded {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(workers);

    assert_eq!(
        runs.len(),
        2,
        "one run killed, one that resumed it: {runs:?}"
    );
    let (second, first) = (&runs[0], &runs[1]);
    assert_eq!(first.status, RunStatus::Failed);
    assert!(
        first.error.as_deref().unwrap().contains("lease"),
        "{:?}",
        first.error
    );
    assert!(
        second.started_at >= killed_at,
        "the second run started only after the first worker died"
    );
    assert!(
        second.counts.read < RECORDS,
        "it resumed from the checkpoint, not from the start: read {}",
        second.counts.read
    );
    let last = state.checkpoint("scale", "Account").await.unwrap().unwrap();
    assert!(last.sequence > at_kill.sequence);

    let sink = SqliteTableSink::open(&dir.path().join("warehouse.db"))
        .await
        .unwrap();
    let mode = WriteMode::Upsert {
        key: vec!["Id".into()],
    };
    sink.begin_stream(&account_descriptor(), &mode)
        .await
        .unwrap();
    let rows = sink.rows("Account").await.unwrap();
    assert_eq!(rows.len() as u64, RECORDS);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(*row, account(i as u64), "record {i}");
    }
}
