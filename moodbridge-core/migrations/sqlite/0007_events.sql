-- MoodBridge state store, SQLite, schema 7: the event log — events received (webhooks,
-- outbound messages, change events), each once per (source, event id), in the order
-- their sequence numbers give. The head row hands out sequence numbers under the write
-- lock, so a reader never sees a later number committed before an earlier one.
CREATE TABLE event_log_head (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_sequence INTEGER NOT NULL
) STRICT;
INSERT INTO event_log_head (id, last_sequence) VALUES (1, 0);

CREATE TABLE events (
    sequence      INTEGER PRIMARY KEY,
    source        TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    partition_key TEXT,
    event_type    TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    received_at   INTEGER NOT NULL,
    UNIQUE (source, event_id)
) STRICT;
CREATE INDEX events_received_at ON events (received_at);
