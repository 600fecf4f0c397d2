//! Run the local Salesforce sandbox on 127.0.0.1 until interrupted (Ctrl-C), seeded with
//! realistic data, and print how to reach it.
//!
//! ```sh
//! cargo run --release -p salesforce-sandbox --example sandbox -- [ACCOUNTS] [PER_ACCOUNT]
//! ```
//!
//! The first line printed is `SANDBOX_URL=<url> TOKEN=<access token>` (benchmarks read
//! it); the token endpoint takes client id `sandbox-client`, secret `sandbox-secret`.
//!
//! With `SANDBOX_TLS_CA=<file>` set (and the `tls` feature) it serves https with a
//! throwaway self-signed certificate, whose CA (PEM) it writes to that file first.

use salesforce_sandbox::{Sandbox, SandboxConfig};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> moodbridge_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let accounts: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let per_account: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let ca_file = std::env::var_os("SANDBOX_TLS_CA");
    let sandbox = Sandbox::new(SandboxConfig {
        token_ttl: std::time::Duration::from_secs(24 * 3600),
        daily_api_limit: u64::MAX,
        tls: ca_file.is_some(),
        ..SandboxConfig::default()
    })
    .seed(accounts, per_account, 42)
    .start()
    .await?;
    if let Some(file) = &ca_file {
        write_ca(&sandbox, std::path::Path::new(file))?;
    }
    // Written with errors ignored: whoever started us may stop reading.
    use std::io::Write as _;
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "SANDBOX_URL={} TOKEN={}",
        sandbox.url(),
        sandbox.issue_token()
    );
    let _ = writeln!(
        out,
        "serving {accounts} Accounts with {per_account} Contacts and Cases each; token endpoint {}/services/oauth2/token (sandbox-client / sandbox-secret); close stdin or Ctrl-C to stop",
        sandbox.url()
    );
    let _ = out.flush();
    // Wait for stdin to close or Ctrl-C-like termination (the process is killed).
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            line.clear();
        }
    })
    .await;
    sandbox.stop().await;
    Ok(())
}

/// Write the sandbox's CA certificate (PEM) to `file`, for clients to trust.
#[cfg(feature = "tls")]
fn write_ca(
    sandbox: &salesforce_sandbox::RunningSandbox,
    file: &std::path::Path,
) -> moodbridge_core::Result<()> {
    let pem = sandbox
        .ca_pem()
        .ok_or_else(|| moodbridge_core::Error::internal("the sandbox serves no certificate"))?;
    std::fs::write(file, pem).map_err(|e| {
        moodbridge_core::Error::invalid_input(format!("cannot write the CA to {}", file.display()))
            .with_source(e)
    })
}

#[cfg(not(feature = "tls"))]
fn write_ca(
    _: &salesforce_sandbox::RunningSandbox,
    _: &std::path::Path,
) -> moodbridge_core::Result<()> {
    Err(moodbridge_core::Error::config(
        "SANDBOX_TLS_CA needs the sandbox built with the tls feature",
    ))
}
