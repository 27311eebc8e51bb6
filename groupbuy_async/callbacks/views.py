"""What operators see of the outbox and do to it: deliveries listed, an event with each of
its deliveries and their attempts, and replay.

An event has one delivery per endpoint it went to (none when no endpoint took it). Where one
row stands for an event (a team's task, an event's summary), its status is the event's as a
whole: 3 if a delivery is in error, else 2 if one is being retried, else 0 while one waits
(or is held), else 1; its other delivery fields are those of the delivery that most needs
attention (in error first, then the oldest)."""

import uuid
from enum import Enum

import asyncpg

_DELIVERY_COLUMNS = """t.id, t.event_type, t.team_id, t.order_id, t.activity_id, t.event_id,
    t.notify_url, t.notify_count, t.notify_status, t.next_attempt_at, t.last_http_status,
    t.last_error, t.create_time, t.update_time, ep.endpoint_id, ep.merchant_id"""

# The event's status over all its deliveries (see the module's doc).
EVENT_STATUS = """(SELECT CASE WHEN bool_or(d.notify_status = 3) THEN 3
                         WHEN bool_or(d.notify_status = 2) THEN 2
                         WHEN bool_or(d.notify_status IN (0, 4)) THEN 0 ELSE 1 END
                  FROM notify_task d WHERE d.event_id = e.event_id)"""

_EVENT = f"""
SELECT e.id, e.event_type, e.team_id, e.order_id, e.activity_id, e.event_id, e.create_time,
       e.merchant_id AS event_merchant_id, e.parameter_json, {EVENT_STATUS} AS notify_status,
       coalesce(r.notify_url, '') AS notify_url, coalesce(r.notify_count, 0) AS notify_count,
       r.next_attempt_at, r.last_http_status, r.last_error, r.endpoint_id, r.merchant_id,
       r.id AS delivery_id,
       coalesce(r.update_time, e.create_time) AS update_time
FROM event e
LEFT JOIN LATERAL (
    SELECT t.*, ep.endpoint_id, ep.merchant_id FROM notify_task t
    LEFT JOIN endpoint ep ON ep.id = t.endpoint
    WHERE t.event_id = e.event_id ORDER BY t.notify_status = 3 DESC, t.id LIMIT 1
) r ON true
"""


class By(Enum):
    """How an operator names an event: a team (its team.completed event, as the
    /notify_tasks/{teamId} paths do) or an event id (any event)."""

    TEAM = "e.team_id = $1 AND e.event_type = 'team.completed'"
    EVENT = "e.event_id = $1"


async def list_tasks(
    pool: asyncpg.Pool, status: int | None, team_id: str | None, limit: int
) -> list[asyncpg.Record]:
    """Deliveries, newest first (one per event and endpoint)."""
    return await pool.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM notify_task t LEFT JOIN endpoint ep ON ep.id = t.endpoint"
        " WHERE ($1::smallint IS NULL OR t.notify_status = $1)"
        " AND ($2::text IS NULL OR t.team_id = $2) ORDER BY t.id DESC LIMIT $3",
        status,
        team_id,
        limit,
    )


async def get_event(
    pool: asyncpg.Pool, by: By, key: str | uuid.UUID
) -> tuple[asyncpg.Record | None, list[asyncpg.Record], dict[int, list[asyncpg.Record]]]:
    """The event (with the body it sends and its status as a whole), its deliveries, and
    each delivery's attempts (by delivery id), oldest first."""
    async with pool.acquire() as conn:
        event = await conn.fetchrow(f"{_EVENT} WHERE {by.value}", key)
        if event is None:
            return None, [], {}
        deliveries = await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM notify_task t"
            " LEFT JOIN endpoint ep ON ep.id = t.endpoint WHERE t.event_id = $1 ORDER BY t.id",
            event["event_id"],
        )
        attempts: dict[int, list[asyncpg.Record]] = {d["id"]: [] for d in deliveries}
        for a in await conn.fetch(
            "SELECT task_id, attempt, started_at, duration_ms, http_status, response_body, error"
            " FROM notify_attempt WHERE task_id = ANY($1::bigint[]) ORDER BY task_id, attempt",
            list(attempts),
        ):
            attempts[a["task_id"]].append(a)
    return event, deliveries, attempts


async def replay(pool: asyncpg.Pool, by: By, key: str | uuid.UUID) -> asyncpg.Record | None:
    """Make every delivery of the event in error (3) due again now, each one's retry schedule
    restarted; returns the event as get_event shows it, or None when none was in error.
    Deliveries with no endpoint (written before endpoints) have nowhere to go: not replayed."""
    async with pool.acquire() as conn, conn.transaction():
        replayed = await conn.fetchval(
            "WITH r AS (UPDATE notify_task t SET notify_status = 2, next_attempt_at = now(),"
            " schedule_offset = notify_count, last_error = NULL, locked_until = NULL,"
            " claim_token = NULL, update_time = now()"
            f" FROM event e WHERE t.event_id = e.event_id AND {by.value}"
            " AND t.notify_status = 3 AND t.endpoint IS NOT NULL RETURNING 1)"
            " SELECT count(*) FROM r",
            key,
        )
        if not replayed:
            return None
        return await conn.fetchrow(f"{_EVENT} WHERE {by.value}", key)
