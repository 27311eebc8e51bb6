"""Deliveries as a merchant (its key) or the operator sees and handles them: a keyset page,
one with its attempts, a resend, a retry now, an endpoint's recovery. `merchant_id` None is
the operator (every merchant); a merchant's call never sees another's delivery (None)."""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..db import columns
from .rules import NotifyStatus

# Named as Delivery's fields.
_COLUMNS = """t.id AS delivery_id, t.event_id, ep.endpoint_id, ep.merchant_id, t.event_type AS type,
    t.notify_status AS status, t.notify_count AS attempt_count, t.next_attempt_at,
    t.last_http_status, t.last_error, t.create_time, t.update_time"""
_COPIED = (
    "delivery_id endpoint_id merchant_id type status attempt_count last_http_status last_error"
    " create_time update_time"
)
_FROM = "notify_task t JOIN endpoint ep ON ep.id = t.endpoint"
# $1: the merchant (NULL: any).
_MINE = "($1::text IS NULL OR ep.merchant_id = $1)"


@dataclass(frozen=True)
class Attempt:
    attempt: int
    started_at: datetime
    duration_ms: int
    http_status: int | None
    response_body: str | None
    error: str | None


@dataclass(frozen=True)
class Delivery:
    delivery_id: int
    event_id: str
    endpoint_id: str
    merchant_id: str
    type: str
    status: int
    attempt_count: int
    next_attempt_time: datetime | None
    last_http_status: int | None
    last_error: str | None
    create_time: datetime
    update_time: datetime
    attempts: tuple[Attempt, ...] = ()


def _delivery(row: asyncpg.Record, attempts: tuple[Attempt, ...] = ()) -> Delivery:
    waiting = row["status"] in (NotifyStatus.INITIAL, NotifyStatus.RETRY)
    return Delivery(
        **columns(row, _COPIED),
        event_id=str(row["event_id"]),
        next_attempt_time=row["next_attempt_at"] if waiting else None,
        attempts=attempts,
    )


@dataclass(frozen=True)
class Page:
    items: list[Delivery]
    next_cursor: int | None


async def list_deliveries(
    pool: asyncpg.Pool,
    merchant_id: str | None,
    *,
    status: int | None = None,
    event_type: str | None = None,
    endpoint_id: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> Page:
    """Newest first; `after` is the previous page's nextCursor (a deliveryId)."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM {_FROM} WHERE {_MINE}"
        " AND ($2::smallint IS NULL OR t.notify_status = $2)"
        " AND ($3::text IS NULL OR t.event_type = $3)"
        " AND ($4::text IS NULL OR ep.endpoint_id = $4)"
        " AND ($5::bigint IS NULL OR t.id < $5)"
        " ORDER BY t.id DESC LIMIT $6",
        merchant_id, status, event_type, endpoint_id, after, limit + 1,
    )  # fmt: skip
    items = [_delivery(r) for r in rows[:limit]]
    return Page(items, items[-1].delivery_id if len(rows) > limit else None)


async def get_delivery(
    pool: asyncpg.Pool, merchant_id: str | None, delivery_id: int
) -> Delivery | None:
    """One delivery with every attempt, oldest first."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM {_FROM} WHERE {_MINE} AND t.id = $2",
            merchant_id,
            delivery_id,
        )
        if row is None:
            return None
        attempts = await conn.fetch(
            "SELECT attempt, started_at, duration_ms, http_status, response_body, error"
            " FROM notify_attempt WHERE task_id = $1 ORDER BY attempt",
            delivery_id,
        )
    return _delivery(row, tuple(Attempt(**dict(a)) for a in attempts))


# A resend is a new attempt of the delivery whatever its status (its schedule restarted, same
# webhook-id); a delivery being sent right now (a live claim) is left to that send. Held
# (endpoint disabled) stays held: it goes once the endpoint is enabled.
_RESEND = f"""
UPDATE notify_task t
SET notify_status = CASE WHEN ep.disabled THEN 4 ELSE 2 END, next_attempt_at = now(),
    schedule_offset = t.notify_count, last_error = NULL, update_time = now()
FROM endpoint ep
WHERE ep.id = t.endpoint AND {_MINE} AND t.id = $2
  AND (t.claim_token IS NULL OR t.locked_until < now())
RETURNING t.id
"""
# Retry now: a waiting delivery (0, 2) is due at once, its schedule left as it is.
_RETRY_NOW = f"""
UPDATE notify_task t SET next_attempt_at = now(), update_time = now()
FROM endpoint ep
WHERE ep.id = t.endpoint AND {_MINE} AND t.id = $2 AND t.notify_status IN (0, 2)
  AND (t.claim_token IS NULL OR t.locked_until < now())
RETURNING t.id
"""


async def resend(pool: asyncpg.Pool, merchant_id: str | None, delivery_id: int) -> bool:
    """False when it is not the caller's, or is being sent right now."""
    return await pool.fetchval(_RESEND, merchant_id, delivery_id) is not None


async def retry_now(pool: asyncpg.Pool, merchant_id: str | None, delivery_id: int) -> bool:
    """False when it is not the caller's, not waiting, or being sent right now."""
    return await pool.fetchval(_RETRY_NOW, merchant_id, delivery_id) is not None


async def recover(pool: asyncpg.Pool, merchant_id: str, endpoint_id: str, since: datetime) -> int:
    """Every delivery to the endpoint that ended in error, or was held, since `since` is due
    now, its schedule restarted (Svix's recover); held again if the endpoint is disabled.
    Returns how many; -1 when there is no such endpoint."""
    row = await pool.fetchrow(
        "WITH ep AS (SELECT id, disabled FROM endpoint WHERE merchant_id = $1"
        " AND endpoint_id = $2), r AS ("
        " UPDATE notify_task t SET notify_status = CASE WHEN ep.disabled THEN 4 ELSE 2 END,"
        " next_attempt_at = now(), schedule_offset = t.notify_count, last_error = NULL,"
        " update_time = now() FROM ep WHERE t.endpoint = ep.id AND t.notify_status IN (3, 4)"
        " AND t.update_time >= $3 AND (t.claim_token IS NULL OR t.locked_until < now())"
        " RETURNING 1)"
        " SELECT (SELECT count(*) FROM r) AS recovered, (SELECT count(*) FROM ep) AS found",
        merchant_id, endpoint_id, since,
    )  # fmt: skip
    if row is None or not row["found"]:
        return -1
    return int(row["recovered"])
