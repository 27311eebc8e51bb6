"""The callback benchmark's scenarios: our Dispatcher, the original's one-at-a-time job,
and bare POSTs (the ceiling); each measured and checked against the receiver's tally."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType

import asyncpg

from groupbuy_async.bootstrap import build_dispatcher
from groupbuy_async.callbacks.dispatch import Dispatcher
from groupbuy_async.callbacks.drain import Counts
from groupbuy_async.callbacks.metrics import Metrics
from groupbuy_async.callbacks.rules import is_success
from groupbuy_async.callbacks.sender import BODY_CAP, Sender, create_session
from groupbuy_async.db import create_pool
from groupbuy_async.dev.outbox_fill import fanned_out_teams
from groupbuy_async.merchants.secret_box import SecretBox
from groupbuy_async.merchants.secret_box import signing_key as secret_key
from groupbuy_async.settings import Settings

from .common import SECRET, SECRETS_KEY, database_name, fresh_database, timed
from .cpu import MACHINE, Section, Source, machine, measure, postgres, processes, this_process
from .receiver import Receiver

KEY = secret_key(SECRET)
# The original's queryUnExecutedNotifyTaskList: pending or retrying, 50 at a time.
ORIGINAL_BATCH = 50
ORIGINAL_MAX_RETRIES = 5


@dataclass
class Run:
    scenario: str
    delay_ms: int
    tasks: int
    section: Section
    latencies_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    in_flight: float | None = None  # mean sends in flight during the run

    @property
    def rate(self) -> float:
        return self.tasks / self.section.seconds if self.section.seconds else 0.0

    def worker_us_per_callback(self) -> float:
        return self.section.cpu["worker"] / self.tasks * 1e6

    def cpu_text(self) -> str:
        """Share of one core each process group used, and the worker's CPU per callback."""
        used = self.section.cpu.items()
        share = " ".join(
            f"{k[:3]} {v / self.section.seconds:4.0%}" for k, v in used if k != MACHINE
        )
        text = f"{share}  worker {self.worker_us_per_callback():5.0f}us/cb"
        if self.in_flight is not None:
            text += f"  in flight {self.in_flight:5.1f}"
        return text


class InFlight:
    """While in its `with`, samples how many sends are in flight every few ms: how full
    the bound is kept."""

    def __init__(self, read: Callable[[], float], every: float = 0.005) -> None:
        self.read, self.every = read, every
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.samples.append(self.read())
            await asyncio.sleep(self.every)

    def __enter__(self) -> "InFlight":
        self._task = asyncio.create_task(self._sample())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else 0.0


def cpu_sources(receiver: Receiver, dsn: str | None = None) -> dict[str, Source]:
    """This process is the worker; with a database, its PostgreSQL processes count too."""
    sources = {"worker": this_process, "receiver": processes(receiver.pid)}
    if dsn:
        sources["postgres"] = postgres(database_name(dsn))
    return {**sources, MACHINE: machine}


def bench_settings(dsn: str, bound: int) -> Settings:
    return Settings(
        database_url=dsn,
        notify_concurrency=bound,
        notify_per_host=bound,  # one receiver host
        secrets_key=SECRETS_KEY,
        notify_block_private=False,  # the receiver is local
    )


def make_dispatcher(pool: asyncpg.Pool, settings: Settings) -> Dispatcher:
    """As the worker and the tests build it (bootstrap): one Sender owning the process's
    shared ClientSession, fresh Metrics. close() the Dispatcher."""
    return build_dispatcher(pool, settings, Metrics())


async def timed_drain(pool: asyncpg.Pool, settings: Settings) -> tuple[Counts, float]:
    """One Dispatcher.drain() as the worker runs it: its counts and its seconds."""
    dispatcher = make_dispatcher(pool, settings)
    try:
        began = time.perf_counter()
        counts = await dispatcher.drain()
        return counts, time.perf_counter() - began
    finally:
        await dispatcher.close(grace_seconds=1)


async def insert_tasks(
    dsn: str, count: int, url: str | Sequence[str], due_in: timedelta = timedelta(0)
) -> None:
    """`count` completed teams, each with its callback to the endpoint at `url` (to each of
    the endpoints, given several urls) due after `due_in` (dev/outbox_fill.py, as
    tests/conftest.py make_tasks); then VACUUM ANALYZE, as
    autovacuum would have left a real backlog, and a CHECKPOINT, so nothing of the insert is
    flushed while the bench drains."""
    # A large fill takes longer than the pool's default 5 s statement limit on a busy machine.
    pool = await create_pool(dsn, 1, 2, command_timeout=600)
    try:
        urls = [url] if isinstance(url, str) else url
        await fanned_out_teams(pool, SecretBox(SECRETS_KEY), count, urls, SECRET, due_in)
        await pool.execute("VACUUM ANALYZE group_buy_order, event, notify_task")
        await pool.execute("CHECKPOINT")
    finally:
        await pool.close()


async def check_delivery(
    receiver: Receiver, expected: int, pool: asyncpg.Pool | None = None
) -> list[str]:
    """Each task delivered exactly once (and, with a pool, recorded as success)."""
    problems = []
    seen = await receiver.count()
    if seen["requests"] != expected or seen["distinct"] != expected or seen["duplicates"]:
        problems.append(f"receiver saw {seen}, expected {expected} distinct requests")
    if seen["unsigned"]:
        problems.append(f"{seen['unsigned']} requests without webhook-signature")
    if pool is not None:
        rows = await pool.fetch("SELECT notify_status, count(*) FROM notify_task GROUP BY 1")
        by_status: dict[int, int] = {r[0]: r[1] for r in rows}
        if by_status != {1: expected}:
            problems.append(f"notify_task by status {by_status}, expected {{1: {expected}}}")
    return problems


@asynccontextmanager
async def backlog(
    admin_dsn: str, receiver: Receiver, count: int, pool_max: int
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A fresh database holding `count` due tasks for `receiver`, and a pool on it."""
    async with fresh_database(admin_dsn) as dsn:
        await insert_tasks(dsn, count, receiver.url())
        await receiver.reset()
        pool = await create_pool(dsn, 1, pool_max)
        try:
            yield dsn, pool
        finally:
            await pool.close()


async def run_ours(admin_dsn: str, receiver: Receiver, count: int, bound: int) -> Run:
    settings = bench_settings("", bound)
    async with backlog(admin_dsn, receiver, count, settings.db_pool_max) as (dsn, pool):
        dispatcher = make_dispatcher(pool, settings)
        try:
            with (
                InFlight(lambda: dispatcher.delivery.in_flight) as in_flight,
                measure(cpu_sources(receiver, dsn)) as section,
            ):
                counts = await dispatcher.drain()
        finally:
            await dispatcher.close(grace_seconds=1)
        run = Run("ours: Dispatcher.drain()", receiver.delay_ms, count, section)
        run.in_flight = in_flight.mean
        run.latencies_ms = [
            float(r[0]) for r in await pool.fetch("SELECT duration_ms FROM notify_attempt")
        ]
        run.problems = await check_delivery(receiver, count, pool)
        if counts.success_count != count:
            run.problems.append(f"drain counted {counts.as_dict()}")
    return run


async def run_original(admin_dsn: str, receiver: Receiver, count: int, bound: int) -> Run:
    """The original's execSettlementNotifyJob, looped until nothing is pending."""
    async with backlog(admin_dsn, receiver, count, 2) as (dsn, pool):
        session = create_session(bound, bound, False)
        sender = Sender(session, 10.0)
        latencies: list[float] = []
        try:
            with measure(cpu_sources(receiver, dsn)) as section:
                while rows := await pool.fetch(
                    "SELECT t.team_id, t.event_id, t.notify_url, e.parameter_json, t.notify_count"
                    " FROM notify_task t JOIN event e USING (event_id)"
                    " WHERE t.notify_status IN (0, 2) LIMIT $1",
                    ORIGINAL_BATCH,
                ):
                    for r in rows:
                        outcome = await timed(
                            latencies,
                            sender.send(
                                r["notify_url"], str(r["event_id"]), r["parameter_json"], (KEY,)
                            ),
                        )
                        if is_success(outcome, False):
                            status = 1
                        elif r["notify_count"] + 1 < ORIGINAL_MAX_RETRIES:
                            status = 2
                        else:
                            status = 3
                        await pool.execute(
                            "UPDATE notify_task SET notify_status = $2,"
                            " notify_count = notify_count + 1, update_time = now()"
                            " WHERE team_id = $1",
                            r["team_id"], status,
                        )  # fmt: skip
        finally:
            await session.close()
        run = Run("(a) original: 1 at a time", receiver.delay_ms, count, section, latencies)
        run.problems = await check_delivery(receiver, count, pool)
    return run


async def run_ceiling(receiver: Receiver, count: int, bound: int) -> Run:
    """The same signed POSTs (same body size and headers), one shared session, Semaphore(bound)."""
    await receiver.reset()
    prefix = str(uuid.uuid4().int)[:14]
    # The body insert_tasks has PostgreSQL write (json_build_object(...)::text), in form and size.
    stamp = "2026-12-03T08:00:00.000000+00:00"
    work = []
    for i in range(1, count + 1):
        event_id = str(uuid.uuid4())
        data = (
            f'{{"teamId" : "{prefix}{i:07d}", "outTradeNoList" : [], "activityId" : 1,'
            f' "eventId" : "{event_id}"}}'
        )
        work.append(
            (event_id, f'{{"type" : "team.completed", "timestamp" : "{stamp}", "data" : {data}}}')
        )
    session = create_session(bound, bound, False)
    sem = asyncio.Semaphore(bound)
    latencies: list[float] = []
    failures = 0
    sending = 0

    async def exchange(event_id: str, body: str) -> tuple[int, bytes]:
        async with session.post(
            receiver.url(), data=body.encode(), headers=Sender.headers(event_id, body, (KEY,)),
            allow_redirects=False,
        ) as resp:  # fmt: skip
            return resp.status, await resp.content.read(BODY_CAP)

    async def post(event_id: str, body: str) -> None:
        nonlocal failures, sending
        async with sem:
            sending += 1
            try:
                status, raw = await timed(latencies, exchange(event_id, body))
            finally:
                sending -= 1
            if status != 200 or raw != b"success":
                failures += 1

    try:
        with InFlight(lambda: sending) as in_flight, measure(cpu_sources(receiver)) as section:
            await asyncio.gather(*(post(e, b) for e, b in work))
    finally:
        await session.close()
    run = Run(f"(b) ceiling: bare POSTs, bound {bound}", receiver.delay_ms, count, section)
    run.in_flight, run.latencies_ms = in_flight.mean, latencies
    run.problems = await check_delivery(receiver, count)
    if failures:
        run.problems.append(f"{failures} POSTs not answered 200 success")
    return run
