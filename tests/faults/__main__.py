"""Fault harness: `make faults` / `python -m tests.faults [--only 2,5] [--list]`.

Starts its own PostgreSQL and Redis (embedded wheels, under .data/faults/), runs each
scenario against real `python -m groupbuy_async api` and `worker` processes and merchant
processes, and prints one row per scenario: attempted / delivered / lost / duplicated
callbacks, the healthy merchant's delivery latency p50/p99 where measured, notes and the
verdict; then why each failing scenario failed. Exit status 1 if any scenario failed.
Logs of the last run: .data/faults/logs/.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import signal
import sys
import textwrap
import time
import traceback

from .broker import EXPECTATIONS as BROKER_EXPECTATIONS
from .harness import BASE, Outcome, Run
from .procs import kill_all_now
from .scenarios import EXPECTATIONS, SCENARIOS, Scenario

SCENARIO_SECONDS = 150.0  # one scenario, whatever happens in it
RUN_SECONDS = 600.0  # the whole run (~330 s on 2 cores)
OK = ("PASS", "SKIP")  # SKIP: a server the scenario needs is not installed (said in its row)


def columns(o: Outcome) -> list[str]:
    dup = f"{o.duplicated}" + (f" ({o.excused} ok)" if o.excused else "")
    p50 = "-" if o.p50 is None else f"{o.p50:.2f}"
    p99 = "-" if o.p99 is None else f"{o.p99:.2f}"
    return [f"{o.number} {o.name}", str(o.attempted), str(o.delivered), str(o.lost), dup,
            f"{p50}/{p99}", f"{o.seconds:.0f}", o.verdict]  # fmt: skip


HEAD = [
    "scenario",
    "attempted",
    "delivered",
    "lost",
    "duplicated",
    "healthy p50/p99 s",
    "s",
    "verdict",
]
WIDTHS = [-22, 9, 9, 4, 10, 17, 4, -7]


def line(cells: list[str]) -> str:
    return " ".join(
        f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, w in zip(cells, WIDTHS, strict=True)
    )


def report(outcomes: list[Outcome], seconds: float) -> str:
    head = line(HEAD)
    out = [head, "-" * len(head)]
    for o in outcomes:
        out.append(line(columns(o)))
        for note in o.notes:
            out.extend(
                textwrap.wrap(note, 100, initial_indent=" " * 25, subsequent_indent=" " * 27)
            )
    out.append("-" * len(head))
    failed = [o for o in outcomes if o.verdict not in OK]
    skipped = sum(o.verdict == "SKIP" for o in outcomes)
    out.append(
        "attempted: completed teams; delivered: their distinct webhook-ids the merchant answered"
        " success to; duplicated: success receipts beyond the first per id, '(n ok)' = n"
        " excused (in flight at the fault); s: the scenario's own seconds."
    )
    out.append(EXPECTATIONS)
    out.append(BROKER_EXPECTATIONS)
    passed = len(outcomes) - len(failed) - skipped
    out.append(
        f"{passed}/{len(outcomes)} scenarios passed"
        + (f" ({skipped} skipped: a server they need is not installed)" if skipped else "")
        + f" in {seconds:.0f}s"
    )
    for o in failed:
        out.append(f"\n{o.number} {o.name}: {o.verdict}")
        for problem in [o.crashed] if o.crashed else o.problems:
            out.extend(textwrap.wrap(problem, 100, initial_indent="  - ", subsequent_indent="    "))
    return "\n".join(out)


async def run_one(run: Run, sc: Scenario) -> Outcome:
    """One scenario, once it has the machine to itself (it lets go when it only waits)."""
    await run.acquire(sc.number)
    began = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {sc.number} {sc.name}: {sc.what} ...", flush=True)
    try:
        async with asyncio.timeout(SCENARIO_SECONDS):
            outcome = await sc.run(run, sc.number, sc.name)
    except TimeoutError:
        outcome = Outcome(
            sc.number, sc.name, crashed=f"did not finish within {SCENARIO_SECONDS:.0f}s"
        )
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        outcome = Outcome(sc.number, sc.name, crashed=f"harness error: {detail}")
        traceback.print_exc()
    finally:
        run.release(sc.number)
    outcome.seconds = time.monotonic() - began
    problems = (
        [outcome.crashed or outcome.skipped]
        if outcome.crashed or outcome.skipped
        else outcome.problems
    )
    print(f"[{time.strftime('%H:%M:%S')}] {sc.number} {sc.name} -> {outcome.verdict} in"
          f" {outcome.seconds:.0f}s" + (f": {'; '.join(problems)}" if problems else ""),
          flush=True)  # fmt: skip
    return outcome


async def run_all(run: Run, selected: list[Scenario], outcomes: list[Outcome]) -> None:
    """The scenarios that fault only their own processes run one after another, but each
    lets the next start while it merely waits for leases to lapse; then those that stop or
    freeze the shared servers, each alone."""
    shared = [sc for sc in selected if not sc.exclusive]
    alone = [sc for sc in selected if sc.exclusive]

    async def one(sc: Scenario) -> None:
        outcomes.append(await run_one(run, sc))

    await asyncio.gather(*(one(sc) for sc in shared))
    for sc in alone:
        await one(sc)


async def main(selected: list[Scenario]) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    began = time.monotonic()
    outcomes: list[Outcome] = []
    run = Run()
    atexit.register(run.stop_now)
    atexit.register(kill_all_now)
    timed_out = False
    try:
        async with asyncio.timeout(RUN_SECONDS), run:
            for note in run.stale:
                print(f"cleanup: {note}")
            print(
                f"faults: own PostgreSQL {run.pg.url} (pid {run.pg.pid()}), Redis {run.redis.url}"
                f" (pid {run.redis.pid()}); logs in {run.logs}", flush=True,
            )  # fmt: skip
            await run_all(run, selected, outcomes)
    except TimeoutError:
        timed_out = True
    finally:
        kill_all_now()
    finished = {o.number for o in outcomes}
    for sc in selected:
        if sc.number not in finished:
            why = f"not finished when the run hit its {RUN_SECONDS:.0f}s limit"
            outcomes.append(Outcome(sc.number, sc.name, crashed=why))
    order = {sc.number: i for i, sc in enumerate(SCENARIOS)}
    outcomes.sort(key=lambda o: order[o.number])
    print()
    print(report(outcomes, time.monotonic() - began))
    ok = not timed_out and all(o.verdict in OK for o in outcomes)
    return 0 if ok else 1


def parse(argv: list[str] | None = None) -> list[Scenario]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--only", help="comma-separated scenario numbers or names, e.g. 2,5")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.number:>3} {sc.name:<20} {sc.what}")
        sys.exit(0)
    if not args.only:
        return SCENARIOS
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    chosen = [sc for sc in SCENARIOS if sc.number in wanted or sc.name in wanted]
    unknown = wanted - {sc.number for sc in chosen} - {sc.name for sc in chosen}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))} (see --list)")
    return chosen


if __name__ == "__main__":
    scenarios = parse()
    BASE.mkdir(parents=True, exist_ok=True)
    try:
        sys.exit(asyncio.run(main(scenarios)))
    except asyncio.CancelledError:
        print("faults: interrupted; everything it started was stopped", file=sys.stderr)
        sys.exit(130)
