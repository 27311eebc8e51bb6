"""The arq worker: team expiry and callback compensation, with the same startup as the app."""

import logging
from typing import Any

import asyncpg
from aiohttp import web
from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker

from . import trade
from .db import create_pool
from .dispatch import Dispatcher
from .metrics import Metrics, metrics_response
from .sender import Sender
from .settings import Settings

log = logging.getLogger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    """Mirrors the app's cleanup_ctx: one pool, one shared ClientSession, one dispatcher."""
    settings: Settings = ctx["settings"]
    assert settings.database_url, "GROUPBUY_DATABASE_URL must be set"
    ctx["pool"] = await create_pool(settings.database_url, 1, settings.db_pool_max)
    ctx["sender"] = Sender.from_settings(settings)
    metrics = Metrics()
    ctx["dispatcher"] = Dispatcher(ctx["pool"], ctx["sender"], settings, metrics)
    if settings.worker_metrics_port is not None:
        ctx["metrics_runner"] = await serve_metrics(
            metrics, ctx["pool"], settings.host, settings.worker_metrics_port
        )


async def serve_metrics(
    metrics: Metrics, pool: asyncpg.Pool, host: str, port: int
) -> web.AppRunner:
    """The worker's own /metrics: its compensation sends are not seen by the API's."""

    async def handler(_: web.Request) -> web.Response:
        return await metrics_response(metrics, pool)

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return runner


async def shutdown(ctx: dict[str, Any]) -> None:
    if "metrics_runner" in ctx:
        await ctx["metrics_runner"].cleanup()
    if "sender" in ctx:
        await ctx["sender"].close()
    if "pool" in ctx:
        await ctx["pool"].close()


async def fail_expired_teams(ctx: dict[str, Any]) -> int:
    failed = await trade.fail_expired_teams(ctx["pool"])
    if failed:
        log.info("marked %d expired teams as failed", failed)
    return failed


async def deliver_callbacks(ctx: dict[str, Any]) -> dict[str, int]:
    """Compensation: drain every due notify task (the original's execSettlementNotifyJob())."""
    dispatcher: Dispatcher = ctx["dispatcher"]
    counts = (await dispatcher.drain()).as_dict()
    if counts["waitCount"]:
        log.info("callback compensation: %s", counts)
    return counts


def every(seconds: int) -> set[int]:
    """arq cron seconds for a period that divides a minute (else the nearest that does)."""
    step = next(s for s in range(min(seconds, 60), 61) if 60 % s == 0)
    return set(range(0, 60, step))


def build_worker(settings: Settings, **overrides: Any) -> Worker:
    assert settings.redis_url, "GROUPBUY_REDIS_URL must be set"
    options: dict[str, Any] = {
        "functions": [],
        "cron_jobs": [
            cron(
                fail_expired_teams,
                second=every(settings.fail_teams_cron_seconds),
                microsecond=0,
                run_at_startup=True,
                timeout=300,
            ),
            cron(
                deliver_callbacks,
                second=every(settings.notify_cron_seconds),
                microsecond=0,
                run_at_startup=True,
                timeout=3600,
            ),
        ],
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "handle_signals": False,
        "max_jobs": 10,
        "keep_result": 60,
    }
    options.update(overrides)
    return Worker(**options)
