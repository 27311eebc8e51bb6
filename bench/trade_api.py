"""The API under test as a child process (`python -m groupbuy_async api`), and waiting for
the callbacks it sends."""

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from groupbuy_async.dev.host import free_port

from .common import ROOT, SECRETS_KEY, BenchFailure, stop_process

ADMIN_TOKEN = "bench-admin-token"


class ApiClient:
    """Calls to the API at `base` over one session: each answers its envelope's data, or
    raises a BenchFailure."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.base + path, json=body) as resp:
            envelope: dict[str, Any] = await resp.json()
            if resp.status != 200 or envelope.get("code") != "0000":
                raise BenchFailure(f"POST {path} {body} -> HTTP {resp.status} {envelope}")
            return envelope["data"]  # type: ignore[no-any-return]

    async def warm_up(self, concurrency: int) -> None:
        """Opens the client's keep-alive connections and grows the API's pool."""

        async def probe() -> None:
            async with self.session.get(f"{self.base}/api/v1/gbm/teams/0") as resp:
                await resp.read()

        for _ in range(3):
            await asyncio.gather(*(probe() for _ in range(concurrency)))


@dataclass
class ApiProcess:
    proc: asyncio.subprocess.Process
    base: str
    log_path: str
    # The whole log, kept once the process has stopped (the file goes with it).
    final_log: list[str] | None = None

    def log_lines(self) -> list[str]:
        if self.final_log is not None:
            return self.final_log
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()


@contextlib.asynccontextmanager
async def api_process(
    db_url: str, redis_url: str, pool_min: int, pool_max: int, processes: int = 1,
    event_loop: str = "auto",
) -> AsyncIterator[ApiProcess]:  # fmt: skip
    """The API (`api --processes N`), ready; stopped on exit, when its log is complete. On
    error the log's tail goes to stderr, since the API's own complaint is usually the
    explanation."""
    port = free_port()
    env = {
        **os.environ,
        "GROUPBUY_DATABASE_URL": db_url,
        "GROUPBUY_REDIS_URL": redis_url,
        "GROUPBUY_HOST": "127.0.0.1",
        "GROUPBUY_PORT": str(port),
        "GROUPBUY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GROUPBUY_SECRETS_KEY": SECRETS_KEY,
        "GROUPBUY_LOG_LEVEL": "WARNING",
        "GROUPBUY_DB_POOL_MIN": str(pool_min),
        "GROUPBUY_DB_POOL_MAX": str(pool_max),
        # The merchant is local: 127.0.0.1 must be reachable, and --notify self needs the mock.
        "GROUPBUY_NOTIFY_BLOCK_PRIVATE": "false",
        "GROUPBUY_MOCK_MERCHANT": "true",
        "GROUPBUY_API_EVENT_LOOP": event_loop,
    }
    with tempfile.NamedTemporaryFile("w+b", prefix="bench-api-", suffix=".log") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "groupbuy_async", "api", "--processes", str(processes),
            env=env, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
        api = ApiProcess(proc, f"http://127.0.0.1:{port}", log.name)
        try:
            await wait_ready(api)
            yield api
        except BaseException:
            await stop_process(proc)
            if tail := "\n".join(api.log_lines()[-30:]):
                print(f"API log (last 30 lines):\n{tail}", file=sys.stderr)
            raise
        finally:
            await stop_process(proc)
            api.final_log = api.log_lines()


async def wait_ready(api: ApiProcess, limit_seconds: float = 30) -> None:
    deadline = time.monotonic() + limit_seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline and api.proc.returncode is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{api.base}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise BenchFailure(
        f"API at {api.base} not ready (exit {api.proc.returncode}); its log is above"
    )


@dataclass
class Delivery:
    delivered: int = 0
    seconds: float = 0.0  # from the last settlement until all were delivered
    compensated: int = 0  # delivered by an explicit drain
    notes: list[str] = field(default_factory=list)


async def await_callbacks(
    conn: asyncpg.Connection,
    team_ids: list[str],
    session: aiohttp.ClientSession,
    base: str,
    limit_seconds: float,
) -> Delivery:
    """Wait until every team's callback succeeded. The API sends each right after commit,
    unless it already had notifyImmediateLimit sends in the background or the merchant's
    host was at notifyPerHost in flight: then the task waits in the outbox for the worker's
    compensation, which this benchmark does not run, so after 3 s without progress it asks
    the API to drain (POST /api/v1/admin/notify/run) and counts those as compensated."""
    result = Delivery()
    started = last_change = time.perf_counter()
    previous = -1
    while True:
        done = await conn.fetchval(
            "SELECT count(*) FROM notify_task WHERE team_id = ANY($1) AND notify_status = 1",
            team_ids,
        )
        now = time.perf_counter()
        if done != previous:
            previous, last_change = done, now
        if done == len(team_ids) or now - started > limit_seconds:
            result.delivered, result.seconds = done, now - started
            return result
        if now - last_change > 3:
            async with session.post(
                f"{base}/api/v1/admin/notify/run",
                json={},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as resp:
                envelope = await resp.json()
            if resp.status != 200:
                raise BenchFailure(f"notify drain -> HTTP {resp.status} {envelope}")
            counts = envelope["data"]
            result.compensated += counts["successCount"]
            result.notes.append(f"drain: {counts}")
            last_change = time.perf_counter()
        await asyncio.sleep(0.05)
