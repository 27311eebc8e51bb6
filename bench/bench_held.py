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

from groupbuy_async.callbacks import claims
from groupbuy_async.callbacks.metrics import Metrics
from groupbuy_async.db import create_pool
from groupbuy_async.dev.outbox_fill import fanned_out_teams
from groupbuy_async.merchants.secret_box import SecretBox

from .common import SECRET, SECRETS_KEY, fresh_database, run_bench, servers, table
from .notify_scenarios import bench_settings, check_delivery, insert_tasks, make_dispatcher
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


async def _median_seconds(step: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(REPEAT):
        began = time.perf_counter()
        await step()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def measure_one(
    admin_dsn: str, receiver: Receiver, due: int, held: int
) -> dict[str, float | str]:
    async with fresh_database(admin_dsn) as dsn:
        if held:
            await hold(dsn, held)
        await insert_tasks(dsn, due, receiver.url())
        await receiver.reset()
        settings = bench_settings(dsn, 200)
        pool = await create_pool(dsn, 1, settings.db_pool_max)
        try:
            metrics = Metrics()
            scrape = await _median_seconds(lambda: metrics.scrape(pool))

            async def claim_and_release() -> None:
                tasks = await claims.claim(pool, 500, timedelta(minutes=5), per_host=500)
                await claims.release(pool, tasks, None)

            claim = await _median_seconds(claim_and_release)
            dispatcher = make_dispatcher(pool, settings)
            try:
                began = time.perf_counter()
                counts = await dispatcher.drain()
                seconds = time.perf_counter() - began
            finally:
                await dispatcher.close(grace_seconds=1)
            problems = await check_delivery(receiver, due)
            if counts.success_count != due:
                problems.append(f"drain counted {counts.as_dict()}")
            left = await pool.fetchval("SELECT count(*) FROM notify_task WHERE notify_status = 4")
            if left != held:
                problems.append(f"{left} held deliveries, want {held}")
        finally:
            await pool.close()
    return {
        "held": held, "due": due, "rate": due / seconds, "claim_ms": claim * 1000,
        "scrape_ms": scrape * 1000, "check": "; ".join(problems) or "ok",
    }  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    load1, _, _ = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load1:.2f}")
    with servers() as (admin_dsn, _):
        async with Receiver(0) as receiver:
            runs = [
                await measure_one(admin_dsn, receiver, args.due, 0),
                await measure_one(admin_dsn, receiver, args.due, args.held),
            ]
    columns = [("deliveries", -14), ("due", 7), ("callbacks/s", 12), ("claim ms", 9),
               ("scrape ms", 10), ("check", 0)]  # fmt: skip
    rows = [
        [f"{r['held']:,} held", str(r["due"]), f"{r['rate']:,.0f}", f"{r['claim_ms']:.2f}",
         f"{r['scrape_ms']:.2f}", str(r["check"])]
        for r in runs
    ]  # fmt: skip
    print("\n".join(table(columns, rows)))
    none, held = runs
    for name, key in (
        ("callbacks/s", "rate"),
        ("claim time", "claim_ms"),
        ("scrape time", "scrape_ms"),
    ):
        print(f"{name}: held/none = {float(held[key]) / float(none[key]):.2f}")
    failed = [str(r["check"]) for r in runs if r["check"] != "ok"]
    for problem in failed:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if failed else 0


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--due", type=int, default=10_000, help="due deliveries (default 10000)")
    parser.add_argument("--held", type=int, default=100_000, help="held ones (default 100000)")
    run_bench(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
