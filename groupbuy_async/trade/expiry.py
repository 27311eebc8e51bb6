"""The worker's side of the lifecycle: unpaid locks past their payment deadline are closed,
forming teams past their window fail. Batches of one transaction each, SKIP LOCKED, so any
number of workers share the work and a request holding a row is never waited for."""

import asyncpg

from ..callbacks import outbox
from ..callbacks.events import EventType
from .rules import order_event, team_failed_event

# One statement closes a batch and frees its slots: the due orders are locked first (SKIP
# LOCKED: one held by a settlement or refund is that request's), then their teams that are
# still forming, in id order, so concurrent batches sharing a team never lock in a cycle. A
# failed team keeps its counts. pay_deadline order follows the partial index (status = 0).
_CLOSE_DUE = """
WITH due AS (
    SELECT id FROM group_buy_order_list
    WHERE status = 0 AND pay_deadline <= now()
    ORDER BY pay_deadline LIMIT $1
    FOR UPDATE SKIP LOCKED
), closed AS (
    UPDATE group_buy_order_list o SET status = 2, biz_id = NULL, update_time = now()
    FROM due WHERE o.id = due.id AND o.status = 0
    RETURNING o.order_id, o.out_trade_no, o.user_id, o.team_id, o.activity_id
), forming AS (
    SELECT t.id, c.closed
    FROM group_buy_order t
    JOIN (SELECT team_id, count(*) AS closed FROM closed GROUP BY team_id) c
      ON c.team_id = t.team_id
    WHERE t.status = 0
    ORDER BY t.id
    FOR UPDATE OF t
), freed AS (
    UPDATE group_buy_order t SET lock_count = t.lock_count - f.closed, update_time = now()
    FROM forming f WHERE t.id = f.id AND t.status = 0
)
SELECT c.order_id, c.out_trade_no, c.user_id, c.team_id, c.activity_id, t.notify_url
FROM closed c JOIN group_buy_order t ON t.team_id = c.team_id
"""

CLOSE_BATCH = 1000


async def close_unpaid_orders(pool: asyncpg.Pool, batch: int = CLOSE_BATCH) -> int:
    """Close locked orders past their payment deadline: status 2, take key given back, a
    forming team's slot freed, one order.closed event each. Returns how many."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLOSE_DUE, batch)
            await outbox.enqueue(
                conn, [order_event(EventType.ORDER_CLOSED, r, r["notify_url"]) for r in rows]
            )
        total += len(rows)
        if len(rows) < batch:
            return total


_FAIL_EXPIRED = """
WITH expired AS (
    SELECT id FROM group_buy_order
    WHERE status = 0 AND valid_end_time < now()
    ORDER BY valid_end_time LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE group_buy_order t SET status = 2, update_time = now()
FROM expired WHERE t.id = expired.id AND t.status = 0
RETURNING t.team_id, t.activity_id, t.notify_url
"""

# Read in a statement after the teams are locked, so every payment committed before is seen;
# none can follow: paying (and refunding from a forming team) needs the team's row.
_PAID_OF = """
SELECT team_id, array_agg(out_trade_no ORDER BY id) AS paid
FROM group_buy_order_list
WHERE team_id = ANY($1::text[]) AND status = 1
GROUP BY team_id
"""


async def fail_expired_teams(pool: asyncpg.Pool, batch: int = 1000) -> int:
    """Mark forming teams past their window as failed (status 2), each with its team.failed
    event listing the paid orders to refund. Returns how many."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            teams = await conn.fetch(_FAIL_EXPIRED, batch)
            paid = {}
            if teams:
                rows = await conn.fetch(_PAID_OF, [t["team_id"] for t in teams])
                paid = {r["team_id"]: list(r["paid"]) for r in rows}
            await outbox.enqueue(conn, [
                team_failed_event(t["team_id"], t["activity_id"], t["notify_url"],
                                  paid.get(t["team_id"], []))
                for t in teams
            ])  # fmt: skip
        total += len(teams)
        if len(teams) < batch:
            return total
