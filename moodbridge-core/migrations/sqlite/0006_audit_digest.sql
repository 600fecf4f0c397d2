-- MoodBridge state store, SQLite, schema 6: an audit entry may keep the SHA-256 of its
-- after-image instead of the image itself (a compact audit).
ALTER TABLE audit_log ADD COLUMN after_sha256 TEXT;
