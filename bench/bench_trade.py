"""Trade throughput: lock and settle through the real HTTP API, side by side with the same
transactions issued directly on an asyncpg pool (the ceiling without HTTP).

    python -m bench.bench_trade [--teams 2000] [--concurrency 64] [--pool-max 20]
                                [--api-processes 1,2] [--event-loop auto]

One run, all paths, each on a fresh database set up the same way (one activity: 100.00
goods, 20 off, teams of 3, takeLimitCount 1, a day to fill), each with its own users,
orders and teams:

1. HTTP, once per --api-processes count N (path http-Np): `python -m groupbuy_async api
   --processes N` as a separate process group (each API process its own pool of
   --pool-max), driven by one aiohttp ClientSession (connector limit = concurrency). Completed teams call back a receiver
   process (bench/receiver.py; or, with --notify self, the API's own mock merchant), so
   the settle phase carries the real callback work: claim, signed POST, record.
2. Direct: groupbuy_async.trade.locking.lock_order / settlement.settle_order on an asyncpg
   pool the size of the API's (GROUPBUY_DB_POOL_MIN/MAX defaults 2/20). Its settlements write
   the notify tasks in the same transaction but send nothing (no dispatcher): the ceiling is the
   SQL alone, so the HTTP settle phase also carries the callback claim, POST and record
   that the direct one does not.

Each path runs the same two phases at the same concurrency:

- lock: every worker takes the next team and does it whole: the opener's lock, then the
  two joins, one after another. Joins need the opener's teamId, so this keeps exactly
  `concurrency` requests in flight until the last teams, and mixes team openings
  (INSERT) with joins (conditional UPDATE) the way shoppers do, without piling the
  joins of one team onto the same row at the same instant.
- settle: all 3N orders in one shuffled order (same seed for both paths): payments
  arrive in no particular order, so members of a team sometimes settle concurrently
  and serialise on the team row, as they would in production.

Why a database per path, with autovacuum off on the trade tables: the plans of the team
statements depend on the statistics, so a path sharing the other's database, or hit by
an auto-ANALYZE at a random moment, would run other plans. This way both start from the
same state and run the same plans; --same-database shares one database as a
cross-check, --direct-first swaps the order. A checkpoint before each path gives both
the same full-page-write debt.

Per phase it also reports where the CPU went (this process and the receiver, the API
process, PostgreSQL, anything else on the machine): on a small machine every process
shares the same cores, and `other` shows when outside load spoiled a run.

Afterwards it checks in PostgreSQL that every team is complete (status 1, 3 of 3), every
order is paid, there is exactly one notify task per team, and (HTTP) that every callback
was delivered; any failed request or check fails the run (exit status 1). The API is
stopped and the databases dropped at the end, also on error.
"""

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import AsyncIterator

import aiohttp
import asyncpg

from groupbuy_async.db import create_pool

from .common import (
    Options,
    database_name,
    fresh_database,
    positive,
    run_bench,
    servers,
    shop_headers,
    table,
)
from .cpu import MACHINE, combined, machine, postgres, process_tree, processes, this_process
from .receiver import Receiver
from .trade_api import Delivery, api_process, await_callbacks
from .trade_paths import (
    CHANNEL,
    PHASE_COLUMNS,
    SOURCE,
    TARGET,
    DirectTrader,
    HttpTrader,
    PathRun,
    Phase,
    check_path,
    prepare,
    run_path,
)

CPU_COLUMNS = [
    ("CPU core-s", -15), ("bench", 7), ("api", 7), ("postgres", 8), ("other", 7),
    ("busy", 6), ("  per request ms:", -17), ("bench", 6), ("api", 6), ("pg", 6),
]  # fmt: skip


@contextlib.asynccontextmanager
async def checkpointed(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection for the checks, opened with a checkpoint so that each path starts
    with the same full-page-write debt."""
    conn = await asyncpg.connect(db_url)
    try:
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
        yield conn
    finally:
        await conn.close()


async def http_path(
    args: argparse.Namespace, db_url: str, redis_url: str, api_processes: int
) -> tuple[PathRun, Delivery]:
    label = f"http-{api_processes}p"
    async with (
        checkpointed(db_url) as check,
        Receiver(0) as merchant,
        api_process(
            db_url, redis_url, args.pool_min, args.pool_max, api_processes, args.event_loop
        ) as api,
    ):
        self_url = f"{api.base}/api/v1/test/group_buy_notify"
        notify_url = self_url if args.notify == "self" else merchant.url()
        cpu = {
            "bench": combined(this_process, processes(merchant.pid)),
            "api": process_tree(api.proc.pid),
            "postgres": postgres(database_name(db_url)),
            MACHINE: machine,
        }
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        timeout = aiohttp.ClientTimeout(total=60)
        headers = await shop_headers(db_url, SOURCE, CHANNEL, notify_url)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as session:
            trader = HttpTrader(session, api.base, label, f"h{api_processes % 10}")
            run = await run_path(trader, args.teams, args.concurrency, notify_url, cpu)
            run.problems += await check_path(check, run, args.teams)
            delivery = await await_callbacks(
                check, run.team_ids, session, api.base, args.callback_timeout
            )
        if delivery.delivered != args.teams:
            run.problems.append(f"{label}: {delivery.delivered}/{args.teams} callbacks delivered")
        seen = await merchant.count()
        if args.notify == "local" and seen["distinct"] != args.teams:
            run.problems.append(
                f"{label}: receiver saw {seen['distinct']} distinct callbacks"
                f" ({seen['requests']} posts), want {args.teams}"
            )
        if seen["duplicates"]:
            run.notes.append(
                f"receiver got {seen['duplicates']} repeated callbacks (at-least-once)"
            )
    # The API has stopped: its log is complete.
    log = api.log_lines()
    if bad := [line for line in log if "ERROR" in line or "Traceback" in line]:
        run.problems.append(f"{label}: API logged {len(bad)} error line(s), first: {bad[0]}")
    if warnings := [line for line in log if "WARNING" in line]:
        run.notes.append(f"API logged {len(warnings)} warning(s), first: {warnings[0]}")
    return run, delivery


async def direct_path(args: argparse.Namespace, db_url: str) -> PathRun:
    async with checkpointed(db_url) as check:
        pool = await create_pool(db_url, args.pool_min, args.pool_max)
        cpu = {"bench": this_process, "postgres": postgres(database_name(db_url)), MACHINE: machine}
        try:
            # Stored with each task but never called: nothing dispatches on this path. An
            # endpoint of the bench merchant there, so each event writes its delivery as on the
            # HTTP path.
            unused_url = "http://127.0.0.1:9/n"
            await shop_headers(db_url, SOURCE, CHANNEL, unused_url)
            run = await run_path(DirectTrader(pool), args.teams, args.concurrency, unused_url, cpu)
        finally:
            await pool.close()
        run.problems += await check_path(check, run, args.teams)
        return run


async def bench(args: argparse.Namespace) -> int:
    """The HTTP path once per --api-processes count, and the direct path, each on a fresh
    database (or all on one with --same-database)."""
    http: list[tuple[PathRun, Delivery]] = []
    with servers() as (admin_dsn, redis_url):
        async with contextlib.AsyncExitStack() as stack:
            paths: list[int | None] = [*args.api_processes, None]  # None: direct
            if args.direct_first:
                paths = [None, *args.api_processes]
            databases: dict[int | None, str] = {}
            for path in paths:
                if not databases or not args.same_database:
                    databases[path] = await stack.enter_async_context(fresh_database(admin_dsn))
                    pg_version = await prepare(databases[path])
                else:
                    databases[path] = next(iter(databases.values()))
            for path in paths:
                if path is None:
                    direct = await direct_path(args, databases[path])
                else:
                    http.append(await http_path(args, databases[path], redis_url, path))

    problems = [p for run, _ in http for p in run.problems] + direct.problems
    report(args, http, direct, pg_version, problems)
    return 1 if problems else 0


def cpu_lines(phases: list[Phase], notes: list[str]) -> list[str]:
    """Where the CPU went: which process saturates, and whether anything else was running."""
    rows = []
    for p in phases:
        c, per = p.section.cpu, 1000 / max(p.requests, 1)
        api = c.get("api", 0.0)
        rows.append([
            f"{p.path} {p.name}", f"{c['bench']:.2f}", f"{api:.2f}", f"{c['postgres']:.2f}",
            f"{p.section.other:.2f}", f"{c[MACHINE] / p.section.seconds:.2f}c", "",
            f"{c['bench'] * per:.2f}", f"{api * per:.2f}", f"{c['postgres'] * per:.2f}",
        ])  # fmt: skip
        if note := p.section.noise_note(f"{p.path} {p.name}"):
            notes.append(note)
    return [
        *table(CPU_COLUMNS, rows, rule=False),
        "(busy = cores in use machine-wide; bench = this process and the receiver process:",
        " HTTP client + callbacks, or the direct trades themselves; api = the API process;",
        " postgres = this run's backends + WAL/checkpoint/vacuum processes; other = the rest",
        " of the machine)",
    ]


def cpu_ratio(http: Phase, direct: Phase, with_client: bool) -> float:
    """http/direct in requests per core-second: what the throughput ratio would be with
    the cores to themselves. Without the client: as if the load came from elsewhere."""
    h, d = http.section.cpu, direct.section.cpu
    http_cost = (h["api"] + h["postgres"] + (h["bench"] if with_client else 0.0)) / http.requests
    direct_cost = (d["bench"] + d["postgres"]) / direct.requests
    return direct_cost / http_cost if http_cost else 0.0


def command_line() -> str:
    """The command with the server settings it ran against, to repeat the run."""
    names = ("BENCH_DATABASE_URL", "BENCH_REDIS_URL", "TEST_DATABASE_URL", "TEST_REDIS_URL")
    env = [
        f"GROUPBUY_{k}={shlex.quote(os.environ['GROUPBUY_' + k])}"
        for k in names
        if os.environ.get("GROUPBUY_" + k)
    ]
    return " ".join([*env, shlex.join(sys.orig_argv)])


AIM = 0.7  # settle over HTTP, as a share of the direct path's throughput


def _ratio(a: Phase, b: Phase) -> float:
    return a.rate / b.rate if b.rate else 0.0


def ratio_lines(http: list[tuple[PathRun, Delivery]], direct: PathRun) -> list[str]:
    lines = []
    for run, delivery in http:
        label = run.lock.path
        settle = _ratio(run.settle, direct.settle)
        aim = "met" if settle >= AIM else "NOT met"
        lines.append(
            f"{f'ratio {label}/direct, throughput:':<44} lock {_ratio(run.lock, direct.lock):.2f}"
            f"   settle {settle:.2f}   (aim settle >= {AIM:.2f}: {aim})"
        )
        for title, with_client in (
            ("  per core-second (less sensitive to noise):", True),
            ("  same, without the HTTP client's CPU:", False),
        ):
            lines.append(
                f"{title:<44} lock {cpu_ratio(run.lock, direct.lock, with_client):.2f}"
                f"   settle {cpu_ratio(run.settle, direct.settle, with_client):.2f}"
            )
        lines.append(
            f"  callbacks: {delivery.delivered}/{len(run.team_ids)} delivered, all done"
            f" {delivery.seconds:.2f}s after the last settlement"
            f" ({delivery.compensated} needed an explicit drain)"
        )
    return lines


def report(
    args: argparse.Namespace,
    http: list[tuple[PathRun, Delivery]],
    direct: PathRun,
    pg_version: str,
    problems: list[str],
) -> None:
    runs = [run for run, _ in http]
    phases = [*(r.lock for r in runs), direct.lock, *(r.settle for r in runs), direct.settle]
    notes = [note for run, delivery in http for note in (*delivery.notes, *run.notes)]
    target = "the API's mock merchant" if args.notify == "self" else "a receiver process"
    databases = "one shared" if args.same_database else "a fresh one per path"
    order = ", ".join([r.lock.path for r in runs] + ["direct"])
    if args.direct_first:
        order = ", ".join(["direct"] + [r.lock.path for r in runs])
    lines = [
        "",
        f"trade benchmark: {args.teams} teams of {TARGET} ({args.teams * TARGET} orders per path),"
        f" concurrency {args.concurrency}, DB pool {args.pool_min}..{args.pool_max} per process,"
        f" {os.cpu_count()} CPUs, PostgreSQL {pg_version}, Python {sys.version.split()[0]}",
        f"callbacks to {target}; databases: {databases} (autovacuum off); order: {order};"
        f" http-Np = N API processes; API event loop: {args.event_loop}",
        "",
        *table(PHASE_COLUMNS, [p.cells() for p in phases]),
        "",
        *cpu_lines(phases, notes),
        "",
        *ratio_lines(http, direct),
        "(direct = the SQL alone: its settlements write notify tasks but send no callbacks;"
        " http settle also claims, POSTs and records one callback per team)",
    ]
    checked = (
        f"per path {args.teams}/{args.teams} teams complete (status 1, 3/3),"
        f" {args.teams * TARGET} orders paid, {args.teams} notify tasks"
    )
    print("\n".join(lines + verdict(notes, problems, checked)))


def verdict(notes: list[str], problems: list[str], checked: str) -> list[str]:
    """A report's last lines: its notes, then what failed or what was checked, then the
    command to repeat the run."""
    lines = [f"note: {note}" for note in notes]
    if problems:
        lines += ["", *(f"FAILED: {problem}" for problem in problems)]
    else:
        lines.append(f"checks: OK — {checked}")
    return [*lines, "", f"command: {command_line()}"]


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError("distinct counts of 1 or more, e.g. 1,2")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = Options("bench.bench_trade", __doc__, pool=True)
    parser.add_argument("--teams", type=positive, default=2000, help="teams per path (2000)")
    parser.add_argument("--concurrency", type=positive, default=64, help="requests in flight (64)")
    parser.add_argument(
        "--notify",
        choices=("local", "self"),
        default="local",
        help="callback target: a receiver process, or the API's mock merchant",
    )
    parser.add_argument(
        "--direct-first", action="store_true", help="run the direct path before the HTTP one"
    )
    parser.add_argument(
        "--same-database",
        action="store_true",
        help="run both paths in one database (default: one fresh database each)",
    )
    parser.add_argument(
        "--callback-timeout", type=float, default=60, help="seconds to wait for callbacks (60)"
    )
    parser.add_argument(
        "--api-processes",
        type=_counts,
        default=[1, 2],
        help="run the HTTP path once per count of API processes, e.g. 1,2 (default) or 1",
    )
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="the API's event loop (GROUPBUY_API_EVENT_LOOP; auto = uvloop when installed)",
    )
    run_bench(bench(parser.parse(argv)))


if __name__ == "__main__":
    main()
