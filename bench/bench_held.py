"""Held deliveries cost the drain nothing: `make bench-held` / `python -m bench.bench_held`.

Issue 15: "100,000 held deliveries cost the drain nothing: claims and /metrics stay as fast as
with none". In one run, on two fresh databases with the same `--due` due deliveries to a
receiver that answers at once: one with nothing else, one that also holds `--held` deliveries
of a disabled endpoint (status 4, written set-based). For each: the drain's callbacks per
second (Dispatcher.drain(), as the worker runs it), the median time of one claim of 500 on a
fresh backlog, and the median time of a /metrics scrape (Metrics.scrape: the outbox's counts).
The ratios held/none are what matters (aim: each within 10 %, noise included); the load
average is printed first. Exits 1 when a delivery check fails.
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

import asyncpg

from groupbuy_async.callbacks import claims
from groupbuy_async.callbacks.metrics import Metrics
from groupbuy_async.db import create_pool
from groupbuy_async.dev.outbox_fill import fanned_out_teams
from groupbuy_async.merchants.secret_box import SecretBox

from .common import SECRET, SECRETS_KEY, fresh_database, run_bench, servers, table
from .notify_scenarios import bench_settings, check_delivery, insert_tasks, timed_drain
from .receiver import Receiver

HELD_URL = "http://127.0.0.1:9/held"  # its endpoint is disabled: nothing is ever sent there
REPEAT = 15


async def hold(dsn: str, count: int) -> None:
    """`count` deliveries of a disabled endpoint, held (4), as health or a PUT leaves them."""
    pool = await create_pool(dsn, 1, 2, command_timeout=600)
    try:
        await fanned_out_teams(pool, SecretBox(SECRETS_KEY), count, [HELD_URL], SECRET)
        await pool.execute("UPDATE endpoint SET disabled = true WHERE url = $1", HELD_URL)
        await pool.execute(
            "UPDATE notify_task SET notify_status = 4 WHERE notify_url = $1", HELD_URL
        )
        await pool.execute("VACUUM ANALYZE event, notify_task, endpoint")
    finally:
        await pool.close()


async def _seconds(step: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await step()
    return time.perf_counter() - began


async def _claim_and_release(pool: asyncpg.Pool) -> None:
    tasks = await claims.claim(pool, 500, timedelta(minutes=5), per_host=500)
    await claims.release(pool, tasks, None)


async def checked_drain(
    pool: asyncpg.Pool, receiver: Receiver, due: int, held: int
) -> dict[str, Any]:
    """One timed drain of `due` callbacks to the receiver, checked: its rate and "ok" or what
    went wrong (`held` deliveries must stay held)."""
    await receiver.reset()
    counts, seconds = await timed_drain(pool, bench_settings("", 200))
    problems = await check_delivery(receiver, due)
    if counts.success_count != due:
        problems.append(f"drain counted {counts.as_dict()}")
    left = await pool.fetchval("SELECT count(*) FROM notify_task WHERE notify_status = 4")
    if left != held:
        problems.append(f"{left} held deliveries, want {held}")
    return {"rate": due / seconds, "check": "; ".join(problems) or "ok"}


async def main(args: argparse.Namespace) -> int:
    load1, _, _ = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load1:.2f}")
    with servers() as (admin_dsn, _):
        return 0 if await measure_held(admin_dsn, args.due, args.held) else 1


async def measure_held(admin_dsn: str, due: int, held_count: int) -> bool:
    """The comparison, printed; False when a delivery check failed."""
    helds = (0, held_count)
    async with (
        Receiver(0) as receiver,
        fresh_database(admin_dsn) as none_dsn,
        fresh_database(admin_dsn) as held_dsn,
    ):
        dsns = (none_dsn, held_dsn)
        await hold(held_dsn, held_count)
        pools = [await create_pool(dsn, 1, 40) for dsn in dsns]
        try:
            for dsn in dsns:
                await insert_tasks(dsn, due, receiver.url())
            # Claims and scrapes taken in turns, so the machine's load weighs on both alike.
            claim: list[list[float]] = [[], []]
            scrape: list[list[float]] = [[], []]
            metrics = [Metrics(), Metrics()]
            for _ in range(REPEAT):
                for i, pool in enumerate(pools):
                    claim[i].append(await _seconds(partial(_claim_and_release, pool)))
                    scrape[i].append(await _seconds(partial(metrics[i].scrape, pool)))
            drains = [
                await checked_drain(pool, receiver, due, held)
                for pool, held in zip(pools, helds, strict=True)
            ]
        finally:
            for pool in pools:
                await pool.close()
    columns = [("deliveries", -14), ("due", 7), ("callbacks/s", 12), ("claim ms", 9),
               ("scrape ms", 10), ("check", 0)]  # fmt: skip
    rows = [
        [f"{held:,} held", str(due), f"{d['rate']:,.0f}",
         f"{statistics.median(c) * 1000:.2f}", f"{statistics.median(m) * 1000:.2f}",
         str(d["check"])]
        for held, d, c, m in zip(helds, drains, claim, scrape, strict=True)
    ]  # fmt: skip
    print("\n".join(table(columns, rows)))
    pairs = {
        "claim time": [h / n for n, h in zip(claim[0], claim[1], strict=True)],
        "scrape time": [h / n for n, h in zip(scrape[0], scrape[1], strict=True)],
    }
    print(f"callbacks/s: held/none = {drains[1]['rate'] / drains[0]['rate']:.2f} (one drain each)")
    for name, ratios in pairs.items():
        print(f"{name}: held/none = {statistics.median(ratios):.2f} (median of {REPEAT} pairs)")
    failed = [str(d["check"]) for d in drains if d["check"] != "ok"]
    for problem in failed:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return not failed


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--due", type=int, default=10_000, help="due deliveries (default 10000)")
    parser.add_argument("--held", type=int, default=100_000, help="held ones (default 100000)")
    run_bench(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
