//! Building blocks for connector authors, not for hosts: what every connector of a kind
//! needs and should not write again. Stable, documented, tested — but low level: a host
//! uses the connectors, and the capability traits they implement.
//!
//! - [`transfer`]: object transfers — [`PartReader`], [`upload_parts`],
//!   [`StreamDigest`], [`with_progress`], [`body_error`] and the default policy of
//!   transfer requests ([`transfer_policy_config`]);
//! - [`download`]: [`ranged_download`], parallel ranges read in order with a hard bound
//!   on the bytes held ([`DownloadPlan`]) and adaptive concurrency;
//! - [`kind_of_status`]: the core error kind of an HTTP status, for a connector's
//!   fallback after the platform's own error codes;
//! - `sqlite_wal` (feature `sqlite`): write-ahead-log checkpoints on a thread of their
//!   own, for writers to SQLite.
//!
//! The guide to writing a connector is `docs/connector-guide.md`.

pub mod download;
#[cfg(feature = "sqlite")]
pub mod sqlite_wal;
pub mod transfer;

pub use download::{
    DEFAULT_DOWNLOAD_BUFFER, DEFAULT_DOWNLOAD_CONCURRENCY, DownloadPlan, MIN_DOWNLOAD_BUFFER,
    check_download_settings, ranged_download, validate_download_settings,
};
pub use transfer::{
    PartReader, StreamDigest, body_error, transfer_policy_config, upload_parts, with_progress,
};

use crate::error::ErrorKind;

/// The kind of an HTTP error status, when the platform's answer carries no code that
/// says more: a connector maps its vendor codes first (throttling is told by its code),
/// then falls back to this.
///
/// | status | kind |
/// |---|---|
/// | 401 | `Auth` |
/// | 403 | `Forbidden` |
/// | 404 | `NotFound` |
/// | 409, 412 | `Conflict` |
/// | 416 | `InvalidInput` |
/// | 429 | `RateLimited` |
/// | 408, 500–599 | `Unavailable` (a bare 503 is an outage) |
/// | other 4xx | `InvalidInput` |
/// | anything else | `Protocol` |
///
/// ```
/// use moodbridge_core::ErrorKind;
/// use moodbridge_core::raw::kind_of_status;
/// assert_eq!(kind_of_status(404), ErrorKind::NotFound);
/// assert_eq!(kind_of_status(503), ErrorKind::Unavailable);
/// assert_eq!(kind_of_status(429), ErrorKind::RateLimited { retry_after: None });
/// ```
pub fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        401 => ErrorKind::Auth,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        409 | 412 => ErrorKind::Conflict,
        416 => ErrorKind::InvalidInput,
        429 => ErrorKind::RateLimited { retry_after: None },
        408 | 500..=599 => ErrorKind::Unavailable,
        400..=499 => ErrorKind::InvalidInput,
        _ => ErrorKind::Protocol,
    }
}
