//! Transfer helpers for backends implementing [`ObjectStore`](crate::storage::ObjectStore): a body read in parts of a
//! fixed size, parts uploaded in parallel with bounded memory, the SHA-256 and length checked while streaming,
//! progress reported — what S3 and Azure Blob share.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;

use crate::error::{Error, Result};
pub use crate::storage::body::{StreamDigest, body_error, with_progress};
use crate::storage::{ByteStream, ObjectKey, PutOptions, TransferProgress};

/// The default policy of a remote object store's requests: up to `max_attempts` attempts
/// with backoff from 100 ms (at most 5 s between attempts) within 30 s, temporary errors
/// only (5xx, throttling, timeouts, connection failures); 5 minutes per attempt (one part
/// of a multipart transfer can be gigabytes).
///
/// ```
/// let config = moodbridge_core::raw::transfer_policy_config(3);
/// assert_eq!(config.retry.unwrap().max_attempts, 3);
/// ```
pub fn transfer_policy_config(max_attempts: u32) -> crate::resilience::PolicyConfig {
    crate::resilience::PolicyConfig {
        retry: Some(crate::resilience::RetryConfig {
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
            budget: None,
        }),
        attempt_timeout: Some(Duration::from_secs(300)),
        ..Default::default()
    }
}

/// Cuts a body into parts of exactly `part_size` bytes (the last may be shorter),
/// counting and hashing everything that passes: for backends that upload in parts (S3
/// multipart, Azure blocks). Holds at most one part.
///
/// ```
/// use bytes::Bytes;
/// use moodbridge_core::raw::PartReader;
/// use moodbridge_core::storage::{byte_stream, ObjectKey, PutOptions};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let key = ObjectKey::new("k")?;
/// let body = byte_stream(futures::stream::iter([Ok(Bytes::from_static(b"abcde")), Ok(Bytes::from_static(b"fg"))]));
/// let mut parts = PartReader::new(&key, body, 3);
/// let mut seen = Vec::new();
/// while let Some(part) = parts.next_part().await? {
///     seen.push(part);
/// }
/// assert_eq!(seen, ["abc", "def", "g"]);
/// let (size, _sha256) = parts.finish(&PutOptions::new())?;
/// assert_eq!(size, 7);
/// # Ok::<_, moodbridge_core::Error>(())
/// # }).unwrap();
/// ```
pub struct PartReader<'k> {
    key: &'k ObjectKey,
    body: ByteStream,
    leftover: Option<Bytes>,
    part_size: usize,
    digest: StreamDigest,
}

impl<'k> PartReader<'k> {
    /// Reads `body` (the body of `key`) in parts of `part_size` bytes (at least 1).
    pub fn new(key: &'k ObjectKey, body: ByteStream, part_size: u64) -> Self {
        PartReader {
            key,
            body,
            leftover: None,
            part_size: usize::try_from(part_size.max(1)).unwrap_or(usize::MAX),
            digest: StreamDigest::new(),
        }
    }

    /// The part size.
    pub fn part_size(&self) -> u64 {
        self.part_size as u64
    }

    /// The next part; `None` at the end of the body (an empty body has no part). A body
    /// error is reported as [`body_error`].
    pub async fn next_part(&mut self) -> Result<Option<Bytes>> {
        let mut buf: Option<BytesMut> = None;
        loop {
            let chunk = match self.leftover.take() {
                Some(c) => c,
                None => match self
                    .body
                    .try_next()
                    .await
                    .map_err(|e| body_error(self.key, e))?
                {
                    Some(c) => {
                        self.digest.update(&c);
                        c
                    }
                    None => return Ok(buf.map(BytesMut::freeze).filter(|b| !b.is_empty())),
                },
            };
            let have = buf.as_ref().map_or(0, BytesMut::len);
            if have == 0 && chunk.len() == self.part_size {
                return Ok(Some(chunk));
            }
            let room = self.part_size - have;
            let target = buf.get_or_insert_with(|| BytesMut::with_capacity(self.part_size));
            if chunk.len() >= room {
                let mut chunk = chunk;
                let rest = chunk.split_off(room);
                target.extend_from_slice(&chunk);
                if !rest.is_empty() {
                    self.leftover = Some(rest);
                }
                return Ok(buf.map(BytesMut::freeze));
            }
            target.extend_from_slice(&chunk);
        }
    }

    /// Bytes read so far, and their SHA-256, after checking the length and checksum
    /// `options` declare ([`StreamDigest::finish`]). Call it once the last part is read.
    pub fn finish(self, options: &PutOptions) -> Result<(u64, [u8; 32])> {
        let size = self.digest.bytes();
        let sha = self.digest.finish(self.key, options)?;
        Ok((size, sha))
    }
}

/// Uploads a body part by part with at most `concurrency` parts in flight, for backends
/// that upload in parts (S3 multipart, Azure blocks): `first` are parts already read
/// (the caller's look-ahead), the rest come from `reader`. `upload(index, part)` (index
/// from 0) runs as its own task; progress is reported as parts finish. The results come
/// back in part order. More than `max_parts` parts is an error before the extra part is
/// sent. Dropping the returned future aborts the part tasks.
#[allow(clippy::too_many_arguments)]
pub async fn upload_parts<T, F, Fut>(
    reader: &mut PartReader<'_>,
    first: Vec<Bytes>,
    concurrency: usize,
    max_parts: u64,
    options: &PutOptions,
    mut upload: F,
) -> Result<Vec<T>>
where
    F: FnMut(u64, Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending: std::collections::VecDeque<Bytes> = first.into();
    let mut next = 0u64;
    let mut done = Vec::new();
    let mut bytes = 0u64;
    let mut exhausted = false;
    loop {
        while tasks.len() < concurrency.max(1) && !exhausted {
            let part = match pending.pop_front() {
                Some(p) => p,
                None => match reader.next_part().await? {
                    Some(p) => p,
                    None => {
                        exhausted = true;
                        break;
                    }
                },
            };
            if next >= max_parts {
                return Err(Error::invalid_input(format!(
                    "upload of {} needs more than {max_parts} parts of {} bytes",
                    reader.key,
                    reader.part_size()
                ))
                .with_hint("give the body's size in PutOptions::size (the part size is then chosen to fit) or raise the part size"));
            }
            let len = part.len() as u64;
            let index = next;
            let task = upload(index, part);
            tasks.spawn(async move { task.await.map(|out| (index, len, out)) });
            next += 1;
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (index, len, out) =
            joined.map_err(|e| Error::internal(format!("part upload task: {e}")))??;
        done.push((index, out));
        bytes += len;
        if let Some(progress) = &options.progress {
            progress(TransferProgress {
                bytes,
                total: options.size,
            });
        }
    }
    done.sort_by_key(|(index, _)| *index);
    Ok(done.into_iter().map(|(_, out)| out).collect())
}
