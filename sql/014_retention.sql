-- Retention (GROUPBUY_RETENTION_DAYS): the worker prunes finished deliveries (1 delivered,
-- 3 error) whose last change is older than the retention, with their attempts, then events
-- older than it that have no delivery left. Trades (group_buy_order, group_buy_order_list)
-- are never pruned. Each prune statement takes a small batch found through these indexes,
-- so that it never scans the tables.

-- The finished deliveries, oldest change first (the open ones have notify_task_due_idx).
CREATE INDEX notify_task_finished_idx ON notify_task (update_time) WHERE notify_status IN (1, 3);
-- Events, oldest first: the prune walks those past the retention in this order.
CREATE INDEX event_created_idx ON event (create_time, id);

-- How far pruning has gone: events written before pruned_before may have been pruned (those
-- with a delivery still open or held are kept); every later one is kept. One row, written
-- with the events it removes; none until an event was ever pruned. The event feed says it
-- (retainedSince) and tells a cursor naming a pruned event apart from a mistaken one.
CREATE TABLE retention_mark (
    only_row      boolean     PRIMARY KEY DEFAULT true CONSTRAINT retention_mark_one_row CHECK (only_row),
    pruned_before timestamptz NOT NULL
);
