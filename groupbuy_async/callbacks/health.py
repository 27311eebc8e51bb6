"""Endpoint health: each batch of attempts written back tells each endpoint's run of failures
(an answered attempt ends it); an endpoint whose attempts have all failed for
ENDPOINT_DISABLE_AFTER_SECONDS, at least ENDPOINT_DISABLE_MIN_ATTEMPTS of them, is disabled
(by one conditional UPDATE: once, whatever the processes), its open deliveries held, and an
endpoint.disabled event goes to the merchant's other endpoints that take it. Healthy
endpoints cost nothing here: only failures, and the first answer after them, write."""

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from .events import EventType, body, new_event_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempted:
    endpoint: int  # endpoint.id
    answered: bool  # the endpoint answered (a success); else a failed attempt
    at: datetime


# Per endpoint of the batch: an answer ends its run of failures, failures add to it. Rows are
# locked in id order (no deadlock between two processes' batches). Returns those past both
# limits and not yet disabled.
_OBSERVE = """
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::bool[], $3::timestamptz[]) AS r(id, answered, at)
), agg AS (
    SELECT id, bool_or(answered) AS answered, count(*) FILTER (WHERE NOT answered) AS failed,
           min(at) FILTER (WHERE NOT answered) AS first_failed
    FROM r GROUP BY id
), locked AS (
    SELECT e.id FROM endpoint e JOIN agg USING (id)
    WHERE NOT agg.answered OR e.failing_since IS NOT NULL
    ORDER BY e.id FOR NO KEY UPDATE OF e
), updated AS (
    UPDATE endpoint e
    SET failing_since = CASE WHEN agg.answered THEN NULL
                             ELSE coalesce(e.failing_since, agg.first_failed) END,
        failed_attempts = CASE WHEN agg.answered THEN 0 ELSE e.failed_attempts + agg.failed END
    FROM agg, locked WHERE e.id = agg.id AND e.id = locked.id
    RETURNING e.id, e.failing_since, e.failed_attempts, e.disabled
)
SELECT id FROM updated
WHERE NOT disabled AND failing_since <= now() - $4::interval AND failed_attempts >= $5
"""

_DISABLE = """
UPDATE endpoint SET disabled = true, disabled_time = now(), update_time = now(),
    disabled_reason = format('every attempt failed for %s (%s attempts) since %s',
                             date_trunc('second', now() - failing_since), failed_attempts,
                             failing_since)
WHERE id = $1 AND NOT disabled AND failing_since <= now() - $2::interval
  AND failed_attempts >= $3
RETURNING merchant_id, endpoint_id, url, failing_since, failed_attempts, disabled_reason
"""
_HOLD = """
UPDATE notify_task SET notify_status = 4, update_time = now()
WHERE endpoint = $1 AND notify_status IN (0, 2)
"""
# Its event, and a delivery to every other enabled endpoint of the merchant that takes it.
_TELL = """
WITH written AS (
    INSERT INTO event (event_id, event_type, activity_id, team_id, merchant_id, parameter_json)
    VALUES ($1, 'endpoint.disabled', NULL, NULL, $2, $3)
    RETURNING event_id
)
INSERT INTO notify_task (event_id, event_type, activity_id, notify_url, host, endpoint)
SELECT w.event_id, 'endpoint.disabled', NULL, ep.url, ep.merchant_id || '/' || ep.endpoint_id,
       ep.id
FROM written w JOIN endpoint ep ON ep.merchant_id = $2 AND NOT ep.disabled
WHERE cardinality(ep.event_types) = 0 OR 'endpoint.disabled' = ANY (ep.event_types)
"""


@dataclass(frozen=True)
class Limits:
    after: timedelta
    min_attempts: int


async def observe(pool: asyncpg.Pool, attempted: Iterable[Attempted], limits: Limits) -> int:
    """Note a batch's attempts; disable the endpoints past the limits. Returns how many were
    disabled (by this call)."""
    rows = list(attempted)
    if not rows:
        return 0
    found = await pool.fetch(
        _OBSERVE,
        [a.endpoint for a in rows],
        [a.answered for a in rows],
        [a.at for a in rows],
        limits.after,
        limits.min_attempts,
    )
    return await _disable_each(pool, [r["id"] for r in found], limits)


async def sweep(pool: asyncpg.Pool, limits: Limits) -> int:
    """Disable the endpoints past the limits whose last failure was noted before they got
    there (a paused endpoint gets no attempt to note): each drain begins with it."""
    found = await pool.fetch(
        "SELECT id FROM endpoint WHERE NOT disabled AND failing_since <= now() - $1::interval"
        " AND failed_attempts >= $2",
        limits.after,
        limits.min_attempts,
    )
    return await _disable_each(pool, [r["id"] for r in found], limits)


async def _disable_each(pool: asyncpg.Pool, endpoints: list[int], limits: Limits) -> int:
    """Disable each, each in its own transaction; how many this call disabled."""
    return sum([await _disable(pool, endpoint, limits) for endpoint in endpoints])


async def _disable(pool: asyncpg.Pool, endpoint: int, limits: Limits) -> int:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_DISABLE, endpoint, limits.after, limits.min_attempts)
        if row is None:  # another process did it, or it answered meanwhile
            return 0
        await conn.execute(_HOLD, endpoint)
        event_id = new_event_id()
        await conn.execute(_TELL, event_id, row["merchant_id"], _body(event_id, row))
    log.warning(
        "endpoint %s/%s disabled: %s; its deliveries are held until it is enabled again",
        row["merchant_id"],
        row["endpoint_id"],
        row["disabled_reason"],
    )
    return 1


def _body(event_id: uuid.UUID, row: asyncpg.Record) -> str:
    data = {
        "merchantId": row["merchant_id"],
        "endpointId": row["endpoint_id"],
        "url": row["url"],
        "reason": row["disabled_reason"],
        "failingSince": row["failing_since"].isoformat(),
        "failedAttempts": row["failed_attempts"],
    }
    now = datetime.now(UTC).isoformat()
    return body(EventType.ENDPOINT_DISABLED, str(event_id), now, data)
