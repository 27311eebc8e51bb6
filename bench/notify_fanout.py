"""bench-notify's fan-out scenario (issue 14): one merchant, three endpoints on three hosts
(host:port), each event delivered once to each. Faulty: one endpoint refuses connections (a
port bound but never listening), one answers after 1 s; all healthy: three receivers that
answer at once. Each run drains with Dispatcher.drain() as the worker does and is measured
until the healthy endpoint's deliveries are all in; then the drain is stopped (the slow and
the refused endpoints' backlogs are left as they are). The aim: the healthy endpoint's
throughput and p99 stay within 20 % of the all-healthy run's."""

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from groupbuy_async.bootstrap import secret_box
from groupbuy_async.callbacks.claims import Result, Task
from groupbuy_async.callbacks.delivery import Delivery
from groupbuy_async.callbacks.dispatch import Dispatcher
from groupbuy_async.callbacks.metrics import Metrics
from groupbuy_async.callbacks.rules import NotifyStatus
from groupbuy_async.callbacks.sender import Sender
from groupbuy_async.db import create_pool
from groupbuy_async.dev.outbox_fill import endpoint_host
from groupbuy_async.settings import Settings

from .common import SECRETS_KEY, database_name, fresh_database, percentile, table
from .cpu import MACHINE, Section, Source, machine, measure, postgres, processes, this_process
from .notify_scenarios import insert_tasks
from .receiver import Receiver

# Within 20 %: throughput >= 0.8 x and p99 <= 1.2 x the all-healthy run's; a p99 of a few
# ms is judged with this much slack at least (duration_ms is whole ms, and the event loop's
# scheduling jitter alone is a few ms).
THROUGHPUT_AIM = 0.8
P99_AIM = 1.2
P99_FLOOR_MS = 5.0


@dataclass(frozen=True)
class Endpoint:
    role: str  # "healthy", "refused", "slow", "healthy 2"...
    url: str
    receiver: Receiver | None  # None: nothing listens

    @property
    def host(self) -> str:
        return endpoint_host(self.url)


@contextlib.contextmanager
def refusing_url() -> Iterator[str]:
    """A url on 127.0.0.1 whose port is bound (so nothing else takes it meanwhile) but never
    listened on: every connect is refused at once (RST)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/notify"


class WatchedDelivery(Delivery):
    """The process's Delivery, counting each endpoint's recorded successes as batches are
    written back: `done` is set once the watched one has `expected` of them."""

    def watch(self, host: str, expected: int) -> None:
        self.watched, self.expected = host, expected
        self.succeeded: Counter[str] = Counter()
        self.done = asyncio.Event()

    async def finish(self, done: list[Result | Task]) -> tuple[list[Result], set[int]]:
        results, recorded = await super().finish(done)
        self.succeeded.update(
            r.task.host
            for r in results
            if r.task.id in recorded and r.verdict.status is NotifyStatus.SUCCESS
        )
        if self.succeeded[self.watched] >= self.expected:
            self.done.set()
        return results, recorded


@dataclass
class FanoutRun:
    label: str
    events: int
    per_endpoint: int
    section: Section
    began: float = 0.0  # the drain's start (time.time())
    seconds: float = 0.0  # the drain's start -> the healthy endpoint's last delivery ended
    latencies_ms: list[float] = field(default_factory=list)  # the healthy one's attempts
    in_flight: float = 0.0  # the healthy one's mean sends in flight (sum of durations / time)
    by_role: dict[str, dict[str, Any]] = field(default_factory=dict)
    delivered_in_section: int = 0  # successes of all endpoints while measured
    stop_seconds: float = 0.0  # from the healthy one's end until the stopped drain returned
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    def worker_us_per_callback(self) -> float:
        return self.section.cpu["worker"] / max(self.delivered_in_section, 1) * 1e6

    def others_text(self) -> str:
        parts = []
        for role, got in self.by_role.items():
            if role != "healthy":
                text = f"{role} {got['delivered']}/{got['attempts']}"
                parts.append(text + (" paused" if got["paused"] else ""))
        return ", ".join(parts)


def fanout_settings(bound: int, per_endpoint: int) -> Settings:
    return Settings(
        database_url="",
        notify_concurrency=bound,
        notify_per_host=per_endpoint,  # per endpoint (host = merchant/endpoint)
        secrets_key=SECRETS_KEY,
        notify_block_private=False,  # the receivers are local
    )


def cpu_sources(endpoints: list[Endpoint], dsn: str) -> dict[str, Source]:
    pids = [e.receiver.pid for e in endpoints if e.receiver is not None]
    return {
        "worker": this_process,
        "receivers": processes(*pids),
        "postgres": postgres(database_name(dsn)),
        MACHINE: machine,
    }


_PER_ENDPOINT = """
SELECT t.host, count(*) FILTER (WHERE t.notify_status = 1) AS delivered,
       coalesce(sum(t.notify_count), 0) AS attempts, count(*) AS tasks
FROM notify_task t GROUP BY t.host
"""
_HEALTHY_ATTEMPTS = """
SELECT a.duration_ms, a.started_at, a.http_status
FROM notify_attempt a JOIN notify_task t ON t.id = a.task_id
WHERE t.host = $1
"""


async def run_fanout(
    admin_dsn: str, label: str, endpoints: list[Endpoint], events: int, bound: int,
    per_endpoint: int, limit_seconds: float,
) -> FanoutRun:  # fmt: skip
    """`events` events x the endpoints (endpoints[0] the healthy one, measured), drained
    until the healthy one's are all delivered (or `limit_seconds` pass), then stopped."""
    healthy = endpoints[0]
    assert healthy.receiver is not None
    settings = fanout_settings(bound, per_endpoint)
    async with fresh_database(admin_dsn) as dsn:
        await insert_tasks(dsn, events, [e.url for e in endpoints])
        for e in endpoints:
            if e.receiver is not None:
                await e.receiver.reset()
        pool = await create_pool(dsn, 1, settings.db_pool_max)
        try:
            run = await _drain(pool, dsn, settings, label, endpoints, events, limit_seconds)
            await _read_back(run, pool, endpoints, events)
        finally:
            await pool.close()
    return run


async def _drain(
    pool: asyncpg.Pool, dsn: str, settings: Settings, label: str, endpoints: list[Endpoint],
    events: int, limit_seconds: float,
) -> FanoutRun:  # fmt: skip
    healthy = endpoints[0]
    delivery = WatchedDelivery(
        pool, Sender.from_settings(settings), secret_box(settings), settings, Metrics()
    )
    delivery.watch(healthy.host, events)
    dispatcher = Dispatcher(delivery, settings.notify_immediate_limit)
    run = FanoutRun(label, events, settings.notify_per_host, Section())
    run.began = datetime.now(UTC).timestamp()
    try:
        with measure(cpu_sources(endpoints, dsn)) as run.section:
            drain = asyncio.create_task(dispatcher.drain())
            reached = asyncio.create_task(delivery.done.wait())
            await asyncio.wait(
                {drain, reached}, timeout=limit_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        reached.cancel()
        run.delivered_in_section = sum(delivery.succeeded.values())
        if not delivery.done.is_set():
            why = "the drain ended" if drain.done() else f"{limit_seconds:g}s passed"
            run.problems.append(
                f"{why} with {delivery.succeeded[healthy.host]}/{events} healthy deliveries"
            )
        for e in endpoints:
            run.by_role[e.role] = {"paused": delivery.breakers.is_paused(e.host)}
        stopping = asyncio.get_running_loop().time()
        dispatcher.stop()  # sends in flight (the slow one's: up to 1 s) end and are recorded
        await drain
        run.stop_seconds = asyncio.get_running_loop().time() - stopping
    finally:
        await dispatcher.close(grace_seconds=1)
    return run


async def _read_back(
    run: FanoutRun, pool: asyncpg.Pool, endpoints: list[Endpoint], events: int
) -> None:
    healthy = endpoints[0]
    rows = await pool.fetch(_HEALTHY_ATTEMPTS, healthy.host)
    run.latencies_ms = [float(r["duration_ms"]) for r in rows]
    ends = [r["started_at"].timestamp() + r["duration_ms"] / 1000 for r in rows]
    run.seconds = (max(ends) - run.began) if ends else 0.0
    if run.seconds:
        run.in_flight = sum(run.latencies_ms) / 1000 / run.seconds
    failed = sum(r["http_status"] != 200 for r in rows)
    if failed or len(rows) != events:
        run.problems.append(f"healthy: {len(rows)} attempts ({failed} not 200), expected {events}")
    stored = {r["host"]: r for r in await pool.fetch(_PER_ENDPOINT)}
    for e in endpoints:
        got = stored.get(e.host)
        run.by_role[e.role] |= {
            "delivered": 0 if got is None else got["delivered"],
            "attempts": 0 if got is None else got["attempts"],
        }
        if got is None or got["tasks"] != events:
            run.problems.append(f"{e.role}: {0 if got is None else got['tasks']} deliveries stored")
        if e.receiver is None:
            if run.by_role[e.role]["delivered"]:
                run.problems.append(f"{e.role}: delivered, though nothing listens")
            continue
        seen = await e.receiver.count()
        delivered = run.by_role[e.role]["delivered"]
        if seen["duplicates"] or seen["unsigned"] or seen["distinct"] != delivered:
            run.problems.append(f"{e.role} receiver saw {seen}, {delivered} recorded delivered")
        if e is healthy and (seen["requests"] != events or seen["distinct"] != events):
            run.problems.append(f"healthy receiver saw {seen}, expected {events} distinct")


COLUMNS = [
    ("run", -26), ("per ep", 6), ("events", 7), ("seconds", 8), ("healthy/s", 10),
    ("p50 ms", 7), ("p99 ms", 7), ("in flight", 9), ("cpu/cb", 7), ("stop s", 6),
    ("others: delivered/attempts", -40), ("check", 0),
]  # fmt: skip


def fanout_table(runs: list[FanoutRun]) -> list[str]:
    return table(
        COLUMNS,
        [
            [
                r.label, str(r.per_endpoint), str(r.events), f"{r.seconds:.2f}", f"{r.rate:,.0f}",
                f"{r.p50:.1f}", f"{r.p99:.1f}", f"{r.in_flight:.0f}",
                f"{r.worker_us_per_callback():.0f}us", f"{r.stop_seconds:.1f}", r.others_text(),
                "ok" if not r.problems else "FAILED",
            ]
            for r in runs
        ],
    )  # fmt: skip


def verdict(base: FanoutRun, faulty: FanoutRun) -> tuple[bool, list[str]]:
    """Whether the healthy endpoint stayed within 20 % of the all-healthy run, and why."""
    ratio = faulty.rate / base.rate if base.rate else 0.0
    allowed = max(P99_AIM * base.p99, base.p99 + P99_FLOOR_MS)
    floor = " (the +5 ms floor applies)" if allowed > P99_AIM * base.p99 else ""
    tput_ok, p99_ok = ratio >= THROUGHPUT_AIM, faulty.p99 <= allowed
    lines = [
        f"healthy endpoint, faulty / all healthy: throughput {ratio:.2f}x"
        f" ({faulty.rate:,.0f}/s vs {base.rate:,.0f}/s; aim >= {THROUGHPUT_AIM})"
        f" -> {'ok' if tput_ok else 'NOT met'}",
        f"  p99 {faulty.p99:.1f} ms vs {base.p99:.1f} ms = {faulty.p99 / base.p99 if base.p99 else 0:.2f}x"
        f" (aim <= max(1.2 x, +{P99_FLOOR_MS:g} ms) = {allowed:.1f} ms{floor}) -> {'ok' if p99_ok else 'NOT met'}",
    ]  # fmt: skip
    return tput_ok and p99_ok, lines


async def measure_fanout(
    admin_dsn: str, events: int, bound: int, per_endpoint: int, slow_ms: int, repeat: int
) -> bool:
    """Both runs (all healthy, then faulty; --repeat times, alternately, the best of each
    kept), the table and the verdict; False if a delivery check failed."""
    async with contextlib.AsyncExitStack() as stack:
        healthy, slow, second, third = [
            await stack.enter_async_context(Receiver(delay)) for delay in (0, slow_ms, 0, 0)
        ]
        refused = stack.enter_context(refusing_url())
        all_healthy = [
            Endpoint("healthy", healthy.url(), healthy),
            Endpoint("healthy 2", second.url(), second),
            Endpoint("healthy 3", third.url(), third),
        ]
        faulty = [
            Endpoint("healthy", healthy.url(), healthy),
            Endpoint("refused", refused, None),
            Endpoint(f"{slow_ms / 1000:g}s", slow.url(), slow),
        ]
        limit = max(60.0, events / 50)
        print(
            f"\nfan-out (issue 14): {events:,} events x 3 endpoints of one merchant (3 hosts),"
            f" bound {bound}, per endpoint {per_endpoint}; measured until the healthy endpoint's"
            f" {events:,} are delivered, then the drain is stopped",
            flush=True,
        )
        runs: dict[str, list[FanoutRun]] = {"base": [], "faulty": [], "alone": []}
        for _ in range(repeat):
            for kind, label, endpoints in (
                ("base", "all 3 healthy (0 ms)", all_healthy),
                ("faulty", f"1 refused, 1 at {slow_ms} ms", faulty),
                ("alone", "healthy alone (reference)", all_healthy[:1]),
            ):
                run = await run_fanout(
                    admin_dsn, label, endpoints, events, bound, per_endpoint, limit
                )
                runs[kind].append(run)
                print(
                    f"  {label:<26} healthy {run.rate:>7,.0f}/s ({events:,} in {run.seconds:.2f}s)"
                    f" p50 {run.p50:.1f} p99 {run.p99:.1f} ms; {run.others_text()}",
                    flush=True,
                )
    best = {kind: max(done, key=lambda r: r.rate) for kind, done in runs.items()}
    print()
    print("\n".join(fanout_table([best["base"], best["faulty"], best["alone"]])))
    print(
        "healthy/s: the healthy endpoint's deliveries / (its last delivery's end - the drain's"
        " start). p50/p99: its attempts' duration_ms. in flight: its mean sends in flight."
        " cpu/cb: worker CPU per callback delivered (any endpoint) while measured. stop s: from"
        " then until the stopped drain returned. others: each other endpoint's deliveries"
        f" recorded / attempts (paused: its breaker was open). Best of {repeat}. The reference:"
        " the healthy endpoint the merchant's only one (not the aim's baseline, which shares"
        " the worker with two other busy endpoints)."
    )
    ok = True
    for r in (r for done in runs.values() for r in done):
        if note := r.section.noise_note(r.label):
            print(f"note: {note}")
        for p in r.problems:
            print(f"CHECK FAILED fan-out {r.label}: {p}")
            ok = False
    passed, lines = verdict(best["base"], best["faulty"])
    print("\n".join(lines))
    alone = best["alone"]
    print(
        f"  (faulty / healthy alone: throughput {best['faulty'].rate / alone.rate:.2f}x,"
        f" p99 {best['faulty'].p99:.1f} vs {alone.p99:.1f} ms)"
    )
    print(f"aim: healthy endpoint within 20 % of all healthy -> {'PASS' if passed else 'FAIL'}")
    return ok
