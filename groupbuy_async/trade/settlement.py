"""Settlement: a locked order paid, the member that fills the team enqueueing its callback;
a payment that comes too late closes the order instead. Each rule is a conditional statement.

Lock order: the order row first, then the team row (as locking.py and refunds.py).
"""

from dataclasses import dataclass

import asyncpg

from .. import errors
from ..callbacks import outbox
from ..callbacks.events import Event, EventType
from ..db import Conn
from .models import SettleCommand, Settled
from .rules import (
    OrderStatus,
    TeamStatus,
    check_paid_after_lock,
    check_trade_time,
    is_blacklisted,
    order_event,
)
from .teams import CLOSE_LOCKED, GIVE_BACK_SLOT, THE_TEAM


@dataclass(frozen=True)
class Settlement:
    result: Settled
    # Set when this settlement completed the team: the outbox row to dispatch after commit.
    notify_team_id: str | None


_ORDER_FOR_SETTLE = """
SELECT o.order_id, o.status, o.team_id, o.activity_id, o.user_id, o.out_trade_no,
       o.completed_team, o.pay_deadline, t.valid_end_time, t.notify_url,
       least(o.pay_deadline, t.valid_end_time) <= clock_timestamp() AS late,
       -- Closed before the retention's mark: its order.closed may have been pruned since.
       o.update_time < (SELECT pruned_before FROM retention_mark) IS TRUE AS closed_past_retention
FROM group_buy_order_list o JOIN group_buy_order t ON t.team_id = o.team_id
WHERE o.source = $1 AND o.channel = $2 AND o.out_trade_no = $3 AND o.user_id = $4
FOR UPDATE OF o
"""

# complete_count < target_count and status = 0 make completion happen exactly once,
# however many members settle at the same instant: the row lock serialises them and
# each sees the count its predecessor committed. The order's payment deadline ($2, never
# past the window) and the window are judged when the row is updated, after any wait for it.
_COMPLETE_ONE = f"""
UPDATE group_buy_order
SET complete_count = complete_count + 1,
    status = CASE WHEN complete_count + 1 = target_count THEN 1 ELSE 0 END,
    update_time = now()
WHERE {THE_TEAM} AND status = 0 AND complete_count < target_count
  AND valid_end_time > clock_timestamp() AND $2::timestamptz > clock_timestamp()
RETURNING status, activity_id, notify_url
"""

_PAID_OUT_TRADE_NOS = """
SELECT coalesce(array_agg(out_trade_no ORDER BY id), '{}') FROM group_buy_order_list
WHERE team_id = $1 AND status = 1
"""


async def settle_order(
    pool: asyncpg.Pool, req: SettleCommand, blacklist: frozenset[str]
) -> Settlement:
    """Mark a locked order paid; the member that fills the team enqueues its callback.
    A payment for an order that can no longer be paid is refused: past its payment deadline
    or closed (E0112), its team failed (E0113), after what the refusal changes is committed
    (the order closed, its slot freed, its order.closed event), exactly as if the worker had
    closed it first; already refunded (E0114), nothing changed."""
    if is_blacklisted(req.source, req.channel, blacklist):
        raise errors.ChannelBlacklisted()
    async with pool.acquire() as conn, conn.transaction():
        outcome = await _settle_in_transaction(conn, req)
    if isinstance(outcome, errors.Rejected):
        raise outcome
    return outcome


async def _settle_in_transaction(conn: Conn, req: SettleCommand) -> Settlement | errors.Rejected:
    order = await conn.fetchrow(
        _ORDER_FOR_SETTLE, req.source, req.channel, req.out_trade_no, req.user_id
    )
    if order is None:
        raise errors.UnknownOutTradeNo()
    if order["status"] == OrderStatus.PAID:
        return Settlement(_settle_out(req, order, order["completed_team"]), None)
    if order["status"] == OrderStatus.REFUNDED:
        return errors.OrderRefunded()
    if order["status"] == OrderStatus.CLOSED:
        # The close wrote this event already; if it ever did not, the merchant hears it now.
        # Not once it may have been pruned (GROUPBUY_RETENTION_DAYS): it was written then,
        # and a second would repeat it under another event id.
        if not order["closed_past_retention"]:
            await outbox.enqueue(conn, [_closed_event(order)])
        return errors.OrderClosed()
    if not order["late"]:
        check_trade_time(req.out_trade_time, order["valid_end_time"])
        team = await conn.fetchrow(_COMPLETE_ONE, order["team_id"], order["pay_deadline"])
        if team is not None:
            return await _pay(conn, req, order, team)
    return await _close_late(conn, order)


async def _close_late(conn: Conn, order: asyncpg.Record) -> errors.Rejected:
    """The order can no longer be paid: past its deadline (the window's end at the latest),
    or its team failed. Closed as the worker would close it: slot freed while the team
    forms, one order.closed."""
    team_status = await conn.fetchval(GIVE_BACK_SLOT, order["team_id"], 0)
    await conn.execute(CLOSE_LOCKED, order["order_id"], None)
    await outbox.enqueue(conn, [_closed_event(order)])
    # Not forming: a team with a locked member cannot be complete, so it has failed.
    return errors.OrderClosed() if team_status is not None else errors.TeamFailed()


def _closed_event(order: asyncpg.Record) -> Event:
    return order_event(EventType.ORDER_CLOSED, order, order["notify_url"])


async def _pay(
    conn: Conn, req: SettleCommand, order: asyncpg.Record, team: asyncpg.Record
) -> Settlement:
    completed = team["status"] == TeamStatus.COMPLETE
    locked_at = await conn.fetchval(
        "UPDATE group_buy_order_list SET status = 1, out_trade_time = $2,"
        " completed_team = $3, update_time = now() WHERE order_id = $1 RETURNING create_time",
        order["order_id"],
        req.out_trade_time,
        completed,
    )
    # A payment time before the lock is bad input: raised here, it rolls the transaction back
    # (the team's count too), so nothing is written.
    check_paid_after_lock(req.out_trade_time, locked_at)
    if completed:
        out_trade_nos = await conn.fetchval(_PAID_OUT_TRADE_NOS, order["team_id"])
        await outbox.enqueue_team_completed(
            conn, order["team_id"], team["activity_id"], team["notify_url"], list(out_trade_nos)
        )
    return Settlement(_settle_out(req, order, completed), order["team_id"] if completed else None)


def _settle_out(req: SettleCommand, order: asyncpg.Record, completed: bool) -> Settled:
    return Settled(
        user_id=req.user_id,
        team_id=order["team_id"],
        activity_id=order["activity_id"],
        out_trade_no=req.out_trade_no,
        team_completed=completed,
    )
