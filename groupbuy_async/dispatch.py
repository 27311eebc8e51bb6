"""Delivering notify tasks: claim, send concurrently outside any transaction, record in batches.

One Dispatcher per process holds the bounds (total sends in flight, sends per merchant
host), so they hold however many drains (cron ticks) or immediate sends overlap.
"""

import asyncio
import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg

from . import outbox
from .metrics import Metrics
from .notify_rules import NotifyStatus, decide
from .outbox import Result, Task
from .sender import Sender
from .settings import Settings

log = logging.getLogger(__name__)

# How long a drain collects finished sends before writing them back in one statement.
FLUSH_SECONDS = 0.02


@dataclass
class Counts:
    wait_count: int = 0
    success_count: int = 0
    retry_count: int = 0
    error_count: int = 0

    def add(self, results: list[Result], recorded: set[int]) -> None:
        self.wait_count += len(results)
        for r in results:
            if r.task.id not in recorded:
                continue
            if r.verdict.status is NotifyStatus.SUCCESS:
                self.success_count += 1
            elif r.verdict.status is NotifyStatus.RETRY:
                self.retry_count += 1
            else:
                self.error_count += 1

    def as_dict(self) -> dict[str, int]:
        return {
            "waitCount": self.wait_count,
            "successCount": self.success_count,
            "retryCount": self.retry_count,
            "errorCount": self.error_count,
        }


class Dispatcher:
    def __init__(
        self, pool: asyncpg.Pool, sender: Sender, settings: Settings, metrics: Metrics
    ) -> None:
        self.pool = pool
        self.sender = sender
        self.metrics = metrics
        self.concurrency = settings.notify_concurrency
        self.per_host = settings.notify_per_host
        self.batch_size = settings.notify_batch_size
        self.lease = settings.notify_lease
        self.schedule = settings.retry_schedule
        self.accept_any_2xx = settings.notify_accept_any_2xx
        self.immediate_limit = settings.notify_immediate_limit
        self._sending = asyncio.Semaphore(self.concurrency)
        self._host_load: Tally[str] = Tally()
        self._background: set[asyncio.Task[None]] = set()
        # Beyond this wait for a send slot, the lease could lapse mid-send: give it back.
        self._max_wait = self.lease.total_seconds() - 2 * settings.notify_timeout_seconds - 10

    async def drain(self, team_id: str | None = None) -> Counts:
        """Deliver every due task (or one team's), batch after batch, until none is due."""
        counts = Counts()
        pending: set[asyncio.Task[Result | Task]] = set()
        more = True
        while more or pending:
            room = self.concurrency - len(pending)
            if more and room > 0 and (not pending or room >= self.concurrency // 4):
                claimed, tasks = await self._claim(min(room, self.batch_size), team_id)
                more = claimed > 0 and team_id is None
                pending.update(asyncio.create_task(self._deliver(t)) for t in tasks)
                if not pending:
                    break
            done, pending = await asyncio.wait(pending, timeout=FLUSH_SECONDS)
            await self._finish([d.result() for d in done], counts)
        return counts

    def fire(self, team_id: str) -> bool:
        """Deliver a just-completed team's task in the background; False when saturated
        (the worker's compensation delivers it instead)."""
        if len(self._background) >= self.immediate_limit:
            return False
        bg = asyncio.create_task(self._fire(team_id))
        self._background.add(bg)
        bg.add_done_callback(self._background.discard)
        return True

    async def close(self, grace_seconds: float) -> None:
        """Let background sends finish; the leases of any cut short simply expire."""
        if self._background:
            _, late = await asyncio.wait(self._background, timeout=grace_seconds)
            for task in late:
                task.cancel()

    async def _fire(self, team_id: str) -> None:
        try:
            _, tasks = await self._claim(1, team_id)
            if tasks:
                await self._finish([await self._deliver(tasks[0])], Counts())
        except Exception:
            log.exception("immediate callback for team %s failed; compensation retries", team_id)

    async def _claim(self, limit: int, team_id: str | None) -> tuple[int, list[Task]]:
        """Claim due tasks; those whose host is at its cap go straight back.
        Returns how many were claimed and the ones to send."""
        tasks = await outbox.claim(self.pool, limit, self.lease, team_id)
        keep, over = [], []
        for task in tasks:
            host = _host(task.notify_url)
            if self._host_load[host] >= self.per_host:
                over.append(task)
            else:
                self._host_load[host] += 1
                keep.append(task)
        # Due again at once, behind the tasks that were due earlier: a capped merchant's
        # backlog waits its turn without holding slots other merchants could use.
        await outbox.release(self.pool, over, timedelta(0))
        return len(tasks), keep

    async def _deliver(self, task: Task) -> Result | Task:
        """One attempt; returns the Result, or the Task itself when it was not attempted."""
        host = _host(task.notify_url)
        try:
            async with self._sending:
                if time.monotonic() - task.claimed_at > self._max_wait:
                    return task
                started_at = datetime.now(UTC)
                began = time.perf_counter()
                self.metrics.in_flight.inc()
                try:
                    outcome = await self.sender.send(task.notify_url, task.event_id, task.body)
                finally:
                    self.metrics.in_flight.dec()
                elapsed = time.perf_counter() - began
        finally:
            self._host_load[host] -= 1
            if self._host_load[host] <= 0:
                del self._host_load[host]
        self.metrics.latency.observe(elapsed)
        verdict = decide(
            outcome, task.attempt, self.schedule, datetime.now(UTC), self.accept_any_2xx
        )
        return Result(task, outcome, verdict, started_at, int(elapsed * 1000))

    async def _finish(self, done: list[Result | Task], counts: Counts) -> None:
        results = [d for d in done if isinstance(d, Result)]
        await outbox.release(self.pool, [d for d in done if isinstance(d, Task)], timedelta(0))
        recorded = await outbox.record(self.pool, results)
        counts.add(results, recorded)
        for r in results:
            outcome = r.verdict.status.name.lower() if r.task.id in recorded else "stale"
            self.metrics.attempts.labels(outcome=outcome).inc()
            if r.task.id not in recorded:
                log.warning("result for task %s dropped: its claim was taken over", r.task.id)
            elif r.verdict.status is not NotifyStatus.SUCCESS:
                log.info(
                    "callback for team %s failed (attempt %d): %s", r.task.team_id,
                    r.task.attempt, r.verdict.error,
                )  # fmt: skip


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}"
    except ValueError:
        return url
