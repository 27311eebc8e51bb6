"""Merchants and the source+channel pairs they hold (admin). A pair belongs to at most one
merchant (the primary key of merchant_binding); an activity never sells goods of two
merchants (a trigger of sql/009 refuses it, whoever writes)."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .. import errors
from ..db import Conn

Pair = tuple[str, str]  # (source, channel)

SPANNING_MERCHANTS = "activity_of_one_merchant"  # sql/009's trigger


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    name: str
    bindings: tuple[Pair, ...]
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class MerchantPage:
    items: list[Merchant]
    next_cursor: str | None


_SELECT = """
SELECT m.merchant_id, m.name, m.create_time, m.update_time,
       ARRAY(SELECT b.source FROM merchant_binding b WHERE b.merchant_id = m.merchant_id
             ORDER BY b.source, b.channel) AS sources,
       ARRAY(SELECT b.channel FROM merchant_binding b WHERE b.merchant_id = m.merchant_id
             ORDER BY b.source, b.channel) AS channels
FROM merchant m
"""

_PUT = """
INSERT INTO merchant (merchant_id, name) VALUES ($1, $2)
ON CONFLICT (merchant_id) DO UPDATE SET name = EXCLUDED.name, update_time = now()
"""

_DROP_PAIRS = """
DELETE FROM merchant_binding
WHERE merchant_id = $1 AND (source, channel) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))
"""

# The pairs asked for that nobody holds become the merchant's; the row lock _PUT takes
# serialises puts of one merchant, the primary key puts of different ones.
_CLAIM_PAIRS = """
INSERT INTO merchant_binding (source, channel, merchant_id)
SELECT source, channel, $1 FROM unnest($2::text[], $3::text[]) AS p(source, channel)
ON CONFLICT (source, channel) DO NOTHING
"""

_TAKEN_BY_OTHERS = """
SELECT b.source, b.channel, b.merchant_id
FROM unnest($2::text[], $3::text[]) AS p(source, channel)
JOIN merchant_binding b USING (source, channel)
WHERE b.merchant_id <> $1
ORDER BY b.source, b.channel
"""


def _merchant(row: asyncpg.Record) -> Merchant:
    return Merchant(
        merchant_id=row["merchant_id"],
        name=row["name"],
        bindings=tuple(zip(row["sources"], row["channels"], strict=True)),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


async def put_merchant(
    pool: asyncpg.Pool, merchant_id: str, name: str, bindings: list[Pair]
) -> Merchant:
    """Create or replace a merchant and its pairs: a pair another merchant holds is refused
    (0003, named), so is one that would make an activity sell for two merchants (E0302)."""
    sources, channels = [p[0] for p in bindings], [p[1] for p in bindings]
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_PUT, merchant_id, name)
            await conn.execute(_DROP_PAIRS, merchant_id, sources, channels)
            await conn.execute(_CLAIM_PAIRS, merchant_id, sources, channels)
            taken = await conn.fetch(_TAKEN_BY_OTHERS, merchant_id, sources, channels)
            if taken:
                pairs = ", ".join(f"{t['source']}/{t['channel']}" for t in taken)
                raise errors.UniqueConflict(
                    f"bindings: source+channel {pairs} already belongs to merchant"
                    f" {taken[0]['merchant_id']}"
                )
            merchant = await get_merchant(conn, merchant_id)
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name != SPANNING_MERCHANTS:
            raise
        raise errors.ActivitySpansMerchants(str(exc).splitlines()[0]) from None
    if merchant is None:
        raise LookupError(f"merchant {merchant_id} vanished inside its own transaction")
    return merchant


async def get_merchant(conn: Conn | asyncpg.Pool, merchant_id: str) -> Merchant | None:
    row = await conn.fetchrow(f"{_SELECT} WHERE m.merchant_id = $1", merchant_id)
    return None if row is None else _merchant(row)


async def list_merchants(pool: asyncpg.Pool, limit: int, after: str | None) -> MerchantPage:
    rows = await pool.fetch(
        f"{_SELECT} WHERE $2::text IS NULL OR m.merchant_id > $2 ORDER BY m.merchant_id LIMIT $1",
        limit + 1,
        after,
    )
    items = [_merchant(r) for r in rows[:limit]]
    return MerchantPage(items, items[-1].merchant_id if len(rows) > limit else None)
