-- MoodBridge state store, SQLite, schema 1: sync runs, checkpoints, audit log.

CREATE TABLE sync_runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline         TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'rolled_back')),
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    records_read     INTEGER NOT NULL DEFAULT 0,
    records_written  INTEGER NOT NULL DEFAULT 0,
    records_failed   INTEGER NOT NULL DEFAULT 0,
    error            TEXT
) STRICT;

-- recent_runs(pipeline): newest first.
CREATE INDEX sync_runs_by_pipeline ON sync_runs (pipeline, id DESC);

-- The last committed checkpoint of each stream of each pipeline.
CREATE TABLE checkpoints (
    pipeline      TEXT    NOT NULL,
    stream        TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    run_id        INTEGER NOT NULL REFERENCES sync_runs (id),
    sequence      INTEGER NOT NULL CHECK (sequence >= 1),
    committed_at  INTEGER NOT NULL,
    PRIMARY KEY (pipeline, stream)
) STRICT;

-- Every change the engine makes, hash-chained: hash = SHA-256(prev_hash, seq, entry).
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL,
    stream        TEXT    NOT NULL,
    record_key    TEXT    NOT NULL,
    operation     TEXT    NOT NULL,
    before_image  TEXT,
    after_image   TEXT,
    actor         TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
) STRICT;

-- audit(run): a run's entries in order.
CREATE INDEX audit_log_by_run ON audit_log (run_id, seq);

-- Append-only.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
