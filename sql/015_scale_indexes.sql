-- migrate: outside a transaction
-- At 10 million deliveries (issue 16, make bench-scale). CONCURRENTLY, outside a transaction
-- (db.OUTSIDE_A_TRANSACTION): on a large table the build does not hold back deliveries and
-- settlements writing to notify_task while it runs. Each statement is safe to run again.

-- Lookups by event id (the views' per-event status, the feed's, the claim's join, retention's
-- "no delivery left", the event foreign key) are all served by notify_task_one_per_endpoint
-- (event_id, endpoint): this index repeated its leading column, one more random-key index
-- every delivery written had to update.
DROP INDEX CONCURRENTLY IF EXISTS notify_task_event_idx;

-- The /metrics scrape counts the open (0, 2) and error (3) deliveries by type and status
-- (callbacks/metrics.py _FEW_COUNTS). From this index alone (an index-only scan), not from
-- the heap rows notify_task_status_idx points at: error deliveries are scattered through 10 M
-- rows, one heap page each. Dropped first: a build that failed left it invalid.
DROP INDEX CONCURRENTLY IF EXISTS notify_task_counts_idx;
CREATE INDEX CONCURRENTLY notify_task_counts_idx ON notify_task (event_type, notify_status)
    INCLUDE (next_attempt_at) WHERE notify_status IN (0, 2, 3);
