//! Row decoding shared by the SQL backends (same columns, same types in both dialects).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use super::{
    AuditEntry, AuditOperation, AuditRecord, Conflict, DeadLetter, FailureStage, Lease,
    NewConflict, RunCounts, RunId, RunStatus, SyncRun,
};
use crate::error::{Error, ErrorKind, Result};
use crate::record::Record;

/// The audit columns, in the order the backends select them.
pub(crate) const AUDIT_COLUMNS: &str = "seq, run_id, stream, record_key, operation, before_image, after_image, after_sha256, actor, at, prev_hash, hash";

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
        heartbeat_at: row.opt_int("heartbeat_at").map(time),
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
            after_sha256: row.opt_text("after_sha256"),
            actor: row.text("actor"),
        },
        at_ms: row.int("at"),
        prev_hash: row.text("prev_hash"),
        hash: row.text("hash"),
    })
}

pub(crate) fn ms_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn ttl_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn record(text: Option<String>) -> Result<Option<Record>> {
    json(text)?
        .map(Record::from_json)
        .transpose()
        .map_err(|_| Error::new(ErrorKind::Integrity, "a stored record is not a JSON object"))
}

fn opt_run(row: &impl StateRowAny) -> Option<RunId> {
    row.opt_int_any("run_id").map(RunId)
}

/// [`StateRow`] without its bounds in every signature.
pub(crate) trait StateRowAny {
    fn int_any(&self, col: &str) -> i64;
    fn opt_int_any(&self, col: &str) -> Option<i64>;
    fn text_any(&self, col: &str) -> String;
    fn opt_text_any(&self, col: &str) -> Option<String>;
}

impl<R: StateRow> StateRowAny for R
where
    for<'a> &'a str: ColumnIndex<R>,
{
    fn int_any(&self, col: &str) -> i64 {
        self.int(col)
    }
    fn opt_int_any(&self, col: &str) -> Option<i64> {
        self.opt_int(col)
    }
    fn text_any(&self, col: &str) -> String {
        self.text(col)
    }
    fn opt_text_any(&self, col: &str) -> Option<String> {
        self.opt_text(col)
    }
}

pub(crate) fn dead_letter_from_row(row: &impl StateRowAny) -> Result<DeadLetter> {
    let stage = row.text_any("stage");
    Ok(DeadLetter {
        id: row.int_any("id"),
        pipeline: row.text_any("pipeline"),
        stream: row.text_any("stream"),
        record_key: row.text_any("record_key"),
        record: record(Some(row.text_any("record")))?.unwrap_or_default(),
        reason: row.text_any("reason"),
        stage: FailureStage::parse(&stage).ok_or_else(|| {
            Error::new(
                ErrorKind::Integrity,
                format!("unknown failure stage {stage:?}"),
            )
        })?,
        attempts: u32::try_from(row.int_any("attempts")).unwrap_or(u32::MAX),
        run: opt_run(row),
        first_seen: time(row.int_any("first_seen")),
        last_seen: time(row.int_any("last_seen")),
    })
}

pub(crate) fn conflict_from_row(row: &impl StateRowAny) -> Result<Conflict> {
    Ok(Conflict {
        id: row.int_any("id"),
        conflict: NewConflict {
            pipeline: row.text_any("pipeline"),
            stream: row.text_any("stream"),
            record_key: row.text_any("record_key"),
            left: record(row.opt_text_any("left_image"))?,
            right: record(row.opt_text_any("right_image"))?,
            run: opt_run(row),
        },
        detected_at: time(row.int_any("detected_at")),
    })
}

pub(crate) fn lease_from_row(row: &impl StateRowAny) -> Lease {
    Lease {
        name: row.text_any("name"),
        holder: row.opt_text_any("holder").unwrap_or_default(),
        token: row.int_any("token"),
        expires_at_ms: row.int_any("expires_at"),
    }
}

#[cfg(feature = "postgres")]
pub(crate) fn event_from_row<R: StateRow>(row: &R) -> super::StoredEvent
where
    for<'a> &'a str: ColumnIndex<R>,
{
    super::StoredEvent {
        sequence: row.int("sequence"),
        event: super::NewEvent {
            source: row.text("source"),
            event_id: row.text("event_id"),
            partition_key: row.opt_text("partition_key"),
            event_type: row.text("event_type"),
            body: row.text("body"),
            received_at: time(row.int("received_at")),
        },
    }
}

pub(crate) fn cursor_from_row<R: StateRow>(row: &R) -> super::StoredCursor
where
    for<'a> &'a str: ColumnIndex<R>,
{
    super::StoredCursor {
        consumer: row.text("consumer"),
        partition: row.text("partition_key"),
        position: row.text("position"),
        sequence: row.int("sequence"),
        committed_at: time(row.int("committed_at")),
    }
}
