//! What the config-driven examples share: the config file they run (its path from the
//! first argument, or the example's default under `examples/config/`), and running every
//! pipeline twice.

use std::path::PathBuf;

use moodbridge::host::Host;
use moodbridge::{Error, Result};

/// The path and text of the config file: the first argument, else
/// `examples/config/<default>`. `None` after printing the usage for `--help`.
pub fn read(example: &str, default: &str) -> Result<Option<(PathBuf, String)>> {
    let arg = std::env::args().nth(1);
    if matches!(arg.as_deref(), Some("--help" | "-h")) {
        println!("usage: {example} [CONFIG.toml]   (default: examples/config/{default})");
        return Ok(None);
    }
    let path = arg.map_or_else(
        || {
            std::env::var_os("CARGO_MANIFEST_DIR")
                .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
                .join("examples/config")
                .join(default)
        },
        PathBuf::from,
    );
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::config(format!("cannot read {}", path.display()))
            .with_hint(format!(
                "pass the path of a TOML file like examples/config/{default}"
            ))
            .with_source(e)
    })?;
    Ok(Some((path, text)))
}

/// Run every pipeline of `host` twice, printing each stream's figures. From the embedded
/// sandbox (`from_sandbox`), a failed record is an error, and so is a second run that
/// reads anything: it is incremental, and nothing changed.
pub async fn run_twice(host: &Host, from_sandbox: bool) -> Result<()> {
    for name in host.pipelines().map(str::to_owned).collect::<Vec<_>>() {
        for pass in ["first", "second"] {
            let report = host.run(&name).await?;
            println!("== {name}: {pass} run ({}):", report.run);
            for (stream, p) in &report.streams {
                println!(
                    "   {stream:<10} read {:>6}  written {:>6}  failed {:>4}  {:>6.2} s",
                    p.read,
                    p.written,
                    p.failed,
                    p.elapsed.as_secs_f64()
                );
            }
            if from_sandbox && report.counts.failed != 0 {
                return Err(Error::internal(format!(
                    "{} records of the sandbox failed to move",
                    report.counts.failed
                )));
            }
            if from_sandbox && pass == "second" && report.counts.read != 0 {
                return Err(Error::internal(format!(
                    "the incremental run read {} records from an unchanged sandbox",
                    report.counts.read
                )));
            }
        }
    }
    Ok(())
}
