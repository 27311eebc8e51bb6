"""The arq worker: team expiry and callback compensation, with the same startup as the app."""

import contextlib
import logging
from typing import Any

import asyncpg
from aiohttp import web
from arq import cron
from arq.connections import RedisSettings
from arq.worker import Worker

from . import bootstrap
from .callbacks.metrics import Metrics, metrics_response
from .lifecycle import StartupError
from .settings import Settings
from .trade import expiry, orders

log = logging.getLogger(__name__)

# arq writes its heartbeat under this key (with a TTL a little over the interval) while its
# loop runs; `python -m groupbuy_async health worker` reads it.
HEARTBEAT_KEY = "groupbuy:worker:health-check"
HEARTBEAT_SECONDS = 15


async def startup(ctx: dict[str, Any]) -> None:
    """The app's shared objects (bootstrap), plus the worker's own /metrics when asked.
    Once only: `python -m groupbuy_async worker` runs it before arq starts (so that an
    unreachable PostgreSQL is a one-line startup error), and arq's on_startup then finds
    it done."""
    if "exit_stack" in ctx:
        return
    settings: Settings = ctx["settings"]
    stack = ctx["exit_stack"] = contextlib.AsyncExitStack()
    services = ctx["services"] = await stack.enter_async_context(bootstrap.services(settings, 1))
    if settings.worker_metrics_port is not None:
        runner = await serve_metrics(
            services.metrics, services.pool, settings.host, settings.worker_metrics_port
        )
        stack.push_async_callback(runner.cleanup)


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
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"worker metrics cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return runner


async def shutdown(ctx: dict[str, Any]) -> None:
    if "exit_stack" in ctx:
        await ctx.pop("exit_stack").aclose()


async def fail_expired_teams(ctx: dict[str, Any]) -> int:
    failed = await orders.fail_expired_teams(ctx["services"].pool)
    if failed:
        log.info("marked %d expired teams as failed", failed)
    return failed


async def close_unpaid_orders(ctx: dict[str, Any]) -> int:
    closed = await expiry.close_unpaid_orders(ctx["services"].pool)
    if closed:
        log.info("closed %d unpaid orders past their payment timeout", closed)
    return closed


async def deliver_callbacks(ctx: dict[str, Any]) -> dict[str, int]:
    """Compensation: drain every due notify task (the original's execSettlementNotifyJob())."""
    services: bootstrap.Services = ctx["services"]
    counts = (await services.dispatcher.drain()).as_dict()
    if counts["waitCount"]:
        log.info("callback compensation: %s", counts)
    return counts


def every(seconds: int) -> set[int]:
    """arq cron seconds for a period that divides a minute (else the nearest that does)."""
    step = next(s for s in range(min(seconds, 60), 61) if 60 % s == 0)
    return set(range(0, 60, step))


def build_worker(settings: Settings, **overrides: Any) -> Worker:
    if not settings.redis_url:
        raise StartupError("GROUPBUY_REDIS_URL is not set")
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
                close_unpaid_orders,
                second=every(settings.close_unpaid_cron_seconds),
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
        "health_check_key": HEARTBEAT_KEY,
        "health_check_interval": HEARTBEAT_SECONDS,
        "keep_result": 60,
    }
    options.update(overrides)
    return Worker(**options)
