//! The [`ObjectStore`] contract: one behavioural suite for S3, Azure Blob and the local
//! filesystem.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::error::ErrorKind;
use crate::storage::{
    ByteRange, ByteStream, GetOptions, ObjectKey, ObjectStore, ObjectStoreExt, PutOptions,
    byte_stream, sha256,
};

/// Settings of [`object_store_contract`].
#[derive(Debug, Clone)]
pub struct ObjectStoreContract {
    /// The backend's part (or block) size at the settings under test: objects of exactly
    /// this size and one byte more are written.
    pub part_size: u64,
    /// How many keys the pagination check writes (more than one listing page: S3 and
    /// Azure pages hold 1,000 / 5,000 keys at most).
    pub list_keys: usize,
}

impl Default for ObjectStoreContract {
    fn default() -> Self {
        ObjectStoreContract {
            part_size: 8 * 1024 * 1024,
            list_keys: 1001,
        }
    }
}

/// `size` deterministic pseudo-random bytes in chunks of at most `chunk` bytes, produced
/// as the stream is polled (nothing but one 1 MiB block is held in memory). Each 1 MiB of
/// the object is the block (xorshift from `seed`) rotated by a different amount, so moved
/// or repeated parts change the checksum.
pub fn pattern_stream(size: u64, seed: u64, chunk: usize) -> ByteStream {
    const BLOCK: u64 = 1 << 20;
    let mut state = seed | 1;
    let mut base = Vec::with_capacity(BLOCK as usize);
    while (base.len() as u64) < BLOCK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        base.extend_from_slice(&state.to_le_bytes());
    }
    let chunk = (chunk.max(1) as u64).min(BLOCK);
    let mut offset = 0u64;
    byte_stream(futures::stream::iter(std::iter::from_fn(move || {
        if offset >= size {
            return None;
        }
        let within = offset % BLOCK;
        let n = chunk.min(size - offset).min(BLOCK - within);
        let shift = ((offset / BLOCK) * 7919 + seed * 131) % BLOCK;
        let from = ((within + shift) % BLOCK) as usize;
        let n = n as usize;
        let mut buf = Vec::with_capacity(n);
        let first = n.min(base.len() - from);
        buf.extend_from_slice(&base[from..from + first]);
        buf.extend_from_slice(&base[..n - first]);
        offset += n as u64;
        Some(Ok(Bytes::from(buf)))
    })))
}

/// SHA-256 of [`pattern_stream`]`(size, seed, _)`.
pub async fn pattern_sha256(size: u64, seed: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut stream = pattern_stream(size, seed, 1 << 20);
    while let Some(chunk) = stream.next().await {
        hasher.update(chunk.expect("pattern chunk"));
    }
    hasher.finalize().into()
}

fn key(prefix: &str, rest: &str) -> ObjectKey {
    ObjectKey::new(format!("{prefix}/{rest}")).expect("valid test key")
}

async fn assert_absent(store: &dyn ObjectStore, key: &ObjectKey, why: &str) {
    let err = store.head(key).await.expect_err(why);
    assert_eq!(err.kind(), ErrorKind::NotFound, "{why}: {err}");
}

/// Streams an object of `size` bytes up and back down, comparing SHA-256 end to end
/// (the body is generated and hashed as it streams: memory stays bounded for any size).
pub async fn object_store_round_trip(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    size: u64,
    seed: u64,
) {
    let expected = pattern_sha256(size, seed).await;
    let done = Arc::new(AtomicU64::new(0));
    let seen = done.clone();
    let put = store
        .put(
            key,
            pattern_stream(size, seed, 256 * 1024),
            PutOptions::new()
                .content_type("application/octet-stream")
                .progress(move |p| seen.store(p.bytes, Ordering::Relaxed)),
        )
        .await
        .unwrap_or_else(|e| panic!("put of {size} bytes to {key}: {e}"));
    assert_eq!(put.size, size, "put reports the size written");
    assert_eq!(
        put.sha256, expected,
        "put reports the SHA-256 of what it streamed"
    );
    assert_eq!(
        done.load(Ordering::Relaxed),
        size,
        "upload progress reaches the size"
    );
    let got = store
        .get(key, GetOptions::new())
        .await
        .unwrap_or_else(|e| panic!("get of {key}: {e}"));
    assert_eq!(got.meta.size, size, "get reports the size");
    assert_eq!(got.range, (0, size));
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    let mut body = got.body;
    while let Some(chunk) = body.try_next().await.expect("download chunk") {
        read += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(read, size, "the download has every byte");
    let actual: [u8; 32] = hasher.finalize().into();
    assert_eq!(
        actual, expected,
        "the SHA-256 of the download matches the upload's"
    );
}

/// The [`ObjectStore`] contract, under keys starting with `prefix/` (deleted at the end,
/// so a shared bucket can be used). Panics with a message naming the broken rule.
pub async fn object_store_contract(
    store: &dyn ObjectStore,
    prefix: &str,
    settings: &ObjectStoreContract,
) {
    // Missing objects.
    let missing = key(prefix, "missing");
    assert_absent(store, &missing, "head of a missing object is NotFound").await;
    let err = store
        .get(&missing, GetOptions::new())
        .await
        .expect_err("get of a missing object");
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "get of a missing object: {err}"
    );
    store
        .delete(&missing)
        .await
        .expect("deleting a missing object succeeds");

    // Sizes around the empty object and the part size.
    let part = settings.part_size;
    for (i, size) in [0, 1, part, part + 1].into_iter().enumerate() {
        object_store_round_trip(
            store,
            &key(prefix, &format!("sizes/{size}")),
            size,
            i as u64 + 7,
        )
        .await;
    }

    // Keys that need escaping, and metadata.
    let awkward = [
        "with space/a b.txt",
        "unicodé/日本語 ファイル.txt",
        "plus+sign+key",
        "percent%20literal%",
        "query?x=1&y=2#frag",
        "Case (1) [draft] ~'quote'.pdf",
    ];
    for (i, name) in awkward.iter().enumerate() {
        let k = key(prefix, &format!("keys/{name}"));
        let body = format!("body of {name}");
        store
            .put_bytes(
                &k,
                body.clone().into_bytes(),
                PutOptions::new()
                    .content_type("text/plain; charset=utf-8")
                    .metadata("case_id", format!("500-{i}"))
                    .metadata("uploaded_by", "contract suite"),
            )
            .await
            .unwrap_or_else(|e| panic!("put of key {k:?}: {e}"));
        let meta = store
            .head(&k)
            .await
            .unwrap_or_else(|e| panic!("head of key {k:?}: {e}"));
        assert_eq!(meta.key, k.as_str(), "head gives the key back unchanged");
        assert_eq!(meta.size, body.len() as u64);
        assert_eq!(
            meta.content_type.as_deref(),
            Some("text/plain; charset=utf-8"),
            "content type round trip"
        );
        assert_eq!(
            meta.metadata.get("case_id").map(String::as_str),
            Some(format!("500-{i}").as_str()),
            "metadata round trip: {:?}",
            meta.metadata
        );
        assert_eq!(
            meta.metadata.get("uploaded_by").map(String::as_str),
            Some("contract suite"),
            "metadata round trip: {:?}",
            meta.metadata
        );
        assert!(meta.etag.is_some(), "objects have an ETag");
        assert_eq!(
            store.get_bytes(&k).await.expect("get awkward key"),
            body.as_bytes(),
            "body of {k:?}"
        );
    }
    let listed = store
        .list_keys(&format!("{prefix}/keys/"))
        .await
        .expect("list awkward keys");
    let mut expected: Vec<String> = awkward
        .iter()
        .map(|n| format!("{prefix}/keys/{n}"))
        .collect();
    expected.sort();
    assert_eq!(
        listed, expected,
        "list gives every awkward key back, in order"
    );

    // Range reads at both ends and in the middle.
    let ranged = key(prefix, "ranged");
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let put = store
        .put_bytes(&ranged, data.clone(), PutOptions::new())
        .await
        .expect("put ranged");
    for (range, want) in [
        (ByteRange::Bounded { start: 0, end: 10 }, &data[..10]),
        (ByteRange::Last(10), &data[990..]),
        (ByteRange::From(995), &data[995..]),
        (
            ByteRange::Bounded {
                start: 500,
                end: 501,
            },
            &data[500..501],
        ),
        (
            ByteRange::Bounded {
                start: 990,
                end: 5000,
            },
            &data[990..],
        ),
        (ByteRange::All, &data[..]),
    ] {
        let got = store
            .get(&ranged, GetOptions::new().range(range))
            .await
            .unwrap_or_else(|e| panic!("range {range:?}: {e}"));
        assert_eq!(
            got.meta.size, 1000,
            "a ranged get reports the whole object's size"
        );
        let (start, end) = got.range;
        let bytes = got.bytes().await.expect("range body");
        assert_eq!(bytes, want, "range {range:?} (reported {start}..{end})");
        assert_eq!(
            end - start,
            want.len() as u64,
            "reported range of {range:?}"
        );
    }
    let err = store
        .get(&ranged, GetOptions::new().range(ByteRange::From(1000)))
        .await
        .expect_err("a range past the end fails");
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "range past the end: {err}"
    );
    let err = store
        .get(
            &ranged,
            GetOptions::new().range(ByteRange::Bounded { start: 5, end: 5 }),
        )
        .await
        .expect_err("an empty range is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "empty range: {err}");

    // Conditional reads.
    let etag = put.etag.clone().expect("put gives an ETag");
    store
        .get(&ranged, GetOptions::new().if_match(etag.clone()))
        .await
        .expect("if-match with the current ETag");
    let err = store
        .get(&ranged, GetOptions::new().if_match("\"not-the-etag\""))
        .await
        .expect_err("if-match with another ETag fails");
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "failed precondition: {err}"
    );

    // Overwrite replaces, copy copies content and metadata.
    store
        .put_bytes(
            &ranged,
            b"replaced".to_vec(),
            PutOptions::new().metadata("v", "2"),
        )
        .await
        .expect("overwrite");
    assert_eq!(
        store.get_bytes(&ranged).await.expect("get overwritten"),
        b"replaced"
    );
    let copied = key(prefix, "copied/ranged copy");
    store.copy(&ranged, &copied).await.expect("copy");
    assert_eq!(
        store.get_bytes(&copied).await.expect("get copy"),
        b"replaced"
    );
    assert_eq!(
        store
            .head(&copied)
            .await
            .expect("head copy")
            .metadata
            .get("v")
            .map(String::as_str),
        Some("2"),
        "copy keeps metadata"
    );
    let err = store
        .copy(&missing, &copied)
        .await
        .expect_err("copy from a missing object");
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "copy from a missing object: {err}"
    );

    // Failed uploads leave nothing behind.
    let failed = key(prefix, "failed");
    let body = byte_stream(futures::stream::iter([
        Ok(Bytes::from_static(b"first chunk")),
        Err(std::io::Error::other("the scanner was unplugged")),
    ]));
    let err = store
        .put(&failed, body, PutOptions::new())
        .await
        .expect_err("a body error fails the put");
    assert!(
        err.to_string().contains("unplugged"),
        "the body's error is named: {err}"
    );
    assert_absent(store, &failed, "a failed upload leaves no object").await;
    let err = store
        .put_bytes(
            &failed,
            b"12345".to_vec(),
            PutOptions::new().sha256(sha256(b"other")),
        )
        .await
        .expect_err("checksum mismatch");
    assert_eq!(err.kind(), ErrorKind::Integrity, "checksum mismatch: {err}");
    assert_absent(store, &failed, "a corrupted upload leaves no object").await;
    let body = pattern_stream(100, 1, 50);
    let err = store
        .put(&failed, body, PutOptions::new().size(99))
        .await
        .expect_err("size mismatch");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "size mismatch: {err}");
    assert_absent(
        store,
        &failed,
        "an upload of the wrong size leaves no object",
    )
    .await;
    store
        .put_bytes(
            &failed,
            b"12345".to_vec(),
            PutOptions::new().sha256(sha256(b"12345")),
        )
        .await
        .expect("a matching checksum is accepted");
    store.delete(&failed).await.expect("delete");

    // A cancelled (dropped) upload leaves no object.
    let cancelled = key(prefix, "cancelled");
    cancel_midway(store, &cancelled, part).await;
    assert_absent(store, &cancelled, "a cancelled upload leaves no object").await;

    // Pagination over more keys than a listing page.
    let many = format!("{prefix}/many/");
    futures::stream::iter(0..settings.list_keys)
        .map(|i| {
            let k = ObjectKey::new(format!("{many}{i:05}")).expect("key");
            async move {
                store
                    .put_bytes(&k, format!("{i}").into_bytes(), PutOptions::new())
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("put many");
    let metas: Vec<_> = store.list(&many).try_collect().await.expect("list many");
    assert_eq!(
        metas.len(),
        settings.list_keys,
        "list returns every key across pages"
    );
    assert!(
        metas.windows(2).all(|w| w[0].key < w[1].key),
        "list is in key order"
    );
    assert_eq!(metas[3].size, 1, "list gives sizes");
    assert_eq!(
        store
            .list_keys(&format!("{many}0000"))
            .await
            .expect("narrow list")
            .len(),
        settings.list_keys.min(10),
        "list filters by prefix"
    );

    // Delete many.
    let keys: Vec<ObjectKey> = metas
        .iter()
        .map(|m| ObjectKey::new(m.key.clone()).expect("key"))
        .collect();
    let failures = store.delete_many(&keys).await.expect("delete many");
    assert!(failures.is_empty(), "delete_many: {failures:?}");
    assert!(
        store
            .list_keys(&many)
            .await
            .expect("list after delete")
            .is_empty(),
        "delete_many deleted every key"
    );

    // Clean up everything else.
    let rest: Vec<ObjectKey> = store
        .list_keys(&format!("{prefix}/"))
        .await
        .expect("list rest")
        .into_iter()
        .map(|k| ObjectKey::new(k).expect("key"))
        .collect();
    let failures = store.delete_many(&rest).await.expect("delete rest");
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        store
            .list_keys(&format!("{prefix}/"))
            .await
            .expect("list")
            .is_empty(),
        "the suite leaves nothing behind"
    );
}

/// Starts an upload of `3 × part + 1` bytes whose body stalls after two and a half parts
/// (so a multipart upload has begun, with parts sent), waits until the store has consumed
/// that much, then drops the upload.
pub async fn cancel_midway(store: &dyn ObjectStore, key: &ObjectKey, part: u64) {
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let total = 3 * part + 1;
    let stall_at = 2 * part + part / 2;
    let body = pattern_stream(stall_at, 3, 64 * 1024)
        .inspect_ok(move |c| {
            counter.fetch_add(c.len() as u64, Ordering::Relaxed);
        })
        .chain(futures::stream::pending());
    let upload = store.put(key, byte_stream(body), PutOptions::new().size(total));
    let watch = async {
        while pulled.load(Ordering::Relaxed) < stall_at {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Give the backend time to send what it has read.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    tokio::select! {
        result = upload => panic!("an upload whose body stalls cannot finish: {result:?}"),
        () = watch => {}
    }
}
