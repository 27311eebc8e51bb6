"""The `worker` verb: the arq worker as a process, until a signal or a lost server.

PostgreSQL (and the worker's /metrics port) and Redis are opened before arq starts, so that an
unreachable one is a StartupError: one line, exit 2. Losing PostgreSQL later is ridden out
(see liveness.Liveness) for GROUPBUY_WORKER_MAX_OUTAGE_SECONDS. If the main loop ends for any
other reason (Redis gone, PostgreSQL gone too long), that is logged in one line and the process
exits 1, so a supervisor restarts it: it never stays up idle.
"""

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from redis.exceptions import RedisError

from ..process.reasons import reason, server_address
from ..process.startup import UNREACHABLE, reaching, warn_unsafe
from ..settings import Settings
from .arq_worker import build_worker
from .context import shutdown, startup
from .keys import connect_redis
from .liveness import PostgresLost

log = logging.getLogger("groupbuy_async")


async def run_worker(settings: Settings) -> None:
    """The arq worker with arq's own signal handling: on SIGINT/SIGTERM it stops picking
    cron jobs, gives running ones a grace period, then closes (deleting its heartbeat)."""
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
        log.error("worker stopped: lost %s at %s: %s", what, server_address(url), reason(exc))
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
        log.warning("closing the worker: %s", reason(exc))
