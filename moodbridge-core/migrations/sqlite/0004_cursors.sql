-- MoodBridge state store, SQLite, schema 4: where subscriptions keep their place — one
-- committed offset per consumer and partition (a replay id, a sequence number …).
CREATE TABLE cursors (
    consumer      TEXT    NOT NULL,
    partition_key TEXT    NOT NULL,
    position      TEXT    NOT NULL,
    sequence      INTEGER NOT NULL,      -- commits so far, for fenced commits
    committed_at  INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition_key)
) STRICT;

-- Salesforce Streaming API replay ids were kept as checkpoints of the subscription's
-- name, stream = channel (`/data/...`, `/topic/...`, `/event/...`): carried over.
INSERT INTO cursors (consumer, partition_key, position, sequence, committed_at)
SELECT pipeline, stream, CAST(json_extract(state, '$.replay_id') AS TEXT), sequence, committed_at
FROM checkpoints
WHERE stream LIKE '/%' AND json_valid(state) AND json_type(state, '$.replay_id') = 'integer';
