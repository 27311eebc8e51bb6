"""Lock and settle: the trade transactions. Each rule is a conditional statement or constraint.

Lock order, on every path that changes an order and its team: the order row(s) first, then
the team row. (Refunds: refunds.py; unpaid timeout and team failure: expiry.py.)
"""

import secrets
from dataclasses import dataclass

import asyncpg

from .. import errors
from ..callbacks import outbox
from ..callbacks.events import Event, EventType
from ..db import Conn
from .models import LockCommand, Locked, SettleCommand, Settled
from .rules import (
    OrderStatus,
    Pairs,
    TeamStatus,
    check_activity_open,
    check_paid_after_lock,
    check_trade_time,
    is_blacklisted,
    order_event,
    pair_arrays,
    take_key_prefix,
    trial_price,
)


@dataclass(frozen=True)
class Settlement:
    result: Settled
    # Set when this settlement completed the team: the outbox row to dispatch after commit.
    notify_team_id: str | None


_ORDER_BY_OUT_TRADE_NO = """
SELECT order_id, team_id, user_id, activity_id, goods_id, original_price, deduction_price,
       pay_price, status
FROM group_buy_order_list WHERE source = $1 AND channel = $2 AND out_trade_no = $3
"""


async def lock_order(pool: asyncpg.Pool, req: LockCommand, pairs: Pairs) -> Locked:
    """Lock a discounted order, opening or joining a team. Idempotent on outTradeNo. Only a
    team under one of `pairs` (the merchant's source+channel pairs) can be joined; any other
    is not found."""
    existing = await pool.fetchrow(
        _ORDER_BY_OUT_TRADE_NO, req.source, req.channel, req.out_trade_no
    )
    if existing:
        return _replay_lock(existing, req)
    try:
        async with pool.acquire() as conn, conn.transaction():
            return await _lock_in_transaction(conn, req, pairs)
    except (errors.Rejected, asyncpg.UniqueViolationError) as exc:
        if isinstance(exc, asyncpg.UniqueViolationError) and (
            exc.constraint_name != "order_list_out_trade_no_key"
        ):
            raise
        # A concurrent identical request may have taken the slot or the take this one
        # needed; idempotency wins over the rejection it caused.
        existing = await pool.fetchrow(
            _ORDER_BY_OUT_TRADE_NO, req.source, req.channel, req.out_trade_no
        )
        if existing is None:
            raise
        return _replay_lock(existing, req)


def _replay_lock(order: asyncpg.Record, req: LockCommand) -> Locked:
    if (order["user_id"], order["activity_id"], order["goods_id"]) != (
        req.user_id,
        req.activity_id,
        req.goods_id,
    ):
        raise errors.OutTradeNoConflict()
    return Locked(
        order_id=order["order_id"],
        team_id=order["team_id"],
        original_price=order["original_price"],
        deduction_price=order["deduction_price"],
        pay_price=order["pay_price"],
        trade_order_status=order["status"],
    )


_ACTIVITY_FOR_LOCK = """
SELECT a.activity_id, a.status, a.start_time, a.end_time, a.take_limit_count, a.target,
       a.valid_time, a.pay_timeout_seconds, d.market_plan, d.market_expr, s.original_price,
       m.activity_id AS mapped_activity_id, now() AS db_now
FROM group_buy_activity a
JOIN group_buy_discount d ON d.discount_id = a.discount_id
LEFT JOIN sc_sku_activity m ON m.source = $2 AND m.channel = $3 AND m.goods_id = $4
LEFT JOIN sku s ON s.goods_id = m.goods_id
WHERE a.activity_id = $1
"""

_OPEN_TEAM = """
INSERT INTO group_buy_order (team_id, activity_id, source, channel, original_price,
    deduction_price, pay_price, target_count, complete_count, lock_count, status,
    valid_start_time, valid_end_time, notify_url)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 1, 0, now(), now() + make_interval(mins => $9), $10)
ON CONFLICT (team_id) DO NOTHING
RETURNING team_id, valid_end_time
"""

# The row is found by its unique team_id alone: left to choose, the planner may scan an
# activity's forming teams instead (it did, with fresh statistics, at 2000 teams).
THE_TEAM = "id = (SELECT id FROM group_buy_order WHERE team_id = $1)"

_JOIN_TEAM = f"""
UPDATE group_buy_order SET lock_count = lock_count + 1, update_time = now()
WHERE {THE_TEAM} AND activity_id = $2 AND status = 0
  AND lock_count < target_count AND valid_end_time > clock_timestamp()
  AND (source, channel) IN (SELECT * FROM unnest($3::text[], $4::text[]))
RETURNING team_id, valid_end_time
"""

# Live orders only: a closed or refunded order gave its take back.
_TAKEN = """
SELECT count(*) FROM group_buy_order_list
WHERE activity_id = $1 AND user_id = $2 AND status IN (0, 1)
"""

# The order claims a take key that no live order holds in this statement's snapshot ($13 ||
# n, n in 1..take limit); the unique index is the guard: a concurrent lock of the same user
# that took the same key makes this insert a no-op (free_key set, order_id NULL): try again.
# Keys held by orders being closed right now look taken, so the insert never waits on them.
# The payment deadline never passes the team's window: a team that ended takes no payment.
_INSERT_ORDER = """
WITH free AS (
    SELECT $13::text || n AS biz_id FROM generate_series(1, $14::int) AS n
    WHERE NOT EXISTS (SELECT 1 FROM group_buy_order_list o WHERE o.biz_id = $13::text || n)
    LIMIT 1
), inserted AS (
    INSERT INTO group_buy_order_list (user_id, team_id, activity_id, start_time, end_time,
        goods_id, source, channel, original_price, deduction_price, pay_price, status,
        out_trade_no, biz_id, pay_deadline)
    SELECT $1::text, $2::text, $3::bigint, $4::timestamptz, $5::timestamptz, $6::text,
        $7::text, $8::text, $9::numeric, $10::numeric, $11::numeric, 0, $12::text, free.biz_id,
        least(clock_timestamp() + make_interval(secs => $15::int), $16::timestamptz)
    FROM free
    ON CONFLICT (biz_id) DO NOTHING
    RETURNING order_id
)
SELECT (SELECT biz_id FROM free) AS free_key, (SELECT order_id FROM inserted) AS order_id
"""


async def _lock_in_transaction(conn: Conn, req: LockCommand, pairs: Pairs) -> Locked:
    act = await conn.fetchrow(
        _ACTIVITY_FOR_LOCK, req.activity_id, req.source, req.channel, req.goods_id
    )
    if act is None:
        raise errors.ActivityNotFound(f"activityId {req.activity_id} does not exist")
    if act["mapped_activity_id"] != req.activity_id:
        raise errors.NoActivityForGoods()
    check_activity_open(act["status"], act["start_time"], act["end_time"], act["db_now"])
    price = trial_price(act["original_price"], act["market_plan"], act["market_expr"])

    taken = await conn.fetchval(_TAKEN, req.activity_id, req.user_id)
    if taken >= act["take_limit_count"]:
        raise errors.TakeLimitReached()

    if req.team_id is None:
        team = None
        while team is None:  # 8 random digits, as the original; retried on a collision
            team = await conn.fetchrow(
                _OPEN_TEAM, f"{secrets.randbelow(10**8):08d}", req.activity_id, req.source,
                req.channel, price.original, price.deduction, price.pay, act["target"],
                act["valid_time"], req.notify_url,
            )  # fmt: skip
    else:
        team = await conn.fetchrow(_JOIN_TEAM, req.team_id, req.activity_id, *pair_arrays(pairs))
        if team is None:
            await _explain_join_refusal(conn, req.team_id, req.activity_id, pairs)
    assert team is not None
    team_id = team["team_id"]

    # Each lost race means one more key taken by a committed order: take limit + 1 tries
    # always end with an order or with no key free.
    for _ in range(act["take_limit_count"] + 1):
        row = await conn.fetchrow(
            _INSERT_ORDER, req.user_id, team_id, req.activity_id, act["start_time"],
            act["end_time"], req.goods_id, req.source, req.channel, price.original,
            price.deduction, price.pay, req.out_trade_no,
            take_key_prefix(req.activity_id, req.user_id), act["take_limit_count"],
            act["pay_timeout_seconds"], team["valid_end_time"],
        )  # fmt: skip
        assert row is not None
        if row["free_key"] is None:
            break
        if row["order_id"] is not None:
            return Locked(
                order_id=row["order_id"],
                team_id=team_id,
                original_price=price.original,
                deduction_price=price.deduction,
                pay_price=price.pay,
                trade_order_status=OrderStatus.LOCKED,
            )
    raise errors.TakeLimitReached()


async def _explain_join_refusal(conn: Conn, team_id: str, activity_id: int, pairs: Pairs) -> None:
    team = await conn.fetchrow(
        "SELECT activity_id, status, lock_count, target_count, source, channel,"
        " valid_end_time > clock_timestamp() AS open"
        " FROM group_buy_order WHERE team_id = $1",
        team_id,
    )
    if team is None or (team["source"], team["channel"]) not in pairs:
        raise errors.TeamNotFound()  # another merchant's team is as unknown as none
    if team["activity_id"] != activity_id:
        raise errors.TeamActivityMismatch()
    complete = (TeamStatus.COMPLETE, TeamStatus.COMPLETE_WITH_REFUNDS)
    if team["status"] in complete or team["lock_count"] >= team["target_count"]:
        raise errors.TeamFull()
    if team["status"] == TeamStatus.FAILED or not team["open"]:
        raise errors.TeamClosed()
    # Forming, open and not full now: it was full when the join tried, and a member has
    # left since (a refund or an unpaid timeout freed a slot). The shopper may try again.
    raise errors.TeamFull()


_ORDER_FOR_SETTLE = """
SELECT o.order_id, o.status, o.team_id, o.activity_id, o.user_id, o.out_trade_no,
       o.completed_team, o.pay_deadline, t.valid_end_time, t.notify_url,
       least(o.pay_deadline, t.valid_end_time) <= clock_timestamp() AS late
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

# A locked order of a failed team: closed; the failed team keeps its counts.
CLOSE_LOCKED = """
UPDATE group_buy_order_list SET status = 2, biz_id = NULL, refund_type = $2, update_time = now()
WHERE order_id = $1 AND status = 0
"""

# A forming team gives a slot back (and the paid count, $2 = 1 for a paid order); a team
# in any other status keeps its counts and no row comes back.
GIVE_BACK_SLOT = f"""
UPDATE group_buy_order
SET lock_count = lock_count - 1, complete_count = complete_count - $2, update_time = now()
WHERE {THE_TEAM} AND status = 0
RETURNING status
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
