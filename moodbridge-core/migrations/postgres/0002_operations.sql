-- MoodBridge state store, PostgreSQL, schema 2: integrations and their configuration,
-- dead letters, parked conflicts, leases, and audit-log purges that keep the chain
-- verifiable. JSON as TEXT, as in schema 1.

CREATE TABLE integrations (
    id          TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE platform_config (
    integration_id  TEXT    NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    key             TEXT    NOT NULL,
    value           TEXT    NOT NULL,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (integration_id, key)
);

CREATE TABLE dead_letters (
    id           BIGSERIAL PRIMARY KEY,
    pipeline     TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    record_key   TEXT    NOT NULL,
    record       TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    stage        TEXT    NOT NULL,
    attempts     BIGINT  NOT NULL CHECK (attempts >= 1),
    run_id       BIGINT  REFERENCES sync_runs (id),
    first_seen   BIGINT  NOT NULL,
    last_seen    BIGINT  NOT NULL,
    resolved_at  BIGINT
);

CREATE UNIQUE INDEX dead_letters_open ON dead_letters (pipeline, stream, record_key)
    WHERE resolved_at IS NULL;
CREATE INDEX dead_letters_by_pipeline ON dead_letters (pipeline, stream, id)
    WHERE resolved_at IS NULL;
CREATE INDEX dead_letters_resolved ON dead_letters (resolved_at) WHERE resolved_at IS NOT NULL;

CREATE TABLE conflicts (
    id           BIGSERIAL PRIMARY KEY,
    pipeline     TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    record_key   TEXT    NOT NULL,
    left_image   TEXT,
    right_image  TEXT,
    run_id       BIGINT  REFERENCES sync_runs (id),
    detected_at  BIGINT  NOT NULL,
    resolved_at  BIGINT,
    resolution   TEXT
);

CREATE UNIQUE INDEX conflicts_open ON conflicts (pipeline, stream, record_key)
    WHERE resolved_at IS NULL;
CREATE INDEX conflicts_by_pipeline ON conflicts (pipeline, id) WHERE resolved_at IS NULL;
CREATE INDEX conflicts_resolved ON conflicts (resolved_at) WHERE resolved_at IS NOT NULL;

CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT,
    token       BIGINT  NOT NULL DEFAULT 0,
    expires_at  BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX leases_by_expiry ON leases (expires_at);

CREATE INDEX sync_runs_finished ON sync_runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE audit_anchors (
    up_to_seq   BIGINT  PRIMARY KEY,
    hash        TEXT    NOT NULL,
    purged_at   BIGINT  NOT NULL
);

CREATE INDEX audit_log_by_time ON audit_log (at);

-- Deletes are allowed only at or below the newest anchor (an explicit purge).
CREATE OR REPLACE FUNCTION audit_log_guard_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > COALESCE((SELECT MAX(up_to_seq) FROM audit_anchors), 0) THEN
        RAISE EXCEPTION 'audit_log is append-only';
    END IF;
    RETURN OLD;
END;
$$;

DROP TRIGGER audit_log_no_delete ON audit_log;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard_delete();

CREATE FUNCTION audit_anchors_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_anchors is append-only';
END;
$$;
CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_anchors_append_only();
CREATE TRIGGER audit_anchors_no_delete BEFORE DELETE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_anchors_append_only();
