//! Quickstart: the core of the SDK at work, with no cloud account and no network.
//!
//! It shows how a host wires the SDK:
//! 1. describe integrations in TOML, validate them (every problem reported at once);
//! 2. build them through the registry (compile-time plugins: here a demo connector defined
//!    in this file; real hosts get Salesforce, S3 … from cargo features);
//! 3. read a stream through the policy configured in TOML — a flaky platform is retried
//!    with backoff, a dead one trips the circuit breaker and health reports it;
//! 4. sync 10,000 Salesforce-shaped Accounts into the embedded SQLite warehouse through a
//!    validating pipeline, with a progress bar, then run it again incrementally: the
//!    checkpoint says there is nothing new;
//! 5. print a summary.
//!
//! Run: `cargo run --example quickstart`. (The quickstart issue turns this into the full
//! Salesforce-sandbox → warehouse sync.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use moodbridge::registry::{BuildContext, IntegrationFactory};
use moodbridge::resilience::LayerExt;
use moodbridge::{
    Capabilities, Capability, Catalog, Checkpoint, Error, FieldDescriptor, FieldType, HealthReport,
    HealthStatus, PlatformIntegration, ReadRequest, Record, RecordBatch, Result, SdkConfig,
    SourceMessage, SourceStream, StreamDescriptor, SyncMode, SyncSource,
};
use serde::Deserialize;
use serde_json::json;

/// Settings of the demo connector, read from `[integration.settings]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoSettings {
    /// How many cases the demo platform holds.
    cases: u32,
    /// Every how-many-th call fails with a temporary error (0 = never).
    fail_every: u32,
}

/// A pretend case-management platform: it serves `cases` Case records and fails every
/// `fail_every`-th call with 503, like a platform under load.
struct DemoPlatform {
    id: String,
    settings: DemoSettings,
    calls: AtomicU32,
}

impl DemoPlatform {
    fn answer(&self) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.settings.fail_every > 0 && n.is_multiple_of(self.settings.fail_every) {
            return Err(Error::unavailable(format!(
                "503 Service Unavailable (call {n})"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl PlatformIntegration for DemoPlatform {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &str {
        "demo"
    }
    async fn capabilities(&self) -> Result<Capabilities> {
        Ok([Capability::Read, Capability::Incremental]
            .into_iter()
            .collect())
    }
    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        HealthReport::from_result(started.elapsed(), self.answer())
    }
    fn as_sync_source(self: Arc<Self>) -> Option<Arc<dyn SyncSource>> {
        Some(self)
    }
}

#[async_trait]
impl SyncSource for DemoPlatform {
    async fn discover(&self) -> Result<Catalog> {
        self.answer()?;
        Ok(Catalog::new(vec![
            StreamDescriptor::new("Case")
                .field(FieldDescriptor::new("Id", FieldType::String).required())
                .field(FieldDescriptor::new("Subject", FieldType::String))
                .field(FieldDescriptor::new("SystemModstamp", FieldType::DateTime).required())
                .primary_key(["Id"])
                .cursor("SystemModstamp"),
        ]))
    }

    async fn read(&self, request: ReadRequest) -> Result<SourceStream> {
        self.answer()?;
        let (total, size) = (self.settings.cases as usize, request.batch_size);
        let stream = request.stream.clone();
        let pages = (0..total).step_by(size).flat_map(move |start| {
            let records = (start..(start + size).min(total))
                .map(|i| {
                    Record::from_json(json!({
                        "Id": format!("500{i:012}"),
                        "Subject": format!("Matter #{i}: contract review"),
                        "SystemModstamp": format!("2026-11-21T10:{:02}:00Z", i % 60),
                    }))
                })
                .collect::<Result<Vec<_>>>();
            let checkpoint = Checkpoint::new(&stream, json!({ "offset": start + size }));
            [
                records.map(|r| SourceMessage::Records(RecordBatch::new(&stream, r))),
                Ok(SourceMessage::Checkpoint(checkpoint)),
            ]
        });
        Ok(futures::stream::iter(pages).boxed())
    }
}

struct DemoFactory;

#[async_trait]
impl IntegrationFactory for DemoFactory {
    fn kind(&self) -> &'static str {
        "demo"
    }

    fn validate(
        &self,
        config: &moodbridge::IntegrationConfig,
        v: &mut moodbridge::config::Validator,
    ) {
        match config.settings::<DemoSettings>() {
            Ok(s) if s.cases == 0 => v.problem("settings.cases", "is 0", "serve at least one case"),
            Ok(_) => {}
            Err(e) => v.problem("settings", e.message().to_owned(), e.hint().to_owned()),
        }
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        Ok(Arc::new(DemoPlatform {
            id: ctx.config.id.clone(),
            settings: ctx.config.settings()?,
            calls: AtomicU32::new(0),
        }))
    }
}

const CONFIG: &str = r#"
[[integration]]
id = "demo:cases"
kind = "demo"
settings = { cases = 5000, fail_every = 2 }

[integration.policy]
timeout = "30s"
attempt_timeout = "5s"
max_concurrency = 4

[integration.policy.retry]
max_attempts = 4
initial_backoff = "50ms"
max_backoff = "1s"

[integration.policy.circuit_breaker]
consecutive_failures = 3
open_for = "10s"

[integration.policy.rate_limit]
rate = 50
per = "second"
"#;

const BROKEN: &str = r#"
[[integration]]
id = "cases"
kind = "demo"
settings = { cases = 0, fail_every = 3 }
[integration.policy.retry]
max_attempts = 0

[[integration]]
id = "salesfroce:prod"
kind = "salesfroce"
"#;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,moodbridge_core=info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .compact()
        .init();

    // 1. Register the connector factories this host uses.
    let mut registry = moodbridge::registry();
    registry.register(Arc::new(DemoFactory))?;

    // A broken config: every problem is reported at once, with the fix.
    println!("== validating a broken config");
    let broken = SdkConfig::from_toml(BROKEN)?;
    if let Err(e) = registry.validate(&broken) {
        println!("{}\n", e.message());
    }

    // 2. Build the integrations of a good config.
    let config = SdkConfig::from_toml(CONFIG)?;
    let integrations = registry.build_all(&config, None).await?;
    let built = integrations
        .get("demo:cases")
        .ok_or_else(|| Error::internal("demo:cases was not built"))?;
    println!("== built {} integration(s)", integrations.len());

    // 3. Read every Case through the policy from the config: every second call fails with
    //    503 and is retried with backoff.
    let source = Arc::clone(&built.integration)
        .as_sync_source()
        .ok_or_else(|| Error::internal("demo:cases is not a source"))?
        .layer(built.policy.clone());
    let started = Instant::now();
    let catalog = source.discover().await?;
    let stream = catalog
        .stream("Case")
        .ok_or_else(|| Error::internal("no Case stream"))?;
    let request = ReadRequest::new(&stream.name, SyncMode::Incremental).batch_size(500);
    request.check_against(stream)?;
    let mut messages = source.read(request).await?;
    let (mut records, mut checkpoints) = (0usize, 0usize);
    while let Some(message) = messages.next().await {
        match message? {
            SourceMessage::Records(batch) => records += batch.len(),
            SourceMessage::Checkpoint(_) => checkpoints += 1,
        }
    }
    let took = started.elapsed();
    println!(
        "== read {records} Case records and {checkpoints} checkpoints in {:.1} ms",
        took.as_secs_f64() * 1e3,
    );

    // 4. The platform goes down: the breaker opens after 3 failures and health says so
    //    without calling the platform again.
    let dead = Arc::new(DemoPlatform {
        id: "demo:cases".into(),
        settings: DemoSettings {
            cases: 1,
            fail_every: 1,
        },
        calls: AtomicU32::new(0),
    })
    .layer(built.policy.clone());
    let err = dead.discover().await.err();
    println!(
        "== platform down: {}",
        err.map(|e| e.to_string())
            .unwrap_or_else(|| "no error?".into())
    );
    let health = dead.health_check().await;
    println!("== health: {} ({})", health.status, health.detail);
    let breaker_state = built.policy.circuit_breaker().map(|b| b.state());
    println!("== circuit breaker: {breaker_state:?}");

    // 5. The sync engine: source → mapping → validation → warehouse, with checkpoints.
    let (warehoused, again) = sync_to_warehouse().await?;

    if health.status != HealthStatus::Down || records != 5000 || warehoused != 10_000 || again != 0
    {
        return Err(Error::internal("the quickstart did not behave as expected"));
    }
    println!(
        "\nquickstart finished: read {records} records; retries and breaker behaved as configured; \
         {warehoused} accounts warehoused."
    );
    Ok(())
}

const PIPELINE: &str = r#"
name = "accounts-to-warehouse"

[[streams]]
name = "Account"
target = "accounts"
batch_size = 2000
mapping = [{ op = "constant", field = "source", value = "salesforce" }]
sanitize = { trim = true, strip_control = true }
validate = [
  { rule = "required", field = "Name" },
  { rule = "pattern", field = "Website", regex = "^https://" },
]
"#;

/// Sync generated Accounts into a SQLite warehouse; returns the records written by the
/// first run and read by the second.
async fn sync_to_warehouse() -> Result<(u64, u64)> {
    use moodbridge::engine::{MemorySource, Pipeline, ProgressEvent, SqliteTableSink, SyncEngine};
    use moodbridge::state::SqliteStateStore;

    let dir = std::env::temp_dir().join("moodbridge-quickstart");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::internal("cannot create the data dir").with_source(e))?;
    let state = Arc::new(SqliteStateStore::open(&dir.join("state.db")).await?);
    let warehouse = SqliteTableSink::open(&dir.join("warehouse.db")).await?;
    let source = MemorySource::accounts(10_000);
    let pipeline = Pipeline::from_toml(PIPELINE)?;
    let engine = SyncEngine::new(state);

    // Progress events drive a bar; the engine never waits for the bar.
    let mut events = engine.subscribe();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>8} [{bar:40}] {pos}/{len} ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let drawing = {
        let bar = bar.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                match event {
                    ProgressEvent::StreamStarted { stream, total, .. } => {
                        bar.set_message(stream);
                        bar.set_length(total.unwrap_or(0));
                        bar.set_position(0);
                    }
                    ProgressEvent::Batch { progress, .. } => bar.set_position(progress.read),
                    ProgressEvent::RunFinished { .. } => break,
                    _ => {}
                }
            }
        })
    };
    println!("== syncing Accounts into the warehouse");
    let first = engine.run(&pipeline, &source, &warehouse).await?;
    let _ = drawing.await;
    bar.finish();
    let (name, progress) = &first.streams[0];
    println!(
        "== {name}: read {}, written {}, failed {} in {:.2} s ({:.0} records/s)",
        progress.read,
        progress.written,
        progress.failed,
        progress.elapsed.as_secs_f64(),
        progress.rate
    );
    let second = engine.run(&pipeline, &source, &warehouse).await?;
    println!(
        "== incremental run: {} new records (resumed from the last checkpoint)",
        second.counts.read
    );
    println!(
        "== data: {} ({} rows in table accounts); state: {}",
        warehouse.path().display(),
        warehouse.count("accounts").await?,
        dir.join("state.db").display()
    );
    Ok((first.counts.written, second.counts.read))
}
