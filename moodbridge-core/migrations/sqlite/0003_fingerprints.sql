-- MoodBridge state store, SQLite, schema 3: what a bidirectional sync last wrote, per
-- record, so that the change it sees coming back from the other side (its own write,
-- echoed) is recognised and not sent back again.
CREATE TABLE sync_fingerprints (
    pipeline     TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    record_key   TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,      -- SHA-256 of the record's synced fields
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (pipeline, stream, record_key)
) STRICT;
