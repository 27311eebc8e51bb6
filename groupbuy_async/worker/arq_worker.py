"""arq's Worker for this service: a queue of its own per worker process, a heartbeat that
carries its liveness, and a stop that lets callback sends in flight finish."""

import asyncio
import json
import time
from datetime import datetime
from signal import Signals
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker

from .. import bootstrap
from ..process.startup import StartupError
from ..settings import Settings
from .context import shutdown, startup
from .jobs import MAX_JOBS, cron_jobs
from .keys import (
    HEARTBEAT_SECONDS,
    alive_key,
    forget_dead_workers,
    forget_queue,
    new_worker_id,
    queue_key,
)
from .liveness import Liveness, PostgresLost


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

    async def run_cron(self, n: datetime, delay: float, num_windows: int = 2) -> None:
        """No new cron tick once a stop began: arq's loop goes on polling while running jobs
        finish, and a tick queued then (or still being written to Redis when the loop is
        cancelled) would outlive the queue this worker deletes as it closes."""
        if self.allow_pick_jobs and not self._stop_ordered:
            await super().run_cron(n, delay, num_windows)

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
                "complete": self.jobs_complete,
                "failed": self.jobs_failed,
                "retried": self.jobs_retried,
                "running": len(self.tasks),
            },
        }
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


def build_worker(settings: Settings, **overrides: Any) -> GroupbuyWorker:
    if not settings.redis_url:
        raise StartupError("GROUPBUY_REDIS_URL is not set")
    worker_id = new_worker_id()
    options: dict[str, Any] = {
        "functions": [],
        "cron_jobs": cron_jobs(settings),
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
