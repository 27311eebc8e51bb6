"""The worker's ctx, what arq hands each job: the shared objects of bootstrap, the worker's
liveness and its /metrics, opened once and closed with the worker."""

import contextlib
import logging
from typing import Any

from .. import bootstrap
from ..callbacks.retention import pruned_counter
from ..settings import Settings
from .liveness import Liveness
from .metrics import serve_metrics


class _QuietPoolFloor(logging.Filter):
    """asyncpg's pool reconnects its idle floor in the background while PostgreSQL is down,
    logging a traceback at each try; the worker's own line says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pool connection floor" not in record.getMessage()


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
    liveness = ctx["liveness"] = Liveness(settings)
    liveness.expose(services.metrics)
    ctx["pruned_rows"] = pruned_counter(services.metrics.registry)
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _QuietPoolFloor) for f in pool_log.filters):
        pool_log.addFilter(_QuietPoolFloor())
    if settings.worker_metrics_port is not None:
        runner = await serve_metrics(
            services.metrics, services.pool, settings.host, settings.worker_metrics_port,
            settings.metrics_secret,
        )  # fmt: skip
        stack.push_async_callback(runner.cleanup)


async def shutdown(ctx: dict[str, Any]) -> None:
    if "exit_stack" in ctx:
        await ctx.pop("exit_stack").aclose()
