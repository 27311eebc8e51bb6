"""The worker as deployments run it, `python -m groupbuy_async worker` in real processes:
a graceful SIGTERM, riding out a PostgreSQL outage (or giving up on one, exit 1), and
several workers sharing the compensation work."""

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from yarl import URL

from groupbuy_async.db import create_pool, migrate
from groupbuy_async.dev.databases import temporary_database
from groupbuy_async.dev.embedded import EmbeddedServer, start_postgres
from groupbuy_async.dev.host import free_port
from groupbuy_async.settings import Settings

from ..conftest import METRICS, METRICS_TOKEN, SECRETS_KEY, make_tasks
from ..merchant import LocalMerchant

NOISE = ("Traceback", "Task was destroyed", "Unclosed", "Exception ignored")


def worker_env(settings: Settings, **groupbuy: object) -> dict[str, str]:
    """The test's environment without GROUPBUY_* settings, plus the servers, a queue name
    of the test's own (other test runs may share this Redis), and `groupbuy` (names without
    the GROUPBUY_ prefix)."""
    assert settings.database_url and settings.redis_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_")}
    values: dict[str, object] = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "QUEUE_NAME": f"test:{uuid.uuid4().hex}",
        "SECRETS_KEY": SECRETS_KEY,
        "NOTIFY_BLOCK_PRIVATE": "false",
        "NOTIFY_CRON_SECONDS": 1,
        **groupbuy,
    }
    return {**env, **{f"GROUPBUY_{k}": str(v) for k, v in values.items()}}


class WorkerProcess:
    """`python -m groupbuy_async worker`, its output read as it comes (never blocking it)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: dict[str, str]) -> "WorkerProcess":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "groupbuy_async", "worker", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def matching(self, *texts: str) -> list[str]:
        return [line for line in self.lines if all(t in line for t in texts)]

    async def wait_for_line(self, *texts: str, seconds: float = 20) -> None:
        async with asyncio.timeout(seconds):
            while not self.matching(*texts):
                if self.proc.returncode is not None:
                    raise AssertionError(f"worker exited early:\n{self.log[-3000:]}")
                await asyncio.sleep(0.05)

    async def wait_exit(self, seconds: float) -> int:
        try:
            await asyncio.wait_for(self.proc.wait(), seconds)
        except TimeoutError:
            raise AssertionError(f"still running after {seconds}s:\n{self.log[-5000:]}") from None
        await self._reader
        return self.proc.returncode or 0

    async def terminate(self, seconds: float = 30) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the process took to exit."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await self.wait_exit(seconds)
        return code, time.monotonic() - began

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture
async def workers() -> AsyncIterator[Callable[[dict[str, str]], Awaitable[WorkerProcess]]]:
    """Start worker processes; any still running at the end is killed."""
    started: list[WorkerProcess] = []

    async def start(env: dict[str, str]) -> WorkerProcess:
        started.append(await WorkerProcess.start(env))
        return started[-1]

    yield start
    for w in started:
        await w.kill()


@pytest.fixture
async def own_db(
    server_urls: tuple[str, str], settings: Settings
) -> AsyncIterator[tuple[Settings, asyncpg.Pool]]:
    """Settings and a pool on a fresh database: no due task of an earlier test (some, for
    addresses that never answer, would hold a worker's send slots) is in the way."""
    async with temporary_database(server_urls[0], "groupbuy_test_worker") as url:
        pool = await create_pool(url, 1, 5)
        try:
            yield settings.model_copy(update={"database_url": url}), pool
        finally:
            await pool.close()


async def health(env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", "health", "worker", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


async def wait_health(env: dict[str, str], code: int, seconds: float) -> bool:
    """Whether `health worker` answered `code` within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (await health(env))[0] == code:
            return True
        await asyncio.sleep(0.2)
    return False


async def wait_delivered(pool: asyncpg.Pool, team_ids: list[str], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while await pool.fetchval(
            "SELECT count(*) FROM notify_task WHERE team_id = ANY($1::text[])"
            " AND notify_status = 1",
            team_ids,
        ) < len(team_ids):  # fmt: skip
            await asyncio.sleep(0.1)


# --- SIGTERM: in-flight sends finish and are recorded, the rest is handed back due now ------


async def test_sigterm_lets_in_flight_sends_finish_and_hands_back_the_rest(
    own_db: tuple[Settings, asyncpg.Pool],
    merchant: LocalMerchant,
    workers: Callable[[dict[str, str]], Awaitable[WorkerProcess]],
) -> None:
    settings, pool = own_db
    merchant.delay = 1.0
    team_ids = await make_tasks(pool, 200, merchant.url)
    timeout = 3
    env = worker_env(
        settings, NOTIFY_CONCURRENCY=10, NOTIFY_PER_HOST=10, NOTIFY_TIMEOUT_SECONDS=timeout
    )
    first = await workers(env)
    await merchant.wait_for(10, seconds=20)  # a round of sends is in flight
    code, took = await first.terminate()
    assert code == 0, first.log[-3000:]
    assert took < timeout + 3, f"took {took:.1f}s to stop:\n{first.log[-3000:]}"
    assert not any(noise in first.log for noise in NOISE), first.log[-3000:]

    received = set(merchant.ids)
    assert received and all(n == 1 for n in merchant.ids.values()), merchant.ids
    rows = await pool.fetch(
        "SELECT event_id::text AS event_id, notify_status, notify_count, claim_token,"
        " next_attempt_at <= now() AS due FROM notify_task WHERE team_id = ANY($1::text[])",
        team_ids,
    )
    sent = [r for r in rows if r["event_id"] in received]
    unsent = [r for r in rows if r["event_id"] not in received]
    assert len(sent) == len(received)
    # Every request the merchant saw is recorded: delivered, on the first attempt.
    assert {(r["notify_status"], r["notify_count"]) for r in sent} == {(1, 1)}
    # The rest was handed back: no claim left, due now rather than after the lease.
    assert unsent
    assert {(r["notify_status"], r["notify_count"]) for r in unsent} == {(0, 0)}
    assert all(r["claim_token"] is None and r["due"] for r in unsent), unsent[:3]

    # A restarted worker delivers the rest at once, nothing twice.
    second = await workers({**env, "GROUPBUY_NOTIFY_CONCURRENCY": "100",
                            "GROUPBUY_NOTIFY_PER_HOST": "100"})  # fmt: skip
    await wait_delivered(pool, team_ids, seconds=30)
    code, _ = await second.terminate()
    assert code == 0, second.log[-3000:]
    assert len(merchant.ids) == len(team_ids)
    assert all(n == 1 for n in merchant.ids.values())
    counts = await pool.fetch(
        "SELECT notify_count FROM notify_task WHERE team_id = ANY($1::text[])", team_ids
    )
    assert {r["notify_count"] for r in counts} == {1}


# --- PostgreSQL lost: one line down, one line back, health follows; or exit 1 ---------------


@pytest.fixture
async def pg_dir() -> AsyncIterator[Path]:
    """Not under pytest's tmp_path: run as root, PostgreSQL runs as another user and must
    traverse to its data, and a pytest session starting meanwhile (another checkout's) makes
    /tmp/pytest-of-root private again."""
    path = Path(tempfile.mkdtemp(prefix="groupbuy-test-pg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def own_postgres(pg_dir: Path) -> AsyncIterator[EmbeddedServer]:
    """A migrated PostgreSQL only this test uses (and may stop), never the shared one."""
    server = await asyncio.to_thread(start_postgres, pg_dir)
    try:
        await migrate(server.url)
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def _metrics(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"http://127.0.0.1:{port}/metrics", headers=METRICS) as r,
    ):
        return r.status, await r.text()


def _sample(text: str, name: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[-1])


async def test_worker_rides_out_a_postgresql_restart_in_two_lines(
    settings: Settings,
    own_postgres: EmbeddedServer,
    merchant: LocalMerchant,
    workers: Callable[[dict[str, str]], Awaitable[WorkerProcess]],
    pg_dir: Path,
) -> None:
    metrics_port = free_port()
    env = worker_env(
        settings.model_copy(update={"database_url": own_postgres.url}),
        FAIL_TEAMS_CRON_SECONDS=1,
        WORKER_METRICS_PORT=metrics_port,
        METRICS_TOKEN=METRICS_TOKEN,
    )
    pool = await create_pool(own_postgres.url, 1, 2)
    try:
        worker = await workers(env)
        await wait_delivered(pool, await make_tasks(pool, 3, merchant.url), seconds=20)
        assert await wait_health(env, 0, seconds=10)
        status, text = await _metrics(metrics_port)
        assert status == 200
        for gauge in ("last_drain", "last_expiry_sweep"):
            stamp = _sample(text, f"groupbuy_worker_{gauge}_timestamp_seconds")
            assert time.time() - 10 < stamp <= time.time(), gauge
    finally:
        await pool.close()

    await asyncio.to_thread(own_postgres.stop)
    # Sweeps every second go stale after a few: `health worker` says so, /metrics still answers.
    went_unhealthy = await wait_health(env, 1, seconds=15)
    status, _ = await _metrics(metrics_port)
    restarted = await asyncio.to_thread(start_postgres, pg_dir, URL(own_postgres.url).port)
    pool = await create_pool(restarted.url, 1, 2)
    try:
        came_back = await wait_health(env, 0, seconds=15)
        # It goes on delivering.
        await wait_delivered(pool, await make_tasks(pool, 3, merchant.url), seconds=20)
        code, _ = await worker.terminate()
    finally:
        await pool.close()
        await asyncio.to_thread(restarted.stop)
    log = worker.log
    assert code == 0, log[-3000:]
    assert not any(noise in log for noise in NOISE), log[-5000:]
    assert len(worker.matching("lost PostgreSQL at")) == 1, log[-3000:]
    assert len(worker.matching("PostgreSQL at", "back after")) == 1, log[-3000:]
    assert went_unhealthy and came_back
    assert status == 200  # the worker's /metrics answers during the outage
    assert all(n == 1 for n in merchant.ids.values()) and len(merchant.ids) == 6


async def test_worker_exits_1_when_postgresql_stays_down(
    settings: Settings,
    own_postgres: EmbeddedServer,
    workers: Callable[[dict[str, str]], Awaitable[WorkerProcess]],
) -> None:
    env = worker_env(
        settings.model_copy(update={"database_url": own_postgres.url}),
        FAIL_TEAMS_CRON_SECONDS=1,
        WORKER_MAX_OUTAGE_SECONDS=3,
    )
    worker = await workers(env)
    await worker.wait_for_line("cron:deliver_callbacks", "●")  # a drain completed
    await asyncio.to_thread(own_postgres.stop)
    code = await worker.wait_exit(seconds=20)
    log = worker.log
    assert code == 1, log[-3000:]
    assert not any(noise in log for noise in NOISE), log[-5000:]
    assert len(worker.matching("lost PostgreSQL at")) == 1, log[-3000:]
    (gave_up,) = worker.matching("worker stopped: PostgreSQL at")
    assert "unreachable for" in gave_up and "GROUPBUY_WORKER_MAX_OUTAGE_SECONDS" in gave_up
    # It closed properly: its heartbeat is gone at once.
    code, out = await health(env)
    assert code == 1 and "no heartbeat" in out


# --- Several workers share the compensation work ---------------------------------------------


def _delivered_by(worker: WorkerProcess) -> int:
    """successCount summed over the worker's drains, from its log lines."""
    import ast

    total = 0
    for line in worker.matching("callback compensation: {"):
        counts: dict[str, Any] = ast.literal_eval(line[line.index("{") :])
        total += counts["successCount"]
    return total


async def test_two_workers_both_drain_one_backlog_and_never_send_a_task_twice(
    own_db: tuple[Settings, asyncpg.Pool],
    merchant: LocalMerchant,
    workers: Callable[[dict[str, str]], Awaitable[WorkerProcess]],
) -> None:
    # A tick every 5 s; one worker at 10 sends in flight drains the backlog in ~4 s, so
    # unless each worker drains at each tick, one worker would deliver everything (and a
    # worker starting its drain a second or two after the other still gets a share).
    settings, pool = own_db
    merchant.delay = 0.1
    env = worker_env(settings, NOTIFY_CRON_SECONDS=5, NOTIFY_CONCURRENCY=10, NOTIFY_PER_HOST=10)
    pair = [await workers(env), await workers(env)]
    for w in pair:
        # Its start-up drain and its first tick's are done: its ticks are now at the same
        # times as the other's (the first may come early, enqueued late after start-up).
        # (Not an error if not: a worker that does not run its own ticks fails below.)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                while len(w.matching("cron:deliver_callbacks", "●")) < 2:
                    await asyncio.sleep(0.05)
    team_ids = await make_tasks(pool, 400, merchant.url)
    await wait_delivered(pool, team_ids, seconds=30)
    for w in pair:
        code, _ = await w.terminate()
        assert code == 0, w.log[-3000:]
    shares = [_delivered_by(w) for w in pair]
    logs = "\n---\n".join(w.log[-3000:] for w in pair)
    assert sum(shares) == len(team_ids) and all(shares), f"{shares}\n{logs}"
    assert len(merchant.ids) == len(team_ids)
    assert all(n == 1 for n in merchant.ids.values())
    counts = await pool.fetch(
        "SELECT notify_count FROM notify_task WHERE team_id = ANY($1::text[])", team_ids
    )
    assert {r["notify_count"] for r in counts} == {1}
