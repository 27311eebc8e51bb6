"""Refunds: a locked order is cancelled (closed), a paid one refunded. Idempotent per order.

The order row is locked first; then the team decides by conditional updates, never by a read:
team statuses only go 0 -> 1 -> 3 and 0 -> 2, so trying "forming" then "complete" finds the
one it is in, and a team that is neither has failed. A paid order of a failed team was listed
in its team.failed, its one refund instruction: its refund is recorded (failed_team) and
announces nothing.
"""

import asyncpg

from .. import errors
from ..callbacks import outbox
from ..callbacks.events import EventType
from ..db import Conn
from .models import RefundCommand, Refunded
from .rules import OrderStatus, RefundType, TeamStatus, order_event
from .teams import CLOSE_LOCKED, GIVE_BACK_SLOT, THE_TEAM

_ORDER_FOR_REFUND = """
SELECT o.order_id, o.status, o.team_id, o.activity_id, o.user_id, o.out_trade_no, o.refund_type,
       t.status AS team_status, t.notify_url
FROM group_buy_order_list o JOIN group_buy_order t ON t.team_id = o.team_id
WHERE o.source = $1 AND o.channel = $2 AND o.out_trade_no = $3 AND o.user_id = $4
FOR UPDATE OF o
"""

# A complete team keeps its counts and becomes "complete with refunds".
_REFUNDED_FROM_COMPLETE = f"""
UPDATE group_buy_order SET status = 3, update_time = now()
WHERE {THE_TEAM} AND status IN (1, 3)
RETURNING status
"""

_MARK_REFUNDED = """
UPDATE group_buy_order_list SET status = 3, biz_id = NULL, refund_type = $2, update_time = now()
WHERE order_id = $1 AND status = 1
"""


async def refund_order(pool: asyncpg.Pool, req: RefundCommand) -> Refunded:
    async with pool.acquire() as conn, conn.transaction():
        order = await conn.fetchrow(
            _ORDER_FOR_REFUND, req.source, req.channel, req.out_trade_no, req.user_id
        )
        if order is None:
            raise errors.UnknownOutTradeNo()
        status = order["status"]
        if status == OrderStatus.LOCKED:
            return await _cancel(conn, order)
        if status == OrderStatus.PAID:
            return await _refund_paid(conn, order)
    # A repeat: the same answer, nothing changed. A closed order (timeout, cancel, its team
    # failed) answers unpaid: no money was taken.
    closed = status == OrderStatus.CLOSED
    refund_type = RefundType.UNPAID if closed else RefundType(order["refund_type"])
    return _out(order, refund_type, status, order["team_status"])


async def _cancel(conn: Conn, order: asyncpg.Record) -> Refunded:
    team_status = await conn.fetchval(GIVE_BACK_SLOT, order["team_id"], 0)
    if team_status is None:  # not forming: a locked order's team can only have failed
        team_status = TeamStatus.FAILED
    await conn.execute(CLOSE_LOCKED, order["order_id"], RefundType.UNPAID.value)
    await outbox.enqueue(conn, [order_event(EventType.ORDER_CLOSED, order, order["notify_url"])])
    return _out(order, RefundType.UNPAID, OrderStatus.CLOSED, team_status)


async def _refund_paid(conn: Conn, order: asyncpg.Record) -> Refunded:
    """Refund a paid order: one "give the money back" fact, whichever comes first of this
    refund and its team's failure. The team row decides: a failure sweep holding it has
    read this order as paid and listed it in team.failed, and an update of the team here
    waits for that sweep and then finds the team failed."""
    refund_type = RefundType.PAID
    team_status = await conn.fetchval(GIVE_BACK_SLOT, order["team_id"], 1)
    if team_status is None:
        team_status = await conn.fetchval(_REFUNDED_FROM_COMPLETE, order["team_id"])
        if team_status is not None:
            refund_type = RefundType.PAID_TEAM
        else:  # neither forming nor complete: failed, and team.failed listed this payment
            team_status, refund_type = TeamStatus.FAILED, RefundType.FAILED_TEAM
    await conn.execute(_MARK_REFUNDED, order["order_id"], refund_type.value)
    if refund_type != RefundType.FAILED_TEAM:
        event = order_event(EventType.ORDER_REFUNDED, order, order["notify_url"], refund_type.value)
        await outbox.enqueue(conn, [event])
    return _out(order, refund_type, OrderStatus.REFUNDED, team_status)


def _out(order: asyncpg.Record, refund_type: RefundType, status: int, team_status: int) -> Refunded:
    return Refunded(
        user_id=order["user_id"],
        order_id=order["order_id"],
        team_id=order["team_id"],
        out_trade_no=order["out_trade_no"],
        refund_type=refund_type,
        trade_order_status=status,
        team_status=team_status,
    )
