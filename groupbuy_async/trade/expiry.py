"""The worker's side of the lifecycle: unpaid locks past their payment deadline are closed,
forming teams past their window fail. Batches of one transaction each, SKIP LOCKED, so any
number of workers share the work and a request holding a row is never waited for."""

import asyncio
import logging

import asyncpg

from ..callbacks import outbox
from ..callbacks.events import EventType
from .rules import ORDER_DATA, team_failed_event

log = logging.getLogger(__name__)

# One statement closes a batch, frees its slots and writes each closed order's order.closed
# event with its deliveries (ids and bodies made by PostgreSQL, as enqueue would make them:
# no row comes back to Python). The due orders are locked first (SKIP LOCKED: one held by a
# settlement or refund is that request's), then their teams in id order, so concurrent
# batches sharing a team never lock in a cycle; only forming teams give the slots back (a
# failed team counts only its payments, set when it failed). Due orders are taken in
# pay_deadline order (the partial index's, status = 0) and updated by the ctid they were
# locked at: the lock keeps it theirs until the statement ends, and no second index lookup
# is needed. Teams are found by their unique team_id (= ANY of an array: an index scan
# however many teams there are, where a join on the CTE's rows planned as a scan of every
# team).
_CLOSING = """due AS (
    SELECT ctid FROM group_buy_order_list
    WHERE status = 0 AND pay_deadline <= now()
    ORDER BY pay_deadline LIMIT $1
    FOR UPDATE SKIP LOCKED
), closed AS (
    UPDATE group_buy_order_list o SET status = 2, biz_id = NULL, update_time = now()
    FROM due WHERE o.ctid = due.ctid AND o.status = 0
    RETURNING o.order_id, o.out_trade_no, o.user_id, o.team_id, o.activity_id
), per_team AS (
    SELECT team_id, count(*) AS closed FROM closed GROUP BY team_id
), teams AS (
    SELECT t.id, t.team_id, t.status, t.notify_url FROM group_buy_order t
    WHERE t.team_id = ANY (ARRAY(SELECT team_id FROM per_team))
    ORDER BY t.id
    FOR UPDATE OF t
), freed AS (
    UPDATE group_buy_order t SET lock_count = t.lock_count - p.closed, update_time = now()
    FROM teams JOIN per_team p ON p.team_id = teams.team_id
    WHERE t.id = teams.id AND teams.status = 0 AND t.status = 0
)"""
_CLOSE_DUE = outbox.writing_events(
    _CLOSING,
    about="SELECT c.*, coalesce(teams.notify_url, '') AS pin"
    " FROM closed c JOIN teams ON teams.team_id = c.team_id",
    event_type=EventType.ORDER_CLOSED,
    data=ORDER_DATA,
    result="SELECT count(*) FROM closed",
)

CLOSE_BATCH = 1000
# Batches in flight at once, each a statement on a connection of its own: a second core is
# used when there is one. SKIP LOCKED keeps them apart.
CLOSE_PARALLEL = 2


async def close_unpaid_orders(
    pool: asyncpg.Pool, batch: int = CLOSE_BATCH, parallel: int = CLOSE_PARALLEL
) -> int:
    """Close locked orders past their payment deadline: status 2, take key given back, a
    forming team's slot freed, one order.closed event each. Batches until none is due (one
    that comes back short means the rest is taken or not yet due). Returns how many."""

    async def close_until_short() -> int:
        total = 0
        while True:
            # One statement: atomic on its own, so no BEGIN and COMMIT round trips.
            async with pool.acquire() as conn:
                closed: int = await conn.fetchval(_CLOSE_DUE, batch)
            total += closed
            if closed < batch:
                return total

    try:
        async with asyncio.TaskGroup() as group:
            loops = [group.create_task(close_until_short()) for _ in range(parallel)]
    except BaseExceptionGroup as failed:
        # The loops fail alike (the database is gone): the caller sees the first failure,
        # as from any other query, not a group it would have to unpack.
        raise failed.exceptions[0] from None
    return sum(loop.result() for loop in loops)


# A failed team counts its payments only (lock_count = complete_count, sql/008): its unpaid
# locks are closed, by the close cron or a late settlement, whether before or after this.
_FAIL_EXPIRED = """
WITH expired AS (
    SELECT id FROM group_buy_order
    WHERE status = 0 AND valid_end_time < now()
    ORDER BY valid_end_time LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE group_buy_order t SET status = 2, lock_count = t.complete_count, update_time = now()
FROM expired WHERE t.id = expired.id AND t.status = 0
RETURNING t.team_id, t.activity_id, t.notify_url
"""

# Read in a statement after the teams are locked, so every payment committed before is seen;
# none can follow: paying (and refunding from a forming team) needs the team's row, and a
# refund that waited for it finds the team failed and announces nothing (failed_team). An
# announcement of a team that failed long ago (_UNANNOUNCED) lists those refunds too.
_PAID_OF = """
SELECT team_id, array_agg(out_trade_no ORDER BY id) AS paid
FROM group_buy_order_list
WHERE team_id = ANY($1::text[]) AND (status = 1 OR refund_type = 'failed_team')
GROUP BY team_id
"""


# Teams that failed before team.failed existed, with payments to refund (sql/006): each is
# announced once, its backlog row deleted in the same transaction.
_UNANNOUNCED = """
WITH gone AS (
    DELETE FROM team_failed_unannounced
    WHERE team_id IN (SELECT team_id FROM team_failed_unannounced LIMIT $1
                      FOR UPDATE SKIP LOCKED)
    RETURNING team_id
)
SELECT team_id, activity_id, notify_url FROM group_buy_order
WHERE team_id = ANY (ARRAY(SELECT team_id FROM gone))
"""


async def fail_expired_teams(pool: asyncpg.Pool, batch: int = 1000) -> int:
    """Mark forming teams past their window as failed (status 2), each with its team.failed
    event listing the paid orders to refund. Returns how many."""
    failed = await _fail_in_batches(pool, _FAIL_EXPIRED, batch)
    if announced := await _fail_in_batches(pool, _UNANNOUNCED, batch):
        log.info("announced %d teams that failed before team.failed events existed", announced)
    return failed


async def _fail_in_batches(pool: asyncpg.Pool, statement: str, batch: int) -> int:
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            teams = await conn.fetch(statement, batch)
            paid = {}
            if teams:
                rows = await conn.fetch(_PAID_OF, [t["team_id"] for t in teams])
                paid = {r["team_id"]: list(r["paid"]) for r in rows}
            events = [
                team_failed_event(
                    t["team_id"], t["activity_id"], t["notify_url"], paid.get(t["team_id"], [])
                )
                for t in teams
            ]
            await outbox.enqueue(conn, events)
        total += len(teams)
        if len(teams) < batch:
            return total
