"""The outbox's counts for /metrics stay cheap on a huge table: delivered tasks are estimated."""

import asyncpg

from groupbuy_async.callbacks import outbox


async def test_delivered_tasks_are_estimated_past_the_exact_limit(pool: asyncpg.Pool) -> None:
    exact, _ = await outbox.status_counts(pool)
    open_and_errors = sum(n for status, n in exact.items() if status != 1)
    plan = await pool.fetchval(f"EXPLAIN (FORMAT TEXT) {outbox._STATUS_COUNTS}")
    assert plan is not None
    # As if the table held ten million rows (statistics only; restored below).
    async with pool.acquire() as conn:
        before = await conn.fetchval(
            "SELECT reltuples FROM pg_class WHERE oid = 'notify_task'::regclass"
        )
        try:
            await conn.execute(
                "UPDATE pg_class SET reltuples = 1e7 WHERE oid = 'notify_task'::regclass"
            )
            estimated, _ = await outbox.status_counts(pool)
            lines = [r[0] for r in await conn.fetch(f"EXPLAIN {outbox._STATUS_COUNTS}")]
        finally:
            await conn.execute(
                "UPDATE pg_class SET reltuples = $1 WHERE oid = 'notify_task'::regclass", before
            )
    assert estimated[1] == 10_000_000 - open_and_errors
    assert {s: n for s, n in estimated.items() if s != 1} == {
        s: n for s, n in exact.items() if s != 1
    }
    # The exact count of delivered tasks is not even planned to run then.
    assert not any("Seq Scan on notify_task" in line and "never executed" in line for line in lines)
