"""Operator configuration: discounts, goods and activities (create-or-replace, keyset pages,
delete). PostgreSQL's foreign keys refuse deleting or re-keying what is still referenced; the
catalog only explains such a refusal."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import asyncpg

from .. import errors
from ..db import Conn
from .models import (
    Activity,
    Discount,
    Goods,
    Page,
    Sku,
    StoredActivity,
    StoredDiscount,
    StoredSku,
)

# Constraints of sql/003_catalog.sql whose refusals the catalog explains itself.
BINDING_SKU_FKEY = "binding_sku_fkey"
ACTIVITY_DISCOUNT_FKEY = "activity_discount_fkey"
TEAM_ACTIVITY_FKEY = "team_activity_fkey"
# sql/009: an activity's goods never span two merchants' pairs.
ACTIVITY_OF_ONE_MERCHANT = "activity_of_one_merchant"
# A RESTRICT foreign key refusing a delete or key change: PostgreSQL up to 17 reports it as
# foreign_key_violation (23503), 18 as restrict_violation (23001).
REFERENCE_VIOLATIONS = (asyncpg.ForeignKeyViolationError, asyncpg.RestrictViolationError)
# How many referring activities a refusal names.
_NAMED = 5


@asynccontextmanager
async def _explained(constraint: str, explain: Callable[[], Awaitable[str]]) -> AsyncIterator[None]:
    """PostgreSQL refusing, by `constraint`, to delete or re-key what is still referenced:
    StillReferenced, saying what explain() reads. Any other violation passes as it is."""
    try:
        yield
    except REFERENCE_VIOLATIONS as exc:
        if exc.constraint_name != constraint:
            raise
        raise errors.StillReferenced(await explain()) from None


_DISCOUNT_COLUMNS = """discount_id, discount_name, discount_desc, market_plan, market_expr,
    create_time, update_time"""
_SKU_COLUMNS = "goods_id, goods_name, original_price, source, channel, create_time, update_time"


def _page_sql(columns: str, table: str, key: str, after: object) -> str:
    where = "" if after is None else f"WHERE {key} > $2"
    return f"SELECT {columns} FROM {table} {where} ORDER BY {key} LIMIT $1"


async def _page(
    conn: Conn | asyncpg.Pool, columns: str, table: str, key: str, limit: int, after: object
) -> tuple[list[asyncpg.Record], Any]:
    """One keyset page in key order and the cursor of the next (None on the last page)."""
    args = (limit + 1,) if after is None else (limit + 1, after)
    rows = await conn.fetch(_page_sql(columns, table, key, after), *args)
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1][key]
    return rows, None


def _upsert(table: str, key: str, fields: tuple[str, ...], returning: str) -> str:
    """Insert the row of key $1 with the fields $2, $3, ..., or replace those of the row
    already stored under that key."""
    columns = ", ".join((key, *fields))
    values = ", ".join(f"${n}" for n in range(1, len(fields) + 2))
    updates = "".join(f"{field} = EXCLUDED.{field}, " for field in fields)
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key})"
        f" DO UPDATE SET {updates}update_time = now() RETURNING {returning}"
    )


def _values(body: object, fields: tuple[str, ...]) -> list[Any]:
    return [getattr(body, field) for field in fields]


_DISCOUNT_FIELDS = ("discount_name", "discount_desc", "market_plan", "market_expr")
_PUT_DISCOUNT = _upsert("group_buy_discount", "discount_id", _DISCOUNT_FIELDS, _DISCOUNT_COLUMNS)

_GET_DISCOUNT = f"SELECT {_DISCOUNT_COLUMNS} FROM group_buy_discount WHERE discount_id = $1"


async def put_discount(pool: asyncpg.Pool, discount_id: str, body: Discount) -> StoredDiscount:
    (row,) = await pool.fetch(_PUT_DISCOUNT, discount_id, *_values(body, _DISCOUNT_FIELDS))
    return StoredDiscount(**dict(row))


async def get_discount(pool: asyncpg.Pool, discount_id: str) -> StoredDiscount | None:
    row = await pool.fetchrow(_GET_DISCOUNT, discount_id)
    return StoredDiscount(**dict(row)) if row else None


async def list_discounts(pool: asyncpg.Pool, limit: int, after: str | None) -> Page[StoredDiscount]:
    rows, cursor = await _page(
        pool, _DISCOUNT_COLUMNS, "group_buy_discount", "discount_id", limit, after
    )
    return Page(items=[StoredDiscount(**dict(r)) for r in rows], next_cursor=cursor)


async def delete_discount(pool: asyncpg.Pool, discount_id: str) -> StoredDiscount | None:
    async with _explained(ACTIVITY_DISCOUNT_FKEY, partial(_discount_used, pool, discount_id)):
        row = await pool.fetchrow(
            f"DELETE FROM group_buy_discount WHERE discount_id = $1 RETURNING {_DISCOUNT_COLUMNS}",
            discount_id,
        )
    return StoredDiscount(**dict(row)) if row else None


async def _discount_used(pool: asyncpg.Pool, discount_id: str) -> str:
    """Read after PostgreSQL's refusal, for its message: the activities using a discount."""
    ids = [
        str(r["activity_id"])
        for r in await pool.fetch(
            "SELECT activity_id FROM group_buy_activity WHERE discount_id = $1"
            " ORDER BY activity_id LIMIT $2",
            discount_id,
            _NAMED + 1,
        )
    ]
    if not ids:  # gone again since the refusal
        users = "an activity"
    else:
        more = ", …" if len(ids) > _NAMED else ""
        users = ("activity " if len(ids) == 1 else "activities ") + ", ".join(ids[:_NAMED]) + more
    return f"discountId {discount_id} is used by {users}; change or delete those first"


_SKU_FIELDS = ("goods_name", "original_price", "source", "channel")
_PUT_SKU = _upsert("sku", "goods_id", _SKU_FIELDS, _SKU_COLUMNS)


async def put_sku(pool: asyncpg.Pool, goods_id: str, body: Sku) -> StoredSku:
    # PostgreSQL refuses to re-key a bound SKU (ON UPDATE RESTRICT): say where it is bound.
    then = ": its source and channel cannot change while it is; remove it from that activity first"
    async with _explained(BINDING_SKU_FKEY, partial(_sku_bound, pool, goods_id, then)):
        (row,) = await pool.fetch(_PUT_SKU, goods_id, *_values(body, _SKU_FIELDS))
    return StoredSku(**dict(row))


async def _sku_bound(pool: asyncpg.Pool, goods_id: str, then: str) -> str:
    """Read after PostgreSQL's refusal, for its message: where a goods item is bound. A SKU
    has one source/channel, so one binding at most."""
    row = await pool.fetchrow(
        "SELECT activity_id, source, channel FROM sc_sku_activity WHERE goods_id = $1 LIMIT 1",
        goods_id,
    )
    where = "an activity"  # unbound again since the refusal
    if row is not None:
        where = f"activity {row['activity_id']} (under {row['source']}/{row['channel']})"
    return f"goodsId {goods_id} is bound to {where}{then}"


async def get_sku(pool: asyncpg.Pool, goods_id: str) -> StoredSku | None:
    row = await pool.fetchrow(f"SELECT {_SKU_COLUMNS} FROM sku WHERE goods_id = $1", goods_id)
    return StoredSku(**dict(row)) if row else None


async def list_skus(pool: asyncpg.Pool, limit: int, after: str | None) -> Page[StoredSku]:
    rows, cursor = await _page(pool, _SKU_COLUMNS, "sku", "goods_id", limit, after)
    return Page(items=[StoredSku(**dict(r)) for r in rows], next_cursor=cursor)


async def delete_sku(pool: asyncpg.Pool, goods_id: str) -> StoredSku | None:
    then = "; remove it from that activity's goods first"
    async with _explained(BINDING_SKU_FKEY, partial(_sku_bound, pool, goods_id, then)):
        row = await pool.fetchrow(
            f"DELETE FROM sku WHERE goods_id = $1 RETURNING {_SKU_COLUMNS}", goods_id
        )
    return StoredSku(**dict(row)) if row else None


_ACTIVITY_COLUMNS = """activity_id, activity_name, discount_id, group_type, take_limit_count,
    target, valid_time, pay_timeout_seconds, status, start_time, end_time, create_time,
    update_time"""

_ACTIVITY_FIELDS = (
    "activity_name",
    "discount_id",
    "group_type",
    "take_limit_count",
    "target",
    "valid_time",
    "status",
    "start_time",
    "end_time",
    "pay_timeout_seconds",
)
_PUT_ACTIVITY = _upsert("group_buy_activity", "activity_id", _ACTIVITY_FIELDS, _ACTIVITY_COLUMNS)


async def put_activity(pool: asyncpg.Pool, activity_id: int, body: Activity) -> StoredActivity:
    try:
        return await _put_activity(pool, activity_id, body)
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name != ACTIVITY_OF_ONE_MERCHANT:
            raise
        raise errors.ActivitySpansMerchants(
            f"activity {activity_id}: its goods are sold under source+channel pairs of two"
            " merchants; an activity's goods must all be one merchant's"
        ) from None


async def _put_activity(pool: asyncpg.Pool, activity_id: int, body: Activity) -> StoredActivity:
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await conn.fetch(_PUT_ACTIVITY, activity_id, *_values(body, _ACTIVITY_FIELDS))
        await conn.execute("DELETE FROM sc_sku_activity WHERE activity_id = $1", activity_id)
        await conn.executemany(
            "INSERT INTO sc_sku_activity (source, channel, goods_id, activity_id)"
            " VALUES ($1, $2, $3, $4)",
            [(g.source, g.channel, g.goods_id, activity_id) for g in body.goods],
        )
    return StoredActivity(**dict(row), goods=body.goods)


_GOODS_OF = """
SELECT activity_id, source, channel, goods_id FROM sc_sku_activity
WHERE activity_id = ANY($1::bigint[]) ORDER BY id
"""


async def _with_goods(conn: Conn, rows: list[asyncpg.Record]) -> list[StoredActivity]:
    goods: dict[int, list[Goods]] = {r["activity_id"]: [] for r in rows}
    for g in await conn.fetch(_GOODS_OF, list(goods)):
        goods[g["activity_id"]].append(
            Goods(source=g["source"], channel=g["channel"], goods_id=g["goods_id"])
        )
    return [StoredActivity(**dict(r), goods=goods[r["activity_id"]]) for r in rows]


async def get_activity(pool: asyncpg.Pool, activity_id: int) -> StoredActivity | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_ACTIVITY_COLUMNS} FROM group_buy_activity WHERE activity_id = $1",
            activity_id,
        )
        if row is None:
            return None
        (activity,) = await _with_goods(conn, [row])
    return activity


async def list_activities(
    pool: asyncpg.Pool, limit: int, after: int | None
) -> Page[StoredActivity]:
    # One snapshot for the page and its goods.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows, cursor = await _page(
            conn, _ACTIVITY_COLUMNS, "group_buy_activity", "activity_id", limit, after
        )
        items = await _with_goods(conn, rows)
    return Page(items=items, next_cursor=cursor)


async def delete_activity(pool: asyncpg.Pool, activity_id: int) -> StoredActivity | None:
    """Delete an activity and its goods bindings (ON DELETE CASCADE); PostgreSQL refuses
    while it has teams (team_activity_fkey, ON DELETE RESTRICT): trade history stays."""
    async with pool.acquire() as conn, conn.transaction():
        # A PUT takes this row lock before it rewrites the bindings, and a new team's foreign
        # key check waits on it: the bindings read next are the ones the delete removes.
        await conn.execute(
            "SELECT 1 FROM group_buy_activity WHERE activity_id = $1 FOR UPDATE", activity_id
        )
        goods = await conn.fetch(
            "SELECT source, channel, goods_id FROM sc_sku_activity WHERE activity_id = $1"
            " ORDER BY id",
            activity_id,
        )
        async with _explained(TEAM_ACTIVITY_FKEY, partial(_has_teams, activity_id)):
            row = await conn.fetchrow(
                "DELETE FROM group_buy_activity WHERE activity_id = $1"
                f" RETURNING {_ACTIVITY_COLUMNS}",
                activity_id,
            )
    if row is None:
        return None
    return StoredActivity(**dict(row), goods=[Goods(**dict(g)) for g in goods])


async def _has_teams(activity_id: int) -> str:
    return (
        f"activity {activity_id} has teams and trade history is never deleted;"
        " set its status to 2 (expired) or 3 (abandoned) to close it"
    )
