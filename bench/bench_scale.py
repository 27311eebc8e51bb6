"""At 10 million rows (issue 16): `make bench-scale` / `python -m bench.bench_scale`.

Two fresh databases, migrated alike, with the same catalog, merchant and endpoints: one
empty, one filled set-based (bench/scale_fill.py) with --orders orders (10,000,000) in 3/10
as many teams and as many events, each with a delivery (most delivered, 0.5 % retrying in an
hour, 1 % in error). Then each figure on both, in one run, the empty database first:

- lock and settle p50/p99 over HTTP (a real API process, --concurrency 64, --teams teams of
  3: bench/trade_paths.py, twice, in turns), settlements calling a receiver back (the
  immediate claim);
- an order pull (queries.get_order) of those orders, median;
- a /metrics scrape (Metrics.scrape) and an event-feed page of 100 near the head, medians;
- a drain of --due due callbacks to the receiver (Dispatcher.drain, bench/notify_scenarios);
- retention: --backlog delivered events past the retention pruned (retention.prune) while
  lock and settle run again; their latency during the prune against the run without;
- the close cron (expiry.close_unpaid_orders) on --close due locks.

One table: figure, empty, big, ratio big/empty, aim <= 1.25 met or NOT met; then EXPLAIN
(ANALYZE, BUFFERS) of each hot path's statements on the big database (bench/scale_explain.py),
a Seq Scan on a big table flagged, and the plans. Databases dropped at the end, also on error.
"""

import argparse
import asyncio
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg

from groupbuy_async.callbacks import feed, retention
from groupbuy_async.callbacks.metrics import Metrics
from groupbuy_async.db import create_pool
from groupbuy_async.dev.databases import temporary_database
from groupbuy_async.dev.outbox_fill import fanned_out_teams
from groupbuy_async.merchants import endpoints
from groupbuy_async.merchants.secret_box import SecretBox
from groupbuy_async.trade import expiry, queries

from . import common
from .bench_held import checked_drain
from .bench_trade import command_line
from .notify_scenarios import insert_tasks
from .receiver import Receiver
from .scale_explain import explain_hot_paths, plan_lines
from .scale_fill import MERCHANT, big_fill, fill_base, fill_trades
from .trade_api import api_process, await_callbacks
from .trade_paths import (
    CHANNEL,
    SOURCE,
    TARGET,
    HttpTrader,
    PathRun,
    check_path,
    prepare,
    run_path,
    settle_body,
)

AIM = 1.25
HISTORY_URL = "http://127.0.0.1:9/history"  # the history's endpoint: never called
OLD_URL = "http://127.0.0.1:9/old"
RETENTION_DAYS = 30
REPEAT = 15
ROUNDS = 2  # lock/settle runs per database
HEADERS: dict[str, dict[str, str]] = {}  # by database: a key of the merchant's

# An attempt of each delivery of the backlog: the prune removes them first.
_ATTEMPTS = """
INSERT INTO notify_attempt (task_id, attempt, started_at, duration_ms, http_status)
SELECT id, 1, update_time, 5, 200 FROM notify_task WHERE team_id = ANY($1::text[])
"""


class Figures:
    """Per figure, its value on each side (lower is better, all of them)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def put(self, name: str, side: str, value: float) -> None:
        self.rows.setdefault(name, {})[side] = value

    def lines(self, big_label: str) -> list[str]:
        out = []
        for name, v in self.rows.items():
            ratio = v["big"] / v["empty"] if v.get("empty") else math.inf
            aim = "met" if ratio <= AIM else "NOT met"
            out.append([name, f"{v['empty']:.2f}", f"{v['big']:.2f}", f"{ratio:.2f}", aim])
        columns = [("figure", -34), ("empty", 9), (big_label, 10), ("ratio", 6), (f"<={AIM}", -8)]
        return common.table(columns, out)

    def during_prune(self) -> list[str]:
        """Trades while the prune runs against the same trades without it, per database:
        what the prune costs them (on a 2-core machine, mostly its CPU and I/O)."""
        out = []
        for side in ("empty", "big"):
            cells = [
                f"{name} {self.rows[f'{name} ms (prune)'][side] / self.rows[f'{name} ms'][side]:.2f}"
                for name in ("lock p50", "lock p99", "settle p50", "settle p99")
            ]
            out.append(f"{side}: during the prune / without: " + ", ".join(cells))
        return out


async def setup(dsn: str, receiver_url: str) -> tuple[int, dict[str, str]]:
    """The trade bench's catalog and merchant (its endpoint at the receiver), the history's
    endpoint and the fill's activities; returns the history endpoint's id and the headers
    of a key of the merchant."""
    await prepare(dsn)
    headers = await common.shop_headers(dsn, SOURCE, CHANNEL, receiver_url)
    pool = await create_pool(dsn, 1, 2)
    try:
        spec = endpoints.EndpointSpec(HISTORY_URL, secret=common.SECRET)
        await endpoints.put_endpoint(
            pool, SecretBox(common.SECRETS_KEY), MERCHANT, "history", spec, False
        )
        await fill_base(pool)
        found: int = await pool.fetchval("SELECT id FROM endpoint WHERE url = $1", HISTORY_URL)
        return found, headers
    finally:
        await pool.close()


async def trades(
    dsn: str, redis_url: str, receiver: Receiver, prefix: str, args: argparse.Namespace
) -> PathRun:
    """Lock and settle --teams teams over HTTP, checked, every callback delivered."""
    headers = HEADERS[dsn]
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with (
        api_process(dsn, redis_url, 2, 20) as api,
        aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60), headers=headers
        ) as session,
    ):
        trader = HttpTrader(session, api.base, prefix, prefix)
        run = await run_path(trader, args.teams, args.concurrency, receiver.url(), {})
        conn = await asyncpg.connect(dsn)
        try:
            run.problems += await check_path(conn, run, args.teams)
            done = await await_callbacks(conn, run.team_ids, session, api.base, 60)
        finally:
            await conn.close()
    if done.delivered != args.teams:
        run.problems.append(f"{prefix}: {done.delivered}/{args.teams} callbacks delivered")
    return run


def put_trades(figures: Figures, side: str, runs: list[PathRun], suffix: str = "") -> None:
    """Lock and settle p50 and p99 over all of the runs' requests."""
    for phase in ("lock", "settle"):
        ms = [v for run in runs for v in getattr(run, phase).latencies_ms]
        for pct in (50, 99):
            figures.put(f"{phase} p{pct} ms{suffix}", side, common.percentile(ms, pct))


async def medians(
    figures: Figures, pools: Mapping[str, asyncpg.Pool], name: str,
    step: Callable[[str, asyncpg.Pool], Awaitable[Any]], repeat: int = REPEAT,
) -> None:  # fmt: skip
    """Median ms of `step` on each side, taken in turns so the machine's load weighs alike."""
    samples: dict[str, list[float]] = {side: [] for side in pools}
    for _ in range(repeat):
        for side, pool in pools.items():
            await common.timed(samples[side], step(side, pool))
    for side, ms in samples.items():
        figures.put(name, side, statistics.median(ms))


async def seconds(step: Awaitable[Any]) -> float:
    began = time.perf_counter()
    await step
    return time.perf_counter() - began


async def old_backlog(dsn: str, count: int) -> None:
    """`count` events written and delivered RETENTION_DAYS + 10 days ago, with their
    attempts: what the prune removes."""
    pool = await create_pool(dsn, 1, 2, command_timeout=600)
    try:
        box, ago = SecretBox(common.SECRETS_KEY), timedelta(days=RETENTION_DAYS + 10)
        team_ids = await fanned_out_teams(
            pool, box, count, [OLD_URL], common.SECRET, delivered_ago=ago
        )
        await pool.execute(_ATTEMPTS, team_ids)
        await pool.execute("VACUUM ANALYZE event, notify_task, notify_attempt")
    finally:
        await pool.close()


async def due_locks(dsn: str, count: int, prefix: str, first_order: int) -> None:
    """`count` locks a minute past their payment deadline, in forming teams of 3."""
    conn = await asyncpg.connect(dsn, command_timeout=600)
    try:
        teams = math.ceil(count / TARGET)
        mix = (100, 100, 100)  # every team forming
        await fill_trades(conn, prefix, teams, count, mix, timedelta(minutes=-1), first_order)
        await conn.execute("VACUUM ANALYZE group_buy_order, group_buy_order_list")
    finally:
        await conn.close()


async def close_cron(pool: asyncpg.Pool, count: int) -> float:
    began = time.perf_counter()
    closed = await expiry.close_unpaid_orders(pool)
    took = time.perf_counter() - began
    if closed != count:
        raise common.BenchFailure(f"the close cron closed {closed} locks, want {count}")
    return took


async def measure(
    args: argparse.Namespace, dsns: dict[str, str], redis_url: str, receiver: Receiver
) -> tuple[Figures, list[str]]:
    figures, problems = Figures(), []
    runs: dict[str, list[PathRun]] = {side: [] for side in dsns}
    for round_ in range(ROUNDS):  # in turns, so that the machine's load weighs on both alike
        for side, dsn in dsns.items():
            runs[side].append(await trades(dsn, redis_url, receiver, f"m{round_}", args))
    for side, done in runs.items():
        put_trades(figures, side, done)
        problems += [p for run in done for p in run.problems]
    pools = {side: await create_pool(dsn, 2, 40, command_timeout=600) for side, dsn in dsns.items()}
    try:
        orders = [settle_body("m0", t, m) for t in range(args.teams) for m in range(TARGET)]
        pulls = {side: iter(orders) for side in pools}
        await medians(figures, pools, "order pull ms",
                      lambda side, pool: _pull(pool, next(pulls[side])), len(orders))  # fmt: skip
        for dsn in dsns.values():
            await insert_tasks(dsn, args.due, receiver.url())
        await medians(figures, pools, "/metrics scrape ms", lambda _, pool: Metrics().scrape(pool))
        heads = {side: await _head(pool) for side, pool in pools.items()}
        await medians(figures, pools, "event feed page of 100 ms",
                      lambda side, pool: feed.list_events(pool, heads[side], limit=100))  # fmt: skip
        for side, pool in pools.items():
            drained = await checked_drain(pool, receiver, args.due, 0)
            figures.put(f"drain {args.due:,} due s", side, args.due / drained["rate"])
            if drained["check"] != "ok":
                problems.append(f"{side} drain: {drained['check']}")
        for side, dsn in dsns.items():
            await old_backlog(dsn, args.backlog)
            run, pruned_s = await asyncio.gather(
                trades(dsn, redis_url, receiver, "r0", args),
                seconds(retention.prune(pools[side], RETENTION_DAYS, retention.Pruned(),
                                        seconds=3600)),
            )  # fmt: skip
            figures.put(f"prune {args.backlog:,} old events s", side, pruned_s)
            put_trades(figures, side, [run], " (prune)")
            problems += run.problems
        for side, dsn in dsns.items():
            await due_locks(dsn, args.close, "c", 300_000_000_000)
            figures.put(
                f"close cron {args.close:,} due s", side, await close_cron(pools[side], args.close)
            )
    finally:
        for pool in pools.values():
            await pool.close()
    return figures, problems


async def _pull(pool: asyncpg.Pool, order: dict[str, Any]) -> None:
    await queries.get_order(pool, SOURCE, CHANNEL, order["outTradeNo"], order["userId"])


async def _head(pool: asyncpg.Pool) -> feed.FeedPosition:
    """A reader 1000 events behind the head (at the start when there are fewer)."""
    event_id = await pool.fetchval(
        "SELECT event_id FROM event ORDER BY id DESC OFFSET 1000 LIMIT 1"
    )
    position = None if event_id is None else await feed.feed_position(pool, event_id)
    return position or feed.FEED_START


async def main(args: argparse.Namespace) -> int:
    load1, _, _ = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load1:.2f}")
    with common.servers() as (admin_dsn, redis_url):
        async with (
            Receiver(0) as receiver,
            temporary_database(admin_dsn, "gb_scale_empty") as empty,
            temporary_database(admin_dsn, "gb_scale_big") as big,
        ):
            dsns = {"empty": empty, "big": big}
            history = {}
            for side, dsn in dsns.items():
                history[side], HEADERS[dsn] = await setup(dsn, receiver.url())
            began = time.perf_counter()
            steps = await big_fill(big, args.orders, history["big"])
            fill = time.perf_counter() - began
            print(f"fill of {args.orders:,} orders: {fill:.0f} s (" + ", ".join(
                f"{step} {s:.0f} s" for step, s in steps.items()) + ")")  # fmt: skip
            conn = await asyncpg.connect(empty)
            try:
                await conn.execute("VACUUM ANALYZE")
            finally:
                await conn.close()
            figures, problems = await measure(args, dsns, redis_url, receiver)

            async def extra() -> None:
                await due_locks(big, 2000, "x", 400_000_000_000)
                await old_backlog(big, 2000)

            plans = await explain_hot_paths(big, receiver.url(), history["big"], extra)
    load1, _, _ = os.getloadavg()
    seq = [p for p in plans if p.seq_big]
    lines = [
        "", f"bench-scale: {args.orders:,} orders, {args.teams} teams x {TARGET} traded at"
        f" concurrency {args.concurrency}, {args.due:,} due, {args.backlog:,} old events,"
        f" {args.close:,} due locks; load average at the end {load1:.2f}",
        *figures.lines(f"{args.orders // 1_000_000}M" if args.orders >= 10**6 else f"{args.orders:,}"),
        *figures.during_prune(),
        "", f"EXPLAIN (ANALYZE, BUFFERS) on the big database: {len(plans)} statements,"
        f" {len(seq)} with a Seq Scan on a big table", *plan_lines(plans),
    ]  # fmt: skip
    if args.plans:
        lines += ["", "plans:", *(f"-- {p.label}: {p.text}" for p in plans)]
    lines += [*(f"FAILED: {p}" for p in problems), "", f"command: {command_line()}"]
    print("\n".join(lines))
    return 1 if problems else 0


# The counts of a run: flag, default, what it counts.
_COUNTS = (
    ("--orders", 10_000_000, "orders filled, the scale (as many events, 3/10 as many teams)"),
    ("--teams", 1000, "teams of 3 locked and settled per run"),
    ("--concurrency", 64, "lock/settle requests in flight"),
    ("--due", 10_000, "due callbacks drained"),
    ("--close", 100_000, "due locks the close cron closes"),
    ("--backlog", 100_000, "old delivered events pruned"),
)


def cli(argv: list[str] | None = None) -> None:
    parser = common.Options("bench.bench_scale", __doc__)
    for flag, default, what in _COUNTS:
        parser.add_argument(
            flag, type=common.positive, default=default, help=f"{what} ({default:,})"
        )
    parser.add_argument("--plans", action="store_true", help="print every plan in full")
    common.run_bench(main(parser.parse(argv)))


if __name__ == "__main__":
    cli()
