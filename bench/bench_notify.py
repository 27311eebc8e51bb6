"""Callback delivery throughput: `make bench-notify` / `python -m bench.bench_notify`.

For a receiver that answers at once and one that answers after 50 ms (each its own process,
bench/receiver.py), with `--tasks` due notify tasks (default 10,000) and bound
`--concurrency` (default 200), it measures callbacks per second of

  ours  Dispatcher.drain() as the worker runs it (shared session, Sender, Metrics; settings
        notify_concurrency = notify_per_host = bound): claim, send concurrently, record in batches
  (a)   the original's design: SELECT 50 pending, POST one at a time, UPDATE each row by itself;
        run on a sample (--original-fast / --original-slow tasks), since at 50 ms it does ~20/s
  (b)   the ceiling: the same signed POSTs from one shared ClientSession bounded by
        Semaphore(bound), no database

Every database scenario gets a fresh database (bench.common.fresh_database) with its tasks
bulk-inserted, then checked afterwards: every task in status 1, and the receiver saw each
webhook-id exactly once. Then (unless --no-rss) the worker's peak RSS: the drain runs in a
child process (bench/notify_rss.py) for --rss-small and --rss-large due tasks (0 ms
receiver) and reports its peak.

After the RSS, unless --no-amqp, the broker scenario of issue 15 (bench/notify_amqp.py:
--tasks events published to RabbitMQ with confirms, beside ours at 0 ms over HTTP). Last
(unless --no-held) the held-deliveries scenario of issue 15 (bench/bench_held.py:
--held-count held deliveries of a disabled endpoint beside --tasks due ones, against none).
Then (unless --no-fanout; alone with --fanout-only) the fan-out scenario of issue 14
(bench/notify_fanout.py): --fanout-events events (default 10,000), each delivered to the 3
endpoints of one merchant on 3 hosts; once with all 3 healthy, once with one refusing
connections and one answering after --fanout-slow-ms (1 s), and once the healthy endpoint
alone (a reference). notify_per_host (per endpoint) is --fanout-per-endpoint, by default the
bound / 3: the most under which the endpoints' sends in flight together never exceed the
bound, so a slow endpoint's held sends cannot take the send slots a healthy one needs. Each
run is measured until the healthy endpoint's deliveries are all in, then the drain stopped.
Aim: the healthy endpoint's throughput and p99 within 20 % of the all-healthy run's.

Servers: GROUPBUY_BENCH_DATABASE_URL / GROUPBUY_BENCH_REDIS_URL, else GROUPBUY_TEST_*, else
embedded ones (see bench/common.py). Exits 1 if any delivery check fails.
"""

import argparse
import contextlib
import os
import sys

import aiohttp
import asyncpg

from .bench_held import measure_held
from .common import Options, percentile, positive, run_bench, servers, table
from .notify_amqp import measure_amqp
from .notify_fanout import measure_fanout
from .notify_rss import run_rss
from .notify_scenarios import Run, run_ceiling, run_original, run_ours
from .receiver import Receiver

COLUMNS = [
    ("scenario", -36), ("receiver", 8), ("tasks", 7), ("seconds", 8), ("callbacks/s", 12),
    ("vs (a)", 8), ("vs (b)", 7), ("p50 ms", 7), ("p99 ms", 7), ("in flight", 9),
    ("cpu/cb", 7), ("check", 0),
]  # fmt: skip


def load_note() -> str:
    """Before anything runs, the load average says whether the machine is already busy."""
    load1, _, _ = os.getloadavg()
    note = f"{os.cpu_count()} cores, load average {load1:.2f}"
    if load1 > 0.7:
        note += " -- something else is using the CPU: expect noisy numbers"
    return note


def best_run(runs: list[Run]) -> Run:
    """The fastest of repeated runs (the one least disturbed by anything else on the
    machine), carrying every run's check failures."""
    best = max(runs, key=lambda r: r.rate)
    best.problems = [p for r in runs for p in r.problems]
    return best


def show(run: Run) -> None:
    print(
        f"  {run.scenario:<36} {run.delay_ms:>3} ms: {run.rate:>8,.0f}/s"
        f" ({run.tasks:,} in {run.section.seconds:.2f}s)  cpu: {run.cpu_text()}",
        flush=True,
    )


def results_table(runs: dict[tuple[str, int], Run], delays: list[int]) -> list[str]:
    rows: list[list[str] | None] = []
    for delay in delays:
        a, b, ours = runs[("a", delay)], runs[("b", delay)], runs[("ours", delay)]
        for r in (ours, a, b):
            sample = " (sample)" if r is a and a.tasks < ours.tasks else ""
            rows.append([
                r.scenario, f"{delay} ms", str(r.tasks), f"{r.section.seconds:.2f}",
                f"{r.rate:,.0f}", f"{r.rate / a.rate:.1f}x", f"{r.rate / b.rate:.2f}x",
                f"{percentile(r.latencies_ms, 50):.1f}", f"{percentile(r.latencies_ms, 99):.1f}",
                "-" if r.in_flight is None else f"{r.in_flight:.0f}",
                f"{r.worker_us_per_callback():.0f}us", ("ok" if not r.problems else "FAILED") + sample,
            ])  # fmt: skip
        rows.append(None)
    return table(COLUMNS, rows[:-1])


async def measure_rss(args: argparse.Namespace, admin_dsn: str, receiver: Receiver) -> bool:
    """Peak RSS for a small and a large backlog; False if a delivery check failed."""
    print(f"\nworker peak RSS while draining a backlog (child process, 0 ms receiver, bound {args.concurrency}):")  # fmt: skip
    ok, done = True, []
    for count in (args.rss_small, args.rss_large):
        got = await run_rss(admin_dsn, receiver, count, args.concurrency)
        done.append(got)
        print(
            f"  {got.tasks:>8,} due: drained in {got.seconds:6.2f}s ({got.tasks / got.seconds:,.0f}/s);"
            f" RSS before drain {got.before_kb / 1024:5.1f} MB, peak (ru_maxrss) {got.ru_maxrss_kb / 1024:5.1f} MB"
            f" (VmHWM {got.vm_hwm_kb / 1024:.1f} MB)"
            f"  {'ok' if not got.problems else 'FAILED'}",
            flush=True,
        )  # fmt: skip
        for p in got.problems:
            print(f"CHECK FAILED rss {got.tasks}: {p}")
            ok = False
    small, large = done
    growth = large.ru_maxrss_kb / small.ru_maxrss_kb - 1
    print(
        f"aim: peak RSS flat with backlog ({args.rss_small:,} -> {args.rss_large:,} due):"
        f" {(large.ru_maxrss_kb - small.ru_maxrss_kb) / 1024:+.1f} MB ({growth:+.1%};"
        f" flat = under +10%) -> {'met' if growth < 0.10 else 'NOT met'}"
    )
    return ok


async def run_all(
    args: argparse.Namespace, admin_dsn: str, receivers: dict[int, Receiver]
) -> dict[tuple[str, int], Run]:
    """Per receiver delay: ours and (b) alternately, --repeat times each (so drift on the
    machine hits both alike), best kept; then (a) once, on its sample."""
    original_counts = {0: args.original_fast, args.slow_ms: args.original_slow}
    runs: dict[tuple[str, int], Run] = {}
    for delay, rcv in receivers.items():
        ceiling: list[Run] = []
        ours: list[Run] = []
        for _ in range(args.repeat):
            ceiling.append(await run_ceiling(rcv, args.tasks, args.concurrency))
            show(ceiling[-1])
            ours.append(await run_ours(admin_dsn, rcv, args.tasks, args.concurrency))
            show(ours[-1])
        runs[("b", delay)], runs[("ours", delay)] = best_run(ceiling), best_run(ours)
        runs[("a", delay)] = await run_original(
            admin_dsn, rcv, original_counts[delay], args.concurrency
        )
        show(runs[("a", delay)])
    return runs


def report(args: argparse.Namespace, runs: dict[tuple[str, int], Run]) -> bool:
    """The table, notes and aims; False if a delivery check failed."""
    print()
    print("\n".join(results_table(runs, [0, args.slow_ms])))
    print(
        "(a) runs on a sample. p50/p99: one attempt's HTTP time. in flight: mean sends in"
        f" flight (of {args.concurrency}). cpu/cb: the worker process's CPU per callback"
        f" (ours includes claim/record). Best of {args.repeat} for ours and (b)."
    )
    ok = True
    for r in runs.values():
        if note := r.section.noise_note(f"{r.scenario} at {r.delay_ms} ms"):
            print(f"note: {note}")
        for p in r.problems:
            print(f"CHECK FAILED {r.scenario} at {r.delay_ms} ms: {p}")
            ok = False
    slow_vs_a = runs[("ours", args.slow_ms)].rate / runs[("a", args.slow_ms)].rate
    fast_vs_b = runs[("ours", 0)].rate / runs[("b", 0)].rate
    print(f"aim: ours >= 100x (a) at {args.slow_ms} ms: {slow_vs_a:.0f}x -> {'met' if slow_vs_a >= 100 else 'NOT met'}")  # fmt: skip
    print(f"aim: ours >= 0.8x (b) at 0 ms: {fast_vs_b:.2f}x -> {'met' if fast_vs_b >= 0.8 else 'NOT met'}")  # fmt: skip
    return ok


async def bench(args: argparse.Namespace) -> int:
    with servers() as (admin_dsn, _):
        ok, http_rate = True, None
        if not args.fanout_only:
            ok, http_rate = await bench_main(args, admin_dsn)
            if args.amqp:
                ok = await measure_amqp(admin_dsn, args.tasks, args.concurrency, http_rate) and ok
        if args.fanout or args.fanout_only:
            per_endpoint = args.fanout_per_endpoint or max(args.concurrency // 3, 1)
            if args.fanout_only:
                print(f"bench-notify --fanout-only; {load_note()}", flush=True)
            ok = await measure_fanout(
                admin_dsn, args.fanout_events, args.concurrency, per_endpoint,
                args.fanout_slow_ms, args.fanout_repeat,
            ) and ok  # fmt: skip
        if args.held and not args.fanout_only:
            print(f"\nheld deliveries (issue 15; alone: make bench-held); {load_note()}")
            ok = await measure_held(admin_dsn, args.tasks, args.held_count) and ok
    return 0 if ok else 1


async def bench_main(args: argparse.Namespace, admin_dsn: str) -> tuple[bool, float]:
    """ours, (a) and (b) at both receiver delays, then peak RSS; False if a check failed, and
    ours' rate at 0 ms."""
    async with contextlib.AsyncExitStack() as stack:
        receivers = {
            delay: await stack.enter_async_context(Receiver(delay)) for delay in (0, args.slow_ms)
        }
        print(
            f"bench-notify: {args.tasks:,} due tasks, bound {args.concurrency}, receivers at"
            f" 0 ms and {args.slow_ms} ms (own processes); (a) on samples of"
            f" {args.original_fast:,} / {args.original_slow:,} tasks; python {sys.version.split()[0]},"
            f" aiohttp {aiohttp.__version__}, asyncpg {asyncpg.__version__}; {load_note()}",
            flush=True,
        )
        runs = await run_all(args, admin_dsn, receivers)
        ok = report(args, runs)
        if args.rss:
            ok = await measure_rss(args, admin_dsn, receivers[0]) and ok
    return ok, runs[("ours", 0)].rate


def main(argv: list[str] | None = None) -> None:
    p = Options("bench.bench_notify", __doc__)
    p.add_argument("--tasks", type=int, default=10_000, help="due tasks for ours and (b)")
    p.add_argument("--concurrency", type=int, default=200, help="the bound (in-flight sends)")
    p.add_argument("--slow-ms", type=int, default=50, help="the slow receiver's delay")
    p.add_argument("--original-fast", type=int, default=2_000, help="(a) sample at 0 ms")
    p.add_argument("--original-slow", type=int, default=300, help="(a) sample at the slow delay")
    p.add_argument("--repeat", type=int, default=2, help="runs of ours and (b); best reported")
    p.add_argument(
        "--rss",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="peak RSS of a draining worker, small vs large backlog (default on)",
    )
    p.add_argument("--rss-small", type=int, default=1_000)
    p.add_argument(
        "--fanout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the fan-out scenario after the others (default on)",
    )
    p.add_argument("--fanout-only", action="store_true", help="only the fan-out scenario")
    p.add_argument(
        "--held",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the held-deliveries scenario: --tasks due beside --held-count held (bench_held)",
    )
    p.add_argument("--held-count", type=positive, default=100_000, help="held deliveries")
    p.add_argument(
        "--amqp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the broker scenario: --tasks events to RabbitMQ with confirms (skipped, saying"
        " why, when it is not reachable)",
    )
    p.add_argument("--fanout-events", type=positive, default=10_000, help="events (x 3 endpoints)")
    p.add_argument(
        "--fanout-per-endpoint",
        type=positive,
        default=None,
        help="notify_per_host, per endpoint (default: the bound / 3)",
    )
    p.add_argument("--fanout-slow-ms", type=int, default=1000, help="the slow endpoint's delay")
    p.add_argument("--fanout-repeat", type=positive, default=1, help="runs of each; best kept")
    p.add_argument("--rss-large", type=int, default=100_000)
    run_bench(bench(p.parse(argv)))


if __name__ == "__main__":
    main()
