//! [`ObjectStore`]: the object-storage capability that S3 (`connector-aws`), Azure Blob
//! (`connector-azure`) and the local filesystem ([`LocalObjectStore`], the embedded
//! default) implement.
//!
//! Bodies are streams of [`Bytes`] in both directions, so an object of any size moves
//! through bounded memory. Every `put` computes the object's SHA-256 while streaming and
//! returns it; a caller that knows the checksum beforehand passes it in
//! [`PutOptions::sha256`] and a mismatch fails the upload before anything lands
//! ([`ErrorKind::Integrity`]). Keys are checked by
//! [`ObjectKey::new`] before any request.
//!
//! ```
//! use moodbridge_core::storage::{LocalObjectStore, ObjectKey, ObjectStore, ObjectStoreExt, PutOptions};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = LocalObjectStore::open(dir.path()).await?;
//! let key = ObjectKey::new("cases/2026/complaint.pdf")?;
//! let put = store
//!     .put_bytes(&key, b"%PDF-1.7 ...".to_vec(), PutOptions::new().content_type("application/pdf"))
//!     .await?;
//! assert_eq!(put.size, 12);
//! let meta = store.head(&key).await?;
//! assert_eq!(meta.content_type.as_deref(), Some("application/pdf"));
//! assert_eq!(store.get_bytes(&key).await?, b"%PDF-1.7 ...".as_slice());
//! # Ok::<_, moodbridge_core::Error>(())
//! # }).unwrap();
//! ```

pub(crate) mod body;
mod local;
pub mod local_objects;

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

pub use local::LocalObjectStore;

/// An object's body: a stream of byte chunks. Any `Stream<Item = io::Result<Bytes>>`
/// boxed with [`byte_stream`], or an `AsyncRead` through [`ObjectStoreExt::put_reader`].
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Boxes a stream of chunks as a [`ByteStream`].
///
/// ```
/// use bytes::Bytes;
/// let body = moodbridge_core::storage::byte_stream(futures::stream::iter([
///     Ok(Bytes::from_static(b"hello ")),
///     Ok(Bytes::from_static(b"world")),
/// ]));
/// # drop(body);
/// ```
pub fn byte_stream<S>(stream: S) -> ByteStream
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    Box::pin(stream)
}

/// The longest key, in bytes of UTF-8 (S3's and Azure's limit is 1,024).
pub const MAX_KEY_LEN: usize = 1024;

/// A checked object key: 1 to 1,024 bytes of UTF-8 without control characters.
/// Backends may check more (the local filesystem rejects `..` segments and absolute
/// paths).
///
/// ```
/// use moodbridge_core::storage::ObjectKey;
/// assert!(ObjectKey::new("cases/Smith v. Jones/exhibit 1+2 (50%).pdf").is_ok());
/// let err = ObjectKey::new("").unwrap_err();
/// assert!(err.to_string().contains("empty"));
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Checks `key`.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::invalid_input("object key is empty")
                .with_hint("give a key such as \"cases/2026/complaint.pdf\""));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::invalid_input(format!(
                "object key is {} bytes long; the limit is {MAX_KEY_LEN}",
                key.len()
            ))
            .with_hint("shorten the key"));
        }
        if let Some(c) = key.chars().find(|c| c.is_control()) {
            return Err(Error::invalid_input(format!(
                "object key {key:?} contains the control character {:?}",
                c
            ))
            .with_hint("remove control characters (newlines, tabs, NUL) from keys"));
        }
        Ok(ObjectKey(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ObjectKey {
    type Error = Error;
    fn try_from(value: &str) -> Result<Self> {
        ObjectKey::new(value)
    }
}

/// Which bytes of an object to read.
///
/// ```
/// use moodbridge_core::storage::ByteRange;
/// assert_eq!(ByteRange::Bounded { start: 0, end: 10 }.resolve(4), Some((0, 4)));
/// assert_eq!(ByteRange::Last(3).resolve(10), Some((7, 10)));
/// assert_eq!(ByteRange::From(10).resolve(10), None); // nothing there
/// assert_eq!(ByteRange::Last(3).http_header(), "bytes=-3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ByteRange {
    /// The whole object.
    #[default]
    All,
    /// From `start` to the end.
    From(u64),
    /// Bytes `start..end` (end exclusive; clipped to the object's size).
    Bounded {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The last `n` bytes.
    Last(u64),
}

impl ByteRange {
    /// The range within an object of `size` bytes, as `(start, end)` with `end`
    /// exclusive; `None` when it selects no byte of a non-empty object (or is empty).
    /// The whole range of an empty object is `Some((0, 0))`.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::All => Some((0, size)),
            ByteRange::From(start) => (start < size).then_some((start, size)),
            ByteRange::Bounded { start, end } => {
                let end = end.min(size);
                (start < end).then_some((start, end))
            }
            ByteRange::Last(n) => (n > 0 && size > 0).then(|| (size - n.min(size), size)),
        }
    }

    /// As [`resolve`](Self::resolve), with the error a store answers for a range that
    /// selects no byte of `key`.
    ///
    /// ```
    /// use moodbridge_core::storage::{ByteRange, ObjectKey};
    /// let key = ObjectKey::new("a.pdf")?;
    /// assert_eq!(ByteRange::Last(4).resolve_in(&key, 10)?, (6, 10));
    /// assert!(ByteRange::From(10).resolve_in(&key, 10).is_err());
    /// # Ok::<_, moodbridge_core::Error>(())
    /// ```
    pub fn resolve_in(self, key: &ObjectKey, size: u64) -> Result<(u64, u64)> {
        self.resolve(size).ok_or_else(|| {
            Error::invalid_input(format!("range {self:?} is outside {key} ({size} bytes)"))
                .with_hint("ask for bytes inside the object (head gives its size)")
        })
    }

    /// The HTTP `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`); `All` gives
    /// `bytes=0-`.
    pub fn http_header(self) -> String {
        match self {
            ByteRange::All => "bytes=0-".to_owned(),
            ByteRange::From(start) => format!("bytes={start}-"),
            ByteRange::Bounded { start, end } => {
                format!("bytes={start}-{}", end.saturating_sub(1))
            }
            ByteRange::Last(n) => format!("bytes=-{n}"),
        }
    }

    fn check(self) -> Result<()> {
        let bad = match self {
            ByteRange::Bounded { start, end } => start >= end,
            ByteRange::Last(n) => n == 0,
            _ => false,
        };
        if bad {
            return Err(Error::invalid_input(format!("empty byte range {self:?}"))
                .with_hint("give a range with at least one byte (end is exclusive)"));
        }
        Ok(())
    }
}

/// How far a transfer is: `bytes` done of `total` (when known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferProgress {
    /// Bytes transferred so far.
    pub bytes: u64,
    /// The transfer's size, when known.
    pub total: Option<u64>,
}

/// A progress callback; called from the transfer's task, so it should be quick
/// (update a bar, send on a channel).
pub type ProgressFn = Arc<dyn Fn(TransferProgress) + Send + Sync>;

/// Options of [`ObjectStore::put`].
#[derive(Clone, Default)]
pub struct PutOptions {
    /// The `Content-Type` stored with the object.
    pub content_type: Option<String>,
    /// User metadata (names of lower-case ASCII letters, digits and `_`, starting with a
    /// letter — what S3 and Azure both accept).
    pub metadata: BTreeMap<String, String>,
    /// The body's length, when known: lets backends pick a part size and report
    /// progress totals. A body of another length fails the upload.
    pub size: Option<u64>,
    /// The body's expected SHA-256: the upload fails (and nothing lands) on a mismatch.
    pub sha256: Option<[u8; 32]>,
    /// Called as the upload progresses.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for PutOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutOptions")
            .field("content_type", &self.content_type)
            .field("metadata", &self.metadata)
            .field("size", &self.size)
            .field("sha256", &self.sha256.map(hex))
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl PutOptions {
    /// No content type, no metadata, size unknown.
    pub fn new() -> Self {
        PutOptions::default()
    }

    /// Sets the content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Adds a user metadata entry.
    pub fn metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(name.into(), value.into());
        self
    }

    /// Declares the body's length.
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// Declares the body's SHA-256 (verified before the object lands).
    pub fn sha256(mut self, digest: [u8; 32]) -> Self {
        self.sha256 = Some(digest);
        self
    }

    /// Sets the progress callback.
    pub fn progress(mut self, progress: impl Fn(TransferProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Checks content type and metadata names (the rules of S3 and Azure combined, so a
    /// write that works on one backend works on the others).
    pub fn check(&self) -> Result<()> {
        for (name, value) in &self.metadata {
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && name.as_bytes()[0].is_ascii_lowercase();
            if !ok {
                return Err(Error::invalid_input(format!("metadata name {name:?} is not allowed"))
                    .with_hint("use lower-case ASCII letters, digits and '_', starting with a letter (Azure allows no '-')"));
            }
            if value.chars().any(|c| !(' '..='~').contains(&c)) {
                return Err(Error::invalid_input(format!(
                    "metadata {name:?} has a value with characters outside printable ASCII"
                ))
                .with_hint("encode the value (e.g. percent-encoding) before storing it"));
            }
        }
        if let Some(ct) = &self.content_type
            && (ct.is_empty() || ct.chars().any(|c| c.is_control() || !c.is_ascii()))
        {
            return Err(
                Error::invalid_input(format!("content type {ct:?} is not valid"))
                    .with_hint("give a MIME type such as \"application/pdf\""),
            );
        }
        Ok(())
    }
}

/// What [`ObjectStore::put`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// The key written.
    pub key: ObjectKey,
    /// Bytes written.
    pub size: u64,
    /// The ETag the backend gave the object, when it gives one.
    pub etag: Option<String>,
    /// SHA-256 of the body, computed while it streamed.
    pub sha256: [u8; 32],
}

impl PutResult {
    /// The SHA-256 as lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex(self.sha256)
    }
}

/// Options of [`ObjectStore::get`].
#[derive(Clone, Default)]
pub struct GetOptions {
    /// Which bytes.
    pub range: ByteRange,
    /// Fail with [`ErrorKind::Conflict`] unless the object's
    /// ETag is this one (reads a version consistently across ranged requests).
    pub if_match: Option<String>,
    /// Called as the download progresses.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for GetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetOptions")
            .field("range", &self.range)
            .field("if_match", &self.if_match)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl GetOptions {
    /// The whole object.
    pub fn new() -> Self {
        GetOptions::default()
    }

    /// Reads `range` only.
    pub fn range(mut self, range: ByteRange) -> Self {
        self.range = range;
        self
    }

    /// Requires the object's ETag to be `etag`.
    pub fn if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }

    /// Sets the progress callback.
    pub fn progress(mut self, progress: impl Fn(TransferProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Checks the range.
    pub fn check(&self) -> Result<()> {
        self.range.check()
    }
}

/// An object's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its content type, when stored (listings may not carry it).
    pub content_type: Option<String>,
    /// Its ETag.
    pub etag: Option<String>,
    /// When it was last written.
    pub last_modified: Option<SystemTime>,
    /// User metadata (listings may not carry it).
    pub metadata: BTreeMap<String, String>,
}

/// What [`ObjectStore::get`] returns: the object's properties and the body stream of
/// the requested bytes.
pub struct GetResult {
    /// The object's properties (`size` is the whole object's).
    pub meta: ObjectMeta,
    /// The bytes `start..end` the body holds.
    pub range: (u64, u64),
    /// The body.
    pub body: ByteStream,
}

impl fmt::Debug for GetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl GetResult {
    /// Reads the whole body into memory (small objects only).
    pub async fn bytes(self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.range.1 - self.range.0).unwrap_or(0));
        let mut body = self.body;
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("reading {}: {e}", self.meta.key),
            )
            .with_source(e)
        })? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The body as an `AsyncRead`.
    pub fn into_async_read(self) -> impl tokio::io::AsyncRead + Send + Unpin {
        tokio_util::io::StreamReader::new(self.body)
    }
}

/// HTTP method of a presigned request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresignMethod {
    /// Download.
    Get,
    /// Upload.
    Put,
}

/// A presigned (S3) or SAS (Azure) request that any HTTP client can make until
/// `expires_at`, without credentials.
#[derive(Clone)]
pub struct PresignedRequest {
    /// The method.
    pub method: PresignMethod,
    /// The URL (carries the signature: treat it as a secret; `Debug` hides its query).
    pub url: String,
    /// Headers the request must carry.
    pub headers: Vec<(String, String)>,
    /// When it stops working.
    pub expires_at: SystemTime,
}

impl fmt::Debug for PresignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.url.split('?').next().unwrap_or_default();
        f.debug_struct("PresignedRequest")
            .field("method", &self.method)
            .field("url", &format_args!("{shown}?[REDACTED]"))
            .field("headers", &self.headers)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A key that [`ObjectStore::delete_many`] could not delete.
#[derive(Debug)]
pub struct DeleteFailure {
    /// The key.
    pub key: ObjectKey,
    /// Why.
    pub error: Error,
}

/// Object storage: S3, Azure Blob, the local filesystem.
///
/// Errors use the core kinds: a missing object is
/// [`NotFound`](crate::ErrorKind::NotFound), throttling (S3 `SlowDown`, HTTP 503) is
/// [`RateLimited`](crate::ErrorKind::RateLimited) and temporary, a denied request
/// [`Forbidden`](crate::ErrorKind::Forbidden), a failed precondition
/// [`Conflict`](crate::ErrorKind::Conflict), a checksum mismatch
/// [`Integrity`](crate::ErrorKind::Integrity).
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// A name for messages and metrics, e.g. `s3:moodbridge-docs` or `local:/var/docs`.
    fn name(&self) -> &str;

    /// Writes `body` to `key`, replacing any object there. The object appears whole or
    /// not at all: a failed or cancelled (dropped) upload leaves nothing behind.
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        options: PutOptions,
    ) -> Result<PutResult>;

    /// Reads an object (or a range of it) as a stream.
    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult>;

    /// An object's properties.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta>;

    /// The objects whose keys start with `prefix`, in key order, fetched page by page as
    /// the stream is polled.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// Deletes many objects (in batches where the backend has a batch call) and returns
    /// those that failed.
    async fn delete_many(&self, keys: &[ObjectKey]) -> Result<Vec<DeleteFailure>> {
        let mut failures = Vec::new();
        for key in keys {
            if let Err(error) = self.delete(key).await {
                failures.push(DeleteFailure {
                    key: key.clone(),
                    error,
                });
            }
        }
        Ok(failures)
    }

    /// Copies `from` to `to` inside this store (server-side where the backend can).
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()>;

    /// A request that lets a plain HTTP client download or upload `key` until `expires_in`
    /// has passed. Backends without HTTP access (the local filesystem) answer
    /// [`Unsupported`](crate::ErrorKind::Unsupported).
    async fn presign(
        &self,
        key: &ObjectKey,
        method: PresignMethod,
        expires_in: Duration,
    ) -> Result<PresignedRequest> {
        let _ = (key, method, expires_in);
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("{} cannot presign requests", self.name()),
        ))
    }
}

/// Conveniences over any [`ObjectStore`].
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Writes a buffer.
    async fn put_bytes(
        &self,
        key: &ObjectKey,
        data: impl Into<Bytes> + Send,
        options: PutOptions,
    ) -> Result<PutResult> {
        let data: Bytes = data.into();
        let size = data.len() as u64;
        let options = PutOptions {
            size: Some(size),
            ..options
        };
        self.put(
            key,
            byte_stream(futures::stream::once(async move { Ok(data) })),
            options,
        )
        .await
    }

    /// Writes everything `reader` yields (a file, a socket, a decompressor …).
    async fn put_reader<R>(
        &self,
        key: &ObjectKey,
        reader: R,
        options: PutOptions,
    ) -> Result<PutResult>
    where
        R: tokio::io::AsyncRead + Send + 'static,
    {
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024);
        self.put(key, byte_stream(stream), options).await
    }

    /// Reads a whole object into memory (small objects only).
    async fn get_bytes(&self, key: &ObjectKey) -> Result<Vec<u8>> {
        self.get(key, GetOptions::new()).await?.bytes().await
    }

    /// Every key under `prefix`, collected (convenient for small listings).
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.list(prefix).map_ok(|m| m.key).try_collect().await
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}

/// Lower-case hex of a digest.
pub fn hex(bytes: impl AsRef<[u8]>) -> String {
    use fmt::Write;
    let bytes = bytes.as_ref();
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// SHA-256 of a byte slice (for tests and small payloads; uploads compute theirs while
/// streaming).
pub fn sha256(data: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(data.as_ref()).into()
}
