-- MoodBridge state store, PostgreSQL, schema 5: a running run's heartbeat (milliseconds
-- since the epoch), so that the next run of its pipeline can tell a run whose process
-- died from one still going.
ALTER TABLE sync_runs ADD COLUMN heartbeat_at BIGINT;
UPDATE sync_runs SET heartbeat_at = started_at WHERE status = 'running';
