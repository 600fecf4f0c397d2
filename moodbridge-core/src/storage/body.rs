//! What every object store does with a body as it streams: count and hash it, report
//! progress, and name the caller's read errors. Connector authors reach these through
//! `raw` ([`crate::raw::StreamDigest`], …); the local store uses them here.

use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use super::{ByteStream, ObjectKey, ProgressFn, PutOptions, TransferProgress, byte_stream, hex};
use crate::error::{Error, ErrorKind, Result};

/// Counts and hashes a body as it streams; for backends implementing
/// [`ObjectStore::put`](crate::storage::ObjectStore::put).
pub struct StreamDigest {
    hasher: Sha256,
    bytes: u64,
}

impl Default for StreamDigest {
    fn default() -> Self {
        StreamDigest::new()
    }
}

impl StreamDigest {
    /// A fresh digest.
    pub fn new() -> Self {
        StreamDigest {
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Feeds a chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Checks the length and expected checksum of [`PutOptions`] and returns the
    /// SHA-256. Errors name the key.
    pub fn finish(self, key: &ObjectKey, options: &PutOptions) -> Result<[u8; 32]> {
        let digest: [u8; 32] = self.hasher.finalize().into();
        if let Some(size) = options.size
            && size != self.bytes
        {
            return Err(Error::invalid_input(format!(
                "upload of {key}: the body had {} bytes but its size was given as {size}",
                self.bytes
            ))
            .with_hint("give the body's exact length in PutOptions::size, or leave it unset"));
        }
        if let Some(expected) = options.sha256
            && expected != digest
        {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "upload of {key}: SHA-256 of the body is {} but {} was expected; nothing was written",
                    hex(digest),
                    hex(expected)
                ),
            ));
        }
        Ok(digest)
    }
}

/// Maps an I/O error of a body stream (the caller's side) to an [`Error`].
pub fn body_error(key: &ObjectKey, err: std::io::Error) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("reading the body for {key} failed: {err}"),
    )
    .with_hint("the upload was abandoned and nothing was written; fix the source and retry")
    .with_source(err)
}

/// Wraps a body so `progress` is told of every chunk that passes, with `total`.
pub fn with_progress(
    body: ByteStream,
    progress: Option<ProgressFn>,
    total: Option<u64>,
) -> ByteStream {
    match progress {
        None => body,
        Some(progress) => {
            let mut done = 0u64;
            byte_stream(body.inspect_ok(move |chunk| {
                done += chunk.len() as u64;
                progress(TransferProgress { bytes: done, total });
            }))
        }
    }
}
