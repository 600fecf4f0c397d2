//! The audit log's append rate on the SQLite state store: N entries of a bulk load's
//! creates, appended 2,000 at a time (one append per engine batch), compact (key and
//! after-image digest) and full (a ~1 KB after-image each), into a fresh store each.
//! `cargo bench -p moodbridge-core --features sqlite --bench audit_append [-- N]`.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a bench: a panic is the failure report, stdout the result"
)]

use std::time::Instant;

use moodbridge_core::state::{
    AuditEntry, AuditOperation, ChainStatus, SqliteStateStore, StateStore, image_sha256,
};

fn image(i: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("Id".into(), format!("001{i:015}").into());
    for f in 0..15 {
        m.insert(
            format!("Field{f}__c"),
            format!("value {f} of record {i}, some text").into(),
        );
    }
    m
}

fn main() {
    // `cargo test --benches` runs it without `--bench`: a quick smoke run then.
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let n: u64 = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if smoke { 2_000 } else { 200_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for full in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStateStore::open(&dir.path().join("s.db"))
                .await
                .unwrap();
            let run = store.start_run("bench").await.unwrap();
            // The entries are made before the clock starts: only the append is timed.
            let batches: Vec<Vec<AuditEntry>> = (0..n)
                .collect::<Vec<_>>()
                .chunks(2_000)
                .map(|c| {
                    c.iter()
                        .map(|&i| {
                            let image = image(i);
                            let id = image["Id"].clone();
                            AuditEntry {
                                run,
                                stream: "Account".into(),
                                record_key: id.as_str().unwrap_or_default().to_owned(),
                                operation: AuditOperation::Create,
                                before: None,
                                after_sha256: (!full).then(|| image_sha256(&image)),
                                after: Some(if full {
                                    serde_json::Value::Object(image)
                                } else {
                                    serde_json::json!({ "Id": id })
                                }),
                                actor: "engine".into(),
                            }
                        })
                        .collect()
                })
                .collect();
            let start = Instant::now();
            for batch in &batches {
                store.append_audit(batch).await.unwrap();
            }
            let secs = start.elapsed().as_secs_f64();
            match store.verify_audit().await.unwrap() {
                ChainStatus::Intact { entries } => assert_eq!(entries, n),
                broken => panic!("{broken:?}"),
            }
            println!(
                "audit_append ({}): {n} entries in {secs:.2} s = {:.0} entries/s",
                if full { "full" } else { "compact" },
                n as f64 / secs
            );
        }
    });
}
