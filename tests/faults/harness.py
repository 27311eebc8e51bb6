"""One harness run (its own PostgreSQL and Redis) and one stage per scenario (a fresh
database, the API and worker as real processes, merchants), and the accounting at the end:
attempted / delivered / lost / duplicated from the merchants' receipts against the outbox,
and the trade invariants in SQL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import asyncpg

from groupbuy_async.dev.host import free_port

from .merchant import Merchant
from .procs import ROOT, Child, clean_env, run_once
from .rabbit import PrivateRabbit
from .servers import Postgres, Redis, clean_stale_runs, start_watchdog
from .shop import ADMIN_TOKEN, Shop

# The service's settings in every stage (see README "Settings").
NOTIFY_TIMEOUT = 1.0
RETRY_SCHEDULE = "1s,1s,2s,2s,5s"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRETS_KEY = "rA-FQVO3wigthyj2RDALcqgn3CmUErYPfktyHBrXbl0="  # seals endpoint secrets
# settings.notify_lease: a claim held by a process that died is due again after this.
LEASE = NOTIFY_TIMEOUT * 3 + 30
# A send is "in flight at a fault" when the merchant got it at most this long before it:
# the attempt's time limit plus a second for its result to be written back.
IN_FLIGHT = NOTIFY_TIMEOUT + 1.0

BASE = ROOT / ".data" / "faults"


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


@dataclass
class Outcome:
    """One row of the report."""

    number: str
    name: str
    attempted: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    excused: int = 0  # duplicates of sends in flight at a kill (allowed)
    p50: float | None = None
    p99: float | None = None
    slowest: float | None = None  # the healthy merchant's slowest delivery
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    crashed: str = ""  # the harness itself failed in this scenario
    skipped: str = ""  # why it could not run here (a server it needs is not installed)

    @property
    def verdict(self) -> str:
        if self.crashed:
            return "ERROR"
        if self.skipped:
            return "SKIP"
        return "FAIL" if self.problems else "PASS"

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


class Run:
    """The harness's servers and log directory for one run; `async with`."""

    def __init__(self) -> None:
        self.dir = BASE / f"run-{os.getpid()}-{int(time.time())}"
        self.logs = BASE / "logs"
        self.pg = Postgres(self.dir)
        self.redis = Redis(self.dir)
        # Held by one scenario from its start until it only waits (Stage.idle): the others'
        # setup, load and faults never overlap it, their lease waits may.
        self.busy = asyncio.Lock()
        self.busy_owner = ""
        # Each stage its own Redis database (arq queue); only a few stages overlap.
        self._redis_dbs = itertools.cycle(range(16))
        self.stale: list[str] = []
        self._watchdog: subprocess.Popen[bytes] | None = None
        # A private RabbitMQ, started for the first scenario that asks for it.
        self.rabbit: PrivateRabbit | None = None
        self._rabbit_lock = asyncio.Lock()

    async def __aenter__(self) -> Run:
        self.stale = clean_stale_runs(BASE)
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.dir.mkdir(parents=True)
        self._watchdog = start_watchdog(BASE)
        try:
            await self.pg.start()
            await self.redis.start()
        except BaseException:
            self.stop_now()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_now()

    async def broker(self) -> PrivateRabbit:
        """The run's private RabbitMQ, started at the first call."""
        async with self._rabbit_lock:
            if self.rabbit is None:
                self.rabbit = PrivateRabbit(self.dir / "rabbitmq", f"gbfaults-{os.getpid()}")
                await self.rabbit.start()
            return self.rabbit

    def stop_now(self) -> None:
        """Synchronous on purpose: also runs from atexit and after a cancellation."""
        for server in (self.rabbit, self.redis, self.pg):
            with contextlib.suppress(Exception):
                if server is not None:
                    server.stop_now()
        for name in ("postgres.log", "redis.log", "rabbitmq/server.log"):
            with contextlib.suppress(OSError):
                shutil.copy(self.dir / name, self.logs / name.replace("/", "-"))
        shutil.rmtree(self.dir, ignore_errors=True)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:  # nothing left for it to do
            watchdog.terminate()
            watchdog.wait(5)

    async def acquire(self, owner: str) -> None:
        await self.busy.acquire()
        self.busy_owner = owner

    def release(self, owner: str) -> None:
        if self.busy_owner == owner:
            self.busy_owner = ""
            self.busy.release()

    def redis_db(self) -> int:
        return next(self._redis_dbs)


class Stage:
    """One scenario's world: `async with Stage(run, "2", "worker-kill9") as s`."""

    def __init__(
        self, run: Run, number: str, name: str, target: int = 2,
        settings: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.run = run
        self.outcome = Outcome(number, name)
        self.target = target
        self.dir = run.logs / f"{number}-{name}"
        self.port = free_port()
        self.api_base = f"http://127.0.0.1:{self.port}"
        self.settings = settings or {}
        self.db_url = ""
        self.env: dict[str, str] = {}
        # The team-completed callbacks: all of notify_task until events were typed.
        self.tasks = "notify_task"
        self._stack = contextlib.AsyncExitStack()
        self.merchants: list[Merchant] = []
        self.began = time.monotonic()

    async def __aenter__(self) -> Stage:
        self.dir.mkdir(parents=True, exist_ok=True)
        slug = f"faults_{self.outcome.number}_{self.outcome.name}".replace("-", "_")
        self.db_url = await self.run.pg.create_database(slug)
        self.env = clean_env({
            "GROUPBUY_DATABASE_URL": self.db_url,
            "GROUPBUY_REDIS_URL": self.run.redis.url_for(self.run.redis_db()),
            "GROUPBUY_ADMIN_TOKEN": ADMIN_TOKEN,
            "GROUPBUY_HOST": "127.0.0.1",
            "GROUPBUY_PORT": str(self.port),
            "GROUPBUY_NOTIFY_BLOCK_PRIVATE": "false",  # the merchants are local processes
            "GROUPBUY_SECRETS_KEY": SECRETS_KEY,
            "GROUPBUY_NOTIFY_RETRY_SCHEDULE": RETRY_SCHEDULE,
            "GROUPBUY_NOTIFY_TIMEOUT_SECONDS": f"{NOTIFY_TIMEOUT:g}",
            "GROUPBUY_NOTIFY_CRON_SECONDS": "1",
            "GROUPBUY_FAIL_TEAMS_CRON_SECONDS": "1",
            "GROUPBUY_LOG_LEVEL": "INFO",
            # The latency bound scenarios 5 and 6 check is these limits plus a margin.
            "GROUPBUY_DB_ACQUIRE_TIMEOUT_SECONDS": "2",
            "GROUPBUY_DB_COMMAND_TIMEOUT_SECONDS": "2",
            **{f"GROUPBUY_{k.upper()}": v for k, v in self.settings.items()},
        })  # fmt: skip
        code = await run_once(
            ["-m", "groupbuy_async", "migrate"], self.env, self.dir / "migrate.log", 60
        )
        if code != 0:
            raise RuntimeError(f"migrate exited {code}; see {self.dir / 'migrate.log'}")
        typed = await self.fetch(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'notify_task' AND column_name = 'event_type'"
        )
        if typed:  # typed events: a team may have other events than its completion
            self.tasks = "(SELECT * FROM notify_task WHERE event_type = 'team.completed')"
        api_env = {**self.env, "GROUPBUY_LOG_LEVEL": "WARNING"}  # no access log per request
        self.api = Child("api", ["-m", "groupbuy_async", "api"], api_env, self.dir / "api.log",
                         supervise=True)  # fmt: skip
        self.worker = Child("worker", ["-m", "groupbuy_async", "worker"], self.env,
                            self.dir / "worker.log", supervise=True)  # fmt: skip
        self._stack.push_async_callback(self.api.close)
        self._stack.push_async_callback(self.worker.close)
        self.http = await self._stack.enter_async_context(aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=64),
        ))  # fmt: skip
        await self.api.start()
        await self.api_ready()
        self.shop = Shop(self.api_base, self.http)
        await self.shop.set_up(self.target)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.idle()  # stopping the processes is only waiting, too
        await self._stack.aclose()
        self.outcome.seconds = time.monotonic() - self.began
        self._log_notes()

    def idle(self) -> None:
        """From here on the scenario only waits (for leases to lapse, the outbox to drain):
        the next scenario may start. Until then it had the machine to itself."""
        self.run.release(self.outcome.number)

    async def merchant(
        self, name: str, endpoints: Sequence[str] = ("notify",), **kwargs: Any
    ) -> Merchant:
        """A merchant process; each of `endpoints` (paths) an endpoint of the faults
        merchant, `name-path`, so that teams may name it as their notifyUrl."""
        m = Merchant(name, self.dir / f"merchant-{name}.log", secret=SECRET, **kwargs)
        await self._stack.enter_async_context(m)
        self.merchants.append(m)
        for path in endpoints:
            await self.shop.endpoint(f"{name}-{path}", m.url(path), SECRET)
        return m

    async def api_ready(self, seconds: float = 30) -> float:
        """Wait until /readyz answers 200; the seconds it took."""
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.http.get(
                    f"{self.api_base}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return time.monotonic() - began
            await asyncio.sleep(0.1)
        raise RuntimeError(f"API not ready after {seconds:.0f}s; see {self.dir / 'api.log'}")

    async def worker_ready(self, seconds: float = 30) -> None:
        """Wait until the worker's latest start has reached arq's loop (it logs so)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            lines = self.worker.log_lines()
            starts = [i for i, line in enumerate(lines) if line.startswith("=== harness: start")]
            if any("Starting worker" in line for line in lines[starts[-1] if starts else 0 :]):
                return
            if not self.worker.running and not self.worker.supervise:
                break
            await asyncio.sleep(0.1)
        raise RuntimeError(f"worker not running after {seconds:.0f}s; see {self.worker.log}")

    # --- reading the outbox ----------------------------------------------------------

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.db_url, timeout=5)
        try:
            return await conn.fetch(sql, *args, timeout=10)
        finally:
            await conn.close()

    async def open_tasks(self, urls: list[str]) -> int:
        rows = await self.fetch(
            f"SELECT count(*) FROM {self.tasks} t WHERE notify_url = ANY($1) AND notify_status <> 1",
            urls,
        )
        return int(rows[0][0])

    async def wait_drained(
        self, merchants: list[Merchant], deadline: float, urls: list[str] | None = None
    ) -> bool:
        """Until every callback of these merchants' completed teams (or those to `urls`)
        is recorded delivered (then a second more, for stragglers), or time.monotonic()
        passes `deadline`."""
        urls = urls or [m.url() for m in merchants]
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                if await self.open_tasks(urls) == 0:
                    await asyncio.sleep(1.0)
                    return True
            await asyncio.sleep(0.25)
        return False

    async def wait_for_receipts(self, merchant: Merchant, count: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sum(1 for r in await merchant.receipts() if r[2]) >= count:
                return True
            await asyncio.sleep(0.05)
        return False

    # --- the accounting --------------------------------------------------------------

    async def account(
        self,
        healthy: list[Merchant],
        excuse: list[tuple[float, float]] | None = None,
        latency: bool = False,
        urls: list[str] | None = None,
    ) -> None:
        """Fill the outcome for the teams calling `healthy` merchants back (at their urls:
        `urls` when given, and then only the receipts at those urls count). Duplicates whose
        id was first received within an `excuse` window (time.time()) are excused."""
        o = self.outcome
        rows = await self.fetch(
            "SELECT g.team_id, g.status, g.notify_url, n.event_id::text AS event_id,"
            " n.notify_status, n.notify_count FROM group_buy_order g"
            f" LEFT JOIN {self.tasks} n USING (team_id)"
        )
        by_url = set(urls or [m.url() for m in healthy])
        completed = [r for r in rows if r["status"] == 1 and r["notify_url"] in by_url]
        o.attempted = len(completed)
        first_ok: dict[str, float] = {}
        unknown: list[str] = []
        known = {r[0] for r in await self.fetch("SELECT event_id::text FROM notify_task")}
        timeouts: dict[str, list[float]] = defaultdict(list)  # attempts the sender timed out
        for r in await self.fetch(
            "SELECT n.event_id::text, extract(epoch FROM a.started_at)::float8"
            " FROM notify_attempt a JOIN notify_task n ON n.id = a.task_id"
            " WHERE a.error LIKE 'timeout%'"
        ):
            timeouts[r[0]].append(r[1])
        timed_out = 0
        for m in healthy:
            oks: dict[str, list[float]] = defaultdict(list)
            receipts = await m.receipts()
            if urls:
                receipts = [r for r in receipts if m.base + r[3] in by_url]
            unsigned = sum(1 for r in receipts if r[4] is False)
            if unsigned:
                o.problems.append(f"merchant {m.name}: {unsigned} callback(s) badly signed")
            for msg_id, at, ok, _, _ in receipts:
                if msg_id not in known:
                    unknown.append(msg_id)
                if ok:
                    oks[msg_id].append(at)
            for msg_id, times in oks.items():
                first_ok[msg_id] = min(times)
                extra = len(times) - 1
                o.duplicated += extra
                if extra and any(a <= min(times) <= b for a, b in excuse or []):
                    o.excused += extra
                elif extra and any(
                    t - 0.5 <= min(times) <= t + NOTIFY_TIMEOUT for t in timeouts.get(msg_id, [])
                ):
                    # The sender gave up on an attempt the merchant did answer: at least once.
                    o.excused += extra
                    timed_out += extra
        o.delivered = sum(1 for r in completed if r["event_id"] in first_ok)
        o.lost = o.attempted - o.delivered
        if timed_out:
            o.notes.append(f"{timed_out} duplicate(s) after a send the sender timed out (excused)")
        if unknown:
            o.problems.append(
                f"{len(unknown)} callback(s) with ids of no task, e.g. {unknown[0]!r}"
            )
        if latency:
            self._latencies(completed, first_ok)
        self._client_view(rows)
        o.expect(o.lost == 0, f"lost {o.lost} of {o.attempted} callbacks")
        o.expect(
            o.duplicated == o.excused,
            f"{o.duplicated - o.excused} duplicate receipt(s) not explained by a kill -9",
        )
        o.problems += await self.invariants()

    def _latencies(self, completed: list[asyncpg.Record], first_ok: dict[str, float]) -> None:
        done = {t.team_id: t.completed_at for t in self.shop.teams if t.completed_at}
        lat = [
            first_ok[r["event_id"]] - done[r["team_id"]]
            for r in completed
            if r["event_id"] in first_ok and r["team_id"] in done
        ]
        if lat:
            self.outcome.p50, self.outcome.p99 = percentile(lat, 50), percentile(lat, 99)
            self.outcome.slowest = max(lat)

    def _client_view(self, rows: list[asyncpg.Record]) -> None:
        """What the shoppers were told agrees with PostgreSQL."""
        told = {t.team_id for t in self.shop.teams if t.completed_at}
        stored = {r["team_id"] for r in rows if r["status"] == 1}
        if told != stored:
            self.outcome.problems.append(
                f"teamCompleted answers ({len(told)}) disagree with complete teams in the"
                f" database ({len(stored)}): e.g. {sorted(told ^ stored)[:3]}"
            )

    async def invariants(self) -> list[str]:
        """The trade invariants, each a query for violating teams."""
        checks = {
            "lock_count = its orders": "lock_count <> (SELECT count(*) FROM group_buy_order_list l"
            " WHERE l.team_id = g.team_id)",
            "complete_count = its paid orders": "complete_count <> (SELECT count(*) FROM"
            " group_buy_order_list l WHERE l.team_id = g.team_id AND l.status = 1)",
            "status 1 iff complete_count = target_count": "(status = 1) <> (complete_count ="
            " target_count)",
            "one completer per complete team": "status = 1 AND (SELECT count(*) FROM"
            " group_buy_order_list l WHERE l.team_id = g.team_id AND l.completed_team) <> 1",
            "exactly one notify_task per complete team": f"(SELECT count(*) FROM {self.tasks} n"
            " WHERE n.team_id = g.team_id) <> CASE WHEN status = 1 THEN 1 ELSE 0 END",
        }
        problems = []
        for name, where in checks.items():
            bad = await self.fetch(f"SELECT team_id FROM group_buy_order g WHERE {where}")
            if bad:
                problems.append(
                    f"invariant '{name}' broken for {len(bad)} team(s), e.g. {bad[0][0]}"
                )
        return problems

    async def task_states(self, merchants: list[Merchant]) -> dict[int, int]:
        rows = await self.fetch(
            f"SELECT notify_status, count(*) FROM {self.tasks} t WHERE notify_url LIKE ANY($1)"
            " GROUP BY 1",
            [f"{m.base}/%" for m in merchants],
        )
        return {int(r[0]): int(r[1]) for r in rows}

    # --- notes ---------------------------------------------------------------------------

    def _log_notes(self) -> None:
        o = self.outcome
        for child in (self.api, self.worker):
            unasked = child.unexpected_exits
            if unasked:
                codes = ",".join(str(e.code) for e in unasked)
                o.notes.append(
                    f"{child.name} exited unasked x{len(unasked)} (codes {codes}), restarted"
                )
            tracebacks = sum("Traceback" in line for line in child.log_lines())
            if tracebacks:
                o.notes.append(f"{child.name} log: {tracebacks} traceback(s)")


def latency_note(calls: list[Any]) -> str:
    if not calls:
        return "no API calls in the window"
    slowest = max(c.seconds for c in calls)
    statuses: dict[str, int] = defaultdict(int)
    for c in calls:
        statuses[str(c.status) if c.status else c.error.split(":")[0] or "no answer"] += 1
    shown = " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))
    return f"{len(calls)} API calls, max {slowest:.1f}s [{shown}]"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


__all__ = ["IN_FLIGHT", "LEASE", "SECRET", "Outcome", "Run", "Stage"]
