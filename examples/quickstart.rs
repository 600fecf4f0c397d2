//! Quickstart: MoodBridge's real job on embedded defaults — no cloud account, no
//! credential to enter, nothing but loopback.
//!
//! 1. Start the embedded Salesforce sandbox (a local server speaking Salesforce's OAuth,
//!    REST and Bulk API 2.0) seeded with law firms: 2,500 Accounts, 7,500 Contacts and
//!    7,500 Cases. It fails 2 % of API calls with 503 / 429, as a busy org does.
//! 2. Connect to it as a host connects to a real org: OAuth client-credentials tokens, a
//!    Salesforce client with a retry policy and an instance allow-list.
//! 3. Sync Accounts, Contacts and Cases into the embedded SQLite warehouse through a
//!    pipeline (sanitising, validation), with a progress bar per stream. Above 2,000
//!    records a stream is read through Bulk API 2.0; checkpoints land in the state store
//!    only after the warehouse has flushed.
//! 4. Store a generated document for a case in the local object store (atomic write,
//!    SHA-256 computed while streaming, metadata beside it).
//! 5. Change records in the sandbox (as people would in Salesforce) and sync again: the
//!    incremental run moves only the changes.
//! 6. Print a summary: per stream read, written, failed, time and rate; where the data,
//!    the state and the document live.
//!
//! Run: `cargo run --example quickstart` (the data lands in a temporary directory; set
//! `MOODBRIDGE_QUICKSTART_DIR` to keep it elsewhere).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use moodbridge::engine::{Pipeline, ProgressEvent, RunReport, StreamProgress, SyncEngine};
use moodbridge::salesforce::bulk::PollOptions;
use moodbridge::salesforce::client::SalesforceClient;
use moodbridge::salesforce::sandbox::{Faults, RunningSandbox, Sandbox, SandboxConfig};
use moodbridge::salesforce::sync::SalesforceSource;
use moodbridge::sqlite::SqliteTableSink;
use moodbridge::state::SqliteStateStore;
use moodbridge::storage::{LocalObjectStore, PutOptions};
use moodbridge::{Error, ObjectKey, ObjectStoreExt, Policy, Result, RetryConfig};
use serde_json::{Value, json};

/// Law firms in the seeded org; each has 3 Contacts and 3 Cases.
const FIRMS: u32 = 2_500;

/// What moves and how: one stream per Salesforce object, each into its own table.
const PIPELINE: &str = r#"
name = "salesforce-to-warehouse"

[[streams]]
name = "Account"
target = "accounts"
deletes = "soft"   # a record deleted in Salesforce stays, marked _deleted / _deleted_at
sanitize = { trim = true, strip_control = true }
validate = [
  { rule = "required", field = "Name" },
  { rule = "pattern", field = "Website", regex = "^https://" },
]

[[streams]]
name = "Contact"
target = "contacts"
deletes = "soft"
sanitize = { trim = true, strip_control = true }
validate = [{ rule = "required", field = "LastName" }]

[[streams]]
name = "Case"
target = "cases"
deletes = "soft"
validate = [{ rule = "required", field = "Subject" }]
"#;

#[tokio::main]
async fn main() -> Result<()> {
    // RUST_LOG filtering (default warn), secrets scrubbed from every line.
    moodbridge::observe::logging::init();

    // Where the warehouse, the state and the documents live.
    let dir = match std::env::var_os("MOODBRIDGE_QUICKSTART_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join("moodbridge-quickstart"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::config(format!("cannot create {}", dir.display()))
            .with_hint("set MOODBRIDGE_QUICKSTART_DIR to a writable directory")
            .with_source(e)
    })?;

    // 1. The embedded Salesforce sandbox on 127.0.0.1 (a random port).
    println!("== starting the Salesforce sandbox ({FIRMS} firms, 3 contacts and 3 cases each)");
    let sandbox = Sandbox::new(SandboxConfig::default())
        .seed(FIRMS, 3, 2026)
        .start()
        .await?;
    sandbox.set_faults(Faults {
        error_rate: 0.02,
        seed: 11,
        ..Faults::default()
    });

    // 2. Connect as to any org: OAuth tokens, a retry policy, the instances we trust.
    let salesforce = connect(&sandbox).await?;
    println!(
        "== connected to {} (API v{})",
        sandbox.url(),
        salesforce.api_version()
    );

    // 3. The full sync into the warehouse, checkpointed in the state store.
    let state = Arc::new(SqliteStateStore::open(&dir.join("state.db")).await?);
    let warehouse = SqliteTableSink::open(&dir.join("warehouse.db")).await?;
    let source = SalesforceSource::new(salesforce.clone(), ["Account", "Contact", "Case"]).poll(
        PollOptions {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            ..PollOptions::default()
        },
    );
    let pipeline = Pipeline::from_toml(PIPELINE)?;
    let engine = SyncEngine::new(state);

    println!("== full sync: Salesforce -> warehouse");
    let full = with_progress_bars(&engine, engine.run(&pipeline, &source, &warehouse)).await?;
    sandbox.set_faults(Faults::default());

    // 4. A generated document for the first case, in the local object store.
    let documents = LocalObjectStore::open(dir.join("documents")).await?;
    let cases = warehouse.rows("cases").await?;
    let case = cases
        .first()
        .ok_or_else(|| Error::internal("the warehouse holds no case"))?;
    let case_id = text(case.get("Id"));
    let summary = format!(
        "CASE SUMMARY\n\nCase:     {case_id}\nSubject:  {}\nStatus:   {}\nPriority: {}\nAccount:  {}\n\nGenerated by the MoodBridge quickstart.\n",
        text(case.get("Subject")),
        text(case.get("Status")),
        text(case.get("Priority")),
        text(case.get("AccountId")),
    );
    let key = ObjectKey::new(format!("cases/{case_id}/summary.txt"))?;
    let stored = documents
        .put_bytes(
            &key,
            summary.into_bytes(),
            PutOptions::new()
                .content_type("text/plain; charset=utf-8")
                .metadata("case_id", &case_id),
        )
        .await?;
    println!(
        "== stored {key} ({} bytes, sha256 {})",
        stored.size,
        hex(&stored.sha256)
    );

    // 5. People change things in Salesforce; the next run moves only those.
    let changed = change_some_records(&salesforce).await?;
    println!(
        "== in Salesforce: {} accounts renamed, {} cases closed, {} case opened",
        changed.renamed, changed.closed, changed.opened
    );
    println!("== incremental sync: only the changes");
    let incremental =
        with_progress_bars(&engine, engine.run(&pipeline, &source, &warehouse)).await?;

    // 6. The summary.
    println!();
    println!(
        "{:<9} {:<12} {:>8} {:>8} {:>7} {:>9} {:>14}",
        "stream", "run", "read", "written", "failed", "time", "rate"
    );
    for (run, report) in [("full", &full), ("incremental", &incremental)] {
        for (stream, p) in &report.streams {
            println!(
                "{stream:<9} {run:<12} {:>8} {:>8} {:>7} {:>7.2} s {:>10.0} rec/s",
                p.read,
                p.written,
                p.failed,
                p.elapsed.as_secs_f64(),
                p.rate
            );
        }
    }
    let rows = |table: &'static str| {
        let warehouse = &warehouse;
        async move { warehouse.count(table).await }
    };
    println!();
    println!(
        "warehouse  {} (tables accounts: {}, contacts: {}, cases: {})",
        warehouse.path().display(),
        rows("accounts").await?,
        rows("contacts").await?,
        rows("cases").await?,
    );
    println!(
        "state      {} (runs, checkpoints, audit log, dead letters)",
        dir.join("state.db").display()
    );
    println!("documents  {} ({key})", dir.join("documents").display());

    // The quickstart checks its own result: a wrong count is a failure, not a summary.
    let expected_full = u64::from(FIRMS) * 7;
    let expected_changes = changed.renamed + changed.closed + changed.opened;
    let ok = full.counts.read == expected_full
        && full.counts.written == expected_full
        && full.counts.failed == 0
        && incremental.counts.read == expected_changes
        && incremental.counts.written == expected_changes
        && documents.get_bytes(&key).await?.len() as u64 == stored.size;
    sandbox.stop().await;
    if !ok {
        return Err(Error::internal(format!(
            "unexpected counts: full {:?} (expected {expected_full}), incremental {:?} (expected {expected_changes})",
            full.counts, incremental.counts
        )));
    }
    println!(
        "\nquickstart finished: {expected_full} records synced, then {expected_changes} changes; nothing failed."
    );
    Ok(())
}

/// A client of the sandbox, wired as for a real org: a token manager holding the
/// connected app's client-credentials grant (the sandbox's builder registers it; for a
/// real org see `connect` in examples/salesforce_sync.rs), a policy that retries
/// temporary failures with backoff, and an allow-list of the instances the client may be
/// sent to (a real org's are `*.my.salesforce.com`; the sandbox is on loopback).
async fn connect(sandbox: &RunningSandbox) -> Result<SalesforceClient> {
    let policy = Policy::builder("salesforce:sandbox")
        .retry(RetryConfig {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(200),
            ..RetryConfig::default()
        })
        .attempt_timeout(Duration::from_secs(30))
        .build();
    sandbox
        .client_builder("salesforce:sandbox")?
        .policy(policy)
        .connect()
        .await
}

/// Runs `run` while drawing one progress bar per stream from the engine's events.
async fn with_progress_bars(
    engine: &SyncEngine,
    run: impl std::future::Future<Output = Result<RunReport>>,
) -> Result<RunReport> {
    let mut events = engine.subscribe();
    let bars = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "  {msg:<8} [{bar:32}] {pos:>6}/{len:<6} {prefix:>12} {elapsed:>4}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let drawing = tokio::spawn(async move {
        let mut open: BTreeMap<String, indicatif::ProgressBar> = BTreeMap::new();
        while let Ok(event) = events.recv().await {
            match event {
                ProgressEvent::StreamStarted { stream, total, .. } => {
                    let bar = bars.add(indicatif::ProgressBar::new(total.unwrap_or(0)));
                    bar.set_style(style.clone());
                    bar.set_message(stream.clone());
                    open.insert(stream, bar);
                }
                ProgressEvent::Batch {
                    stream, progress, ..
                } => {
                    if let Some(bar) = open.get(&stream) {
                        draw(bar, &progress);
                    }
                }
                ProgressEvent::StreamFinished {
                    stream, progress, ..
                } => {
                    if let Some(bar) = open.get(&stream) {
                        draw(bar, &progress);
                        bar.finish();
                    }
                }
                ProgressEvent::RunFinished { .. } => break,
                _ => {}
            }
        }
    });
    let report = run.await;
    let _ = drawing.await;
    report
}

fn draw(bar: &indicatif::ProgressBar, progress: &StreamProgress) {
    if bar.length().unwrap_or(0) < progress.read {
        bar.set_length(progress.read);
    }
    bar.set_position(progress.read);
    bar.set_prefix(format!("{:.0} rec/s", progress.rate));
}

/// What [`change_some_records`] did.
struct Changes {
    renamed: u64,
    closed: u64,
    opened: u64,
}

/// Renames 5 firms, closes 10 open cases and opens one new case, through the REST API.
async fn change_some_records(sf: &SalesforceClient) -> Result<Changes> {
    let firms: Vec<Value> = sf
        .query("SELECT Id, Name FROM Account ORDER BY Name LIMIT 5")
        .try_collect()
        .await?;
    for firm in &firms {
        let name = format!("{} (merged)", text(firm.get("Name")));
        sf.update("Account", &text(firm.get("Id")), &json!({ "Name": name }))
            .await?;
    }
    let open_cases: Vec<Value> = sf
        .query("SELECT Id, AccountId FROM Case WHERE Status = 'New' LIMIT 10")
        .try_collect()
        .await?;
    for case in &open_cases {
        sf.update(
            "Case",
            &text(case.get("Id")),
            &json!({ "Status": "Closed" }),
        )
        .await?;
    }
    let account = firms
        .first()
        .map(|f| text(f.get("Id")))
        .ok_or_else(|| Error::internal("the org has no account"))?;
    sf.create(
        "Case",
        &json!({
            "Subject": "Merger due diligence",
            "Status": "New",
            "Priority": "High",
            "Origin": "Phone",
            "AccountId": account,
        }),
    )
    .await?;
    Ok(Changes {
        renamed: firms.len() as u64,
        closed: open_cases.len() as u64,
        opened: 1,
    })
}

/// A JSON value as display text (strings without quotes, missing as empty).
fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
