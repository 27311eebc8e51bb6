-- The event feed (GET /api/v1/admin/events?after=): events are listed in the order of the
-- transaction that wrote them. id alone is not safe to page by: it is taken at insert, so a
-- transaction that commits late can make an id appear below one a reader has already passed.
-- xact_id is the writing transaction's id; the feed lists only events whose transaction id
-- is below every transaction still open in this database, so nothing can ever appear below
-- a position once it has been listed (see outbox.list_events).
--
-- Rows written before this migration are all committed (ALTER TABLE waits for their
-- writers) and read as xact_id 1, below every real transaction id: they come first, in id
-- order. A constant default is stored in the catalog: no table rewrite.
ALTER TABLE notify_task ADD COLUMN xact_id xid8 NOT NULL DEFAULT '1';
ALTER TABLE notify_task ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id();
CREATE INDEX notify_task_feed_idx ON notify_task (xact_id, id);
-- The feed of one type (a rare type is not found by scanning every other).
CREATE INDEX notify_task_feed_type_idx ON notify_task (event_type, xact_id, id);
