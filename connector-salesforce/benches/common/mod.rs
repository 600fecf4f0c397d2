//! What the Salesforce benches share: the sandbox in its own process (the `sandbox`
//! example binary built next to the bench), a fixed-token source, the peak RSS.

#![allow(dead_code, reason = "each bench uses part of it")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use connector_salesforce::client::SalesforceClient;
use connector_salesforce::instance::InstanceAllowList;
use moodbridge_auth::oauth::TokenSet;
use moodbridge_auth::token_manager::{TokenManager, TokenSource};
use secrecy::SecretString;

/// A token source handing out the sandbox's printed token.
pub struct Fixed(pub String, pub String);

#[async_trait::async_trait]
impl TokenSource for Fixed {
    async fn fetch(&self, _: Option<&TokenSet>) -> moodbridge_core::Result<TokenSet> {
        let mut t = TokenSet::bearer(
            SecretString::from(self.0.clone()),
            Some(Duration::from_secs(86_400)),
        );
        t.instance_url = Some(self.1.clone());
        Ok(t)
    }
}

impl Fixed {
    /// A token manager serving `token` for `instance` as `("sandbox", "bench")`.
    pub fn manager(token: &str, instance: &str) -> TokenManager {
        let tokens = TokenManager::new();
        tokens.register(
            "sandbox",
            "bench",
            Arc::new(Fixed(token.to_owned(), instance.to_owned())),
        );
        tokens
    }
}

/// The sandbox process; killed when dropped.
pub struct Server {
    child: Child,
    /// Its base URL.
    pub url: String,
    /// A valid access token.
    pub token: String,
}

impl Server {
    /// Start the sandbox example seeded with `accounts` Accounts and `per_account`
    /// Contacts and Cases each.
    pub fn start(accounts: u64, per_account: u32) -> Server {
        Self::launch(accounts, per_account, None)
    }

    /// [`start`](Self::start), serving https; the CA to trust is written to `ca`.
    pub fn start_tls(accounts: u64, per_account: u32, ca: &std::path::Path) -> Server {
        Self::launch(accounts, per_account, Some(ca))
    }

    fn launch(accounts: u64, per_account: u32, ca: Option<&std::path::Path>) -> Server {
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .and_then(|p| p.parent())
            .unwrap()
            .join("examples")
            .join("sandbox");
        let mut command = Command::new(&bin);
        if let Some(ca) = ca {
            command.env("SANDBOX_TLS_CA", ca);
        }
        let mut child = command
            .args([accounts.to_string(), per_account.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {} (build it with `cargo build --release -p salesforce-sandbox --features tls --example sandbox`): {e}",
                    bin.display()
                )
            });
        let mut first = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut first).unwrap();
        // Keep reading what the server prints, so it never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let mut parts = first.split_whitespace();
        let url = parts
            .next()
            .unwrap()
            .trim_start_matches("SANDBOX_URL=")
            .to_owned();
        let token = parts
            .next()
            .unwrap()
            .trim_start_matches("TOKEN=")
            .to_owned();
        Server { child, url, token }
    }

    /// The sandbox process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A token manager serving this sandbox's token as `("sandbox", "bench")`.
    pub fn tokens(&self) -> TokenManager {
        Fixed::manager(&self.token, &self.url)
    }

    /// A connected client.
    pub async fn client(&self, id: &str) -> SalesforceClient {
        SalesforceClient::builder(id, self.tokens(), "sandbox", "bench")
            .allow_instances(InstanceAllowList::default().with_loopback())
            .connect()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(smoke, records)`: without cargo bench's `--bench` flag (as under `cargo test
/// --benches`) a short smoke run; the record count is the first numeric argument.
pub fn args(full_default: u64, smoke_default: u64) -> (bool, u64) {
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let records = args
        .iter()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(if smoke { smoke_default } else { full_default });
    (smoke, records)
}

pub use moodbridge_core::testing::cpu_seconds_of;
