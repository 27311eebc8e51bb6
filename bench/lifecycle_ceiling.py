"""The close cron's ceiling: what PostgreSQL alone takes to do the cron's work, with no
Python per row. One statement per batch closes the due locks, frees their teams' slots and
writes each order.closed event and its deliveries, the event bodies built by PostgreSQL
(json_build_object) and their ids too, time-ordered as the service's (outbox_fill.EVENT_ID). It is composed of the cron's own statements (expiry's close, outbox's
enqueue), so it follows them when they change; run on as many connections as the cron runs
batches at once."""

import asyncio
import time

import asyncpg

from groupbuy_async.callbacks import outbox
from groupbuy_async.dev.outbox_fill import EVENT_ID
from groupbuy_async.trade import expiry

# The close's CTEs up to its final SELECT, then the events of the closed rows (each id made
# first: the body carries it), then the enqueue's fan-out from its `placed` step on.
_CLOSE_CTES = expiry._CLOSE_DUE.rsplit("\nSELECT ", 1)[0]
_EVENTS = f""", ids AS (
    SELECT {EVENT_ID} AS event_id, c.*, coalesce(teams.notify_url, '') AS pin
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
_FAN_OUT = ", placed AS (" + outbox._ENQUEUE.split("), placed AS (", 1)[1].rsplit("\nSELECT ", 1)[0]
CEILING = _CLOSE_CTES + _EVENTS + _FAN_OUT + "\nSELECT count(*) FROM closed"


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
