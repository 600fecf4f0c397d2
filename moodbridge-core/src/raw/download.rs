//! Parallel ranged downloads with a hard bound on the bytes held and a number of ranges
//! in flight that adapts to the throughput it gets.
//!
//! An object is cut into ranges of `part` bytes. Each range is fetched by a task of its
//! own and streamed: the range the reader is on (the *head*) is handed to the reader,
//! which then reads it straight from its connection; the ranges after it keep their
//! connections busy by buffering what they receive, each chunk only once a byte budget
//! (a semaphore of `buffer` bytes) grants it room. When the budget is spent they stop
//! reading their sockets (TCP pushes back on the server) until the reader catches up. The
//! head never waits for the budget, so the download cannot deadlock on it.
//!
//! The number of ranges in flight starts at `initial_concurrency` and grows while each
//! round of ranges brings at least 10 % more throughput than the best round before it, up
//! to `max_concurrency`; once it stops paying it stays where it is.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use crate::error::{Error, ErrorKind, Result};
use crate::storage::{ByteStream, byte_stream};

/// Ranges in flight at most per download, by default.
pub const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 16;
/// Bytes a download holds at most for ranges ahead of the reader, by default (24 MiB).
pub const DEFAULT_DOWNLOAD_BUFFER: u64 = 24 * 1024 * 1024;
/// The smallest download buffer a store accepts in its settings (1 MiB).
pub const MIN_DOWNLOAD_BUFFER: u64 = 1024 * 1024;

/// Checks the download settings of a store's builder (`store` names it in the message):
/// at least 1 range in flight and at least [`MIN_DOWNLOAD_BUFFER`] of buffer.
///
/// ```
/// use moodbridge_core::raw::check_download_settings;
/// assert!(check_download_settings("S3", 16, 24 << 20).is_ok());
/// let err = check_download_settings("S3", 0, 24 << 20).unwrap_err();
/// assert!(err.to_string().contains("S3 download concurrency is 0"));
/// ```
pub fn check_download_settings(store: &str, concurrency: usize, buffer: u64) -> Result<()> {
    if concurrency == 0 {
        return Err(Error::config(format!("{store} download concurrency is 0"))
            .with_hint("use at least 1 ranged GET in flight (default 16; 1 reads one stream)"));
    }
    if buffer < MIN_DOWNLOAD_BUFFER {
        return Err(Error::config(format!(
            "{store} download buffer of {buffer} bytes is below 1 MiB"
        ))
        .with_hint("use at least 1 MiB (default 24 MiB)"));
    }
    Ok(())
}

/// The same checks on a store's config settings, as problems of `download_concurrency`
/// and `download_buffer_mib`.
///
/// ```
/// use moodbridge_core::config::Validator;
/// use moodbridge_core::raw::validate_download_settings;
/// let mut v = Validator::new();
/// validate_download_settings(&mut v, 0, 0);
/// let paths: Vec<String> = v.finish().unwrap_err().iter().map(|p| p.path.clone()).collect();
/// assert_eq!(paths, ["download_concurrency", "download_buffer_mib"]);
/// ```
pub fn validate_download_settings(
    v: &mut crate::config::Validator,
    concurrency: usize,
    buffer_mib: u64,
) {
    if concurrency == 0 {
        v.problem(
            "download_concurrency",
            "is 0",
            "use at least 1 (default 16; 1 reads one stream)",
        );
    }
    if buffer_mib == 0 {
        v.problem("download_buffer_mib", "is 0", "use at least 1 (default 24)");
    }
}

/// How a [`ranged_download`] cuts an object and paces its ranges.
///
/// ```
/// use moodbridge_core::raw::DownloadPlan;
/// let plan = DownloadPlan::new(8 << 20).max_concurrency(16).buffer(24 << 20);
/// assert_eq!(plan.part, 8 << 20);
/// assert_eq!(plan.initial_concurrency, 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DownloadPlan {
    /// Bytes per range request (at least 1).
    pub part: u64,
    /// Ranges in flight when the download starts (at least 1; at most `max_concurrency`).
    pub initial_concurrency: usize,
    /// Ranges in flight at most.
    pub max_concurrency: usize,
    /// Bytes held at most in blocks for the ranges ahead of the reader (see
    /// [`ranged_download`]).
    pub buffer: u64,
    /// Times a range whose body breaks off is resumed from the byte it reached.
    pub resume_attempts: u32,
}

impl DownloadPlan {
    /// Ranges of `part` bytes, 4 in flight at first and up to 16, 24 MiB of buffer,
    /// 3 resumes per range.
    pub fn new(part: u64) -> Self {
        DownloadPlan {
            part: part.max(1),
            initial_concurrency: 4,
            max_concurrency: DEFAULT_DOWNLOAD_CONCURRENCY,
            buffer: DEFAULT_DOWNLOAD_BUFFER,
            resume_attempts: 3,
        }
    }

    /// Ranges in flight at most (at least 1); the first round starts with up to 4.
    pub fn max_concurrency(mut self, ranges: usize) -> Self {
        self.max_concurrency = ranges.max(1);
        self
    }

    /// Ranges in flight when the download starts.
    pub fn initial_concurrency(mut self, ranges: usize) -> Self {
        self.initial_concurrency = ranges.max(1);
        self
    }

    /// Bytes held at most for ranges ahead of the reader (at least 1).
    pub fn buffer(mut self, bytes: u64) -> Self {
        self.buffer = bytes.max(1);
        self
    }

    /// Times a broken range is resumed from where it stopped.
    pub fn resume_attempts(mut self, attempts: u32) -> Self {
        self.resume_attempts = attempts;
        self
    }
}

/// The size of the blocks a range ahead of the reader is buffered in.
const BLOCK: u32 = 128 * 1024;

/// The permits of the byte budget fit a `u32` per acquisition and the semaphore's limit.
fn budget_permits(buffer: u64) -> usize {
    usize::try_from(buffer.min(u64::from(u32::MAX))).unwrap_or(u32::MAX as usize)
}

/// Reads bytes `start..end` of an object as ranges fetched in parallel and yielded in
/// order, for backends that download in ranges (S3, Azure Blob). `fetch(a, b)` makes the
/// request for bytes `a..b` (through the store's policy) and returns its body as it
/// streams; a body that breaks off is fetched again from the byte it reached, up to
/// [`DownloadPlan::resume_attempts`] times per range, and a body that ends short or runs
/// long is an error.
///
/// Memory: what ranges ahead of the reader receive is copied into blocks of up to 128 KiB
/// that never total more than [`DownloadPlan::buffer`] bytes; a range waits for room
/// before it reads on. Copying lets the HTTP client's chunks go at once — each is a slice
/// of its connection's read buffer and would pin all of it. Besides the blocks, at most
/// the rest of one received chunk per range in flight is held, and the range being read
/// is passed through a chunk at a time. Dropping the stream aborts every fetch in flight.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use futures::TryStreamExt;
/// use moodbridge_core::raw::{DownloadPlan, ranged_download};
/// use moodbridge_core::storage::byte_stream;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let object: Bytes = (0..100u8).collect::<Vec<_>>().into();
/// let source = object.clone();
/// let body = ranged_download(10, 90, DownloadPlan::new(16).buffer(32), move |a, b| {
///     let range = source.slice(a as usize..b as usize);
///     async move { Ok(byte_stream(futures::stream::iter([Ok(range)]))) }
/// });
/// let got: Vec<Bytes> = body.try_collect().await?;
/// assert_eq!(got.concat(), object[10..90]);
/// # Ok::<_, std::io::Error>(())
/// # }).unwrap();
/// ```
pub fn ranged_download<F, Fut>(start: u64, end: u64, plan: DownloadPlan, fetch: F) -> ByteStream
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ByteStream>> + Send + 'static,
{
    let part = plan.part.max(1);
    let max = plan.max_concurrency.max(1);
    let initial = plan.initial_concurrency.clamp(1, max);
    let fetch: Arc<dyn FetchRange> = Arc::new(Fetcher(fetch));
    let budget_size = budget_permits(plan.buffer.max(1));
    // Blocks of 128 KiB, or the whole budget when it is smaller.
    let block = u32::try_from(budget_size).unwrap_or(u32::MAX).min(BLOCK);
    let budget = Arc::new(Semaphore::new(budget_size));
    let slots = Arc::new(Semaphore::new(initial));
    let received = Arc::new(AtomicU64::new(0));
    let ranges: VecDeque<(u64, u64)> = (0..end.saturating_sub(start).div_ceil(part))
        .map(|i| (start + i * part, (start + (i + 1) * part).min(end)))
        .collect();
    let (parts_tx, parts_rx) = mpsc::channel::<PartHandle>(max);
    let driver = {
        let fetch = fetch.clone();
        let budget = budget.clone();
        let resumes = plan.resume_attempts;
        tokio::spawn(async move {
            let mut pace = Pace::new(initial, max, received.clone());
            for (a, b) in ranges {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                pace.part_started(&slots);
                let (chunks_tx, chunks_rx) = mpsc::unbounded_channel();
                let (handover_tx, handover_rx) = oneshot::channel();
                let range = Range {
                    fetch: fetch.clone(),
                    pos: a,
                    end: b,
                    body: None,
                    pending: None,
                    resumes_left: resumes,
                    received: received.clone(),
                };
                let task = tokio::spawn(run_part(
                    range,
                    slot,
                    budget.clone(),
                    block,
                    chunks_tx,
                    handover_rx,
                ));
                let handle = PartHandle {
                    chunks: chunks_rx,
                    handover: Some(handover_tx),
                    _task: AbortOnDropHandle::new(task),
                };
                if parts_tx.send(handle).await.is_err() {
                    return;
                }
            }
        })
    };
    let reader = Reader {
        parts: parts_rx,
        current: None,
        reply: None,
        reading: None,
        _driver: AbortOnDropHandle::new(driver),
        failed: false,
    };
    byte_stream(futures::stream::unfold(reader, |mut reader| async move {
        reader.next().await.map(|item| (item, reader))
    }))
}

/// `fetch` behind a trait object, so ranges share it without naming its future type.
trait FetchRange: Send + Sync {
    fn fetch(&self, a: u64, b: u64) -> futures::future::BoxFuture<'static, Result<ByteStream>>;
}

struct Fetcher<F>(F);

impl<F, Fut> FetchRange for Fetcher<F>
where
    F: Fn(u64, u64) -> Fut + Send + Sync,
    Fut: Future<Output = Result<ByteStream>> + Send + 'static,
{
    fn fetch(&self, a: u64, b: u64) -> futures::future::BoxFuture<'static, Result<ByteStream>> {
        Box::pin((self.0)(a, b))
    }
}

/// One range's connection: the body being read, where it is, and how to resume it.
struct Range {
    fetch: Arc<dyn FetchRange>,
    pos: u64,
    end: u64,
    body: Option<ByteStream>,
    /// The rest of a chunk longer than a read asked for.
    pending: Option<Bytes>,
    resumes_left: u32,
    /// Bytes received from the network by every range of the download.
    received: Arc<AtomicU64>,
}

impl Range {
    /// Makes the request, if no body is open (no effect at the range's end).
    async fn connect(&mut self) -> Result<()> {
        if self.body.is_none() && self.pos < self.end {
            self.body = Some(self.fetch.fetch(self.pos, self.end).await?);
        }
        Ok(())
    }

    /// The next chunk of the range, at most `max` bytes (at least 1); `None` once all of
    /// it has arrived.
    async fn next_chunk(&mut self, max: usize) -> Result<Option<Bytes>> {
        let max = max.max(1);
        if let Some(mut chunk) = self.pending.take() {
            if chunk.len() > max {
                self.pending = Some(chunk.split_off(max));
            }
            return Ok(Some(chunk));
        }
        loop {
            if self.pos >= self.end {
                if let Some(mut body) = self.body.take()
                    && let Some(Ok(extra)) = body.next().await
                    && !extra.is_empty()
                {
                    return Err(self.too_long());
                }
                return Ok(None);
            }
            let body = match &mut self.body {
                Some(body) => body,
                None => self
                    .body
                    .insert(self.fetch.fetch(self.pos, self.end).await?),
            };
            match body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(mut chunk)) => {
                    if chunk.len() as u64 > self.end - self.pos {
                        return Err(self.too_long());
                    }
                    self.pos += chunk.len() as u64;
                    self.received
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if chunk.len() > max {
                        self.pending = Some(chunk.split_off(max));
                    }
                    return Ok(Some(chunk));
                }
                Some(Err(e)) if self.resumes_left > 0 => {
                    self.resumes_left -= 1;
                    tracing::debug!(error = %e, at = self.pos, end = self.end, "ranged download: body broke off; resuming the range");
                    self.body = None;
                }
                Some(Err(e)) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "ranged download: the body of bytes ..{} broke off at byte {}: {e}",
                            self.end, self.pos
                        ),
                    )
                    .with_hint("the range was resumed as often as allowed; retry the download"));
                }
                None => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "ranged download: the body ended at byte {} of a range ending at {}",
                            self.pos, self.end
                        ),
                    ));
                }
            }
        }
    }

    fn too_long(&self) -> Error {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "ranged download: the server sent more than the bytes asked for (up to byte {})",
                self.end
            ),
        )
    }
}

/// A chunk buffered ahead of the reader, with the budget it holds until read.
type Buffered = (Bytes, Option<OwnedSemaphorePermit>);

/// What a part task gives the reader that asks for its range: the chunk it holds, if any,
/// and the rest of the range to read directly (with the range's slot).
struct Tail {
    held: Option<Bytes>,
    range: Range,
    _slot: OwnedSemaphorePermit,
}

/// A part task as the reader sees it.
struct PartHandle {
    chunks: mpsc::UnboundedReceiver<Result<Buffered>>,
    handover: Option<oneshot::Sender<oneshot::Sender<Tail>>>,
    _task: AbortOnDropHandle<()>,
}

/// Reads a range ahead of the reader into blocks of its own, each filled only once the
/// budget has granted room for it, until the range ends or the reader asks for it.
///
/// The received chunks are copied: a chunk from the HTTP client is a slice of the
/// connection's read buffer and would pin all of it, so holding chunks would hold far more
/// memory than their lengths say. A block is exactly what the budget counts.
async fn run_part(
    mut range: Range,
    slot: OwnedSemaphorePermit,
    budget: Arc<Semaphore>,
    block_size: u32,
    chunks: mpsc::UnboundedSender<Result<Buffered>>,
    mut asked: oneshot::Receiver<oneshot::Sender<Tail>>,
) {
    // The request is made whatever the reader asks meanwhile: abandoning it half-way
    // would only cost a second one.
    if let Err(e) = range.connect().await {
        let _ = chunks.send(Err(e));
        return;
    }
    let block_size = usize::try_from(block_size).unwrap_or(usize::MAX).max(1);
    loop {
        let room = usize::try_from(range.end.saturating_sub(range.pos))
            .unwrap_or(usize::MAX)
            .saturating_add(range.pending.as_ref().map_or(0, Bytes::len))
            .min(block_size);
        if room == 0 {
            // All of the range has arrived; a body that goes on is an error.
            if let Err(e) = range.next_chunk(1).await {
                let _ = chunks.send(Err(e));
            }
            return;
        }
        let permit = tokio::select! {
            biased;
            reply = &mut asked => {
                if let Ok(reply) = reply {
                    let _ = reply.send(Tail { held: None, range, _slot: slot });
                }
                return;
            }
            permit = budget.clone().acquire_many_owned(u32::try_from(room).unwrap_or(u32::MAX)) => permit.ok(),
        };
        let mut block = BytesMut::with_capacity(room);
        while block.len() < room {
            let next = tokio::select! {
                biased;
                reply = &mut asked => {
                    if let Ok(reply) = reply {
                        let held = (!block.is_empty()).then(|| block.freeze());
                        let _ = reply.send(Tail { held, range, _slot: slot });
                    }
                    return;
                }
                next = range.next_chunk(room - block.len()) => next,
            };
            match next {
                Ok(Some(chunk)) => block.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    let _ = chunks.send(Err(e));
                    return;
                }
            }
        }
        if block.is_empty() {
            return;
        }
        if chunks.send(Ok((block.freeze(), permit))).is_err() {
            return;
        }
    }
}

/// The reader's side: parts in order; of the current one first the chunks its task
/// buffered, then the rest of its range read directly.
struct Reader {
    parts: mpsc::Receiver<PartHandle>,
    current: Option<PartHandle>,
    reply: Option<oneshot::Receiver<Tail>>,
    reading: Option<Tail>,
    _driver: AbortOnDropHandle<()>,
    failed: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        if self.failed {
            return None;
        }
        match self.next_chunk().await {
            Ok(Some(chunk)) => Some(Ok(chunk)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                // Stop every range still in flight.
                self.current = None;
                self.reading = None;
                self.parts.close();
                Some(Err(std::io::Error::other(e)))
            }
        }
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(tail) = &mut self.reading {
                if let Some(chunk) = tail.held.take() {
                    return Ok(Some(chunk));
                }
                match tail.range.next_chunk(usize::MAX).await? {
                    Some(chunk) => return Ok(Some(chunk)),
                    None => self.reading = None,
                }
                continue;
            }
            if let Some(part) = &mut self.current {
                // First what the task buffered before it saw the request …
                if let Some(item) = part.chunks.recv().await {
                    let (chunk, _permit) = item?;
                    return Ok(Some(chunk));
                }
                // … then the rest of the range, if the task had not read all of it.
                if let Some(reply) = self.reply.take()
                    && let Ok(tail) = reply.await
                {
                    self.reading = Some(tail);
                }
                self.current = None;
                continue;
            }
            let Some(mut part) = self.parts.recv().await else {
                return Ok(None);
            };
            // This range is now the head: ask its task for the rest of it at once.
            let (reply_tx, reply_rx) = oneshot::channel();
            self.reply = part
                .handover
                .take()
                .and_then(|handover| handover.send(reply_tx).ok())
                .map(|()| reply_rx);
            self.current = Some(part);
        }
    }
}

/// Adapts the number of ranges in flight: one round is as many ranges as are allowed in
/// flight; after each, grow by half while the round's throughput beat the best by 10 %.
struct Pace {
    limit: usize,
    max: usize,
    received: Arc<AtomicU64>,
    growing: bool,
    best: f64,
    round_start: Instant,
    round_bytes: u64,
    round_parts: usize,
}

impl Pace {
    fn new(limit: usize, max: usize, received: Arc<AtomicU64>) -> Self {
        Pace {
            limit,
            max,
            received,
            growing: limit < max,
            best: 0.0,
            round_start: Instant::now(),
            round_bytes: 0,
            round_parts: 0,
        }
    }

    fn part_started(&mut self, slots: &Semaphore) {
        if !self.growing {
            return;
        }
        self.round_parts += 1;
        // The first round only fills the pipe; measure from the second on.
        if self.round_parts <= self.limit {
            return;
        }
        let now = Instant::now();
        let bytes = self.received.load(Ordering::Relaxed);
        let secs = now.duration_since(self.round_start).as_secs_f64();
        let rate = (bytes - self.round_bytes) as f64 / secs.max(1e-6);
        if self.round_bytes > 0 || self.best > 0.0 {
            if rate > self.best * 1.1 {
                let add = (self.limit / 2).max(1).min(self.max - self.limit);
                slots.add_permits(add);
                self.limit += add;
                self.growing = self.limit < self.max;
                tracing::debug!(
                    ranges = self.limit,
                    mib_per_s = rate / 1048576.0,
                    "ranged download: more throughput, more ranges in flight"
                );
            } else {
                self.growing = false;
                tracing::debug!(
                    ranges = self.limit,
                    mib_per_s = rate / 1048576.0,
                    "ranged download: no more throughput from more ranges; staying at this many"
                );
            }
            self.best = self.best.max(rate);
        }
        self.round_start = now;
        self.round_bytes = bytes;
        self.round_parts = 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use futures::TryStreamExt;
    use std::sync::atomic::AtomicUsize;

    /// Byte `i` of the test object.
    fn byte_at(i: u64) -> u8 {
        (i.wrapping_mul(31) ^ (i >> 8)) as u8
    }

    /// Counts the bytes alive in chunks made by [`Server`], and the most ever alive.
    #[derive(Default)]
    struct Meter {
        alive: AtomicU64,
        most: AtomicU64,
        open_bodies: AtomicUsize,
        most_bodies: AtomicUsize,
        requests: AtomicUsize,
    }

    struct Tracked {
        data: Vec<u8>,
        meter: Arc<Meter>,
    }

    impl AsRef<[u8]> for Tracked {
        fn as_ref(&self) -> &[u8] {
            &self.data
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.meter
                .alive
                .fetch_sub(self.data.len() as u64, Ordering::SeqCst);
        }
    }

    struct OpenBody(Arc<Meter>);

    impl Drop for OpenBody {
        fn drop(&mut self) {
            self.0.open_bodies.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A server whose bodies make each chunk only when it is read, like a socket.
    #[derive(Clone)]
    struct Server {
        chunk: u64,
        meter: Arc<Meter>,
        /// The first request of the range starting at this byte breaks off after this
        /// many chunks.
        break_after: Option<(u64, usize)>,
        broken: Arc<std::sync::atomic::AtomicBool>,
        /// Bodies hang half-way.
        stall: bool,
        /// Extra bytes sent past the range (positive) or bytes left out (negative).
        skew: i64,
    }

    impl Server {
        fn new(chunk: u64) -> Self {
            Server {
                chunk,
                meter: Arc::default(),
                break_after: None,
                broken: Arc::default(),
                stall: false,
                skew: 0,
            }
        }

        fn fetch(&self, a: u64, b: u64) -> Result<ByteStream> {
            self.meter.requests.fetch_add(1, Ordering::SeqCst);
            let open = self.meter.open_bodies.fetch_add(1, Ordering::SeqCst) + 1;
            self.meter.most_bodies.fetch_max(open, Ordering::SeqCst);
            let guard = OpenBody(self.meter.clone());
            let end = b.saturating_add_signed(self.skew);
            let (chunk, meter) = (self.chunk, self.meter.clone());
            let breaks = self
                .break_after
                .filter(|(at, _)| *at == a && !self.broken.swap(true, Ordering::SeqCst))
                .map(|(_, after)| after);
            let body = futures::stream::iter((a..end).step_by(chunk as usize).enumerate()).map(
                move |(n, from)| {
                    if breaks == Some(n) {
                        return Err(std::io::Error::other("connection reset"));
                    }
                    let data: Vec<u8> = (from..(from + chunk).min(end)).map(byte_at).collect();
                    let len = data.len() as u64;
                    let now = meter.alive.fetch_add(len, Ordering::SeqCst) + len;
                    meter.most.fetch_max(now, Ordering::SeqCst);
                    Ok(Bytes::from_owner(Tracked {
                        data,
                        meter: meter.clone(),
                    }))
                },
            );
            // The body counts as open until it is dropped; a stalling one hangs half-way.
            let body = if self.stall {
                let half = (end - a).div_ceil(chunk) as usize / 2;
                byte_stream(body.take(half).chain(futures::stream::pending()))
            } else {
                byte_stream(body)
            };
            Ok(byte_stream(body.map(move |c| {
                let _open = &guard;
                c
            })))
        }
    }

    /// Reads the download slowly (yielding between chunks so the ranges run ahead) and
    /// checks every byte.
    async fn read_all(start: u64, end: u64, plan: DownloadPlan, server: &Server) -> Result<u64> {
        let s = server.clone();
        let mut body = ranged_download(start, end, plan, move |a, b| {
            let r = s.fetch(a, b);
            async move { r }
        });
        let mut pos = start;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| Error::internal(e.to_string()))?
        {
            for (i, byte) in chunk.iter().enumerate() {
                assert_eq!(*byte, byte_at(pos + i as u64), "byte {}", pos + i as u64);
            }
            pos += chunk.len() as u64;
            drop(chunk);
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
        }
        Ok(pos - start)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_byte_in_order_whatever_the_cut() {
        for (start, end, part, chunk, buffer, max) in [
            (0, 1000, 100, 7, 50, 4),
            (13, 997, 64, 64, 1, 1),
            (0, 1, 100, 10, 10, 3),
            (5, 5, 100, 10, 10, 3),
            (0, 10_000, 333, 1000, 5000, 8),
            (100, 4096, 4096, 512, 100_000, 16),
        ] {
            let server = Server::new(chunk);
            let plan = DownloadPlan::new(part)
                .buffer(buffer)
                .max_concurrency(max)
                .initial_concurrency(2);
            let n = read_all(start, end, plan, &server).await.unwrap();
            assert_eq!(n, end - start, "{start}..{end} in parts of {part}");
            assert!(server.meter.most_bodies.load(Ordering::SeqCst) <= max);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn received_chunks_are_not_held_ahead_of_the_reader() {
        // Ranges ahead of the reader copy what they receive into blocks the budget counts,
        // so the client's chunks (slices that would pin its read buffers) are let go at
        // once: at most one per range in flight and the one being read stay alive.
        let (chunk, max) = (16 << 10, 8usize);
        let plan = DownloadPlan::new(128 << 10)
            .buffer(4 << 20)
            .max_concurrency(max)
            .initial_concurrency(max);
        let server = Server::new(chunk);
        read_all(0, 16 << 20, plan, &server).await.unwrap();
        let most = server.meter.most.load(Ordering::SeqCst);
        assert!(
            most <= (max as u64 + 1) * chunk,
            "{most} bytes of chunks alive"
        );
        assert!(server.meter.most_bodies.load(Ordering::SeqCst) > 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_body_resumes_where_it_stopped() {
        let mut server = Server::new(100);
        server.break_after = Some((1000, 3));
        let plan = DownloadPlan::new(1000).initial_concurrency(3);
        assert_eq!(read_all(0, 5000, plan, &server).await.unwrap(), 5000);
        // Five ranges and one resumed request.
        assert_eq!(server.meter.requests.load(Ordering::SeqCst), 6);
        // Without resumes the download fails and says where.
        let mut server = Server::new(100);
        server.break_after = Some((2000, 2));
        let plan = DownloadPlan::new(1000).resume_attempts(0);
        let err = read_all(0, 5000, plan, &server).await.unwrap_err();
        assert!(err.to_string().contains("broke off at byte 2200"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_or_long_bodies_are_errors() {
        for (skew, says) in [(-10, "ended at byte 990"), (10, "more than")] {
            let mut server = Server::new(100);
            server.skew = skew;
            let err = read_all(0, 3000, DownloadPlan::new(1000), &server)
                .await
                .unwrap_err();
            assert!(err.to_string().contains(says), "{skew}: {err}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_request_ends_the_stream_with_its_error() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let mut body = ranged_download(0, 300, DownloadPlan::new(100), move |a, b| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                if a == 100 {
                    return Err(Error::new(ErrorKind::NotFound, "gone"));
                }
                let data: Vec<u8> = (a..b).map(byte_at).collect();
                Ok(byte_stream(futures::stream::iter([Ok(Bytes::from(data))])))
            }
        });
        assert_eq!(body.try_next().await.unwrap().unwrap().len(), 100);
        let err = body.try_next().await.unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
        assert!(body.try_next().await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_stream_stops_every_range() {
        let mut server = Server::new(10);
        server.stall = true;
        let meter = server.meter.clone();
        let mut body = ranged_download(0, 1 << 20, DownloadPlan::new(1000), move |a, b| {
            let r = server.fetch(a, b);
            async move { r }
        });
        // The first range's first half, all its body sends before it hangs.
        let mut got = 0;
        while got < 500 {
            got += body.try_next().await.unwrap().unwrap().len();
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while meter.open_bodies.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(meter.open_bodies.load(Ordering::SeqCst), 4);
        drop(body);
        while meter.open_bodies.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(meter.open_bodies.load(Ordering::SeqCst), 0);
    }
}
