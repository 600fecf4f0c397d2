-- MoodBridge state store, PostgreSQL, schema 3: what a bidirectional sync last wrote,
-- per record, so that its own writes echoed back by the other side are not sent back.
CREATE TABLE sync_fingerprints (
    pipeline     TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    record_key   TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (pipeline, stream, record_key)
);
