-- Callback outbox: written by the settlement transaction that completes a team,
-- delivered after commit by the API (immediately) or the worker (compensation).

CREATE TABLE notify_task (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    activity_id      bigint      NOT NULL,
    team_id          text        NOT NULL REFERENCES group_buy_order (team_id),
    notify_url       text        NOT NULL,
    notify_count     integer     NOT NULL DEFAULT 0 CHECK (notify_count >= 0),
    -- notify_count at the last replay: the retry schedule restarts from there.
    schedule_offset  integer     NOT NULL DEFAULT 0,
    notify_status    smallint    NOT NULL DEFAULT 0 CHECK (notify_status IN (0, 1, 2, 3)),
    -- Kept as text so every retry sends byte-identical bodies.
    parameter_json   text        NOT NULL,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    claim_token      uuid,
    last_http_status integer,
    last_error       text,
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notify_task_one_per_team UNIQUE (team_id)
);
CREATE INDEX notify_task_due_idx ON notify_task (next_attempt_at) WHERE notify_status IN (0, 2);
CREATE INDEX notify_task_status_idx ON notify_task (notify_status, id);

CREATE TABLE notify_attempt (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id       bigint      NOT NULL REFERENCES notify_task (id) ON DELETE CASCADE,
    attempt       integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   integer     NOT NULL,
    http_status   integer,
    response_body text,
    error         text,
    UNIQUE (task_id, attempt)
);
