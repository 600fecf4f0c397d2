-- MoodBridge state store, PostgreSQL, schema 8: the embedded message queues. A message
-- is hidden until `visible_at` (ms since the epoch): after a delay, or while a receiver
-- holds it (`receipt` names that delivery). FIFO deduplication ids are kept five
-- minutes in `queue_dedup`.
CREATE TABLE queue_messages (
    id         BIGSERIAL PRIMARY KEY,
    queue      TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    attributes TEXT    NOT NULL,
    group_id   TEXT,
    sent_at    BIGINT  NOT NULL,
    visible_at BIGINT  NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    receipt    TEXT
);
CREATE INDEX queue_messages_ready ON queue_messages (queue, visible_at, id);
CREATE INDEX queue_messages_receipt ON queue_messages (receipt);

CREATE TABLE queue_dedup (
    queue      TEXT   NOT NULL,
    dedup_id   TEXT   NOT NULL,
    message_id BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL,
    PRIMARY KEY (queue, dedup_id)
);
