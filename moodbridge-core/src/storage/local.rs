//! The local filesystem backend.
//!
//! Layout under the root directory:
//! - `objects/` mirrors the key's `/`-separated segments as directories; each segment is
//!   percent-encoded (`%`, `\` and characters a filesystem mishandles), so no encoded name
//!   ever contains the text `%m` or `%d` except the suffixes below;
//! - an object `a/b` is a sidecar `objects/a/b%meta` (JSON: size, SHA-256, content type,
//!   metadata, and the name of its data file) and a data file `objects/a/b%d<random>`;
//! - `tmp/` holds uploads in progress.
//!
//! A write goes to `tmp/`, is fsynced, renamed next to its sidecar, then the sidecar is
//! written to `tmp/`, fsynced and renamed over the old one: that rename is the commit, so
//! readers see the old object or the new one, never a mix. The old data file is removed
//! after the commit. A crash may leave an unreferenced data file or a temp file behind
//! (garbage, never a visible object); [`LocalObjectStore::open`] empties `tmp/`.

use std::collections::BTreeMap;
use std::io::{ErrorKind as IoKind, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::body::{StreamDigest, body_error, with_progress};
use super::{
    ByteStream, GetOptions, GetResult, ObjectKey, ObjectMeta, ObjectStore, PutOptions, PutResult,
    TransferProgress, byte_stream, hex,
};
use crate::error::{Error, ErrorKind, Result};

/// Characters encoded in a segment's file name.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b'%')
    .add(b'\\')
    .add(b':')
    .add(b'*')
    .add(b'?')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'|');
const META_SUFFIX: &str = "%meta";
const DATA_MARK: &str = "%d";
/// Longest encoded segment (file names are limited to 255 bytes; room for the suffixes).
const MAX_SEGMENT: usize = 200;

/// Objects in a directory of the local filesystem: the embedded default for examples,
/// tests and hosts without a cloud account. Writes are atomic (temp file, fsync,
/// rename); metadata lives in a sidecar file; keys that would leave the root (`..`
/// segments, absolute paths) are rejected.
///
/// ```
/// use moodbridge_core::storage::{LocalObjectStore, ObjectKey, ObjectStoreExt, PutOptions};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store = LocalObjectStore::open(dir.path()).await?;
/// let err = store
///     .put_bytes(&ObjectKey::new("../etc/passwd")?, b"x".to_vec(), PutOptions::new())
///     .await
///     .unwrap_err();
/// assert!(err.to_string().contains(".."));
/// # Ok::<_, moodbridge_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct LocalObjectStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    objects: PathBuf,
    tmp: PathBuf,
    /// Serialises commits and deletes, so the data file a sidecar names is removed only
    /// by the writer that replaced that sidecar.
    commit: tokio::sync::Mutex<()>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    size: u64,
    sha256: String,
    data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    modified_ms: u64,
}

impl Sidecar {
    fn meta(&self, key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: self.size,
            content_type: self.content_type.clone(),
            etag: Some(format!("\"{}\"", self.sha256)),
            last_modified: Some(UNIX_EPOCH + Duration::from_millis(self.modified_ms)),
            metadata: self.metadata.clone(),
        }
    }
}

fn io_error(what: impl std::fmt::Display, err: std::io::Error) -> Error {
    let kind = match err.kind() {
        IoKind::NotFound => ErrorKind::NotFound,
        IoKind::PermissionDenied => ErrorKind::Forbidden,
        IoKind::StorageFull | IoKind::QuotaExceeded => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("{what}: {err}")).with_source(err)
}

fn not_found(key: &ObjectKey) -> Error {
    Error::not_found(format!("no object {key}"))
        .with_hint("check the key (keys are case-sensitive); list the prefix to see what exists")
}

impl LocalObjectStore {
    /// Opens (creating it if needed) a store rooted at `root`, and removes uploads a
    /// previous process left unfinished.
    pub async fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        tokio::fs::create_dir_all(&objects)
            .await
            .map_err(|e| io_error(format_args!("creating {}", objects.display()), e))?;
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|e| io_error(format_args!("creating {}", tmp.display()), e))?;
        Ok(LocalObjectStore {
            inner: Arc::new(Inner {
                name: format!("local:{}", root.display()),
                objects,
                tmp,
                commit: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The directory and the encoded last segment of `key`, after the local checks.
    fn locate(&self, key: &ObjectKey) -> Result<(PathBuf, String)> {
        let text = key.as_str();
        let reject = |why: &str| {
            Err(Error::invalid_input(format!("object key {text:?} {why}"))
                .with_hint("use relative keys of non-empty segments such as \"cases/2026/a.pdf\""))
        };
        if text.starts_with('/') {
            return reject("is absolute (starts with '/')");
        }
        let mut dir = self.inner.objects.clone();
        let segments: Vec<&str> = text.split('/').collect();
        let mut last = String::new();
        for (i, segment) in segments.iter().enumerate() {
            match *segment {
                "" => return reject("has an empty segment ('//' or a trailing '/')"),
                "." | ".." => {
                    return reject(
                        "has a '.' or '..' segment, which could leave the store's directory",
                    );
                }
                _ => {}
            }
            let encoded = utf8_percent_encode(segment, SEGMENT).to_string();
            if encoded.len() > MAX_SEGMENT {
                return reject(
                    "has a segment longer than the local filesystem allows (200 bytes once encoded)",
                );
            }
            if i + 1 == segments.len() {
                last = encoded;
            } else {
                dir.push(encoded);
            }
        }
        // The encoding leaves no separator or parent component: make sure of it.
        debug_assert!(
            dir.strip_prefix(&self.inner.objects)
                .is_ok_and(|rel| rel.components().all(|c| matches!(c, Component::Normal(_))))
        );
        Ok((dir, last))
    }

    async fn read_sidecar(&self, key: &ObjectKey) -> Result<(PathBuf, Sidecar)> {
        let (dir, name) = self.locate(key)?;
        let path = dir.join(format!("{name}{META_SUFFIX}"));
        let sidecar = read_sidecar_at(&path).await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                not_found(key)
            } else {
                e
            }
        })?;
        Ok((dir, sidecar))
    }

    /// Moves the fsynced data file `staged` into place as `key` with `sidecar`.
    async fn commit(&self, key: &ObjectKey, staged: &Path, mut sidecar: Sidecar) -> Result<()> {
        let (dir, name) = self.locate(key)?;
        let data_name = format!("{name}{DATA_MARK}{:016x}", rand::random::<u64>());
        sidecar.data = data_name.clone();
        let meta_tmp = self
            .inner
            .tmp
            .join(format!("{:016x}.meta", rand::random::<u64>()));
        let json = serde_json::to_vec(&sidecar)
            .map_err(|e| Error::internal(format!("sidecar of {key}: {e}")))?;
        write_synced(&meta_tmp, &json).await?;

        let _guard = self.inner.commit.lock().await;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error(format_args!("creating the directory of {key}"), e))?;
        let meta_path = dir.join(format!("{name}{META_SUFFIX}"));
        let old = read_sidecar_at(&meta_path).await.ok();
        let data_path = dir.join(&data_name);
        tokio::fs::rename(staged, &data_path)
            .await
            .map_err(|e| io_error(format_args!("moving the upload of {key} into place"), e))?;
        if let Err(e) = tokio::fs::rename(&meta_tmp, &meta_path).await {
            let _ = tokio::fs::remove_file(&data_path).await;
            return Err(io_error(format_args!("committing {key}"), e));
        }
        sync_dir(&dir).await?;
        if let Some(old) = old
            && old.data != data_name
        {
            let _ = tokio::fs::remove_file(dir.join(old.data)).await;
        }
        Ok(())
    }

    fn staging_path(&self) -> PathBuf {
        self.inner
            .tmp
            .join(format!("{:016x}.part", rand::random::<u64>()))
    }

    /// Every key under the objects directory that starts with `prefix`, sorted.
    fn keys_blocking(objects: &Path, prefix: &str) -> std::io::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pending = vec![(objects.to_path_buf(), String::new())];
        while let Some((dir, key_prefix)) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == IoKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let file_name = entry.file_name();
                let Some(file_name) = file_name.to_str() else {
                    continue;
                };
                let file_type = entry.file_type()?;
                if file_type.is_dir() {
                    let segment = percent_decode_str(file_name).decode_utf8_lossy();
                    let sub = format!("{key_prefix}{segment}/");
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        pending.push((entry.path(), sub));
                    }
                } else if let Some(encoded) = file_name.strip_suffix(META_SUFFIX) {
                    let key = format!(
                        "{key_prefix}{}",
                        percent_decode_str(encoded).decode_utf8_lossy()
                    );
                    if key.starts_with(prefix) {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }
}

async fn read_sidecar_at(path: &Path) -> Result<Sidecar> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| io_error(format_args!("reading {}", path.display()), e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            ErrorKind::Integrity,
            format!("sidecar {} is damaged: {e}", path.display()),
        )
    })
}

async fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| io_error(format_args!("creating {}", path.display()), e))?;
    file.write_all(data)
        .await
        .map_err(|e| io_error(format_args!("writing {}", path.display()), e))?;
    file.sync_all()
        .await
        .map_err(|e| io_error(format_args!("syncing {}", path.display()), e))
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
        .await
        .map_err(|e| Error::internal(format!("directory sync task: {e}")))?
        .map_err(|e| io_error("syncing a directory", e))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Removes the staged file when an upload fails or is dropped midway.
struct Staged(Option<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[async_trait]
impl ObjectStore for LocalObjectStore {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<PutResult> {
        options.check()?;
        self.locate(key)?;
        let path = self.staging_path();
        let mut staged = Staged(Some(path.clone()));
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| io_error(format_args!("staging {key}"), e))?;
        let mut digest = StreamDigest::new();
        let mut body = body;
        while let Some(chunk) = body.try_next().await.map_err(|e| body_error(key, e))? {
            file.write_all(&chunk)
                .await
                .map_err(|e| io_error(format_args!("writing {key}"), e))?;
            digest.update(&chunk);
            if let Some(progress) = &options.progress {
                progress(TransferProgress {
                    bytes: digest.bytes(),
                    total: options.size,
                });
            }
        }
        file.sync_all()
            .await
            .map_err(|e| io_error(format_args!("syncing {key}"), e))?;
        drop(file);
        let size = digest.bytes();
        let sha = digest.finish(key, &options)?;
        let sidecar = Sidecar {
            size,
            sha256: hex(sha),
            data: String::new(),
            content_type: options.content_type.clone(),
            metadata: options.metadata.clone(),
            modified_ms: now_ms(),
        };
        self.commit(key, &path, sidecar).await?;
        staged.0 = None;
        Ok(PutResult {
            key: key.clone(),
            size,
            etag: Some(format!("\"{}\"", hex(sha))),
            sha256: sha,
        })
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        options.check()?;
        let (dir, sidecar) = self.read_sidecar(key).await?;
        let meta = sidecar.meta(key.as_str());
        if let Some(expected) = &options.if_match
            && meta.etag.as_deref() != Some(expected.as_str())
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{key} changed: its ETag is no longer {expected}"),
            )
            .with_hint("read the object again from the start"));
        }
        let (start, end) = options.range.resolve_in(key, sidecar.size)?;
        let mut file = tokio::fs::File::open(dir.join(&sidecar.data))
            .await
            .map_err(|e| {
                if e.kind() == IoKind::NotFound {
                    not_found(key)
                } else {
                    io_error(format_args!("opening {key}"), e)
                }
            })?;
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| io_error(format_args!("seeking in {key}"), e))?;
        }
        let reader = file.take(end - start);
        let body = byte_stream(tokio_util::io::ReaderStream::with_capacity(
            reader,
            256 * 1024,
        ));
        let body = with_progress(body, options.progress.clone(), Some(end - start));
        Ok(GetResult {
            meta,
            range: (start, end),
            body,
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        let (_, sidecar) = self.read_sidecar(key).await?;
        Ok(sidecar.meta(key.as_str()))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        let objects = self.inner.objects.clone();
        let owned_prefix = prefix.to_owned();
        let keys = async move {
            tokio::task::spawn_blocking(move || {
                LocalObjectStore::keys_blocking(&objects, &owned_prefix)
            })
            .await
            .map_err(|e| Error::internal(format!("listing task: {e}")))?
            .map_err(|e| io_error("listing the store", e))
        };
        futures::stream::once(keys)
            .map_ok(move |keys| {
                futures::stream::iter(keys)
                    .map(move |key| async move {
                        let key = ObjectKey::new(key)?;
                        match self.head(&key).await {
                            // Deleted since the listing: skip it.
                            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                            other => other.map(Some),
                        }
                    })
                    .buffered(16)
                    .try_filter_map(|m| async move { Ok(m) })
            })
            .try_flatten()
            .boxed()
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let (dir, name) = self.locate(key)?;
        let meta_path = dir.join(format!("{name}{META_SUFFIX}"));
        let _guard = self.inner.commit.lock().await;
        let sidecar = match read_sidecar_at(&meta_path).await {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        tokio::fs::remove_file(&meta_path)
            .await
            .map_err(|e| io_error(format_args!("deleting {key}"), e))?;
        let _ = tokio::fs::remove_file(dir.join(sidecar.data)).await;
        // Remove directories left empty, up to the objects root.
        let mut current = dir;
        while current != self.inner.objects && tokio::fs::remove_dir(&current).await.is_ok() {
            if !current.pop() {
                break;
            }
        }
        Ok(())
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        self.locate(to)?;
        let (dir, sidecar) = self.read_sidecar(from).await?;
        let staged_path = self.staging_path();
        let mut staged = Staged(Some(staged_path.clone()));
        tokio::fs::copy(dir.join(&sidecar.data), &staged_path)
            .await
            .map_err(|e| io_error(format_args!("copying {from}"), e))?;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&staged_path)
            .await
            .map_err(|e| io_error(format_args!("copying {from}"), e))?;
        file.sync_all()
            .await
            .map_err(|e| io_error(format_args!("syncing the copy of {from}"), e))?;
        let sidecar = Sidecar {
            modified_ms: now_ms(),
            ..sidecar
        };
        self.commit(to, &staged_path, sidecar).await?;
        staged.0 = None;
        Ok(())
    }
}
