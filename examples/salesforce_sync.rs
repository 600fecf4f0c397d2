//! A sync configured in TOML: Salesforce objects into a SQLite warehouse, incremental
//! from the second run on (the state store keeps the checkpoints).
//!
//! ```sh
//! cargo run --example salesforce_sync                                  # examples/config/salesforce_sync.toml
//! cargo run --example salesforce_sync -- my-sync.toml
//! ```
//!
//! The default configuration reads from the embedded sandbox; with a `[salesforce.org]`
//! section instead it reads from a real org through a connected app's client-credentials
//! flow (the secret from an environment variable, never from the file).

use std::path::PathBuf;
use std::sync::Arc;

use moodbridge::auth::oauth::{OAuthClient, Provider};
use moodbridge::auth::token_manager::{ClientCredentialsSource, TokenManager};
use moodbridge::engine::{Pipeline, PipelineConfig, SqliteTableSink, SyncEngine};
use moodbridge::salesforce::client::SalesforceClient;
use moodbridge::salesforce::sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use moodbridge::salesforce::sync::SalesforceSource;
use moodbridge::state::SqliteStateStore;
use moodbridge::{Error, Result};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    salesforce: SalesforceConfig,
    output: Output,
    pipeline: PipelineConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SalesforceConfig {
    sandbox: Option<SandboxSeed>,
    org: Option<Org>,
    #[serde(default = "default_bulk_threshold")]
    bulk_threshold: u64,
}

fn default_bulk_threshold() -> u64 {
    2_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxSeed {
    accounts: u32,
    per_account: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Org {
    my_domain: String,
    client_id: String,
    client_secret_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    warehouse: PathBuf,
    state: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let path = std::env::args().nth(1).map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/config/salesforce_sync.toml"
            ))
        },
        PathBuf::from,
    );
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::config(format!("cannot read {}", path.display()))
            .with_hint("pass the path of a TOML file like examples/config/salesforce_sync.toml")
            .with_source(e)
    })?;
    let config: Config = toml::from_str(&text).map_err(|e| {
        Error::config(format!(
            "{} is not a valid sync configuration: {e}",
            path.display()
        ))
    })?;
    // Checked before anything starts: every problem at once.
    let pipeline = Pipeline::new(config.pipeline)?;

    let (client, sandbox) = connect(&config.salesforce).await?;
    if sandbox.is_some() {
        // A sandbox is new at every start (new ids): so are its warehouse and state.
        for file in [&config.output.warehouse, &config.output.state] {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = file.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
    }
    println!("== connected (API v{})", client.api_version());
    for file in [&config.output.warehouse, &config.output.state] {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::config(format!("cannot create {}", dir.display())).with_source(e)
            })?;
        }
    }
    let state = Arc::new(SqliteStateStore::open(&config.output.state).await?);
    let warehouse = SqliteTableSink::open(&config.output.warehouse).await?;
    let objects: Vec<String> = pipeline
        .config()
        .streams
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let source =
        SalesforceSource::new(client, objects).bulk_threshold(config.salesforce.bulk_threshold);
    let engine = SyncEngine::new(state);

    // Twice: the second run is incremental and, with nothing changed, reads nothing.
    for pass in ["first", "second"] {
        let report = engine.run(&pipeline, &source, &warehouse).await?;
        println!("== {pass} run ({}):", report.run);
        if sandbox.is_some() && pass == "second" && report.counts.read != 0 {
            return Err(Error::internal(format!(
                "the incremental run read {} records from an unchanged sandbox",
                report.counts.read
            )));
        }
        for (stream, p) in &report.streams {
            println!(
                "   {stream:<10} read {:>6}  written {:>6}  failed {:>4}  {:>6.2} s",
                p.read,
                p.written,
                p.failed,
                p.elapsed.as_secs_f64()
            );
        }
    }
    println!(
        "== warehouse {} · state {}",
        config.output.warehouse.display(),
        config.output.state.display()
    );
    if let Some(sandbox) = sandbox {
        sandbox.stop().await;
    }
    Ok(())
}

/// A connected client: of the sandbox (started and seeded here), or of a real org.
async fn connect(config: &SalesforceConfig) -> Result<(SalesforceClient, Option<RunningSandbox>)> {
    match (&config.sandbox, &config.org) {
        (Some(seed), None) => {
            let sandbox = Sandbox::new(SandboxConfig::default())
                .seed(seed.accounts, seed.per_account, 1)
                .start()
                .await?;
            let client = sandbox
                .client_builder("salesforce:sandbox")?
                .connect()
                .await?;
            Ok((client, Some(sandbox)))
        }
        (None, Some(org)) => {
            let secret = std::env::var(&org.client_secret_env).map_err(|_| {
                Error::config(format!("{} is not set", org.client_secret_env))
                    .with_hint("export the connected app's consumer secret in that variable")
            })?;
            let app = OAuthClient::new(
                Provider::salesforce_my_domain(&org.my_domain)?,
                &org.client_id,
                Some(SecretString::from(secret)),
            )?;
            let tokens = TokenManager::new();
            tokens.register(
                "salesforce",
                "integration",
                Arc::new(ClientCredentialsSource {
                    client: Arc::new(app),
                    scopes: Vec::new(),
                    resource: None,
                }),
            );
            let client =
                SalesforceClient::builder("salesforce:org", tokens, "salesforce", "integration")
                    .connect()
                    .await?;
            Ok((client, None))
        }
        _ => Err(Error::config(
            "configure exactly one of [salesforce.sandbox] and [salesforce.org]",
        )
        .with_hint(
            "keep [salesforce.sandbox] to try it locally, or replace it with [salesforce.org]",
        )),
    }
}
