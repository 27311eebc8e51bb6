"""The delivery side of the outbox: claim due tasks fairly across merchant hosts under a
lease, write results back fenced by the claim, give tasks back unattempted."""

import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from .rules import AttemptOutcome, BrokerTarget, Verdict


@dataclass(frozen=True)
class Task:
    id: int
    event_id: str
    team_id: str
    url: str  # the endpoint's url now (an endpoint moved takes its deliveries along); '' amqp
    body: str
    # Attempt number this delivery will be, counted since the last replay.
    attempt: int
    token: uuid.UUID
    claimed_at: float  # time.monotonic() at claim: the lease runs from here
    host: str  # what the per-host bounds count by (the stored host: host:port)
    type: str  # the event type (per-type counts and metrics are labelled by it)
    # The endpoint's secrets, sealed: the current one, and the one before a rotation while
    # its grace lasts (each signs every send).
    secrets: tuple[bytes, ...] = ()
    endpoint: int = 0  # endpoint.id (its health is noted per batch: health.py)
    # A broker endpoint's (kind amqp) exchange and routing key now; None: an HTTP one.
    broker: BrokerTarget | None = None


@dataclass(frozen=True)
class Result:
    task: Task
    outcome: AttemptOutcome
    verdict: Verdict
    started_at: datetime
    duration_ms: int


# Pushing next_attempt_at to the lease expiry takes claimed rows out of the due range, so
# later claims do not rescan them; a crashed holder's rows fall due again when it lapses.
# The body is the event's, the url (or exchange and routing key) and secrets the endpoint's
# as they are now.
# A delivery of an endpoint disabled meanwhile (its event was fanned out as the endpoint was
# being disabled) is held here instead: not claimed, not an attempt.
_CLAIM = """
WITH {pick}
UPDATE notify_task t
SET claim_token = CASE WHEN ep.disabled THEN NULL ELSE $2::uuid END,
    locked_until = CASE WHEN ep.disabled THEN NULL ELSE now() + $3::interval END,
    next_attempt_at = CASE WHEN ep.disabled THEN t.next_attempt_at
                           ELSE now() + $3::interval END,
    notify_status = CASE WHEN ep.disabled THEN 4 ELSE t.notify_status END,
    update_time = now()
FROM picked, event e, endpoint ep
WHERE t.id = picked.id AND e.event_id = t.event_id AND ep.id = t.endpoint
RETURNING t.id, t.event_id, t.team_id, ep.url, e.parameter_json,
          t.notify_count - t.schedule_offset + 1 AS attempt, t.host, t.event_type, ep.secret,
          CASE WHEN ep.previous_until > now() THEN ep.previous_secret END AS previous_secret,
          ep.disabled, ep.id AS endpoint_id, ep.kind, ep.exchange, ep.routing_key
"""
# Fair across hosts: the hosts with open tasks are walked through the (host, due) index (a
# skip scan: one probe per host, however long its backlog), each host gets a share of the
# claim (at most its room: $4, or what $5/$6 say for the hosts given; none for a host at
# its cap or paused) and its oldest due tasks fill it. Taken in turns (every host's first,
# then every host's second, ...), so one host's backlog cannot fill the claim: the cost is
# per host and per task claimed, not per task due.
_PICK_DUE = """RECURSIVE hosts AS (
    (SELECT host FROM notify_task WHERE notify_status IN (0, 2) ORDER BY host LIMIT 1)
    UNION ALL
    SELECT (SELECT t.host FROM notify_task t
            WHERE t.notify_status IN (0, 2) AND t.host > h.host ORDER BY t.host LIMIT 1)
    FROM hosts h WHERE h.host IS NOT NULL
), due_hosts AS (
    SELECT h.host, coalesce(r.room, $4) AS room
    FROM hosts h LEFT JOIN unnest($5::text[], $6::int[]) AS r(host, room) ON r.host = h.host
    WHERE coalesce(r.room, $4) > 0 AND EXISTS (
        SELECT FROM notify_task t
        WHERE t.host = h.host AND t.notify_status IN (0, 2) AND t.next_attempt_at <= now())
), ranked AS (
    SELECT l.id, l.next_attempt_at,
           row_number() OVER (PARTITION BY d.host ORDER BY l.next_attempt_at) AS turn
    FROM due_hosts d CROSS JOIN LATERAL (
        SELECT t.id, t.next_attempt_at FROM notify_task t
        WHERE t.host = d.host AND t.notify_status IN (0, 2) AND t.next_attempt_at <= now()
        ORDER BY t.next_attempt_at
        LIMIT least(d.room, ceil($1::float8 / (SELECT count(*) FROM due_hosts))::int)
        FOR UPDATE OF t SKIP LOCKED
    ) l
), picked AS (
    SELECT id FROM ranked ORDER BY turn, next_attempt_at LIMIT $1
)"""
# Named teams are found by their unique key, however large the due backlog is.
_PICK_TEAMS = """picked AS (
    SELECT id FROM notify_task
    WHERE team_id = ANY($4::text[]) AND notify_status IN (0, 2) AND next_attempt_at <= now()
      AND host <> ALL($5::text[]) AND ($6::text IS NULL OR event_type = $6)
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)"""
_CLAIM_DUE = _CLAIM.format(pick=_PICK_DUE)
_CLAIM_TEAMS = _CLAIM.format(pick=_PICK_TEAMS)


async def claim(
    pool: asyncpg.Pool,
    limit: int,
    lease: timedelta,
    team_ids: list[str] | None = None,
    *,
    per_host: int | None = None,
    rooms: Mapping[str, int] | None = None,
    skip: Collection[str] = (),
    event_type: str | None = None,
) -> list[Task]:
    """Claim up to `limit` due tasks (only these teams' when given, and of `event_type`
    when given) under a new lease, never a host's in `skip`. Of all that is due, a host gets
    at most its room: `rooms` for the hosts named there, `per_host` for the others
    (unbounded if None)."""
    token = uuid.uuid4()
    claimed_at = time.monotonic()
    if team_ids is None:
        room = {**(rooms or {}), **dict.fromkeys(skip, 0)}
        rows = await pool.fetch(
            _CLAIM_DUE, limit, token, lease, per_host or limit, list(room), list(room.values())
        )
    else:
        rows = await pool.fetch(_CLAIM_TEAMS, limit, token, lease, team_ids, list(skip), event_type)
    return [
        Task(
            r["id"],
            str(r["event_id"]),
            r["team_id"],
            r["url"],
            r["parameter_json"],
            r["attempt"],
            token,
            claimed_at,
            r["host"],
            r["event_type"],
            (r["secret"],) if r["previous_secret"] is None else (r["secret"], r["previous_secret"]),
            r["endpoint_id"],
            BrokerTarget(r["exchange"], r["routing_key"]) if r["kind"] == "amqp" else None,
        )
        for r in rows
        if not r["disabled"]
    ]


async def due_hosts(pool: asyncpg.Pool, hosts: Collection[str]) -> set[str]:
    """Which of these hosts have due tasks (claimed by nobody)."""
    if not hosts:
        return set()
    rows = await pool.fetch(
        "SELECT h FROM unnest($1::text[]) AS h WHERE EXISTS (SELECT FROM notify_task t"
        " WHERE t.host = h AND t.notify_status IN (0, 2) AND t.next_attempt_at <= now())",
        list(hosts),
    )
    return {r["h"] for r in rows}


# One statement per batch: results land only where the claim token still matches, so a
# holder whose lease lapsed (and was re-claimed) cannot overwrite the new holder's state.
_RECORD = """
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::smallint[], $4::timestamptz[],
                         $5::int[], $6::text[], $7::text[], $8::timestamptz[], $9::int[])
        AS r(token, id, status, next_at, http_status, error, body, started_at, duration_ms)
), updated AS (
    UPDATE notify_task t
    SET notify_count = t.notify_count + 1,
        -- Held (4: its endpoint was disabled meanwhile) stays held, unless this one is done.
        notify_status = CASE WHEN t.notify_status = 4 AND r.status = 2 THEN 4 ELSE r.status END,
        next_attempt_at = coalesce(r.next_at, t.next_attempt_at),
        last_http_status = r.http_status, last_error = r.error,
        locked_until = NULL, claim_token = NULL, update_time = now()
    FROM r WHERE t.id = r.id AND t.claim_token = r.token
    RETURNING t.id, t.notify_count
)
INSERT INTO notify_attempt (task_id, attempt, started_at, duration_ms, http_status,
                            response_body, error)
SELECT u.id, u.notify_count, r.started_at, r.duration_ms, r.http_status, r.body, r.error
FROM updated u JOIN r ON r.id = u.id
RETURNING task_id
"""


async def record(pool: asyncpg.Pool, results: list[Result]) -> set[int]:
    """Write back a batch of attempts; returns the task ids whose claim still held."""
    if not results:
        return set()
    rows = await pool.fetch(
        _RECORD,
        [r.task.token for r in results],
        [r.task.id for r in results],
        [int(r.verdict.status) for r in results],
        [r.verdict.next_attempt_at for r in results],
        [r.outcome.http_status for r in results],
        [r.verdict.error for r in results],
        [r.outcome.body[:2048] if r.outcome.http_status is not None else None for r in results],
        [r.started_at for r in results],
        [r.duration_ms for r in results],
    )
    return {r["task_id"] for r in rows}


async def release(pool: asyncpg.Pool, tasks: list[Task], due_at: datetime | None) -> None:
    """Give claimed tasks back unattempted, due again at `due_at` (None: now)."""
    if tasks:
        await pool.execute(
            "UPDATE notify_task t SET claim_token = NULL, locked_until = NULL,"
            " next_attempt_at = coalesce($3::timestamptz, now()), update_time = now()"
            " FROM unnest($1::bigint[], $2::uuid[]) AS r(id, token)"
            " WHERE t.id = r.id AND t.claim_token = r.token",
            [t.id for t in tasks],
            [t.token for t in tasks],
            due_at,
        )


async def postpone(pool: asyncpg.Pool, host: str, until: datetime) -> int:
    """A paused host: its open tasks due before `until` that nobody holds are due at `until`
    instead. Not attempts: notify_count and notify_attempt stay as they are. Returns how
    many were moved."""
    status = await pool.execute(
        "UPDATE notify_task SET next_attempt_at = $2, update_time = now()"
        " WHERE host = $1 AND notify_status IN (0, 2) AND next_attempt_at < $2"
        " AND claim_token IS NULL",
        host,
        until,
    )
    return int(status.split()[-1])
