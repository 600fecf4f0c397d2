//! What the Azure queue benches share: the figures of a phase, Python phases, the size
//! of a run and the report.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// One phase's figures.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub send_per_sec: f64,
    pub receive_per_sec: f64,
    pub cpu_per_1000: f64,
}

/// Messages and rounds of this run: `bench_default` messages and
/// `MOODBRIDGE_BENCH_ROUNDS` (3) rounds under `cargo bench`, else a one-round smoke run
/// of 200; a number among the arguments overrides the messages.
pub fn size(bench_default: usize) -> (usize, usize) {
    let bench = std::env::args().any(|a| a == "--bench");
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { bench_default } else { 200 });
    let rounds = if bench {
        std::env::var("MOODBRIDGE_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    } else {
        1
    };
    (n, rounds)
}

/// A 1 KiB JSON body, numbered.
pub fn body(i: usize) -> String {
    let pad = "x".repeat(1024 - 40);
    format!(r#"{{"Id":"500A{i:08}","Status":"Working","pad":"{pad}"}}"#)
}

/// Run `script` (Python, with `args`) in the venv: it prints `{"sent": s, "drained": s,
/// "cpu": s}` for `n` messages.
pub fn python_phase(script: &str, args: &[&str], n: usize, client: &str) -> Figures {
    let out = Command::new(moodbridge_core::testing::venv_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python with {client} (scripts/test.sh's venv): {e}"));
    assert!(
        out.status.success(),
        "{client} phase failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Figures {
        send_per_sec: n as f64 / v["sent"].as_f64().unwrap(),
        receive_per_sec: n as f64 / v["drained"].as_f64().unwrap(),
        cpu_per_1000: v["cpu"].as_f64().unwrap() * 1000.0 / n as f64,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Print `title`, then each client's median figures (`received` names the second
/// column).
pub fn report(title: &str, received: &str, results: &[(&str, Vec<Figures>)]) {
    println!("{title}");
    println!(
        "{:<28} {:>14} {:>26} {:>20}",
        "client", "sent msg/s", received, "client CPU s/1000"
    );
    for (name, figures) in results {
        println!(
            "{:<28} {:>14.0} {:>26.0} {:>20.3}",
            name,
            median(figures.iter().map(|f| f.send_per_sec).collect()),
            median(figures.iter().map(|f| f.receive_per_sec).collect()),
            median(figures.iter().map(|f| f.cpu_per_1000).collect()),
        );
    }
}
