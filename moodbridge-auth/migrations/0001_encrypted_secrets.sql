-- Encrypted credential store, schema 1.
-- One row per secret version. `key_id` names the master key that encrypted the row, so an
-- interrupted master-key rotation leaves a store that can say which key each row needs.
CREATE TABLE secret_versions (
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    key_id      TEXT,
    nonce       BLOB,
    ciphertext  BLOB,
    created_at  INTEGER NOT NULL,
    -- Set when the version is retired; its key_id, nonce and ciphertext are erased then.
    retired_at  INTEGER,
    PRIMARY KEY (name, version),
    CHECK ((retired_at IS NULL) = (ciphertext IS NOT NULL))
) STRICT;

-- Rotation re-encrypts rows by key.
CREATE INDEX secret_versions_by_key ON secret_versions (key_id) WHERE key_id IS NOT NULL;

-- The master keys the store knows: the one in use ('primary') and, during a rotation, the
-- one being rotated to ('next'). A check value (a constant encrypted under the key) tells
-- a wrong key from a corrupted row.
CREATE TABLE master_keys (
    key_id       TEXT    PRIMARY KEY,
    role         TEXT    NOT NULL CHECK (role IN ('primary', 'next')),
    check_nonce  BLOB    NOT NULL,
    check_value  BLOB    NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;

CREATE UNIQUE INDEX master_keys_one_per_role ON master_keys (role);
