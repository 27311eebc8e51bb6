-- Endpoint health: an endpoint whose every attempt has failed for long enough (and often
-- enough) is disabled by the service, saying why; its open deliveries are held, and an
-- endpoint.disabled event goes to the merchant's other endpoints that take it.

ALTER TABLE endpoint
    -- Since its first failed attempt after its last answered one; NULL while healthy.
    ADD COLUMN failing_since   timestamptz,
    ADD COLUMN failed_attempts integer NOT NULL DEFAULT 0,
    -- Set when the service disabled it (NULL when the operator or merchant did).
    ADD COLUMN disabled_reason text,
    ADD COLUMN disabled_time   timestamptz;

-- endpoint.* events are about an endpoint, not a team.
ALTER TABLE event DROP CONSTRAINT event_type_check,
    ADD CONSTRAINT event_type_check CHECK (event_type IN ('team.completed', 'team.failed',
        'order.closed', 'order.refunded', 'endpoint.disabled')),
    ALTER COLUMN team_id DROP NOT NULL,
    ALTER COLUMN activity_id DROP NOT NULL,
    ADD CONSTRAINT event_team_event_has_team
        CHECK ((event_type LIKE 'endpoint.%') = (team_id IS NULL));
ALTER TABLE notify_task DROP CONSTRAINT notify_task_event_type_check,
    ADD CONSTRAINT notify_task_event_type_check CHECK (event_type IN ('team.completed',
        'team.failed', 'order.closed', 'order.refunded', 'endpoint.disabled')),
    ALTER COLUMN team_id DROP NOT NULL,
    ALTER COLUMN activity_id DROP NOT NULL;

-- What each drain's health sweep looks for: the few endpoints failing now.
CREATE INDEX endpoint_failing_idx ON endpoint (failing_since) WHERE failing_since IS NOT NULL
    AND NOT disabled;
