"""Operator configuration: discounts, goods and activities (create-or-replace)."""

import asyncpg

from .. import errors
from ..http.schemas import ActivityIn, ActivityOut, DiscountIn, DiscountOut, GoodsRef, SkuIn, SkuOut

# Constraints of sql/003_catalog.sql whose refusals the catalog explains itself.
BINDING_SKU_FKEY = "binding_sku_fkey"

_PUT_DISCOUNT = """
INSERT INTO group_buy_discount (discount_id, discount_name, discount_desc, market_plan, market_expr)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (discount_id) DO UPDATE SET discount_name = EXCLUDED.discount_name,
    discount_desc = EXCLUDED.discount_desc, market_plan = EXCLUDED.market_plan,
    market_expr = EXCLUDED.market_expr, update_time = now()
RETURNING discount_id, discount_name, discount_desc, market_plan, market_expr,
          create_time, update_time
"""

_GET_DISCOUNT = """
SELECT discount_id, discount_name, discount_desc, market_plan, market_expr, create_time,
       update_time FROM group_buy_discount WHERE discount_id = $1
"""


async def put_discount(pool: asyncpg.Pool, discount_id: str, body: DiscountIn) -> DiscountOut:
    row = await pool.fetchrow(
        _PUT_DISCOUNT, discount_id, body.discount_name, body.discount_desc, body.market_plan,
        body.market_expr,
    )  # fmt: skip
    assert row is not None
    return DiscountOut(**dict(row))


async def get_discount(pool: asyncpg.Pool, discount_id: str) -> DiscountOut | None:
    row = await pool.fetchrow(_GET_DISCOUNT, discount_id)
    return DiscountOut(**dict(row)) if row else None


_PUT_SKU = """
INSERT INTO sku (goods_id, goods_name, original_price, source, channel)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (goods_id) DO UPDATE SET goods_name = EXCLUDED.goods_name,
    original_price = EXCLUDED.original_price, source = EXCLUDED.source,
    channel = EXCLUDED.channel, update_time = now()
RETURNING goods_id, goods_name, original_price, source, channel, create_time, update_time
"""


async def put_sku(pool: asyncpg.Pool, goods_id: str, body: SkuIn) -> SkuOut:
    try:
        row = await pool.fetchrow(
            _PUT_SKU, goods_id, body.goods_name, body.original_price, body.source, body.channel
        )
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name != BINDING_SKU_FKEY:
            raise
        # PostgreSQL refused to re-key a bound SKU (ON UPDATE RESTRICT); say where it is bound.
        raise errors.StillReferenced(
            f"goodsId {goods_id} is bound to {await _activities_binding(pool, goods_id)}: its"
            " source and channel cannot change while it is; remove it from that activity first"
        ) from None
    assert row is not None
    return SkuOut(**dict(row))


async def _activities_binding(pool: asyncpg.Pool, goods_id: str) -> str:
    """For a message only, read after PostgreSQL's refusal: where a goods item is bound.
    A SKU has one source/channel, so one binding at most."""
    row = await pool.fetchrow(
        "SELECT activity_id, source, channel FROM sc_sku_activity WHERE goods_id = $1 LIMIT 1",
        goods_id,
    )
    if row is None:  # unbound again since the refusal
        return "an activity"
    return f"activity {row['activity_id']} (under {row['source']}/{row['channel']})"


async def get_sku(pool: asyncpg.Pool, goods_id: str) -> SkuOut | None:
    row = await pool.fetchrow(
        "SELECT goods_id, goods_name, original_price, source, channel, create_time, update_time"
        " FROM sku WHERE goods_id = $1",
        goods_id,
    )
    return SkuOut(**dict(row)) if row else None


_ACTIVITY_COLUMNS = """activity_id, activity_name, discount_id, group_type, take_limit_count,
    target, valid_time, status, start_time, end_time, create_time, update_time"""

_PUT_ACTIVITY = f"""
INSERT INTO group_buy_activity (activity_id, activity_name, discount_id, group_type,
    take_limit_count, target, valid_time, status, start_time, end_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (activity_id) DO UPDATE SET activity_name = EXCLUDED.activity_name,
    discount_id = EXCLUDED.discount_id, group_type = EXCLUDED.group_type,
    take_limit_count = EXCLUDED.take_limit_count, target = EXCLUDED.target,
    valid_time = EXCLUDED.valid_time, status = EXCLUDED.status,
    start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time, update_time = now()
RETURNING {_ACTIVITY_COLUMNS}
"""


async def put_activity(pool: asyncpg.Pool, activity_id: int, body: ActivityIn) -> ActivityOut:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            _PUT_ACTIVITY, activity_id, body.activity_name, body.discount_id, body.group_type,
            body.take_limit_count, body.target, body.valid_time, body.status, body.start_time,
            body.end_time,
        )  # fmt: skip
        await conn.execute("DELETE FROM sc_sku_activity WHERE activity_id = $1", activity_id)
        await conn.executemany(
            "INSERT INTO sc_sku_activity (source, channel, goods_id, activity_id)"
            " VALUES ($1, $2, $3, $4)",
            [(g.source, g.channel, g.goods_id, activity_id) for g in body.goods],
        )
    assert row is not None
    return ActivityOut(**dict(row), goods=body.goods)


async def get_activity(pool: asyncpg.Pool, activity_id: int) -> ActivityOut | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_ACTIVITY_COLUMNS} FROM group_buy_activity WHERE activity_id = $1",
            activity_id,
        )
        if row is None:
            return None
        goods = await conn.fetch(
            "SELECT source, channel, goods_id FROM sc_sku_activity WHERE activity_id = $1"
            " ORDER BY id",
            activity_id,
        )
    return ActivityOut(**dict(row), goods=[GoodsRef(**dict(g)) for g in goods])
