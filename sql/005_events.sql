-- Typed events in the one outbox: team.completed (as before), team.failed, order.closed,
-- order.refunded. Each exactly once per state change: one per team for team events, one
-- per order for order events. Bodies written before this migration keep their old form.

ALTER TABLE notify_task
    ADD COLUMN event_type text NOT NULL DEFAULT 'team.completed'
        CONSTRAINT notify_task_event_type_check
        CHECK (event_type IN ('team.completed', 'team.failed', 'order.closed', 'order.refunded')),
    ADD COLUMN order_id text,
    ADD CONSTRAINT notify_task_order_event_has_order
        CHECK ((event_type LIKE 'order.%') = (order_id IS NOT NULL));

ALTER TABLE notify_task DROP CONSTRAINT notify_task_one_per_team;
CREATE UNIQUE INDEX notify_task_one_per_event
    ON notify_task (event_type, (coalesce(order_id, team_id)));
CREATE INDEX notify_task_team_idx ON notify_task (team_id);
