//! A sync configured in TOML: Salesforce objects into a SQLite warehouse, incremental
//! from the second run on (the state store keeps the checkpoints). The file is an ordinary
//! host config — integrations built by kind, a pipeline naming them by id — built and run
//! with `moodbridge::host::Host`.
//!
//! ```sh
//! cargo run --example salesforce_sync                                  # examples/config/salesforce_sync.toml
//! cargo run --example salesforce_sync -- my-sync.toml
//! ```
//!
//! A `login_url` of `"{sandbox}"` starts the embedded sandbox and uses it; any other
//! login URL is a real org (its secret from the credential store or the environment,
//! never from the file). `{env:NAME}` anywhere in the file is replaced by the environment
//! variable `NAME` (an endpoint, a path): `examples/config/salesforce_dynamodb.toml` moves
//! the same objects into DynamoDB (`--features aws-dynamodb`).

use std::path::PathBuf;
use std::sync::Arc;

use moodbridge::auth::store::MemoryStore;
use moodbridge::host::{Host, HostConfig, StateConfig};
use moodbridge::salesforce::sandbox::{Sandbox, SandboxConfig};
use moodbridge::{CredentialStore, Error, Result};

#[path = "common/host_example.rs"]
mod host_example;

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let Some((path, mut text)) = host_example::read("salesforce_sync", "salesforce_sync.toml")?
    else {
        return Ok(());
    };

    text = with_env(&text)?;

    // The embedded sandbox, when the config asks for it: its app's secret goes into an
    // in-memory credential store, where the config's `secret:` reference finds it.
    let mut sandbox = None;
    let mut credentials: Option<Arc<dyn CredentialStore>> = None;
    if text.contains("{sandbox}") {
        let config = SandboxConfig::default();
        let secret = config.client_secret.clone();
        let running = Sandbox::new(config).seed(500, 2, 1).start().await?;
        text = text.replace("{sandbox}", running.url());
        let store = MemoryStore::new();
        store
            .put("salesforce/sandbox/client_secret", secret.into())
            .await?;
        credentials = Some(Arc::new(store));
        sandbox = Some(running);
    }
    let config =
        HostConfig::from_toml(&text).map_err(|e| e.with_context("file", path.display()))?;
    if sandbox.is_some() {
        // A sandbox is new at every start (new ids): so are its warehouse and state.
        fresh_files(&config);
    }
    let host = Host::build_with(&config, &moodbridge::registry(), credentials).await?;
    println!(
        "== built: {}",
        host.integrations()
            .iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Twice: the second run is incremental and, with nothing changed, reads nothing.
    host_example::run_twice(&host, sandbox.is_some()).await?;
    if let Some(sandbox) = sandbox {
        sandbox.stop().await;
    }
    Ok(())
}

/// `text` with every `{env:NAME}` replaced by the environment variable `NAME` (comment
/// lines are left as they are).
fn with_env(text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{env:") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "{env:".len()..];
            let end = after.find('}').ok_or_else(|| {
                Error::config("an {env:NAME} placeholder is not closed")
                    .with_hint("write {env:NAME} with its closing brace")
            })?;
            let name = &after[..end];
            let value = std::env::var(name).map_err(|_| {
                Error::config(format!(
                    "the config uses {{env:{name}}}, and {name} is not set"
                ))
                .with_hint(format!("set {name} in the environment, or edit the file"))
            })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Removes the state and warehouse files the config names (with their WAL files).
fn fresh_files(config: &HostConfig) {
    let mut files: Vec<PathBuf> = config
        .integrations
        .iter()
        .filter(|i| i.kind == "sqlite-warehouse")
        .filter_map(|i| i.settings.get("path")?.as_str().map(PathBuf::from))
        .collect();
    if let Some(StateConfig::Sqlite { path }) = &config.state {
        files.push(path.clone());
    }
    for file in files {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = file.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}
