//! Row decoding shared by the SQL backends (same columns, same types in both dialects).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use super::{AuditEntry, AuditOperation, AuditRecord, RunCounts, RunId, RunStatus, SyncRun};
use crate::error::{Error, ErrorKind, Result};

/// The audit columns, in the order the backends select them.
pub(crate) const AUDIT_COLUMNS: &str = "seq, run_id, stream, record_key, operation, before_image, after_image, actor, at, prev_hash, hash";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(crate) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn uncount(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn json(text: Option<String>) -> Result<Option<serde_json::Value>> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|_| Error::new(ErrorKind::Integrity, "a stored JSON value is invalid"))
    })
    .transpose()
}

/// A row type the decoders can read `i64`, `String` and their options from.
pub(crate) trait StateRow: Row
where
    for<'a> &'a str: ColumnIndex<Self>,
{
    fn int(&self, col: &str) -> i64;
    fn opt_int(&self, col: &str) -> Option<i64>;
    fn text(&self, col: &str) -> String;
    fn opt_text(&self, col: &str) -> Option<String>;
}

impl<R> StateRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    fn int(&self, col: &str) -> i64 {
        self.get(col)
    }
    fn opt_int(&self, col: &str) -> Option<i64> {
        self.get(col)
    }
    fn text(&self, col: &str) -> String {
        self.get(col)
    }
    fn opt_text(&self, col: &str) -> Option<String> {
        self.get(col)
    }
}

pub(crate) fn run_from_row<R: StateRow>(row: &R) -> Result<SyncRun>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    let status = row.text("status");
    Ok(SyncRun {
        id: RunId(row.int("id")),
        pipeline: row.text("pipeline"),
        status: RunStatus::parse(&status).ok_or_else(|| {
            Error::new(
                ErrorKind::Integrity,
                format!("unknown run status {status:?}"),
            )
        })?,
        started_at: time(row.int("started_at")),
        finished_at: row.opt_int("finished_at").map(time),
        counts: RunCounts {
            read: uncount(row.int("records_read")),
            written: uncount(row.int("records_written")),
            failed: uncount(row.int("records_failed")),
        },
        error: row.opt_text("error"),
    })
}

pub(crate) fn audit_from_row<R: StateRow>(row: &R) -> Result<AuditRecord>
where
    for<'a> &'a str: ColumnIndex<R>,
{
    let op = row.text("operation");
    Ok(AuditRecord {
        seq: row.int("seq"),
        entry: AuditEntry {
            run: RunId(row.int("run_id")),
            stream: row.text("stream"),
            record_key: row.text("record_key"),
            operation: AuditOperation::parse(&op).ok_or_else(|| {
                Error::new(
                    ErrorKind::Integrity,
                    format!("unknown audit operation {op:?}"),
                )
            })?,
            before: json(row.opt_text("before_image"))?,
            after: json(row.opt_text("after_image"))?,
            actor: row.text("actor"),
        },
        at_ms: row.int("at"),
        prev_hash: row.text("prev_hash"),
        hash: row.text("hash"),
    })
}
