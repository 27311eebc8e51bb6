-- At 10 million deliveries (issue 16, make bench-scale). Plain CREATE/DROP INDEX: every
-- migration runs in one transaction (db.apply_migrations), where CONCURRENTLY cannot; on a
-- large table this one holds its lock for the index build (tens of seconds at 10 M rows).

-- Lookups by event id (the views' per-event status, the feed's, the claim's join, retention's
-- "no delivery left", the event foreign key) are all served by notify_task_one_per_endpoint
-- (event_id, endpoint): this index repeated its leading column, one more random-key index
-- every delivery written had to update.
DROP INDEX notify_task_event_idx;

-- The /metrics scrape counts the open (0, 2) and error (3) deliveries by type and status
-- (callbacks/metrics.py _FEW_COUNTS). From this index alone (an index-only scan), not from
-- the heap rows notify_task_status_idx points at: error deliveries are scattered through 10 M
-- rows, one heap page each.
CREATE INDEX notify_task_counts_idx ON notify_task (event_type, notify_status)
    INCLUDE (next_attempt_at) WHERE notify_status IN (0, 2, 3);
