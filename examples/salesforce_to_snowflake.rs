//! Salesforce into Snowflake through the sync engine: the embedded Salesforce sandbox's
//! Accounts and Contacts upserted into Snowflake tables by kind `snowflake`'s sink — each
//! batch a Parquet file `PUT` to a stage, `COPY`'d into a staging table and `MERGE`d by
//! Id — then read back with a query. The second run is incremental and reads nothing.
//!
//! ```sh
//! ./scripts/test.sh        # once: installs fakesnow in the test venv
//! cargo run --features snowflake --example salesforce_to_snowflake
//! cargo run --features snowflake --example salesforce_to_snowflake -- my.toml
//! ```
//!
//! The config is `examples/config/salesforce_snowflake.toml`. Its `"{fakesnow}"` URL
//! starts fakesnow, a local server speaking Snowflake's protocol over DuckDB, on a free
//! loopback port (from `$MOODBRIDGE_VENV`, else `~/.cache/moodbridge/venv`); point the
//! integration at a real account to load into Snowflake itself.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moodbridge::auth::store::MemoryStore;
use moodbridge::host::{Host, HostConfig, StateConfig};
use moodbridge::salesforce::sandbox::{Sandbox, SandboxConfig};
use moodbridge::snowflake::SessionPool;
use moodbridge::{CredentialStore, Error, Result};

/// fakesnow on a free loopback port, stopped when dropped.
struct FakeSnow {
    child: Child,
    url: String,
}

impl Drop for FakeSnow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_fakesnow() -> Result<FakeSnow> {
    let venv = std::env::var_os("MOODBRIDGE_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/moodbridge/venv")
        },
        PathBuf::from,
    );
    let binary = venv.join("bin/fakesnow");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::internal("no free loopback port").with_source(e))?
        .port();
    let child = Command::new(&binary)
        .args(["-s", "--host", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::config(format!("cannot start {}", binary.display()))
                .with_hint("run ./scripts/test.sh once (it installs fakesnow), or set MOODBRIDGE_VENV to a venv with fakesnow[server]")
                .with_source(e)
        })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(Error::internal("fakesnow did not start within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(FakeSnow {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

#[path = "common/host_example.rs"]
mod host_example;

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let Some((path, mut text)) =
        host_example::read("salesforce_to_snowflake", "salesforce_snowflake.toml")?
    else {
        return Ok(());
    };

    let store = MemoryStore::new();
    let mut sandbox = None;
    if text.contains("{sandbox}") {
        let config = SandboxConfig::default();
        let secret = config.client_secret.clone();
        let running = Sandbox::new(config).seed(500, 2, 1).start().await?;
        text = text.replace("{sandbox}", running.url());
        store
            .put("salesforce/sandbox/client_secret", secret.into())
            .await?;
        sandbox = Some(running);
    }
    let mut fakesnow = None;
    if text.contains("{fakesnow}") {
        let running = start_fakesnow()?;
        text = text.replace("{fakesnow}", &running.url);
        // fakesnow takes any password ($MOODBRIDGE_SNOWFLAKE_PASSWORD when set); a real
        // account's comes from the host's credential store.
        let password = std::env::var("MOODBRIDGE_SNOWFLAKE_PASSWORD")
            .unwrap_or_else(|_| "fakesnow-password".to_owned());
        store.put("snowflake/password", password.into()).await?;
        fakesnow = Some(running);
    }
    let config =
        HostConfig::from_toml(&text).map_err(|e| e.with_context("file", path.display()))?;
    if sandbox.is_some()
        && let Some(StateConfig::Sqlite { path }) = &config.state
    {
        // A sandbox is new at every start (new ids): so is the state.
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
    let store: Arc<dyn CredentialStore> = Arc::new(store);
    let host = Host::build_with(&config, &moodbridge::registry(), Some(store)).await?;
    let pool = host
        .integrations()
        .iter()
        .find_map(|(_, built)| built.interfaces.get::<SessionPool>())
        .ok_or_else(|| Error::config("the config has no snowflake integration"))?;
    if fakesnow.is_some() {
        // fakesnow starts empty: the database and schema the config names.
        let session = pool.get().await?;
        session
            .execute("CREATE DATABASE IF NOT EXISTS CASES", &[])
            .await?;
        session
            .execute("CREATE SCHEMA IF NOT EXISTS CASES.PUBLIC", &[])
            .await?;
    }

    host_example::run_twice(&host, sandbox.is_some()).await?;

    // What Snowflake holds now, by query.
    let session = pool.get().await?;
    for table in ["ACCOUNT", "CONTACT"] {
        let result = session
            .execute(&format!("SELECT COUNT(*) AS N FROM \"{table}\""), &[])
            .await?;
        let n = result
            .json_rows()?
            .first()
            .and_then(|r| r["N"].as_u64())
            .unwrap_or(0);
        println!("== Snowflake table {table}: {n} rows");
        let expected = if table == "ACCOUNT" { 500 } else { 1000 };
        if sandbox.is_some() && n != expected {
            return Err(Error::internal(format!(
                "{table} holds {n} rows, and the sandbox has {expected}"
            )));
        }
    }
    drop(session);
    pool.close().await;
    if let Some(sandbox) = sandbox {
        sandbox.stop().await;
    }
    drop(fakesnow);
    Ok(())
}
