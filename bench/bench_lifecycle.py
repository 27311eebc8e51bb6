"""Lifecycle throughput: the worker closing unpaid locks past their timeout, and refunds over
the real HTTP API side by side with the same transactions issued directly on an asyncpg pool.

    python -m bench.bench_lifecycle [--locks 100000] [--workers 1] [--refunds 10000]
                                    [--concurrency 64] [--pool-max 20]

1. Close: --locks unpaid locks (teams of 3, none paid) whose payment deadline has passed, in
   a fresh database. The worker's cron function (groupbuy_async.trade.expiry
   .close_unpaid_orders: 1,000 locks per transaction, each closed, its team's slot freed and
   its order.closed event written) runs in --workers child processes started at once, each
   loading what the worker loads, until nothing is due. Reported: rows closed per second
   (wall time of the slowest child) and each child's peak RSS. The original closed 10 a minute.
2. Refund: --refunds orders (teams of 2: half complete, both members paid, so two paid_team
   refunds; half forming with one paid and one locked member, a paid and an unpaid refund),
   refunded in one shuffled order (same seed for both paths) by --concurrency workers:
   over HTTP against `python -m groupbuy_async api` as a separate process, and directly with
   groupbuy_async.trade.refunds.refund_order on a pool the API's size. A fresh database per
   path, autovacuum off on the trade tables, a checkpoint before each.

Afterwards it checks in PostgreSQL that every lock is closed (every team's slots free, one
order.closed each) and every refund did what its type says (orders, team counts and status,
one event each), and that every answer had the expected refundType; any failure fails the run
(exit status 1).
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from groupbuy_async.db import create_pool
from groupbuy_async.trade import expiry, refunds
from groupbuy_async.trade.expiry import CLOSE_PARALLEL
from groupbuy_async.trade.models import RefundCommand

from . import lifecycle_data as data
from .bench_trade import cpu_lines, verdict
from .common import (
    BenchFailure,
    Options,
    command,
    database_name,
    fresh_database,
    positive,
    run_bench,
    servers,
    shop_headers,
    table,
    timed,
)
from .cpu import MACHINE, Source, machine, measure, postgres, processes, this_process
from .lifecycle_ceiling import close_in_sql
from .trade_api import ApiClient, api_process
from .trade_paths import PHASE_COLUMNS, Phase, drive

REFUND_PATH = "/api/v1/gbm/trade/refund_market_pay_order"
SHUFFLE_SEED = 20261127


@dataclass
class CloseRun:
    locks: int
    workers: int
    seconds: float
    children: list[dict[str, Any]]
    cpu: dict[str, float]
    problems: list[str] = field(default_factory=list)
    ceiling: float = 0.0  # rows/s of the one-statement close on the same locks (best round)
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (ours, ceiling) rows/s

    @property
    def rate(self) -> float:
        return self.locks / self.seconds if self.seconds else 0.0


@contextlib.asynccontextmanager
async def connected(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


async def close_part(admin_dsn: str, locks: int, workers: int) -> tuple[CloseRun, str]:
    async with fresh_database(admin_dsn) as db_url, connected(db_url) as conn:
        version = await data.setup(conn)
        await data.insert_due_locks(conn, locks)
        # Through `sh`, so each child is forked from a small process: Linux carries a
        # process's ru_maxrss across fork+exec (see notify_rss.py).
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-m", "bench.lifecycle_rss"]
        cpu: dict[str, Source] = {MACHINE: machine}
        with measure(cpu) as section:
            children = [
                await asyncio.create_subprocess_exec(*cmd, db_url, stdout=asyncio.subprocess.PIPE)
                for _ in range(workers)
            ]
            outputs = await asyncio.gather(*(child.communicate() for child in children))
        if any(child.returncode != 0 for child in children):
            raise BenchFailure(f"a close child failed: {[c.returncode for c in children]}")
        reports = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
        run = CloseRun(
            locks, workers, max(r["seconds"] for r in reports), reports, section.cpu,
            await data.check_closed(conn, locks),
        )  # fmt: skip
        if sum(r["closed"] for r in reports) != locks:
            run.problems.append(f"close: children report {[r['closed'] for r in reports]} closed")
        run.cpu["wall"] = section.seconds
        return run, version


async def ceiling_part(admin_dsn: str, locks: int) -> tuple[float, list[str]]:
    """The same locks closed by the one-statement ceiling (lifecycle_ceiling): rows/s."""
    async with fresh_database(admin_dsn) as db_url, connected(db_url) as conn:
        await data.setup(conn)
        await data.insert_due_locks(conn, locks)
        closed, seconds = await close_in_sql(db_url, expiry.CLOSE_BATCH, expiry.CLOSE_PARALLEL)
        problems = [f"ceiling: {p}" for p in await data.check_closed(conn, locks)]
        if closed != locks:
            problems.append(f"ceiling: {closed} closed, want {locks}")
        return locks / seconds, problems


class HttpRefunder(ApiClient):
    path = "http"

    async def refund(self, body: dict[str, str]) -> str:
        return (await self.post(REFUND_PATH, body))["refundType"]  # type: ignore[no-any-return]


class DirectRefunder:
    path = "direct"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def refund(self, body: dict[str, str]) -> str:
        return (await refunds.refund_order(self.pool, command(RefundCommand, body))).refund_type

    async def warm_up(self, concurrency: int) -> None:
        for _ in range(3):
            await asyncio.gather(*(self.pool.fetchval("SELECT 1") for _ in range(concurrency)))


async def refund_all(
    refunder: HttpRefunder | DirectRefunder, count: int, concurrency: int, cpu: dict[str, Source]
) -> tuple[Phase, list[str]]:
    work = data.refund_bodies(count)
    random.Random(SHUFFLE_SEED).shuffle(work)
    phase, problems = Phase(refunder.path, "refund"), []
    await refunder.warm_up(concurrency)

    async def one(item: tuple[dict[str, str], str]) -> None:
        body, expected = item
        answered = await timed(phase.latencies_ms, refunder.refund(body))
        if answered != expected:
            problems.append(f"{refunder.path}: {body['outTradeNo']} answered {answered}")

    with measure(cpu) as phase.section:
        await drive(work, concurrency, one)
    return phase, problems[:5]


async def refund_part(
    args: argparse.Namespace, admin_dsn: str, redis_url: str, path: str
) -> tuple[Phase, list[str]]:
    async with fresh_database(admin_dsn) as db_url, connected(db_url) as conn:
        await data.setup(conn)
        await data.insert_refundable(conn, args.refunds)
        pg = postgres(database_name(db_url))
        if path == "http":
            async with api_process(db_url, redis_url, args.pool_min, args.pool_max) as api:
                connector = aiohttp.TCPConnector(limit=args.concurrency)
                timeout = aiohttp.ClientTimeout(total=60)
                headers = await shop_headers(db_url, data.SOURCE, data.CHANNEL)
                async with aiohttp.ClientSession(
                    connector=connector, timeout=timeout, headers=headers
                ) as session:
                    cpu = {"bench": this_process, "api": processes(api.proc.pid),
                           "postgres": pg, MACHINE: machine}  # fmt: skip
                    phase, problems = await refund_all(
                        HttpRefunder(session, api.base), args.refunds, args.concurrency, cpu
                    )
            if bad := [line for line in api.log_lines() if "ERROR" in line]:
                problems.append(f"http: API logged {len(bad)} error line(s), first: {bad[0]}")
        else:
            pool = await create_pool(db_url, args.pool_min, args.pool_max)
            try:
                cpu = {"bench": this_process, "postgres": pg, MACHINE: machine}
                phase, problems = await refund_all(
                    DirectRefunder(pool), args.refunds, args.concurrency, cpu
                )
            finally:
                await pool.close()
        problems += await data.check_refunded(conn, args.refunds, path)
        return phase, problems


async def bench(args: argparse.Namespace) -> int:
    with servers() as (admin_dsn, redis_url):
        # Rounds in the order A B B A ...: ours and the ceiling alternate which goes first, so
        # a slow spell of the machine does not fall on one side; the best of each is reported.
        runs: list[CloseRun] = []
        ceilings: list[float] = []
        problems: list[str] = []
        for round_ in range(args.rounds):
            for part in ("ours", "ceiling") if round_ % 2 == 0 else ("ceiling", "ours"):
                if part == "ours":
                    run, version = await close_part(admin_dsn, args.locks, args.workers)
                    runs.append(run)
                    problems += run.problems
                else:
                    rate, found = await ceiling_part(admin_dsn, args.locks)
                    ceilings.append(rate)
                    problems += found
        close = max(runs, key=lambda r: r.rate)
        close.ceiling = max(ceilings)
        close.rounds = [(r.rate, c) for r, c in zip(runs, ceilings, strict=True)]
        phases: list[Phase] = []
        for path in ("http", "direct"):
            phase, found = await refund_part(args, admin_dsn, redis_url, path)
            phases.append(phase)
            problems += found
    report(args, close, phases, version, problems)
    return 1 if problems else 0


def report(
    args: argparse.Namespace,
    close: CloseRun,
    phases: list[Phase],
    version: str,
    problems: list[str],
) -> None:
    http, direct = phases
    ratio = http.rate / direct.rate if direct.rate else 0.0
    aim = "met" if close.rate >= 17_000 else "NOT met"
    of_ceiling = close.rate / close.ceiling if close.ceiling else 0.0
    peak = max(c["vm_hwm_kb"] for c in close.children) / 1024
    before = max(c["rss_before_kb"] for c in close.children) / 1024
    worker_us = sum(c["worker_cpu_s"] for c in close.children) / args.locks * 1e6
    pg_us = sum(c["postgres_cpu_s"] for c in close.children) / args.locks * 1e6
    wall = close.cpu["wall"]
    busy = close.cpu[MACHINE] / wall
    ours = (worker_us + pg_us) * args.locks / 1e6 / wall
    notes: list[str] = []
    if busy - ours > 0.1 * (os.cpu_count() or 1):
        notes.append(
            f"close: other processes used {busy - ours:.2f} cores — the machine was not quiet,"
            " rows/s is low; rows per core-second is what it would do per free core"
        )
    lines = [
        "",
        f"lifecycle benchmark: {os.cpu_count()} CPUs, PostgreSQL {version},"
        f" Python {sys.version.split()[0]}; a fresh database per part (autovacuum off)",
        "",
        f"close (worker cron): {args.locks} unpaid locks past their timeout (teams of 3),"
        f" {args.workers} worker process(es), 1,000 per transaction",
        f"  closed {args.locks} in {close.seconds:.2f}s: {close.rate:,.0f} rows/s, best of"
        f" {len(close.rounds)}   (aim >= 17,000 rows/s: {aim}; the original: 10 a minute)",
        f"  ceiling (one SQL statement a batch on a bare connection, bodies by json_build_object,"
        f" {CLOSE_PARALLEL} connections): {close.ceiling:,.0f} rows/s, best of {len(close.rounds)};"
        f" ours/ceiling = {of_ceiling:.2f} (aim >= 0.9: {'met' if of_ceiling >= 0.9 else 'NOT met'})",
        "  rounds (ours vs ceiling, rows/s, A B B A): "
        + ", ".join(
            f"{ours:,.0f} vs {ceiling:,.0f} ({ours / ceiling:.2f})"
            for ours, ceiling in close.rounds
        ),
        f"  peak worker RSS {peak:.1f} MiB (VmHWM; {before:.1f} MiB before the first batch)",
        f"  CPU per row: worker {worker_us:.1f} us, PostgreSQL backends {pg_us:.1f} us"
        f" ({1e6 / (worker_us + pg_us):,.0f} rows per core-second)",
        f"  cores in use: this close {ours:.2f}, the whole machine {busy:.2f}",
        "",
        f"refund: {args.refunds} orders (half paid_team, a quarter paid, a quarter unpaid),"
        f" concurrency {args.concurrency}, DB pool {args.pool_min}..{args.pool_max}",
        *table(PHASE_COLUMNS, [p.cells() for p in phases]),
        "",
        *cpu_lines(phases, notes),
        "",
        f"ratio http/direct, refund throughput: {ratio:.2f}",
    ]
    checked = (
        f"{args.locks} locks closed (slots freed, one order.closed each); per path"
        f" {args.refunds} refunds answered and applied as their type says, one event each"
    )
    print("\n".join(lines + verdict(notes, problems, checked)))


def main(argv: list[str] | None = None) -> None:
    parser = Options("bench.bench_lifecycle", __doc__, pool=True)
    parser.add_argument(
        "--locks", type=positive, default=100_000, help="due locks to close (100000)"
    )
    parser.add_argument("--workers", type=positive, default=1, help="worker processes closing (1)")
    parser.add_argument(
        "--rounds", type=positive, default=2, help="close and ceiling runs each, alternating (2)"
    )
    parser.add_argument("--refunds", type=int, default=10_000, help="orders to refund (10000)")
    parser.add_argument("--concurrency", type=positive, default=64, help="refunds in flight (64)")
    args = parser.parse(argv)
    if args.refunds < 4:
        parser.error("need --refunds >= 4")
    args.refunds -= args.refunds % 4  # whole teams of each kind
    run_bench(bench(args))


if __name__ == "__main__":
    main()
