"""Worker scaling: `make bench-workers` / `python -m bench.bench_workers`.

A backlog of `--tasks` due notify tasks (default 10,000) for a receiver answering after
`--delay-ms` (default 50; bench/receiver.py, its own process) is drained by real
`python -m groupbuy_async worker` processes: first one, then two (`--workers 1,2`), each with
NOTIFY_CONCURRENCY = NOTIFY_PER_HOST = `--concurrency` (default 50). At 50 ms one worker is
bound by latency (at most concurrency / delay = 1,000 callbacks/s), not by CPU, so a second
worker should nearly double the rate: the aim is >= 1.8x.

Each run gets a fresh database. The backlog is inserted not yet due (then VACUUM ANALYZE,
CHECKPOINT), the workers are started and finish their start-up drains, then one UPDATE makes
the backlog due: the next cron tick (every second) starts every worker's drain at once. The
rate is tasks / (last attempt's end - first attempt's start), from notify_attempt, so start-up
and the wait for the tick do not count.

Checks, per run: every task in status 1 after exactly one attempt, the receiver saw each
webhook-id exactly once (N workers never send one task twice), and with several workers,
each delivered a share (from their `callback compensation` log lines). Exits 1 if a check
fails. Servers: as bench/common.py says (GROUPBUY_BENCH_*, GROUPBUY_TEST_*, else embedded).
"""

import argparse
import ast
import asyncio
import os
import sys
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg

from .common import (
    SECRETS_KEY,
    BenchFailure,
    Options,
    database_name,
    fresh_database,
    run_bench,
    servers,
    stop_process,
)
from .cpu import MACHINE, Section, machine, measure, postgres, processes
from .notify_scenarios import check_delivery, insert_tasks
from .receiver import Receiver


@dataclass
class Run:
    workers: int
    tasks: int
    seconds: float  # first attempt's start to last attempt's end
    shares: list[int]  # callbacks each worker delivered
    section: Section  # from making the backlog due to all delivered
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0

    def cpu_text(self) -> str:
        """Cores used while draining: each worker's, the receiver's, PostgreSQL's, all."""
        wall = self.section.seconds
        cores = {name: used / wall for name, used in self.section.cpu.items()}
        return (
            f"cores: {cores['workers'] / self.workers:.2f} per worker, receiver"
            f" {cores['receiver']:.2f}, postgres {cores['postgres']:.2f}, machine"
            f" {cores[MACHINE]:.2f} of {os.cpu_count()}"
        )


class WorkerProcess:
    """`python -m groupbuy_async worker`, its log read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def count(self, *texts: str) -> int:
        return sum(all(t in line for t in texts) for line in self.lines)

    def delivered(self) -> int:
        total = 0
        for line in self.lines:
            if "callback compensation: {" in line:
                counts: dict[str, Any] = ast.literal_eval(line[line.index("{") :])
                total += counts["successCount"]
        return total


def worker_env(dsn: str, redis_url: str, concurrency: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_")}
    return {
        **env,
        "GROUPBUY_DATABASE_URL": dsn,
        "GROUPBUY_REDIS_URL": redis_url,
        "GROUPBUY_QUEUE_NAME": f"bench:{uuid.uuid4().hex}",  # this run's workers only
        "GROUPBUY_NOTIFY_CONCURRENCY": str(concurrency),
        "GROUPBUY_NOTIFY_PER_HOST": str(concurrency),  # one receiver host
        "GROUPBUY_SECRETS_KEY": SECRETS_KEY,
        "GROUPBUY_NOTIFY_BLOCK_PRIVATE": "false",  # the receiver is local
        "GROUPBUY_NOTIFY_CRON_SECONDS": "1",
        "GROUPBUY_DB_POOL_MAX": "10",  # the PostgreSQL server may be shared
    }


async def start_workers(n: int, env: dict[str, str], workers: list[WorkerProcess]) -> None:
    """Start `n` workers into `workers` (the caller stops them, whatever happens)."""
    for _ in range(n):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "groupbuy_async", "worker", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        workers.append(WorkerProcess(proc))
    # Each one's start-up drain and first tick done (nothing due yet): from now on their
    # ticks come at the same times (the first may come early, enqueued late after start-up).
    async with asyncio.timeout(60):
        while not all(w.count("cron:deliver_callbacks", "●") >= 2 for w in workers):
            if any(w.proc.returncode is not None for w in workers):
                raise BenchFailure("a worker exited at start:\n" + "\n".join(workers[0].lines))
            await asyncio.sleep(0.05)


async def stop_workers(workers: list[WorkerProcess]) -> list[str]:
    problems = []
    for w in workers:
        await stop_process(w.proc)
        await w.reader
        if w.proc.returncode != 0:
            tail = "\n    ".join(w.lines[-12:])
            problems.append(f"worker {w.proc.pid} exited with {w.proc.returncode}:\n    {tail}")
        if w.count("Traceback"):
            problems.append(f"worker {w.proc.pid} logged a traceback")
    return problems


async def drained(pool: asyncpg.Pool, tasks: int, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            while True:
                done = await pool.fetchval(
                    "SELECT count(*) FROM notify_task WHERE notify_status = 1"
                )
                if done >= tasks:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise BenchFailure(f"the backlog was not drained within {seconds:.0f} s") from None


async def check_attempts(pool: asyncpg.Pool, tasks: int) -> list[str]:
    row = await pool.fetchrow(
        "SELECT count(*) AS attempts, count(DISTINCT task_id) AS tasks FROM notify_attempt"
    )
    counts = await pool.fetchval("SELECT array_agg(DISTINCT notify_count) FROM notify_task")
    if row is None or row["attempts"] != tasks or row["tasks"] != tasks or counts != [1]:
        return [f"notify_attempt {dict(row or {})}, notify_count values {counts}: expected"
                f" {tasks} tasks with one attempt each"]  # fmt: skip
    return []


async def run(
    admin_dsn: str, redis_url: str, receiver: Receiver, workers: int, args: argparse.Namespace
) -> Run:
    await receiver.reset()
    async with fresh_database(admin_dsn) as dsn:
        # Due in an hour: nothing drains before both workers are up (ticks aligned).
        await insert_tasks(dsn, args.tasks, receiver.url(), due_in=timedelta(hours=1))
        procs: list[WorkerProcess] = []
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        assert pool is not None
        try:
            await start_workers(workers, worker_env(dsn, redis_url, args.concurrency), procs)
            sources = {
                "workers": processes(*(w.proc.pid for w in procs)),
                "receiver": processes(receiver.pid),
                "postgres": postgres(database_name(dsn)),
                MACHINE: machine,
            }
            with measure(sources) as section:
                await pool.execute("UPDATE notify_task SET next_attempt_at = now()")
                await drained(pool, args.tasks, seconds=max(60.0, args.tasks / 50))
            problems = await stop_workers(procs)
            span = await pool.fetchval(
                "SELECT extract(epoch FROM max(started_at + duration_ms * interval '1 ms')"
                " - min(started_at)) FROM notify_attempt"
            )
            problems += await check_delivery(receiver, args.tasks, pool)
            problems += await check_attempts(pool, args.tasks)
        finally:
            await pool.close()
            for w in procs:
                await stop_process(w.proc)
    shares = [w.delivered() for w in procs]
    if workers > 1 and not all(shares):
        problems.append(f"a worker delivered nothing: shares {shares}")
    return Run(workers, args.tasks, float(span), shares, section, problems)


def show(r: Run) -> None:
    shares = " + ".join(f"{s:,}" for s in r.shares)
    print(
        f"  {r.workers} worker{'s' if r.workers > 1 else ' '}: {r.rate:7,.0f} callbacks/s"
        f" ({r.tasks:,} in {r.seconds:.2f}s; delivered {shares})  {r.cpu_text()}"
        f"  {'ok' if not r.problems else 'FAILED'}",
        flush=True,
    )


async def bench(args: argparse.Namespace) -> int:
    counts = [int(n) for n in args.workers.split(",")]
    with servers() as (admin_dsn, redis_url):
        async with Receiver(args.delay_ms) as receiver:
            load1, _, _ = os.getloadavg()
            print(
                f"bench-workers: {args.tasks:,} due tasks, receiver at {args.delay_ms} ms, "
                f"NOTIFY_CONCURRENCY = NOTIFY_PER_HOST = {args.concurrency} per worker, "
                f"workers {args.workers}, best of {args.repeat}; {os.cpu_count()} cores, "
                f"load average {load1:.2f}",
                flush=True,
            )
            best: dict[int, Run] = {}
            problems: list[str] = []
            for _ in range(args.repeat):
                for n in counts:  # alternately, so drift on the machine hits each alike
                    r = await run(admin_dsn, redis_url, receiver, n, args)
                    show(r)
                    problems += [f"{n} workers: {p}" for p in r.problems]
                    if n not in best or r.rate > best[n].rate:
                        best[n] = r
    base = best[counts[0]]
    print()
    for n in counts:
        print(
            f"{n} worker(s): {best[n].rate:7,.0f}/s  ({best[n].rate / base.rate:.2f}x {counts[0]})"
        )
    if 1 in best and 2 in best:
        ratio = best[2].rate / best[1].rate
        print(f"aim: 2 workers >= 1.8x 1 worker: {ratio:.2f}x -> {'met' if ratio >= 1.8 else 'NOT met'}")  # fmt: skip
    for p in problems:
        print(f"CHECK FAILED {p}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> None:
    p = Options("bench.bench_workers", __doc__)
    p.add_argument("--tasks", type=int, default=10_000, help="due tasks per run")
    p.add_argument("--delay-ms", type=int, default=50, help="the receiver's delay")
    p.add_argument("--concurrency", type=int, default=50, help="per worker: sends in flight")
    p.add_argument("--workers", default="1,2", help="worker counts to compare, the first the base")
    p.add_argument("--repeat", type=int, default=2, help="runs per worker count; best reported")
    run_bench(bench(p.parse(argv)))


if __name__ == "__main__":
    main()
