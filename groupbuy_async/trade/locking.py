"""Lock: a discounted order opened in a new team or a joined one, idempotent on outTradeNo.
Each rule is a conditional statement or constraint.

Lock order, on every path that changes an order and its team: the order row(s) first, then
the team row. (Settlement: settlement.py; refunds: refunds.py; unpaid timeout and team failure:
expiry.py.)
"""

import secrets
from typing import NoReturn

import asyncpg

from .. import errors
from ..db import Conn, columns
from .models import LockCommand, Locked
from .rules import (
    OrderStatus,
    Pairs,
    TeamStatus,
    check_activity_open,
    pair_arrays,
    take_key_prefix,
    trial_price,
)
from .teams import THE_TEAM

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
    prices = columns(order, "order_id team_id original_price deduction_price pay_price")
    return Locked(**prices, trade_order_status=order["status"])


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
                act["valid_time"], req.notify_url or "",
            )  # fmt: skip
    else:
        team = await conn.fetchrow(_JOIN_TEAM, req.team_id, req.activity_id, *pair_arrays(pairs))
        if team is None:
            await _explain_join_refusal(conn, req.team_id, req.activity_id, pairs)
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


async def _explain_join_refusal(
    conn: Conn, team_id: str, activity_id: int, pairs: Pairs
) -> NoReturn:
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
