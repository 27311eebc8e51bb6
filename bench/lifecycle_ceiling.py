"""The close cron's ceiling: what PostgreSQL alone takes to do the cron's work, with nothing
around it. One statement per batch on a bare connection closes the due locks, frees their
teams' slots and writes each order.closed event and its deliveries, the bodies built by
json_build_object (PostgreSQL's own, in C) and the ids time-ordered as the service's
(outbox.NEW_EVENT_ID). It is composed of the cron's own parts (expiry's state change,
outbox's fan-out), so it follows them when they change; run on as many connections as the
cron runs batches at once. Since the cron writes its events in SQL too, what it is measured
against is its pool, its loop and its body builder (concatenation that keeps the bytes
events.body makes)."""

import asyncio
import time

import asyncpg

from groupbuy_async.callbacks import outbox
from groupbuy_async.trade import expiry

# The close's state change, then the events of the closed rows (each id made first: the body
# carries it) built with json_build_object, then the enqueue's fan-out.
_CLOSE_CTES = "WITH " + expiry._CLOSING
_EVENTS = f""", ids AS (
    SELECT {outbox.NEW_EVENT_ID} AS event_id, c.*, coalesce(teams.notify_url, '') AS pin
    FROM closed c JOIN teams ON teams.team_id = c.team_id
), e AS (
    SELECT event_id, 'order.closed'::text AS event_type, activity_id, team_id, order_id, pin,
           json_build_object(
               'type', 'order.closed', 'timestamp', now(),
               'data', json_build_object(
                   'orderId', order_id, 'outTradeNo', out_trade_no, 'userId', user_id,
                   'teamId', team_id, 'activityId', activity_id, 'eventId', event_id))::text
           AS body,
           row_number() OVER () AS n
    FROM ids
)"""
CEILING = _CLOSE_CTES + _EVENTS + ", " + outbox._FAN_OUT + "\nSELECT count(*) FROM closed"


async def close_in_sql(dsn: str, batch: int, parallel: int) -> tuple[int, float]:
    """Every due lock closed by CEILING, batch after batch on `parallel` connections until one
    comes back short. Returns (closed, seconds)."""
    conns = [await asyncpg.connect(dsn) for _ in range(parallel)]

    async def until_short(conn: asyncpg.Connection) -> int:
        total = 0
        while True:
            closed: int = await conn.fetchval(CEILING, batch)
            total += closed
            if closed < batch:
                return total

    try:
        began = time.perf_counter()
        counts = await asyncio.gather(*(until_short(c) for c in conns))
        return sum(counts), time.perf_counter() - began
    finally:
        for conn in conns:
            await conn.close()
