"""Read side for the shop front: price trial with joinable teams, one team's state, and one
order's (the pull a merchant reconciles callbacks with)."""

import asyncpg

from .. import errors
from .models import (
    ActivityStatistic,
    JoinableTeam,
    MarketQuery,
    MarketView,
    OrderState,
    PriceTrial,
    TeamState,
)
from .rules import Pairs, check_activity_open, countdown, pair_arrays, trial_price

# The user's own forming teams first, then other joinable ones (as the original: 1 + 2). A
# user's team is one where the user holds a live order (locked or paid). A team nobody is in
# (its opener cancelled or timed out) is not offered.
OWN_TEAMS, OTHER_TEAMS = 1, 2

_CONFIG = """
SELECT m.activity_id, a.status, a.start_time, a.end_time, s.original_price, d.market_plan,
       d.market_expr, now() AS db_now
FROM sc_sku_activity m
JOIN sku s ON s.goods_id = m.goods_id
JOIN group_buy_activity a ON a.activity_id = m.activity_id
JOIN group_buy_discount d ON d.discount_id = a.discount_id
WHERE m.source = $1 AND m.channel = $2 AND m.goods_id = $3
"""

_TEAM_COLUMNS = """t.team_id, t.activity_id, t.target_count, t.complete_count, t.lock_count,
       t.valid_start_time, t.valid_end_time"""

_OWN_TEAMS = f"""
SELECT DISTINCT ON (t.valid_end_time, t.team_id) {_TEAM_COLUMNS}
FROM group_buy_order t JOIN group_buy_order_list o ON o.team_id = t.team_id
WHERE t.activity_id = $1 AND o.user_id = $2 AND o.status IN (0, 1) AND t.status = 0
  AND t.valid_end_time > now()
  AND (t.source, t.channel) IN (SELECT * FROM unnest($4::text[], $5::text[]))
ORDER BY t.valid_end_time, t.team_id LIMIT $3
"""

_OTHER_TEAMS = f"""
SELECT {_TEAM_COLUMNS}
FROM group_buy_order t
WHERE t.activity_id = $1 AND t.status = 0 AND t.lock_count BETWEEN 1 AND t.target_count - 1
  AND t.valid_end_time > now()
  AND (t.source, t.channel) IN (SELECT * FROM unnest($4::text[], $5::text[]))
  AND NOT EXISTS (SELECT 1 FROM group_buy_order_list o
                  WHERE o.team_id = t.team_id AND o.user_id = $2 AND o.status IN (0, 1))
ORDER BY t.valid_end_time LIMIT $3
"""

_STATISTIC = """
SELECT count(*) AS all_team_count,
       count(*) FILTER (WHERE status IN (1, 3)) AS all_team_complete_count,
       coalesce(sum(lock_count), 0) AS all_team_user_count
FROM group_buy_order
WHERE activity_id = $1 AND (source, channel) IN (SELECT * FROM unnest($2::text[], $3::text[]))
"""


async def market_config(pool: asyncpg.Pool, query: MarketQuery, pairs: Pairs) -> MarketView:
    """The goods' price and the merchant's joinable teams (only teams under its `pairs`)."""
    async with pool.acquire() as conn:
        cfg = await conn.fetchrow(_CONFIG, query.source, query.channel, query.goods_id)
        if cfg is None:
            raise errors.NoActivityForGoods()
        # The same rules, on the same clock, as a lock: no price for what cannot be locked.
        check_activity_open(cfg["status"], cfg["start_time"], cfg["end_time"], cfg["db_now"])
        activity_id = cfg["activity_id"]
        sources, channels = pair_arrays(pairs)
        own = await conn.fetch(_OWN_TEAMS, activity_id, query.user_id, OWN_TEAMS, sources, channels)
        others = await conn.fetch(
            _OTHER_TEAMS, activity_id, query.user_id, OTHER_TEAMS, sources, channels
        )
        stats = await conn.fetchrow(_STATISTIC, activity_id, sources, channels)
    assert stats is not None
    price = trial_price(cfg["original_price"], cfg["market_plan"], cfg["market_expr"])
    now = cfg["db_now"]
    teams = [
        JoinableTeam(**dict(t), valid_time_countdown=countdown(t["valid_end_time"], now))
        for t in [*own, *others]
    ]
    return MarketView(
        activity_id=activity_id,
        goods=PriceTrial(
            goods_id=query.goods_id,
            original_price=price.original,
            deduction_price=price.deduction,
            pay_price=price.pay,
        ),
        team_list=teams,
        team_statistic=ActivityStatistic(**dict(stats)),
    )


async def get_team(pool: asyncpg.Pool, team_id: str, pairs: Pairs | None) -> TeamState:
    """A team under one of the merchant's `pairs` (any team for an operator: None); any
    other is not found."""
    sources, channels = (None, None) if pairs is None else pair_arrays(pairs)
    row = await pool.fetchrow(
        "SELECT team_id, activity_id, target_count, lock_count, complete_count, status,"
        " valid_start_time, valid_end_time FROM group_buy_order WHERE team_id = $1"
        " AND ($2::text[] IS NULL"
        "      OR (source, channel) IN (SELECT * FROM unnest($2::text[], $3::text[])))",
        team_id,
        sources,
        channels,
    )
    if row is None:
        raise errors.TeamNotFound()
    return TeamState(**dict(row))


# By the unique (source, channel, out_trade_no); someone else's order is as unknown as none.
_ORDER = """
SELECT o.order_id, o.team_id, o.activity_id, o.goods_id, o.user_id, o.out_trade_no,
       o.status AS trade_order_status, t.status AS team_status, o.original_price,
       o.deduction_price, o.pay_price, o.create_time, o.out_trade_time, o.update_time
FROM group_buy_order_list o JOIN group_buy_order t ON t.team_id = o.team_id
WHERE o.source = $1 AND o.channel = $2 AND o.out_trade_no = $3 AND o.user_id = $4
"""


async def get_order(
    pool: asyncpg.Pool, source: str, channel: str, out_trade_no: str, user_id: str
) -> OrderState:
    row = await pool.fetchrow(_ORDER, source, channel, out_trade_no, user_id)
    if row is None:
        raise errors.UnknownOutTradeNo("no order with this outTradeNo for this user")
    return OrderState(**dict(row))
