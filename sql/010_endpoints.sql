-- Merchants' endpoints, and events apart from their deliveries.
--
-- An event is one fact (a team completed, an order was refunded...), written once in the
-- transaction of the state change it reports; it belongs to the merchant of its order's (or,
-- for team events, its team's) source+channel. Each enabled endpoint of that merchant that
-- matches the event's type and pair gets one delivery of it (notify_task: one row per
-- (event, endpoint)), written by the same statement, so no crash falls between the two.
-- Each delivery has its own attempts, schedule, status and replay; webhook-id is the event
-- id on every endpoint.

CREATE TABLE endpoint (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id        text        NOT NULL REFERENCES merchant (merchant_id) ON DELETE CASCADE,
    endpoint_id        text        NOT NULL
                       CONSTRAINT endpoint_id_form CHECK (endpoint_id ~ '^[A-Za-z0-9_-]{1,32}$'),
    url                text        NOT NULL,
    -- Empty: every type.
    event_types        text[]      NOT NULL DEFAULT '{}',
    -- [{"source": .., "channel": ..}]; empty: every pair the merchant holds.
    channels           jsonb       NOT NULL DEFAULT '[]'
                       CONSTRAINT endpoint_channels_is_array CHECK (jsonb_typeof(channels) = 'array'),
    disabled           boolean     NOT NULL DEFAULT false,
    description        text        NOT NULL DEFAULT '',
    -- Signing secrets, sealed (Fernet, GROUPBUY_SECRETS_KEY): never stored in the clear.
    secret             bytea       NOT NULL,
    -- After a rotation, the secret before it signs too until previous_until.
    previous_secret    bytea,
    previous_until     timestamptz,
    create_time        timestamptz NOT NULL DEFAULT now(),
    update_time        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT endpoint_merchant_endpoint_key UNIQUE (merchant_id, endpoint_id)
);
CREATE INDEX endpoint_merchant_url_idx ON endpoint (merchant_id, url) WHERE NOT disabled;

CREATE TABLE event (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    event_type     text        NOT NULL CONSTRAINT event_type_check
                   CHECK (event_type IN ('team.completed', 'team.failed', 'order.closed',
                                         'order.refunded')),
    activity_id    bigint      NOT NULL,
    team_id        text        NOT NULL,
    order_id       text,
    -- NULL for events written before merchants (and under a pair no merchant holds).
    merchant_id    text,
    -- Kept as text so every delivery and retry sends byte-identical bodies.
    parameter_json text        NOT NULL,
    -- The feed's order (see sql/007 and callbacks/feed.py).
    xact_id        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    create_time    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_order_event_has_order CHECK ((event_type LIKE 'order.%') = (order_id IS NOT NULL))
);
-- Exactly once per state change: one per (type, team) for team events, per (type, order)
-- for order events.
CREATE UNIQUE INDEX event_one_per_change ON event (event_type, (coalesce(order_id, team_id)));
CREATE INDEX event_feed_idx ON event (xact_id, id);
CREATE INDEX event_feed_type_idx ON event (event_type, xact_id, id);
CREATE INDEX event_team_idx ON event (team_id);

-- Every event so far, with its place in the feed (same ids, same transaction ids).
INSERT INTO event (id, event_id, event_type, activity_id, team_id, order_id, merchant_id,
                   parameter_json, xact_id, create_time)
OVERRIDING SYSTEM VALUE
SELECT t.id, t.event_id, t.event_type, t.activity_id, t.team_id, t.order_id, b.merchant_id,
       t.parameter_json, t.xact_id, t.create_time
FROM notify_task t
LEFT JOIN group_buy_order g ON g.team_id = t.team_id
LEFT JOIN merchant_binding b ON b.source = g.source AND b.channel = g.channel;
SELECT setval(pg_get_serial_sequence('event', 'id'), coalesce(max(id), 0) + 1, false) FROM event;

-- notify_task is now a delivery: of one event to one endpoint.
DROP INDEX notify_task_one_per_event;
DROP INDEX notify_task_feed_idx;
DROP INDEX notify_task_feed_type_idx;
ALTER TABLE notify_task
    DROP COLUMN parameter_json,
    DROP COLUMN xact_id,
    ADD COLUMN endpoint bigint REFERENCES endpoint (id) ON DELETE CASCADE,
    ADD CONSTRAINT notify_task_event_fkey FOREIGN KEY (event_id) REFERENCES event (event_id),
    ADD CONSTRAINT notify_task_one_per_endpoint UNIQUE (event_id, endpoint),
    ALTER COLUMN event_id DROP DEFAULT;
ALTER TABLE notify_task DROP CONSTRAINT notify_task_event_id_key;
-- The key fairness, the breaker and the per-endpoint bounds count by: 'merchantId/endpointId'
-- (was host:port; endpoints of two merchants on one host are each their own).
ALTER TABLE notify_task ALTER COLUMN host DROP EXPRESSION;
-- Deliveries written before endpoints have none and no secret to sign with: those still
-- open end in error, said so; their events stay in the feed for the merchant to reconcile.
UPDATE notify_task
SET notify_status = 3, locked_until = NULL, claim_token = NULL, update_time = now(),
    last_error = 'written before merchant endpoints: no endpoint to deliver to (see the event feed)'
WHERE notify_status IN (0, 2);
-- 4 held: its endpoint is disabled; kept, not attempted, due again once it is enabled.
ALTER TABLE notify_task DROP CONSTRAINT notify_task_notify_status_check,
    ADD CONSTRAINT notify_task_notify_status_check CHECK (notify_status IN (0, 1, 2, 3, 4));
CREATE INDEX notify_task_event_idx ON notify_task (event_id);
CREATE INDEX notify_task_endpoint_idx ON notify_task (endpoint);

-- A lock's notifyUrl is kept only when it names one of the merchant's endpoints; '' = none.
ALTER TABLE group_buy_order ALTER COLUMN notify_url SET DEFAULT '';
