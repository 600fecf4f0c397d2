//! Contract test suites every implementation of a core trait must pass (feature
//! `testing`). Each suite panics with a message naming the broken rule.
//!
//! ```ignore
//! #[tokio::test]
//! async fn my_store_meets_the_contract() {
//!     moodbridge_core::testing::credential_store_contract(&MyStore::new(), "contract").await;
//! }
//! ```

use secrecy::{ExposeSecret, SecretString};

mod crash;
mod cursor;
mod events;
mod lease;
mod memory;
mod metrics;
mod queue;
mod resilience;
mod storage;
mod sync;
pub use crash::{CrashChild, crash_rng};
pub use cursor::cursor_store_contract;
pub use events::event_log_contract;
pub use lease::lease_store_contract;
pub use memory::{
    Faults, MemorySink, MemorySource, MemorySystem, account, account_columns, account_descriptor,
    push_account_row,
};
pub use metrics::{CounterValue, Counters, MetricsCapture};
pub use queue::{MemoryQueue, QueueFixture, message_queue_contract};
pub use resilience::{
    FaultInjector, FaultPlan, ResilienceCase, resilience_contract, resilience_contract_policy,
};
pub use storage::{
    ObjectStoreContract, cancel_midway, object_store_contract, object_store_round_trip,
    pattern_sha256, pattern_stream,
};
pub use sync::{
    SinkContract, SourceContract, sync_sink_contract, sync_sink_deletes_contract,
    sync_source_contract, sync_source_deletes_contract,
};

/// CPU seconds process `pid` has used so far, user and system (`/proc/<pid>/stat`,
/// counted in clock ticks of 1/100 s); 0 where there is no procfs. For benchmarks that
/// report CPU.
///
/// ```
/// let cpu = moodbridge_core::testing::cpu_seconds_of(std::process::id());
/// assert!(cpu >= 0.0);
/// ```
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis: utime and stime are the 12th
    // and 13th of them.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The Python of the test venv, where `scripts/test.sh` installs moto and the vendors'
/// Python clients (boto3, azure-storage-queue, azure-keyvault-secrets): beside
/// `MOODBRIDGE_MOTO_SERVER` when it is set, else `$MOODBRIDGE_VENV/bin/python`, else
/// `~/.cache/moodbridge/venv/bin/python`.
///
/// ```
/// let python = moodbridge_core::testing::venv_python();
/// assert!(python.ends_with("python"));
/// ```
pub fn venv_python() -> std::path::PathBuf {
    if let Ok(moto) = std::env::var("MOODBRIDGE_MOTO_SERVER") {
        return std::path::Path::new(&moto).with_file_name("python");
    }
    if let Ok(venv) = std::env::var("MOODBRIDGE_VENV") {
        return std::path::Path::new(&venv).join("bin").join("python");
    }
    let home = std::env::var("HOME").unwrap_or_default();
    std::path::PathBuf::from(format!("{home}/.cache/moodbridge/venv/bin/python"))
}

/// The Python of the second test venv, the one with snowflake-connector-python 5.x
/// (installed by scripts/test.sh): `MOODBRIDGE_SNOWFLAKE5_PYTHON` when it is set, else
/// `venv-snowflake5/bin/python` beside the main venv.
///
/// ```
/// let python = moodbridge_core::testing::snowflake5_python();
/// assert!(python.ends_with("python"));
/// ```
pub fn snowflake5_python() -> std::path::PathBuf {
    if let Some(python) = std::env::var_os("MOODBRIDGE_SNOWFLAKE5_PYTHON") {
        return std::path::PathBuf::from(python);
    }
    let main = venv_python();
    let beside = main
        .parent()
        .and_then(|bin| bin.parent())
        .and_then(|venv| venv.parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    beside.join("venv-snowflake5").join("bin").join("python")
}

/// The directory of the package whose test, bench or example is running: cargo's
/// `CARGO_MANIFEST_DIR` at run time, else `compiled` (pass `env!("CARGO_MANIFEST_DIR")`).
/// Run time first, because a build directory shared by two clones of the workspace
/// keeps binaries whose compile-time path is the other clone's.
///
/// ```
/// let dir = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"));
/// assert!(dir.join("Cargo.toml").is_file());
/// ```
pub fn package_dir(compiled: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(compiled))
}

/// The figures a benchmark's child process printed on its standard output (numbers
/// separated by white space), once it exited successfully.
///
/// # Panics
/// If the child failed (its standard error in the message) or printed something other
/// than numbers: a benchmark's failure report.
///
/// ```
/// let out = std::process::Command::new("echo").arg("1.5 2 3").output().unwrap();
/// assert_eq!(moodbridge_core::testing::child_figures("echo", out), [1.5, 2.0, 3.0]);
/// ```
pub fn child_figures(what: &str, output: std::process::Output) -> Vec<f64> {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{what} printed {v:?}, not a number"))
        })
        .collect()
}

/// This process's peak resident set (`VmHWM` in `/proc/self/status`), MiB; NaN where
/// there is no procfs. For benchmarks that report memory.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Every text `err` shows: its `Display` and `Debug`, and each cause's — what a test of
/// secrets in errors searches.
///
/// ```
/// let err = moodbridge_core::Error::internal("outer").with_source(std::io::Error::other("inner"));
/// let shown = moodbridge_core::testing::everything_shown(&err);
/// assert!(shown.contains("outer") && shown.contains("inner"));
/// ```
pub fn everything_shown(err: &crate::Error) -> String {
    let mut text = format!("{err}\n{err:?}\n");
    let mut next = std::error::Error::source(err);
    while let Some(cause) = next {
        text.push_str(&format!("{cause}\n{cause:?}\n"));
        next = cause.source();
    }
    text
}

/// Resets the peak resident set to the current one (Linux 4.0 and later), so the next
/// phase of a benchmark measures its own peak.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

use crate::credential::{CredentialStore, SecretVersion};
use crate::error::ErrorKind;
use crate::state::{
    AuditEntry, AuditOperation, ChainStatus, RunCounts, RunId, RunStatus, StateStore,
};
use crate::sync::Checkpoint;

fn s(v: &str) -> SecretString {
    SecretString::from(v.to_owned())
}

/// The [`CredentialStore`] contract, run under keys starting with `prefix/` (so a shared
/// service can be used; the suite deletes what it wrote).
pub async fn credential_store_contract(store: &dyn CredentialStore, prefix: &str) {
    let a = format!("{prefix}/app/client_secret");
    let b = format!("{prefix}/app/refresh_token");
    let other = format!("{prefix}-other/x");

    // A missing key is NotFound.
    let err = store
        .get(&a)
        .await
        .expect_err("get of a missing key must fail");
    assert_eq!(err.kind(), ErrorKind::NotFound, "missing key: {err}");

    // put makes three versions with distinct ids; get returns the current (last put).
    let mut versions = Vec::new();
    for v in ["one", "two", "three"] {
        let version = store.put(&a, s(v)).await.expect("put");
        assert!(!versions.contains(&version), "version ids are distinct");
        versions.push(version);
    }
    let [v1, v2, v3] = [
        versions[0].clone(),
        versions[1].clone(),
        versions[2].clone(),
    ];
    let current = store.get(&a).await.expect("get current");
    assert_eq!(current.version, v3);
    assert_eq!(current.value.expose_secret(), "three");
    assert_eq!(current.key, a);

    // Older versions stay readable (rotation).
    let first = store.get_version(&a, &v1).await.expect("get v1");
    assert_eq!(first.value.expose_secret(), "one");
    assert_eq!(first.version, v1);
    assert!(
        first.created_at <= current.created_at,
        "versions keep their creation times"
    );
    let unknown = SecretVersion::new("00000000000000000000000000000000");
    let err = store
        .get_version(&a, &unknown)
        .await
        .expect_err("a version that does not exist");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // Values round-trip exactly, unicode and empty included.
    store
        .put(&b, s("ключ 🔑 \n\t\"'"))
        .await
        .expect("put unicode");
    assert_eq!(
        store.get(&b).await.expect("get").value.expose_secret(),
        "ключ 🔑 \n\t\"'"
    );
    // An empty value round-trips, or is refused clearly (AWS Secrets Manager cannot
    // hold one) and the key keeps its value.
    match store.put(&b, s("")).await {
        Ok(_) => assert_eq!(store.get(&b).await.expect("get").value.expose_secret(), ""),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "an empty value: {e}");
            assert!(
                !e.hint().is_empty(),
                "an empty value's refusal says what to do: {e:?}"
            );
            assert_eq!(
                store.get(&b).await.expect("get").value.expose_secret(),
                "ключ 🔑 \n\t\"'"
            );
        }
    }
    store.put(&other, s("x")).await.expect("put other");

    // list by prefix, sorted, with versions; other prefixes excluded.
    let listed = store.list(&format!("{prefix}/")).await.expect("list");
    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        [a.as_str(), b.as_str()],
        "list is by prefix, sorted by key"
    );
    assert_eq!(listed[0].current, v3);
    assert_eq!(listed[0].pending, None);
    assert_eq!(listed[0].readable, [v1.clone(), v2.clone(), v3.clone()]);

    // retire: versions created before keep_from become unreadable; the current never.
    let retired = store.retire(&a, &v3).await.expect("retire");
    assert_eq!(retired, 2);
    let err = store
        .get_version(&a, &v1)
        .await
        .expect_err("a retired version must not be readable");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(store.get(&a).await.expect("current survives").version, v3);
    assert_eq!(
        store.retire(&a, &v3).await.expect("retire again"),
        0,
        "nothing left to retire"
    );
    let err = store
        .retire(&a, &unknown)
        .await
        .expect_err("retiring from a version that does not exist");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let listed = store.list(&a).await.expect("list one");
    assert_eq!(listed[0].readable, std::slice::from_ref(&v3));

    // A new version after retiring has a new id.
    let v4 = store.put(&a, s("four")).await.expect("put");
    assert!(![&v1, &v2, &v3].contains(&&v4), "a fresh version id");

    // Pending versions, where the store holds them.
    if store.can_stage() {
        let v5 = store.stage(&a, s("five")).await.expect("stage");
        assert_eq!(
            store.get(&a).await.expect("get").version,
            v4,
            "a staged version is not current"
        );
        assert_eq!(
            store
                .get_version(&a, &v5)
                .await
                .expect("read pending")
                .value
                .expose_secret(),
            "five"
        );
        let listed = store.list(&a).await.expect("list");
        assert_eq!(listed[0].current, v4);
        assert_eq!(listed[0].pending.as_ref(), Some(&v5));
        assert_eq!(
            store.retire(&a, &v5).await.expect("retire before pending"),
            1,
            "v3 goes; the current (v4) and the pending stay"
        );
        store.promote(&a, &v5).await.expect("promote");
        let current = store.get(&a).await.expect("get");
        assert_eq!(current.version, v5);
        assert_eq!(current.value.expose_secret(), "five");
        assert_eq!(
            store
                .get_version(&a, &v4)
                .await
                .expect("the previous version stays readable")
                .value
                .expose_secret(),
            "four"
        );
        let listed = store.list(&a).await.expect("list");
        assert_eq!(listed[0].pending, None);
        store.promote(&a, &v5).await.expect("promoting the current");
        let err = store
            .stage(&format!("{prefix}/app/never_put"), s("x"))
            .await
            .expect_err("staging a key with no current version");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    } else {
        let err = store
            .stage(&a, s("five"))
            .await
            .expect_err("a store that cannot stage says so");
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    }

    // Invalid keys are InvalidInput and never reach the backend.
    for bad in ["", "../etc/passwd", "a//b", "/abs", "sp ace"] {
        let err = store.get(bad).await.expect_err("invalid key");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "key {bad:?}: {err}");
        let err = store.put(bad, s("v")).await.expect_err("invalid key");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "key {bad:?}: {err}");
    }

    // delete removes every version; deleting again is fine.
    for key in [&a, &b, &other] {
        store.delete(key).await.expect("delete");
        store.delete(key).await.expect("delete twice");
        assert_eq!(
            store.get(key).await.expect_err("deleted").kind(),
            ErrorKind::NotFound
        );
    }
    assert!(store.list(prefix).await.expect("list").is_empty());

    // Secrets never show in Debug.
    store.put(&a, s("canary-7f3a9c")).await.expect("put");
    let secret = store.get(&a).await.expect("get");
    assert!(!format!("{secret:?}").contains("canary-7f3a9c"));
    store.delete(&a).await.expect("delete");
}

/// The [`StateStore`] contract. `pipeline` should be unique to the call (the suite reads
/// back what it wrote under it; the audit log is global, so the store should be fresh).
pub async fn state_store_contract(store: &dyn StateStore, pipeline: &str) {
    // Runs.
    let first = store.start_run(pipeline).await.expect("start run");
    let run = store.run(first).await.expect("read run");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.pipeline, pipeline);
    assert!(run.finished_at.is_none());
    let counts = RunCounts {
        read: 10,
        written: 9,
        failed: 1,
    };
    store.update_run(first, counts).await.expect("update run");
    assert_eq!(store.run(first).await.expect("read").counts, counts);
    // A running run's heartbeat: set at the start, moved by each beat.
    let started = run.heartbeat_at.expect("a new run has a heartbeat");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.heartbeat_run(first).await.expect("heartbeat");
    let beat = store
        .run(first)
        .await
        .expect("read")
        .heartbeat_at
        .expect("heartbeat");
    assert!(
        beat > started,
        "the heartbeat moved: {started:?} -> {beat:?}"
    );
    store
        .finish_run(first, RunStatus::Failed, counts, Some("sink unavailable"))
        .await
        .expect("finish run");
    let run = store.run(first).await.expect("read run");
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("sink unavailable"));
    assert!(run.finished_at.is_some());
    let second = store.start_run(pipeline).await.expect("start run");
    let recent = store.recent_runs(pipeline, 10).await.expect("recent runs");
    assert_eq!(
        recent.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second, first],
        "newest first"
    );
    assert_eq!(
        store.recent_runs(pipeline, 1).await.expect("recent").len(),
        1
    );
    let missing = RunId(i64::MAX);
    assert_eq!(
        store.run(missing).await.expect_err("no such run").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        store
            .finish_run(missing, RunStatus::Succeeded, counts, None)
            .await
            .expect_err("no such run")
            .kind(),
        ErrorKind::NotFound
    );

    // Checkpoints: per stream, monotonic sequence, opaque state round-trips.
    assert!(
        store
            .checkpoint(pipeline, "Case")
            .await
            .expect("read")
            .is_none()
    );
    for (i, cursor) in [
        "2026-11-20T10:00:00Z",
        "2026-11-20T11:00:00Z",
        "2026-11-21T09:30:00Z",
    ]
    .into_iter()
    .enumerate()
    {
        let state =
            serde_json::json!({"cursor": cursor, "ids_at_cursor": ["500A", "500B"], "n": i});
        let seq = store
            .commit_checkpoint(pipeline, &Checkpoint::new("Case", state.clone()), second)
            .await
            .expect("commit");
        assert_eq!(seq, i as i64 + 1, "sequences are monotonic");
        let stored = store
            .checkpoint(pipeline, "Case")
            .await
            .expect("read")
            .expect("committed");
        assert_eq!(stored.checkpoint.state, state);
        assert_eq!(stored.run, second);
        assert_eq!(stored.sequence, seq);
    }
    assert!(
        store
            .checkpoint(pipeline, "Account")
            .await
            .expect("read")
            .is_none(),
        "streams are separate"
    );
    let other = format!("{pipeline}-other");
    assert!(
        store
            .checkpoint(&other, "Case")
            .await
            .expect("read")
            .is_none(),
        "pipelines are separate"
    );

    // Audit: appended in order, chained, read back per run.
    let entry = |key: &str,
                 op: AuditOperation,
                 before: Option<serde_json::Value>,
                 after: Option<serde_json::Value>| AuditEntry {
        run: second,
        stream: "Case".into(),
        record_key: key.into(),
        operation: op,
        before,
        after,
        // A compact create keeps its image's digest.
        after_sha256: (op == AuditOperation::Create).then(|| "0f".repeat(32)),
        actor: "engine".into(),
    };
    let batch = vec![
        entry(
            "500A",
            AuditOperation::Create,
            None,
            Some(serde_json::json!({"Subject": "New"})),
        ),
        entry(
            "500B",
            AuditOperation::Update,
            Some(serde_json::json!({"Subject": "Old"})),
            Some(serde_json::json!({"Subject": "Ünïcödé ✓"})),
        ),
        entry(
            "500C",
            AuditOperation::Delete,
            Some(serde_json::json!({"Subject": "Gone"})),
            None,
        ),
    ];
    let seqs = store.append_audit(&batch).await.expect("append");
    assert_eq!(seqs.len(), 3);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive sequence numbers"
    );
    let more = store.append_audit(&batch[..1]).await.expect("append");
    assert_eq!(more, [seqs[2] + 1]);
    let records = store.audit(second).await.expect("read audit");
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].entry, batch[0], "the digest is kept");
    assert_eq!(records[1].entry, batch[1]);
    assert_eq!(
        records[1].prev_hash, records[0].hash,
        "each entry links to the one before"
    );
    assert!(store.audit(first).await.expect("read audit").is_empty());
    match store.verify_audit().await.expect("verify") {
        ChainStatus::Intact { entries } => assert!(entries >= 4),
        broken => panic!("a fresh chain must verify: {broken:?}"),
    }

    // A large append (a store may split it into several statements) stays one chain.
    let large: Vec<AuditEntry> = (0..1_203)
        .map(|i| {
            entry(
                &format!("500L{i}"),
                AuditOperation::Create,
                None,
                Some(serde_json::json!({"Subject": format!("Case {i}"), "N": i})),
            )
        })
        .collect();
    let seqs = store.append_audit(&large).await.expect("large append");
    assert_eq!(seqs.len(), large.len());
    assert_eq!(
        seqs[0],
        more[0] + 1,
        "the chain goes on from the last entry"
    );
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    let records = store.audit(second).await.expect("read audit");
    assert_eq!(records.len(), 4 + large.len());
    assert_eq!(records[4 + 700].entry, large[700]);
    match store.verify_audit().await.expect("verify") {
        ChainStatus::Intact { entries } => assert!(entries >= 4 + 1_203),
        broken => panic!("a chain appended in one large batch must verify: {broken:?}"),
    }
}

/// Every problem `T`'s validation finds in `settings` (the TOML of an integration's
/// `settings` table), as `path: problem (fix: …)` lines: for a connector's config tests.
///
/// ```
/// use moodbridge_core::config::{Validate, Validator};
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Settings { size: u32 }
/// impl Validate for Settings {
///     fn validate_into(&self, v: &mut Validator) {
///         if self.size == 0 { v.problem("size", "is 0", "use 1 or more"); }
///     }
/// }
/// let found = moodbridge_core::testing::settings_problems::<Settings>("size = 0");
/// assert_eq!(found.len(), 1);
/// assert!(found[0].starts_with("settings.size"), "{found:?}");
/// ```
pub fn settings_problems<T>(settings: &str) -> Vec<String>
where
    T: serde::de::DeserializeOwned + crate::config::Validate,
{
    let mut config = crate::IntegrationConfig::new("contract", "contract");
    config.settings = toml::from_str(settings).expect("the settings are TOML");
    let mut v = crate::config::Validator::new();
    config.check_settings::<T>(&mut v);
    v.finish()
        .err()
        .map(|p| p.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}
