//! Throughput of the encrypted SQLite credential store: `get` of the latest version and
//! `put` of a new version (a durable transaction: WAL with `synchronous = FULL`).
//!
//! Run: `cargo bench -p moodbridge-auth --bench credential_store`. Results are recorded
//! in docs/performance.md.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use moodbridge_auth::store::{EncryptedStore, Keyring, MasterKey, MemoryStore};
use moodbridge_core::CredentialStore;
use secrecy::SecretString;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = rt.block_on(async {
        let key = MasterKey::generate().expect("key");
        let store = EncryptedStore::create(&dir.path().join("bench.db"), Keyring::new(key))
            .await
            .expect("store");
        for i in 0..1_000 {
            store
                .put(
                    &format!("bench/{i}"),
                    SecretString::from(format!("secret-value-{i:040}")),
                )
                .await
                .expect("seed");
        }
        store
    });
    let memory = MemoryStore::new();
    rt.block_on(memory.put("bench/1", SecretString::from("v")))
        .expect("seed");

    let mut group = c.benchmark_group("credential_store");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);

    let n = AtomicU64::new(0);
    group.bench_function("encrypted/get", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed) % 1_000;
            store.get(&format!("bench/{i}")).await.expect("get")
        });
    });
    group.bench_function("encrypted/put", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed) % 1_000;
            store
                .put(
                    &format!("bench/{i}"),
                    SecretString::from("rotated-secret-value"),
                )
                .await
                .expect("put")
        });
    });
    group.bench_function("memory/get", |b| {
        b.to_async(&rt)
            .iter(|| async { memory.get("bench/1").await.expect("get") });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
