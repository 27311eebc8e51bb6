"""The outbox's counts for /metrics stay cheap on a huge table: delivered tasks are estimated."""

from typing import Any

import asyncpg
import pytest

from groupbuy_async.callbacks import metrics
from groupbuy_async.callbacks.metrics import TypeStatusCounts

TYPES = ("team.completed", "team.failed", "order.closed", "order.refunded", "endpoint.disabled")


async def test_delivered_tasks_are_estimated_past_the_exact_limit(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    exact, _ = await metrics.status_counts(pool)
    assert set(exact) == {(t, s) for t in TYPES for s in range(4)}
    open_and_errors = sum(n for (_, status), n in exact.items() if status != 1)
    counted: list[str] = []
    fetch = asyncpg.connection.Connection.fetch

    async def spy(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        counted.append(query)
        return await fetch(self, query, *args, **kwargs)

    # As if the table held ten million rows (statistics only; restored below).
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE notify_task")
        held_share = await conn.fetchval(metrics._HELD_SHARE)
        before = await conn.fetchval(
            "SELECT reltuples FROM pg_class WHERE oid = 'notify_task'::regclass"
        )
        try:
            await conn.execute(
                "UPDATE pg_class SET reltuples = 1e7 WHERE oid = 'notify_task'::regclass"
            )
            monkeypatch.setattr(asyncpg.connection.Connection, "fetch", spy)
            estimated, _ = await metrics.status_counts(pool)
            monkeypatch.undo()
        finally:
            await conn.execute(
                "UPDATE pg_class SET reltuples = $1 WHERE oid = 'notify_task'::regclass", before
            )
    delivered = {t: n for (t, status), n in estimated.items() if status == 1}
    # Held deliveries (a disabled endpoint's) are neither delivered nor counted.
    assert sum(delivered.values()) == 10_000_000 - int(1e7 * held_share) - open_and_errors
    assert all(n >= 0 for n in delivered.values())
    assert {k: n for k, n in estimated.items() if k[1] != 1} == {
        k: n for k, n in exact.items() if k[1] != 1
    }
    # The delivered tasks are not counted then: only the open ones and the statistics are read.
    assert metrics._DELIVERED_EXACT not in counted and metrics._TYPE_SHARES in counted


def _counts(open_by_type: dict[str, int]) -> TypeStatusCounts:
    counts: TypeStatusCounts = {(t, s): 0 for t in TYPES for s in range(4)}
    for kind, n in open_by_type.items():
        counts[kind, 3] = n
    return counts


def test_delivered_estimate_is_split_by_each_types_share() -> None:
    counts = _counts({"team.completed": 1_000, "order.closed": 500})
    shares = {"team.completed": 0.5, "order.closed": 0.3, "order.refunded": 0.2}
    split = metrics.estimate_delivered(1_000_000, shares, counts)
    assert sum(split.values()) == 1_000_000 - 1_500
    # Each type's share of the table, less its open and failed tasks.
    assert split == {
        "team.completed": 499_000, "team.failed": 0, "order.closed": 299_500,
        "order.refunded": 200_000, "endpoint.disabled": 0,
    }  # fmt: skip


def test_delivered_estimate_without_statistics_is_all_team_completed() -> None:
    split = metrics.estimate_delivered(200_000, {}, _counts({"order.closed": 10}))
    assert split == {
        "team.completed": 199_990,
        "team.failed": 0,
        "order.closed": 0,
        "order.refunded": 0,
        "endpoint.disabled": 0,
    }


async def test_open_and_error_counts_read_only_their_index(pool: asyncpg.Pool) -> None:
    """Issue 16: at 10 M deliveries the error ones lie one per heap page; the scrape counts
    them from notify_task_counts_idx alone (sql/015), never from the heap."""
    # As autovacuum leaves a big table: its visibility map set (the suite's rows are fresh,
    # and with none of their pages all-visible the planner rightly reads the heap too).
    await pool.execute("VACUUM notify_task")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # a small table: ask for the index
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + metrics._FEW_COUNTS))
    assert "Index Only Scan using notify_task_counts_idx" in plan
