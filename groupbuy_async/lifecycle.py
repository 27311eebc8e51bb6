"""Starting and stopping processes: signals, graceful stops, one-line startup failures.

A startup failure (a setting, an unreachable server, a taken port) is a StartupError: the
CLI prints its one line and exits 2, after everything already opened has been closed.
"""

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web
from redis.exceptions import RedisError
from yarl import URL

from .settings import Settings

if TYPE_CHECKING:
    from arq.connections import ArqRedis

log = logging.getLogger("groupbuy_async")

Stop = Callable[[], Awaitable[None]]

# What reaching PostgreSQL or Redis may raise: refused or unknown hosts (OSError, incl.
# socket.gaierror and ConnectionRefusedError), time-outs, the server's refusal (asyncpg's
# PostgresError: CannotConnectNowError, InvalidCatalogNameError, bad password...), a connection
# dropped during the handshake (asyncpg's InterfaceError) and redis-py's own errors.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError,
)  # fmt: skip


class StartupError(Exception):
    """The process cannot start; the message says what to fix, in one line."""


def server_address(url: str) -> str:
    """host:port of a server URL (a socket's path for unix://), without user or password
    (safe to print)."""
    try:
        parsed = URL(url)
    except ValueError:  # e.g. libpq's multi-host postgresql://u:p@h1:5432,h2:5432/db
        return url.partition("://")[2].split("/", 1)[0].rpartition("@")[2]
    if not parsed.host:  # unix:///run/redis.sock, postgresql:///db?host=/run/postgresql
        return parsed.path if parsed.scheme == "unix" else parsed.query.get("host", "localhost")
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


def unreachable(what: str, url: str, exc: BaseException) -> str:
    """One line: which server, where (no credentials), and why."""
    return f"cannot reach {what} at {server_address(url)}: {_reason(exc)}"


@contextlib.contextmanager
def reaching(what: str, url: str) -> Iterator[None]:
    """Turn a failure to reach `what` (PostgreSQL, Redis) into a one-line StartupError."""
    try:
        yield
    except UNREACHABLE as exc:
        raise StartupError(unreachable(what, url, exc)) from None


# Any Redis command of the worker's (polls, heartbeat, cron enqueues, results) is quick: one
# that takes longer means Redis is paused or cut off, and the worker must not hang on it.
REDIS_TIMEOUT_SECONDS = 5.0


async def connect_redis(url: str) -> "ArqRedis":
    """arq's Redis client, pinged once: no retries (an unreachable server is one error now,
    not a warning a second for five seconds), and a time limit on every command (a server
    that stops answering is an error, not a worker idling forever)."""
    from arq.connections import ArqRedis

    redis: ArqRedis = ArqRedis.from_url(
        url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        await redis.ping()
    except BaseException:
        await redis.aclose()
        raise
    return redis


def warn_unsafe(settings: Settings, api: bool) -> None:
    """A production process says at start which protection its settings turn off."""
    if api and not settings.admin_secret:
        log.warning("GROUPBUY_ADMIN_TOKEN is not set: every /api/v1/admin/* call is refused")
    if not settings.notify_block_private:
        log.warning(
            "GROUPBUY_NOTIFY_BLOCK_PRIVATE is false: callbacks may reach loopback, private,"
            " link-local and metadata addresses (this host, the internal network)"
        )


async def run_until_signalled(start: Callable[[], Awaitable[Stop]]) -> None:
    """Start something, wait for SIGINT/SIGTERM, then run the stop it returned."""
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)
    try:
        stop = await start()
        try:
            await stop_event.wait()
        finally:
            log.info("stopping")
            await stop()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def start_api(app: web.Application, settings: Settings, reuse_port: bool = False) -> Stop:
    """Run the app's startup (database pool, sender) and listen; StartupError when either
    fails, with what was opened closed again. `reuse_port`: share the port with the other
    API processes of `api --processes N` (SO_REUSEPORT)."""
    runner = web.AppRunner(app, access_log=None)
    try:
        with reaching("PostgreSQL", settings.database_url or ""):
            await runner.setup()
    except StartupError:
        await runner.cleanup()
        raise
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        where = f"{settings.host}:{settings.port}"
        raise StartupError(
            f"cannot listen on {where} (GROUPBUY_HOST/PORT): {_reason(exc)}"
        ) from None
    from .processes import loop_name

    log.info(
        "API listening on http://%s:%d (process %d, event loop %s)",
        settings.host, settings.port, os.getpid(), loop_name(),
    )  # fmt: skip
    return runner.cleanup


async def serve_api(settings: Settings, ready_fd: int | None = None) -> None:
    """One API process until SIGTERM/SIGINT. With `ready_fd` it is one of `api --processes
    N`: it shares the port and writes a byte to that pipe once it listens."""
    from .http.app import create_app

    async def start() -> Stop:
        stop = await start_api(create_app(settings), settings, reuse_port=ready_fd is not None)
        # Said once it is up, so that a startup failure stays the only line printed (with
        # several processes, by their parent).
        if ready_fd is None:
            warn_unsafe(settings, api=True)
        else:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        return stop

    await run_until_signalled(start)


async def run_worker(settings: Settings) -> None:
    """The arq worker with arq's own signal handling: on SIGINT/SIGTERM it stops picking
    cron jobs, gives running ones a grace period, then closes (deleting its heartbeat).

    PostgreSQL (and the worker's /metrics port) and Redis are opened before arq starts, so
    that an unreachable one is a StartupError: one line, exit 2. Losing PostgreSQL later is
    ridden out (see liveness.Liveness) for GROUPBUY_WORKER_MAX_OUTAGE_SECONDS. If the main loop
    ends for any other reason (Redis gone, PostgreSQL gone too long), that is logged in one
    line and the process exits 1, so a supervisor restarts it: it never stays up idle."""
    from .worker import PostgresLost, build_worker, shutdown, startup

    ctx: dict[str, Any] = {"settings": settings}
    try:
        with reaching("PostgreSQL", settings.database_url or ""):
            await startup(ctx)
        with reaching("Redis", settings.redis_url or ""):
            redis = await connect_redis(settings.redis_url or "")
    except BaseException:
        await shutdown(ctx)
        raise
    warn_unsafe(settings, api=False)
    grace = int(settings.notify_timeout_seconds) + 5
    worker = build_worker(
        settings, redis_pool=redis, ctx=ctx, handle_signals=True, job_completion_wait=grace
    )
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        log.info("worker stopped by signal")
        await quietly(worker.close())
    except PostgresLost:
        # Said when it gave up. Redis is fine: close properly (heartbeat and queue deleted).
        ctx["services"].dispatcher.stop()
        await finish_jobs(worker, grace)
        await quietly(worker.close())
        raise SystemExit(1) from None
    except UNREACHABLE as exc:
        what, url = _which_server(exc, settings)
        log.error("worker stopped: lost %s at %s: %s", what, server_address(url), _reason(exc))
        await finish_jobs(worker, grace)
        # Closed without talking to Redis: the heartbeat key lapses by its TTL.
        await quietly(redis.aclose())
        raise SystemExit(1) from None
    finally:
        await shutdown(ctx)  # a no-op when worker.close() already ran it


def _which_server(exc: BaseException, settings: Settings) -> tuple[str, str]:
    if isinstance(exc, RedisError):
        return "Redis", settings.redis_url or ""
    return "PostgreSQL", settings.database_url or ""


async def finish_jobs(worker: Any, grace: float) -> None:
    """Let running jobs finish within the grace period, cancel the rest (after losing a
    server, or stopping `dev`)."""
    jobs = list(worker.tasks.values())
    running = [job for job in jobs if not job.done()]
    if running:
        _, late = await asyncio.wait(running, timeout=grace)
        for job in late:
            job.cancel()
    # Collects every job's outcome: arq's bookkeeping after a job fails on the lost Redis
    # too, and that is said already (no "Task exception was never retrieved" tracebacks).
    await asyncio.gather(*jobs, return_exceptions=True)


async def quietly(closing: Awaitable[None]) -> None:
    """Closing after a lost server may fail on that server too; the cause is logged already."""
    try:
        await closing
    except UNREACHABLE as exc:
        log.warning("closing the worker: %s", _reason(exc))


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0]


async def check_health(settings: Settings, process: str) -> int:
    """0 when healthy: the API's /readyz answers 200, or this host's workers (those of
    GROUPBUY_QUEUE_NAME) have their heartbeats in Redis (written every HEARTBEAT_SECONDS
    while a worker's loop runs, deleted when it closes) and their last drain and expiry
    sweep are not stale. 1, with one line saying why, otherwise."""
    if process == "worker":
        return await _check_worker(settings.redis_url or "", settings.queue_name)
    import aiohttp

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}/readyz"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(url) as resp,
        ):
            if resp.status == 200:
                return 0
            log.warning("API health check failed: %s answered %d", url, resp.status)
            return 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("API health check failed: %s: %s", url, _reason(exc))
        return 1


async def _check_worker(redis_url: str, queue_name: str) -> int:
    """The workers on this host: a health check runs where its worker does (a container, a
    pod), and there may be other workers elsewhere, healthy or not, that are not its own."""
    from .liveness import stale
    from .worker import key_pattern, key_worker, worker_host

    host = socket.gethostname()
    try:
        redis = await connect_redis(redis_url)
        try:
            keys = [k.decode() async for k in redis.scan_iter(key_pattern(queue_name, "alive"))]
            ids = [key_worker(queue_name, "alive", k) for k in keys]
            mine = {i: k for i, k in zip(ids, keys, strict=True) if worker_host(i) == host}
            beats = await redis.mget(list(mine.values())) if mine else []
        finally:
            await redis.aclose()
    except UNREACHABLE as exc:
        log.warning("worker health check failed: %s", unreachable("Redis", redis_url, exc))
        return 1
    now = time.time()
    problems = [
        f"worker {worker_id}: {problem}"
        for worker_id, beat in zip(mine, beats, strict=True)
        if beat  # gone since the scan: closed just now
        for problem in stale(_record(beat), now)
    ]
    if not any(beats):
        log.warning(
            "worker health check failed: no heartbeat in Redis from a worker on %s"
            " (GROUPBUY_QUEUE_NAME %s)", host, queue_name,
        )  # fmt: skip
        return 1
    if problems:
        log.warning("worker health check failed: %s", "; ".join(problems))
        return 1
    return 0


def _record(beat: bytes) -> dict[str, Any]:
    """A heartbeat's record; empty (nothing to judge) for one that is not JSON."""
    try:
        record = json.loads(beat)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
