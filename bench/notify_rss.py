"""Peak RSS of a worker draining a backlog, measured in a child process of its own.

    python -m bench.notify_rss DSN --concurrency N    (the child; bench_notify runs it)

The child drains every due task in DSN as the worker would and prints one JSON line.
"""

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass

from groupbuy_async.db import create_pool

from .common import BenchFailure, fresh_database, log_warnings
from .notify_scenarios import bench_settings, check_delivery, insert_tasks, make_dispatcher
from .receiver import Receiver


@dataclass
class RssRun:
    tasks: int
    seconds: float
    before_kb: int  # RSS once set up, before the drain
    ru_maxrss_kb: int
    vm_hwm_kb: int
    problems: list[str]


def memory_kb() -> dict[str, int]:
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                status[key] = int(value.split()[0])
    return {
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vm_hwm_kb": status.get("VmHWM", 0),
        "vm_rss_kb": status.get("VmRSS", 0),
    }


async def drain_all(dsn: str, bound: int) -> None:
    """The child's work: drain, then report the drain's time and memory as JSON."""
    settings = bench_settings(dsn, bound)
    pool = await create_pool(dsn, 1, settings.db_pool_max)
    dispatcher = make_dispatcher(pool, settings)
    before = memory_kb()
    began = time.perf_counter()
    counts = await dispatcher.drain()
    seconds = time.perf_counter() - began
    after = memory_kb()
    await dispatcher.close(grace_seconds=1)
    await pool.close()
    print(json.dumps({
        "counts": counts.as_dict(), "seconds": seconds,
        "rss_before_drain_kb": before["vm_rss_kb"], **after,
    }))  # fmt: skip


async def run_rss(admin_dsn: str, receiver: Receiver, count: int, bound: int) -> RssRun:
    async with fresh_database(admin_dsn) as dsn:
        await insert_tasks(dsn, count, receiver.url())
        await receiver.reset()
        # Through `sh` so the child is forked from a small process: Linux carries a process's
        # ru_maxrss across fork+exec, so a child spawned straight from this (larger) process
        # would report at least this process's peak.
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", '"$@"; exit $?', "sh",
            sys.executable, "-m", "bench.notify_rss", dsn, "--concurrency", str(bound),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise BenchFailure(f"rss child failed ({proc.returncode})")
        got = json.loads(out.decode().strip().splitlines()[-1])
        pool = await create_pool(dsn, 1, 2)
        try:
            problems = await check_delivery(receiver, count, pool)
        finally:
            await pool.close()
    return RssRun(
        count, got["seconds"], got["rss_before_drain_kb"], got["ru_maxrss_kb"],
        got["vm_hwm_kb"], problems,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dsn")
    parser.add_argument("--concurrency", type=int, required=True, help="the bound")
    args = parser.parse_args()
    log_warnings()
    asyncio.run(drain_all(args.dsn, args.concurrency))


if __name__ == "__main__":
    main()
