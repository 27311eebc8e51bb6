"""The arq worker: team expiry and callback compensation, with the same startup as the app.

Each worker process has an arq queue of its own, so each runs every cron tick: N workers
drain N times as fast as one (FOR UPDATE SKIP LOCKED hands each a different share), and
team expiry runs on each (the same way). Its keys in Redis, under GROUPBUY_QUEUE_NAME:

  {queue}:jobs:{worker}   its arq queue (its cron ticks)
  {queue}:alive:{worker}  its heartbeat, rewritten every HEARTBEAT_SECONDS with a TTL just
                          longer, deleted when it closes: what `health worker` reads

where {worker} is host:pid:random. Deployments sharing a Redis database need distinct
queue names, or `health worker` would see each other's workers.

PostgreSQL out of reach is ridden out: the cron jobs say so in one line when it is lost and
one when it is back, and try again at each tick; after GROUPBUY_WORKER_MAX_OUTAGE_SECONDS
the worker exits 1 for its supervisor. The heartbeat carries when the last drain and expiry
sweep completed (also gauges on the worker's /metrics), and `health worker` fails when they
are stale.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from signal import Signals
from typing import Any

import asyncpg
from aiohttp import web
from arq import cron
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.worker import Worker

from . import bootstrap
from .callbacks.metrics import Metrics
from .lifecycle import StartupError
from .liveness import Liveness
from .settings import Settings
from .trade import expiry, orders

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15
# arq runs at most this many jobs at once per worker; drains overlap up to MAX_DRAINS of
# them, so that a long backlog (each drain then runs for DRAIN_SECONDS) never leaves team
# expiry waiting for a slot.
MAX_JOBS = 10
MAX_DRAINS = MAX_JOBS - 2
# The worker's /metrics reads the outbox's counts at scrape time, within this long.
METRICS_DB_SECONDS = 5.0

# PostgreSQL out of reach: refused, reset or timed out (OSError, TimeoutError, asyncpg's
# InterfaceError and connection errors, class 08), shutting down or starting up (class 57,
# e.g. CannotConnectNowError), out of connections or other resources (class 53).
DB_DOWN: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError,
)  # fmt: skip


class PostgresLost(Exception):
    """PostgreSQL stayed out of reach longer than GROUPBUY_WORKER_MAX_OUTAGE_SECONDS (said
    already, in one line): the worker exits 1."""


class _QuietPoolFloor(logging.Filter):
    """asyncpg's pool reconnects its idle floor in the background while PostgreSQL is down,
    logging a traceback at each try; the worker's own line says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pool connection floor" not in record.getMessage()


def new_worker_id() -> str:
    """host:pid:random: unique, and says where the worker runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def queue_key(queue_name: str, worker_id: str) -> str:
    return f"{queue_name}:jobs:{worker_id}"


def alive_key(queue_name: str, worker_id: str) -> str:
    return f"{queue_name}:alive:{worker_id}"


def key_pattern(queue_name: str, kind: str) -> str:
    """SCAN MATCH pattern of every `kind` key ("jobs", "alive") under `queue_name`, which
    is taken literally."""
    literal = "".join("\\" + c if c in "*?[]\\" else c for c in queue_name)
    return f"{literal}:{kind}:*"


def key_worker(queue_name: str, kind: str, key: str) -> str:
    """The worker id in a `kind` key."""
    return key.removeprefix(f"{queue_name}:{kind}:")


def worker_host(worker_id: str) -> str:
    return worker_id.rsplit(":", 2)[0]


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
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _QuietPoolFloor) for f in pool_log.filters):
        pool_log.addFilter(_QuietPoolFloor())
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
        try:
            async with asyncio.timeout(METRICS_DB_SECONDS):
                body = await metrics.scrape(pool)
        except DB_DOWN:
            # The outbox's counts keep their last values; the rest says what is going on.
            body = metrics.render()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

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


async def fail_expired_teams(ctx: dict[str, Any]) -> int | None:
    """Team expiry; None when PostgreSQL is out of reach (the next tick tries again)."""
    liveness: Liveness = ctx["liveness"]
    try:
        failed = await orders.fail_expired_teams(ctx["services"].pool)
    except DB_DOWN as exc:
        liveness.lost(exc)
        return None
    liveness.swept()
    if failed:
        log.info("marked %d expired teams as failed", failed)
    return failed


async def close_unpaid_orders(ctx: dict[str, Any]) -> int | None:
    """Unpaid locks past their payment deadline (or in a failed team) closed, their slots and
    takes given back; None when PostgreSQL is out of reach (the next tick tries again)."""
    try:
        closed = await expiry.close_unpaid_orders(ctx["services"].pool)
    except DB_DOWN as exc:
        ctx["liveness"].lost(exc)
        return None
    if closed:
        log.info("closed %d unpaid orders past their payment timeout", closed)
    return closed


async def deliver_callbacks(ctx: dict[str, Any]) -> dict[str, int] | None:
    """Compensation: drain every due notify task (the original's execSettlementNotifyJob()).
    None when PostgreSQL is out of reach, or when MAX_DRAINS drains are running already."""
    services: bootstrap.Services = ctx["services"]
    liveness: Liveness = ctx["liveness"]
    if liveness.drains >= MAX_DRAINS:
        return None
    liveness.drains += 1
    try:
        counts = (await services.dispatcher.drain()).as_dict()
    except DB_DOWN as exc:
        liveness.lost(exc)
        return None
    finally:
        liveness.drains -= 1
    liveness.drained()
    if counts["waitCount"]:
        log.info("callback compensation: %s", counts)
    return counts


def every(seconds: int) -> set[int]:
    """arq cron seconds for a period that divides a minute (else the nearest that does)."""
    step = next(s for s in range(min(seconds, 60), 61) if 60 % s == 0)
    return set(range(0, 60, step))


class GroupbuyWorker(Worker):
    """arq's Worker on a queue of its own, with the callback dispatcher stopped first on
    SIGTERM/SIGINT."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop_ordered = False
        self.on_stop = self._note_stop  # called by arq once it has cancelled its loop

    def _note_stop(self, _: Signals) -> None:
        self._stop_ordered = True

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        """arq stops picking jobs and gives running ones `job_completion_wait` seconds. The
        dispatcher is told first, so that a drain (which would otherwise claim and send for
        minutes, and be cancelled mid-send) stops claiming, lets its sends in flight finish
        and records them, and releases what it claimed but did not send, due now: the job
        ends within the attempt timeout, and nothing waits out a lease or is sent twice."""
        services: bootstrap.Services | None = self.ctx.get("services")
        if services is not None:
            services.dispatcher.stop()
        super().handle_sig_wait_for_completion(signum)

    async def heart_beat(self) -> None:
        """Each turn of arq's loop: end it when arq has ordered it to (after a signal) and it
        still runs, or when PostgreSQL has been out of reach too long."""
        if self._stop_ordered:
            # arq ended its loop by cancelling it; that cancellation can get lost inside a
            # Redis call (seen once in a few hundred SIGTERMs: the worker then polled on,
            # never exiting). Ending the loop here makes sure it stops.
            raise asyncio.CancelledError
        liveness: Liveness | None = self.ctx.get("liveness")
        if liveness is not None and liveness.gave_up:
            raise PostgresLost(f"PostgreSQL at {liveness.where} unreachable for too long")
        await super().heart_beat()

    async def record_health(self) -> None:
        """The heartbeat: every health_check_interval, and as soon as a drain or a sweep
        completes, a JSON record with their times, a TTL a little over the interval."""
        liveness: Liveness | None = self.ctx.get("liveness")
        now = time.time()
        due = now - self._last_health_check >= self.health_check_interval
        if liveness is None:  # before on_startup
            return await super().record_health()
        if not (due or liveness.changed):
            return
        self._last_health_check, liveness.changed = now, False
        record = {
            **liveness.as_record(),
            "written": now,
            "jobs": {
                "complete": self.jobs_complete, "failed": self.jobs_failed,
                "retried": self.jobs_retried, "running": len(self.tasks),
            },
        }  # fmt: skip
        ttl_ms = int((self.health_check_interval + 1) * 1000)
        await self.pool.set(self.health_check_key, json.dumps(record), px=ttl_ms)

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq keeps a cron job's in-progress key for a minute after the job, so that the same
        tick (a unique job id) cannot run twice; each tick here has an id of its own
        (unique=False), so the key goes with the job."""
        await super().finish_job(
            job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score, None
        )

    async def close(self) -> None:
        if not self._handle_signals:
            # arq's close() would call handle_sig(SIGUSR1) to stop a worker that handles no
            # signals itself (under `dev`, in tests), logging a "shutdown on SIGUSR1" that
            # nobody sent. The same stop, without that line:
            self._handle_signals = True
            self._stop_ordered = True
            for task in self.tasks.values():
                task.cancel()
            if self.main_task is not None:
                self.main_task.cancel()
        if self._pool is not None:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            await forget_queue(self.pool, self.queue_name)
        await super().close()


async def _startup(ctx: dict[str, Any]) -> None:
    await startup(ctx)
    await forget_dead_workers(ctx["redis"], ctx["settings"].queue_name)


async def forget_queue(redis: ArqRedis, queue: str) -> None:
    """Delete a worker's queue and its jobs' keys (job, retry, in progress): it holds only
    that worker's own next ticks, which no other worker would run."""
    ids = [raw.decode() for raw in await redis.zrange(queue, 0, -1)]
    prefixes = (job_key_prefix, retry_key_prefix, in_progress_key_prefix)
    await redis.delete(queue, *(prefix + job_id for job_id in ids for prefix in prefixes))


async def forget_dead_workers(redis: ArqRedis, queue_name: str) -> None:
    """Forget the queues of workers whose heartbeat has lapsed (killed without closing)."""
    async for raw in redis.scan_iter(match=key_pattern(queue_name, "jobs"), count=1000):
        key = raw.decode()
        if not await redis.exists(alive_key(queue_name, key_worker(queue_name, "jobs", key))):
            await forget_queue(redis, key)


def build_worker(settings: Settings, **overrides: Any) -> GroupbuyWorker:
    if not settings.redis_url:
        raise StartupError("GROUPBUY_REDIS_URL is not set")
    worker_id = new_worker_id()
    options: dict[str, Any] = {
        "functions": [],
        "cron_jobs": [
            cron(
                fail_expired_teams,
                second=every(settings.fail_teams_cron_seconds),
                microsecond=0,
                run_at_startup=True,
                # arq's job ids are global in Redis: unique ones (name:time) would let the
                # first worker to enqueue a tick keep every other worker from running it.
                unique=False,
                timeout=300,
            ),
            cron(
                close_unpaid_orders,
                second=every(settings.close_unpaid_cron_seconds),
                microsecond=0,
                run_at_startup=True,
                unique=False,
                timeout=300,
            ),
            cron(
                deliver_callbacks,
                second=every(settings.notify_cron_seconds),
                microsecond=0,
                run_at_startup=True,
                unique=False,
                timeout=3600,
            ),
        ],
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": _startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "handle_signals": False,
        "max_jobs": MAX_JOBS,
        "queue_name": queue_key(settings.queue_name, worker_id),
        "health_check_key": alive_key(settings.queue_name, worker_id),
        "health_check_interval": HEARTBEAT_SECONDS,
        "keep_result": 60,
    }
    options.update(overrides)
    return GroupbuyWorker(**options)
