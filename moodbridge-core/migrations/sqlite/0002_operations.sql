-- MoodBridge state store, SQLite, schema 2: integrations and their configuration, dead
-- letters, parked conflicts, leases, and audit-log purges that keep the chain verifiable.

-- Registered integrations ("salesforce:prod") and what the host knows of them.
CREATE TABLE integrations (
    id          TEXT    PRIMARY KEY,
    kind        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,           -- JSON object
    updated_at  INTEGER NOT NULL
) STRICT;

-- Platform configuration per integration, one JSON value per key (never a secret: secrets
-- are references resolved through a CredentialStore).
CREATE TABLE platform_config (
    integration_id  TEXT    NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    key             TEXT    NOT NULL,
    value           TEXT    NOT NULL,       -- JSON
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (integration_id, key)
) STRICT;

-- Records that failed mapping, validation or writing, with the reason. One open row per
-- (pipeline, stream, record key): a record failing again bumps `attempts`.
CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline     TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    record_key   TEXT    NOT NULL,
    record       TEXT    NOT NULL,          -- JSON, the record as read from the source
    reason       TEXT    NOT NULL,
    stage        TEXT    NOT NULL,          -- mapping | validation | write
    attempts     INTEGER NOT NULL CHECK (attempts >= 1),
    run_id       INTEGER REFERENCES sync_runs (id),
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    resolved_at  INTEGER
) STRICT;

-- put_dead_letter: the open row of a record.
CREATE UNIQUE INDEX dead_letters_open ON dead_letters (pipeline, stream, record_key)
    WHERE resolved_at IS NULL;
-- dead_letters(pipeline, stream): open rows in order.
CREATE INDEX dead_letters_by_pipeline ON dead_letters (pipeline, stream, id)
    WHERE resolved_at IS NULL;
-- retention: resolved rows by age.
CREATE INDEX dead_letters_resolved ON dead_letters (resolved_at) WHERE resolved_at IS NOT NULL;

-- Conflicts parked for review by a bidirectional sync.
CREATE TABLE conflicts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline     TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    record_key   TEXT    NOT NULL,
    left_image   TEXT,                      -- JSON, the record on the left system
    right_image  TEXT,                      -- JSON, the record on the right system
    run_id       INTEGER REFERENCES sync_runs (id),
    detected_at  INTEGER NOT NULL,
    resolved_at  INTEGER,
    resolution   TEXT
) STRICT;

CREATE UNIQUE INDEX conflicts_open ON conflicts (pipeline, stream, record_key)
    WHERE resolved_at IS NULL;
CREATE INDEX conflicts_by_pipeline ON conflicts (pipeline, id) WHERE resolved_at IS NULL;
CREATE INDEX conflicts_resolved ON conflicts (resolved_at) WHERE resolved_at IS NOT NULL;

-- Leases: who may run a pipeline now. `token` grows at every acquisition (a fencing token).
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT,
    token       INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX leases_by_expiry ON leases (expires_at);

-- retention of runs: finished runs by age.
CREATE INDEX sync_runs_finished ON sync_runs (finished_at) WHERE finished_at IS NOT NULL;

-- Audit purges: the log may lose its oldest entries only through an explicit retention
-- policy, which first records the last purged entry's hash here. Verification starts
-- from the newest anchor, so the rest of the chain stays verifiable.
CREATE TABLE audit_anchors (
    up_to_seq   INTEGER PRIMARY KEY,
    hash        TEXT    NOT NULL,
    purged_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX audit_log_by_time ON audit_log (at);

DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq > COALESCE((SELECT MAX(up_to_seq) FROM audit_anchors), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Anchors are append-only too.
CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE ON audit_anchors
BEGIN
    SELECT RAISE(ABORT, 'audit_anchors is append-only');
END;
CREATE TRIGGER audit_anchors_no_delete BEFORE DELETE ON audit_anchors
BEGIN
    SELECT RAISE(ABORT, 'audit_anchors is append-only');
END;
