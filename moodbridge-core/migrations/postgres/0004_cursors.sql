-- MoodBridge state store, PostgreSQL, schema 4: where subscriptions keep their place —
-- one committed offset per consumer and partition (a replay id, a sequence number …).
CREATE TABLE cursors (
    consumer      TEXT    NOT NULL,
    partition_key TEXT    NOT NULL,
    position      TEXT    NOT NULL,
    sequence      BIGINT  NOT NULL,
    committed_at  BIGINT  NOT NULL,
    PRIMARY KEY (consumer, partition_key)
);

-- Salesforce Streaming API replay ids were kept as checkpoints of the subscription's
-- name, stream = channel (`/data/...`, `/topic/...`, `/event/...`): carried over.
INSERT INTO cursors (consumer, partition_key, position, sequence, committed_at)
SELECT pipeline, stream, state::jsonb ->> 'replay_id', sequence, committed_at
FROM checkpoints
WHERE stream LIKE '/%' AND jsonb_typeof(state::jsonb -> 'replay_id') = 'number';
