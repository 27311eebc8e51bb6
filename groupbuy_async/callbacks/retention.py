"""Retention (GROUPBUY_RETENTION_DAYS): what the outbox has finished with is pruned once it is
older than the retention, in small batches, each its own short transaction. Trades are never
pruned.

- A delivery finished (1 delivered, 3 error) whose last change (update_time) is older than
  the retention goes, its attempts first, in the same transaction. An open (0 waiting,
  2 retrying) or held (4) delivery is never pruned, however old.
- Then an event written (create_time) before the retention that has no delivery left: never
  one with a delivery still open or held, never one within the retention. The old events are
  walked in order, a batch at a time, the walk going on at the next tick where it stopped:
  each statement looks at one batch, however many old events are kept (held for months),
  and every old event is reached. With the events a batch removes,
  retention_mark.pruned_before moves up to the cutoff: the event feed's `retainedSince`
  (every event written since then is kept).

Each batch takes its rows `FOR UPDATE SKIP LOCKED`: a row a claim, a replay or a resend
holds is skipped (left for a later tick), never waited for, and the prune's own locks are
held for one batch's few milliseconds. Every worker prunes at every tick; SKIP LOCKED gives
each a different share.
"""

import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime

import asyncpg
from prometheus_client import CollectorRegistry, Counter

# Deliveries (or events) one batch removes, and the longest a tick keeps pruning: what is
# left goes at the next tick. A delivery's attempts go with it: one per attempt made (the
# retry schedule's length plus one, per replay).
PRUNE_BATCH = 1000
PRUNE_SECONDS = 30.0

TABLES = ("notify_attempt", "notify_task", "event")

_CUTOFF = "SELECT now() - make_interval(days => $1)"

# The oldest finished deliveries past the cutoff (notify_task_finished_idx, sql/014).
_FINISHED = """
SELECT id FROM notify_task
WHERE notify_status IN (1, 3) AND update_time < $1
ORDER BY update_time LIMIT $2
FOR UPDATE SKIP LOCKED
"""

# Events past the cutoff are walked in (create_time, id) order, `batch` at a time
# (event_created_idx, sql/014), and those of them with no delivery left go: each statement
# looks at `batch` events, however many old ones are kept (for a delivery open or held).
_WALK = """
SELECT id, create_time FROM event
WHERE create_time < $1 AND (create_time, id) > ($2, $3)
ORDER BY create_time, id LIMIT $4
"""
_EVENTS = """
WITH gone AS (
    DELETE FROM event WHERE id IN (
        SELECT e.id FROM event e
        WHERE e.id = ANY($1::bigint[]) AND e.create_time < $2
          AND NOT EXISTS (SELECT FROM notify_task t WHERE t.event_id = e.event_id)
        FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT count(*) FROM gone
"""

_MARK = """
INSERT INTO retention_mark (pruned_before) VALUES ($1)
ON CONFLICT (only_row) DO UPDATE
SET pruned_before = greatest(retention_mark.pruned_before, excluded.pruned_before)
"""


@dataclass(slots=True)
class Pruned:
    """Rows pruned so far by one tick, by table, and the batches (transactions) it took."""

    notify_attempt: int = 0
    notify_task: int = 0
    event: int = 0
    batches: int = 0

    def counts(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in TABLES}

    def __bool__(self) -> bool:
        return any(self.counts().values())


def _count(status: str) -> int:
    """The row count of a command status such as 'DELETE 12'."""
    return int(status.rsplit(" ", 1)[-1])


async def prune_deliveries(pool: asyncpg.Pool, cutoff: datetime, batch: int) -> tuple[int, int]:
    """One batch: up to `batch` finished deliveries changed before `cutoff`, their attempts
    first. Returns (attempts, deliveries) removed."""
    async with pool.acquire() as conn, conn.transaction():
        ids = [r["id"] for r in await conn.fetch(_FINISHED, cutoff, batch)]
        if not ids:
            return 0, 0
        attempts = await conn.execute(
            "DELETE FROM notify_attempt WHERE task_id = ANY($1::bigint[])", ids
        )
        deliveries = await conn.execute("DELETE FROM notify_task WHERE id = ANY($1::bigint[])", ids)
    return _count(attempts), _count(deliveries)


@dataclass
class Walk:
    """Where the walk through old events stands: it goes on from there at the next tick
    (so that every old event is reached, however many are kept before it), and starts over
    once it reached the end."""

    after: tuple[datetime, int] = (datetime.min.replace(tzinfo=UTC), 0)

    def restart(self) -> None:
        self.after = Walk().after


async def prune_events(pool: asyncpg.Pool, cutoff: datetime, batch: int, walk: Walk) -> int:
    """One batch: the next `batch` events of the walk written before `cutoff`, those with no
    delivery left removed, and the mark moved up to `cutoff` with them. Returns the events
    removed; the walk restarts when it has seen the last old event."""
    async with pool.acquire() as conn, conn.transaction():
        seen = await conn.fetch(_WALK, cutoff, *walk.after, batch)
        removed: int = await conn.fetchval(_EVENTS, [r["id"] for r in seen], cutoff) if seen else 0
        if removed:
            await conn.execute(_MARK, cutoff)
    if len(seen) < batch:
        walk.restart()
    else:
        walk.after = (seen[-1]["create_time"], seen[-1]["id"])
    return removed


async def prune(
    pool: asyncpg.Pool,
    retention_days: int,
    pruned: Pruned,
    walk: Walk | None = None,
    *,
    batch: int | None = None,
    seconds: float | None = None,
) -> Pruned:
    """Deliveries then events past the retention, batch after batch, until none is left (the
    walk through old events has reached their end) or the tick's time is up. Counts into
    `pruned` as it goes (what was done before a failure stays counted)."""
    batch = batch or PRUNE_BATCH
    walk = walk or Walk()
    deadline = time.monotonic() + (seconds or PRUNE_SECONDS)
    cutoff: datetime = await pool.fetchval(_CUTOFF, retention_days)
    while time.monotonic() < deadline:
        attempts, deliveries = await prune_deliveries(pool, cutoff, batch)
        pruned.notify_attempt += attempts
        pruned.notify_task += deliveries
        pruned.batches += 1
        if deliveries < batch:
            break
    while time.monotonic() < deadline:
        pruned.event += await prune_events(pool, cutoff, batch, walk)
        pruned.batches += 1
        if walk.after == Walk().after:
            break
    return pruned


def pruned_counter(registry: CollectorRegistry) -> Counter:
    """groupbuy_pruned_total{table}: rows the retention removed, every table from zero."""
    counter = Counter(
        "groupbuy_pruned",
        "Rows pruned past GROUPBUY_RETENTION_DAYS, by table (notify_attempt, notify_task, event)",
        ["table"],
        registry=registry,
    )
    for table in TABLES:
        counter.labels(table=table)
    return counter


async def pruned_before(conn: asyncpg.Pool | asyncpg.Connection) -> datetime | None:
    """Events written before this may have been pruned; None: none ever was."""
    mark: datetime | None = await conn.fetchval("SELECT pruned_before FROM retention_mark")
    return mark
