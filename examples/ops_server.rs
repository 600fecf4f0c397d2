//! The operations surface on 127.0.0.1:8000: integration health as JSON, Prometheus
//! metrics and a status page, over a demo Salesforce org (the embedded sandbox) whose
//! accounts are synced into a SQLite warehouse once a minute, so the page has runs to show.
//!
//! ```sh
//! cargo run --example ops_server                  # then open http://127.0.0.1:8000/
//! cargo run --example ops_server -- --check       # serve on a free port, read every page, exit
//! ```
//!
//! `MOODBRIDGE_OPS_ADDR` changes the address (loopback by default: the surface has no
//! authentication of its own; put it behind the host's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moodbridge::engine::{Pipeline, SyncEngine};
use moodbridge::http::{Ops, install_prometheus};
use moodbridge::registry::{Built, Integrations};
use moodbridge::salesforce::sandbox::{Sandbox, SandboxConfig};
use moodbridge::salesforce::sync::SalesforceSource;
use moodbridge::sqlite::SqliteTableSink;
use moodbridge::state::SqliteStateStore;
use moodbridge::{Error, PlatformIntegration, Result};

const PIPELINE: &str =
    "name = \"accounts\"\n[[streams]]\nname = \"Account\"\ntarget = \"accounts\"\n";

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let started = Instant::now();
    let check = std::env::args().any(|a| a == "--check");
    // Before any call is made: every metric from here on is exported.
    let metrics = install_prometheus()?;

    let dir = std::env::temp_dir().join(format!("moodbridge-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::config(format!("cannot create {}", dir.display())).with_source(e))?;

    // The demo org and a client of it, registered as an integration with its policy.
    let sandbox = Sandbox::new(SandboxConfig::default())
        .seed(50, 1, 7)
        .start()
        .await?;
    let salesforce = sandbox
        .client_builder("salesforce:sandbox")?
        .connect()
        .await?;
    let mut integrations = Integrations::default();
    integrations.insert(Built::new(
        Arc::new(salesforce.clone()) as Arc<dyn PlatformIntegration>,
        salesforce.policy().clone(),
    ));

    // Sync runs for the page: one now, then one a minute.
    let state = Arc::new(SqliteStateStore::open(&dir.join("state.db")).await?);
    let warehouse = SqliteTableSink::open(&dir.join("warehouse.db")).await?;
    let engine = SyncEngine::new(state.clone());
    let pipeline = Pipeline::from_toml(PIPELINE)?;
    let source = SalesforceSource::new(salesforce, ["Account"]);
    engine.run(&pipeline, &source, &warehouse).await?;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            if let Err(e) = engine.run(&pipeline, &source, &warehouse).await {
                tracing::warn!(error = %e, "scheduled sync failed");
            }
        }
    });

    let app = Ops::new(integrations)
        .state_store(state, ["accounts"])
        .prometheus(metrics)
        .title("MoodBridge demo")
        .router();
    let addr = if check {
        "127.0.0.1:0".to_owned()
    } else {
        std::env::var("MOODBRIDGE_OPS_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".to_owned())
    };
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        Error::config(format!("cannot listen on {addr}"))
            .with_hint("another process holds the port: set MOODBRIDGE_OPS_ADDR=127.0.0.1:<port>")
            .with_source(e)
    })?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| Error::internal("no local address").with_source(e))?
    );
    println!(
        "ops server on {url} (ready in {} ms): {url}/ · {url}/api/integrations/health · {url}/metrics",
        started.elapsed().as_millis()
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if check {
        let result = read_every_page(&url).await;
        server.abort();
        sandbox.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
        return result;
    }
    let served = server
        .await
        .map_err(|e| Error::internal("server task failed").with_source(e))?;
    served.map_err(|e| Error::internal("server stopped").with_source(e))
}

/// `--check`: each page answers as it should.
async fn read_every_page(url: &str) -> Result<()> {
    let http = reqwest::Client::new();
    for (path, needle) in [
        ("/api/integrations/health", "\"status\":\"up\""),
        ("/metrics", "moodbridge_sync_records_total"),
        ("/", "salesforce:sandbox"),
    ] {
        let response = http
            .get(format!("{url}{path}"))
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("GET {path}")).with_source(e))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Error::unavailable(format!("GET {path} body")).with_source(e))?;
        if !status.is_success() || !body.contains(needle) {
            return Err(Error::internal(format!(
                "GET {path}: {status}, expected {needle:?} in:\n{body}"
            )));
        }
        println!("GET {path}: {status} ({} bytes)", body.len());
    }
    Ok(())
}
