"""A worker's unpaid-timeout cron closing a backlog, in a child process of its own: time and
peak RSS.

    python -m bench.lifecycle_rss DSN [--batch 1000]    (the child; bench_lifecycle runs it)

It loads what `python -m groupbuy_async worker` loads, opens a pool the worker's size, runs
the cron's function once (it closes batches until none is due) and prints one JSON line: its
time, its memory, and the CPU it and the database's backends used (PostgreSQL on this machine).
"""

import argparse
import asyncio
import json
import time

import asyncpg

import groupbuy_async.worker.run  # noqa: F401 -- the worker's modules, for a comparable RSS
from groupbuy_async.db import create_pool
from groupbuy_async.settings import Settings
from groupbuy_async.trade import expiry

from .common import log_warnings
from .cpu import processes
from .notify_rss import memory_kb


async def backends_cpu(pool: asyncpg.Pool) -> dict[int, float]:
    """Core-seconds so far of every backend serving this database, by pid."""
    pids = await pool.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return processes(*(r["pid"] for r in pids))()


async def close_all(dsn: str, batch: int) -> None:
    defaults = Settings()
    pool = await create_pool(dsn, defaults.db_pool_min, defaults.db_pool_max)
    before, pg_before = memory_kb(), await backends_cpu(pool)
    cpu_began, began = time.process_time(), time.perf_counter()
    closed = await expiry.close_unpaid_orders(pool, batch)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    after, pg_after = memory_kb(), await backends_cpu(pool)
    await pool.close()
    pg_cpu = sum(s - pg_before.get(pid, 0.0) for pid, s in pg_after.items())
    print(json.dumps({
        "closed": closed, "seconds": seconds, "rss_before_kb": before["vm_rss_kb"],
        "worker_cpu_s": cpu, "postgres_cpu_s": pg_cpu, **after,
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn")
    parser.add_argument("--batch", type=int, default=expiry.CLOSE_BATCH)
    args = parser.parse_args()
    log_warnings()
    asyncio.run(close_all(args.dsn, args.batch))


if __name__ == "__main__":
    main()
