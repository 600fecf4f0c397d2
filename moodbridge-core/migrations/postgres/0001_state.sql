-- MoodBridge state store, PostgreSQL, schema 1: sync runs, checkpoints, audit log.
-- JSON values are TEXT, not JSONB: the audit hash covers their exact text, and JSONB
-- would reorder keys.

CREATE TABLE sync_runs (
    id               BIGSERIAL PRIMARY KEY,
    pipeline         TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'rolled_back')),
    started_at       BIGINT  NOT NULL,
    finished_at      BIGINT,
    records_read     BIGINT  NOT NULL DEFAULT 0,
    records_written  BIGINT  NOT NULL DEFAULT 0,
    records_failed   BIGINT  NOT NULL DEFAULT 0,
    error            TEXT
);

-- recent_runs(pipeline): newest first.
CREATE INDEX sync_runs_by_pipeline ON sync_runs (pipeline, id DESC);

CREATE TABLE checkpoints (
    pipeline      TEXT    NOT NULL,
    stream        TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    run_id        BIGINT  NOT NULL REFERENCES sync_runs (id),
    sequence      BIGINT  NOT NULL CHECK (sequence >= 1),
    committed_at  BIGINT  NOT NULL,
    PRIMARY KEY (pipeline, stream)
);

CREATE TABLE audit_log (
    seq           BIGINT  PRIMARY KEY,
    run_id        BIGINT  NOT NULL,
    stream        TEXT    NOT NULL,
    record_key    TEXT    NOT NULL,
    operation     TEXT    NOT NULL,
    before_image  TEXT,
    after_image   TEXT,
    actor         TEXT    NOT NULL,
    at            BIGINT  NOT NULL,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);

-- audit(run): a run's entries in order.
CREATE INDEX audit_log_by_run ON audit_log (run_id, seq);

-- Append-only.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
