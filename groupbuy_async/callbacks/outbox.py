"""The notify_task outbox in PostgreSQL: claim with a lease, write results fenced by the claim."""

import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from ..db import Conn
from . import events
from .events import Event, EventType
from .rules import AttemptOutcome, Verdict


@dataclass(frozen=True)
class Task:
    id: int
    event_id: str
    team_id: str
    notify_url: str
    body: str
    # Attempt number this delivery will be, counted since the last replay.
    attempt: int
    token: uuid.UUID
    claimed_at: float  # time.monotonic() at claim: the lease runs from here
    host: str  # what the per-host bounds count by (the stored host: host:port)
    type: str  # the event type (per-type counts and metrics are labelled by it)


@dataclass(frozen=True)
class Result:
    task: Task
    outcome: AttemptOutcome
    verdict: Verdict
    started_at: datetime
    duration_ms: int


# Exactly once per state change: the unique index is one per (type, team) for team events
# and one per (type, order) for order events; a second enqueue of the same is a no-op.
_ENQUEUE = """
INSERT INTO notify_task (event_id, event_type, activity_id, team_id, order_id, notify_url,
                         parameter_json)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                     $7::text[])
ON CONFLICT (event_type, (coalesce(order_id, team_id))) DO NOTHING
RETURNING event_id
"""


async def enqueue(conn: Conn, items: Sequence[Event]) -> list[str]:
    """Write events to the outbox. Call it inside the transaction of the state change they
    report: they commit with it or not at all. Returns the ids of those newly written."""
    if not items:
        return []
    created = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in items]
    bodies = [
        events.body(e.type, str(event_id), created, e.data)
        for e, event_id in zip(items, ids, strict=True)
    ]
    rows = await conn.fetch(
        _ENQUEUE, ids, [str(e.type) for e in items], [e.activity_id for e in items],
        [e.team_id for e in items], [e.order_id for e in items],
        [e.notify_url for e in items], bodies,
    )  # fmt: skip
    return [str(r["event_id"]) for r in rows]


async def enqueue_team_completed(
    conn: Conn, team_id: str, activity_id: int, notify_url: str, out_trade_nos: list[str]
) -> None:
    """A completed team's callback (team.completed), one per team."""
    data = {"teamId": team_id, "outTradeNoList": out_trade_nos, "activityId": activity_id}
    await enqueue(conn, [Event(EventType.TEAM_COMPLETED, team_id, activity_id, notify_url, data)])


# Pushing next_attempt_at to the lease expiry takes claimed rows out of the due range, so
# later claims do not rescan them; a crashed holder's rows fall due again when it lapses.
_CLAIM = """
WITH {pick}
UPDATE notify_task t
SET claim_token = $2, locked_until = now() + $3::interval,
    next_attempt_at = now() + $3::interval, update_time = now()
FROM picked WHERE t.id = picked.id
RETURNING t.id, t.event_id, t.team_id, t.notify_url, t.parameter_json,
          t.notify_count - t.schedule_offset + 1 AS attempt, t.host, t.event_type
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
        Task(r["id"], str(r["event_id"]), r["team_id"], r["notify_url"], r["parameter_json"],
             r["attempt"], token, claimed_at, r["host"], r["event_type"])
        for r in rows
    ]  # fmt: skip


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
    SET notify_count = t.notify_count + 1, notify_status = r.status,
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


_TASK_COLUMNS = """id, event_type, team_id, order_id, activity_id, event_id, notify_url,
    notify_count, notify_status, next_attempt_at, last_http_status, last_error, create_time,
    update_time"""
# The team paths (/notify_tasks/{teamId}) name the team's team.completed event.
_TEAM_COMPLETED = "team_id = $1 AND event_type = 'team.completed'"


async def list_tasks(
    pool: asyncpg.Pool, status: int | None, team_id: str | None, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(
        f"SELECT {_TASK_COLUMNS} FROM notify_task"
        " WHERE ($1::smallint IS NULL OR notify_status = $1)"
        " AND ($2::text IS NULL OR team_id = $2) ORDER BY id DESC LIMIT $3",
        status,
        team_id,
        limit,
    )


async def get_task(
    pool: asyncpg.Pool, team_id: str
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    async with pool.acquire() as conn:
        task = await conn.fetchrow(
            f"SELECT {_TASK_COLUMNS} FROM notify_task WHERE {_TEAM_COMPLETED}", team_id
        )
        if task is None:
            return None, []
        attempts = await conn.fetch(
            "SELECT attempt, started_at, duration_ms, http_status, response_body, error"
            " FROM notify_attempt WHERE task_id = $1 ORDER BY attempt",
            task["id"],
        )
    return task, attempts


async def replay(pool: asyncpg.Pool, team_id: str) -> asyncpg.Record | None:
    """Make a task in error due again now, its retry schedule restarted. None if not in error."""
    return await pool.fetchrow(
        "UPDATE notify_task SET notify_status = 2, next_attempt_at = now(),"
        " schedule_offset = notify_count, last_error = NULL, locked_until = NULL,"
        " claim_token = NULL, update_time = now()"
        f" WHERE {_TEAM_COMPLETED} AND notify_status = 3 RETURNING {_TASK_COLUMNS}",
        team_id,
    )


# --- per-type counts for /metrics ------------------------------------------------------

# Open (0, 2) and error (3) tasks are counted through their indexes: they are the few. The
# delivered ones (1) are all the rest: counted while the table is small, past EXACT_UP_TO
# rows estimated from PostgreSQL's statistics, so a scrape costs the same at 10 M rows.
EXACT_UP_TO = 100_000
_FEW_COUNTS = """
SELECT event_type, notify_status, count(*) AS tasks,
       count(*) FILTER (WHERE notify_status IN (0, 2) AND next_attempt_at <= now()) AS due
FROM notify_task WHERE notify_status IN (0, 2, 3) GROUP BY 1, 2
"""
_TOTAL_ESTIMATE = (
    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'notify_task'::regclass"
)
_DELIVERED_EXACT = (
    "SELECT event_type, count(*) AS tasks FROM notify_task WHERE notify_status = 1 GROUP BY 1"
)
# Each type's share of the table, as ANALYZE sampled it (every type is a common value).
_TYPE_SHARES = """
SELECT s.value AS event_type, s.share
FROM pg_stats p, unnest(p.most_common_vals::text::text[], p.most_common_freqs) AS s(value, share)
WHERE p.schemaname = current_schema() AND p.tablename = 'notify_task'
  AND p.attname = 'event_type'
"""

# (event type, status) -> tasks
TypeStatusCounts = dict[tuple[str, int], int]


async def status_counts(pool: asyncpg.Pool) -> tuple[TypeStatusCounts, dict[str, int]]:
    """Tasks by event type and status (delivered ones estimated on large tables), and how
    many of each type are due. Every type and status is present, zeros included."""
    async with pool.acquire() as conn:
        few = await conn.fetch(_FEW_COUNTS)
        total = await conn.fetchval(_TOTAL_ESTIMATE)
        small = total < EXACT_UP_TO
        rows = await conn.fetch(_DELIVERED_EXACT if small else _TYPE_SHARES)
    counts: TypeStatusCounts = {(str(t), s): 0 for t in EventType for s in range(4)}
    due = dict.fromkeys(map(str, EventType), 0)
    for r in few:
        counts[r["event_type"], r["notify_status"]] = r["tasks"]
        due[r["event_type"]] += r["due"]
    if small:
        delivered = {r["event_type"]: r["tasks"] for r in rows}
    else:
        shares = {r["event_type"]: r["share"] for r in rows}
        delivered = estimate_delivered(total, shares, counts)
    for kind, n in delivered.items():
        counts[kind, 1] = n
    return counts, due


def estimate_delivered(
    total: int, shares: dict[str, float], counts: TypeStatusCounts
) -> dict[str, int]:
    """Delivered tasks by type on a large table: all rows but the counted open and error
    ones, split by each type's share of the table less its counted ones. Without statistics
    (the table never analyzed) they are all counted as team.completed, the common type."""
    open_ = {t: sum(counts[str(t), s] for s in (0, 2, 3)) for t in map(str, EventType)}
    delivered = max(total - sum(open_.values()), 0)
    weights = {t: max(total * shares.get(t, 0.0) - n, 0.0) for t, n in open_.items()}
    weight = sum(weights.values())
    if weight <= 0:
        return {**dict.fromkeys(open_, 0), str(EventType.TEAM_COMPLETED): delivered}
    split = {t: int(delivered * w / weight) for t, w in weights.items()}
    # What rounding down left over goes to the largest share, so the types sum to the total.
    largest = max(weights, key=lambda t: weights[t])
    split[largest] += delivered - sum(split.values())
    return split


# --- events: the per-event views and the feed -------------------------------------------


async def get_event(
    pool: asyncpg.Pool, event_id: uuid.UUID
) -> tuple[asyncpg.Record | None, list[asyncpg.Record]]:
    """One event's task row (with the body sent) and every attempt, oldest first."""
    async with pool.acquire() as conn:
        task = await conn.fetchrow(
            f"SELECT {_TASK_COLUMNS}, parameter_json FROM notify_task WHERE event_id = $1",
            event_id,
        )
        if task is None:
            return None, []
        attempts = await conn.fetch(
            "SELECT attempt, started_at, duration_ms, http_status, response_body, error"
            " FROM notify_attempt WHERE task_id = $1 ORDER BY attempt",
            task["id"],
        )
    return task, attempts


async def replay_event(pool: asyncpg.Pool, event_id: uuid.UUID) -> asyncpg.Record | None:
    """replay(), for any event by its id: in error (3) -> due now, schedule restarted."""
    return await pool.fetchrow(
        "UPDATE notify_task SET notify_status = 2, next_attempt_at = now(),"
        " schedule_offset = notify_count, last_error = NULL, locked_until = NULL,"
        " claim_token = NULL, update_time = now()"
        f" WHERE event_id = $1 AND notify_status = 3 RETURNING {_TASK_COLUMNS}",
        event_id,
    )


# The feed is ordered by (xact_id, id): the writing transaction's id (sql/007), then the
# insert order within it. It lists only events written by transactions below the horizon:
# the oldest transaction of this database still open when the statement's snapshot was
# taken (or, with none open, the first not yet started). Every transaction below it has
# ended, so every event that will ever have a position below it is committed and in this
# snapshot: a reader who has read up to a position can never find an event appear behind
# it later, whatever order transactions commit in. An open transaction holds the feed back
# (never skips it) until it ends. Transactions still open in other databases of the server
# cannot write here and do not hold it back; one whose database is not known (it ended
# between the snapshot and the activity read, or is prepared) is counted as this one's.
_HORIZON = """
SELECT least(pg_snapshot_xmax(s), (
    SELECT min(x) FROM pg_snapshot_xip(s) AS x
    WHERE NOT EXISTS (SELECT FROM pg_stat_activity a
                      WHERE a.backend_xid = xid(x) AND a.datname <> current_database())))
FROM pg_current_snapshot() AS s
"""
_EVENT_COLUMNS = """event_id, event_type, team_id, order_id, notify_status, create_time,
    parameter_json"""


@dataclass(frozen=True)
class FeedPosition:
    xact_id: int
    id: int


FEED_START = FeedPosition(0, 0)


async def feed_position(pool: asyncpg.Pool, event_id: uuid.UUID) -> FeedPosition | None:
    """Where an event stands in the feed; None if there is no such event."""
    row = await pool.fetchrow("SELECT xact_id, id FROM notify_task WHERE event_id = $1", event_id)
    return None if row is None else FeedPosition(row["xact_id"], row["id"])


async def list_events(
    pool: asyncpg.Pool,
    after: FeedPosition,
    limit: int,
    event_type: str | None = None,
    team_id: str | None = None,
) -> list[asyncpg.Record]:
    """Up to `limit` events past `after` in feed order, each with its body as sent."""
    args: list[object] = [after.xact_id, after.id, limit]
    where = ["xact_id < (SELECT * FROM horizon)", "(xact_id, id) > ($1::xid8, $2)"]
    scope = "notify_task"
    if event_type is not None:
        args.append(event_type)
        where.append(f"event_type = ${len(args)}")
    if team_id is not None:
        # A team has a handful of events: found by the team index first, then ordered.
        args.append(team_id)
        scope = f"(SELECT * FROM notify_task WHERE team_id = ${len(args)} OFFSET 0) AS t"
    return await pool.fetch(
        f"WITH horizon AS ({_HORIZON}) SELECT {_EVENT_COLUMNS} FROM {scope}"
        f" WHERE {' AND '.join(where)} ORDER BY xact_id, id LIMIT $3",
        *args,
    )
