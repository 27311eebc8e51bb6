"""Starting and stopping processes: signals, graceful stops, one-line startup failures.

A startup failure (a setting, an unreachable server, a taken port) is a StartupError: the
CLI prints its one line and exits 2, after everything already opened has been closed.
"""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web
from redis.exceptions import RedisError
from yarl import URL

from .settings import Settings

log = logging.getLogger("groupbuy_async")

Stop = Callable[[], Awaitable[None]]


class StartupError(Exception):
    """The process cannot start; the message says what to fix, in one line."""


def server_address(url: str) -> str:
    """host:port of a server URL, without user or password (safe to print)."""
    parsed = URL(url)
    return f"{parsed.host}:{parsed.port}" if parsed.port else str(parsed.host)


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


async def start_api(app: web.Application, settings: Settings) -> Stop:
    """Run the app's startup (database pool, sender) and listen; StartupError when either
    fails, with what was opened closed again."""
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        await runner.cleanup()
        where = server_address(settings.database_url or "")
        raise StartupError(f"cannot reach PostgreSQL at {where}: {_reason(exc)}") from None
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as exc:
        await runner.cleanup()
        where = f"{settings.host}:{settings.port}"
        raise StartupError(
            f"cannot listen on {where} (GROUPBUY_HOST/PORT): {_reason(exc)}"
        ) from None
    log.info("API listening on http://%s:%d", settings.host, settings.port)
    return runner.cleanup


async def serve_api(settings: Settings) -> None:
    from .http.app import create_app

    if not settings.admin_secret:
        log.warning("GROUPBUY_ADMIN_TOKEN is not set: every /api/v1/admin/* call is refused")
    await run_until_signalled(lambda: start_api(create_app(settings), settings))


async def run_worker(settings: Settings) -> None:
    """The arq worker with arq's own signal handling: on SIGINT/SIGTERM it stops picking
    cron jobs, gives running ones a grace period, then closes. If its main loop ends for
    any other reason (Redis or PostgreSQL unreachable), the error propagates and the
    process exits non-zero, so a supervisor restarts it: it never stays up idle."""
    from .worker import build_worker

    grace = int(settings.notify_timeout_seconds) + 5
    worker = build_worker(settings, handle_signals=True, job_completion_wait=grace)
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        log.info("worker stopped by signal")
    except (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        started = "services" in worker.ctx
        if isinstance(exc, RedisError):
            what = f"Redis at {server_address(settings.redis_url or '')}"
        else:
            what = f"PostgreSQL at {server_address(settings.database_url or '')}"
        if not started:
            raise StartupError(f"cannot reach {what}: {_reason(exc)}") from None
        log.error("worker stopped: lost %s: %s", what, _reason(exc))
        raise SystemExit(1) from None
    finally:
        await _quietly(worker.close())


async def _quietly(closing: Awaitable[None]) -> None:
    """Closing after a lost server may fail on that server too; the cause is logged already."""
    try:
        await closing
    except (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("closing the worker: %s", _reason(exc))


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0]


async def check_health(settings: Settings, process: str) -> int:
    """0 when healthy: the API's /readyz answers 200, or the worker's arq heartbeat (written
    every HEARTBEAT_SECONDS while its loop runs) is in Redis."""
    if process == "worker":
        from arq.connections import RedisSettings
        from arq.worker import async_check_health

        from .worker import HEARTBEAT_KEY

        redis = RedisSettings.from_dsn(settings.redis_url or "")
        return await async_check_health(redis, health_check_key=HEARTBEAT_KEY)
    import aiohttp

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(f"http://{host}:{settings.port}/readyz") as resp,
        ):
            return 0 if resp.status == 200 else 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("API health check failed: %s", _reason(exc))
        return 1
