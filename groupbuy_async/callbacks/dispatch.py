"""Delivering notify tasks: claim, send concurrently outside any transaction, record in batches.

One Dispatcher per process holds the bounds (sends in flight, sends per merchant host), so
they hold however many drains (cron ticks) and immediate sends overlap. A drain is a
pipeline: a claimer keeps a bounded number of tasks in hand, workers start the next send
as soon as one ends, and a recorder writes results back in one statement per batch.
"""

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from ..settings import Settings
from . import outbox
from .metrics import Metrics
from .outbox import Result, Task
from .rules import NotifyStatus, decide
from .sender import Sender

log = logging.getLogger(__name__)

# How long finished sends collect before they are written back in one statement.
FLUSH_SECONDS = 0.02
# Settlements completing within this share one claim and one write-back of their callbacks.
FIRE_WINDOW = 0.002
# A compensation drain stops claiming after this long; the next cron tick goes on.
DRAIN_SECONDS = 300.0


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


@dataclass
class _Host:
    slots: asyncio.Semaphore
    in_hand: int = 0  # claimed by this process and not finished


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
        self.schedule = settings.notify_retry_schedule
        self.accept_any_2xx = settings.notify_accept_any_2xx
        self.immediate_limit = settings.notify_immediate_limit
        self.in_flight = 0
        self._sending = asyncio.Semaphore(self.concurrency)
        self._hosts: dict[str, _Host] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._fire_batch: list[str] = []
        self._firing = 0
        self._closed = False
        # Set by stop(): nothing more is claimed or sent, tasks in hand go back due now.
        self._stopping = False
        self._wakes: set[asyncio.Event] = set()  # those of the drains running
        # Drains of all that is due claiming now. Their claims take turns (see _Drain).
        self._drains = 0
        self._claim_turn = asyncio.Lock()
        self._saturated = False  # one of their claims hit a host's cap (sticky while they claim)
        self._room = asyncio.Event()  # set as each send ends: its host has room again
        # Beyond this wait for a send slot, the lease could lapse mid-send: give it back.
        self._max_wait = self.lease.total_seconds() - 2 * settings.notify_timeout_seconds - 10
        metrics.in_flight.set_function(lambda: self.in_flight)

    async def drain(self, team_id: str | None = None, seconds: float = DRAIN_SECONDS) -> Counts:
        """Deliver every due task (or one team's) until none is due or `seconds` pass."""
        return await _Drain(self, team_id, time.monotonic() + seconds).run()

    def stop(self) -> None:
        """Begin a graceful stop (a worker's SIGTERM): drains claim nothing more, sends in
        flight finish and are recorded as usual, and tasks claimed but not yet sent are
        released, due now, as their drains end. For good: a drain started later ends at once."""
        self._stopping = True
        self._room.set()
        for wake in self._wakes:
            wake.set()

    def fire(self, team_id: str) -> bool:
        """Deliver a just-completed team's task in the background; False when saturated
        (the worker's compensation delivers it instead). Teams fired within FIRE_WINDOW
        share one claim and one write-back."""
        if self._closed or self._stopping or self._firing >= self.immediate_limit:
            return False
        self._firing += 1
        self._fire_batch.append(team_id)
        if len(self._fire_batch) == 1:
            bg = asyncio.create_task(self._fire_batch_soon())
            self._background.add(bg)
            bg.add_done_callback(self._background.discard)
        return True

    async def wait_background(self, grace_seconds: float) -> None:
        """Let background sends finish; the leases of any cut short simply expire."""
        if self._background:
            _, late = await asyncio.wait(self._background, timeout=grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def close(self, grace_seconds: float) -> None:
        """Stop firing, let background sends finish, close the sender's session."""
        self._closed = True
        await self.wait_background(grace_seconds)
        await self.sender.close()

    async def _fire_batch_soon(self) -> None:
        await asyncio.sleep(FIRE_WINDOW)
        team_ids, self._fire_batch = self._fire_batch, []
        try:
            # Not capped at claim: each waits for a slot of its host like any send.
            tasks, _ = await self.claim(len(team_ids), team_ids, capped=False)
            done = await asyncio.gather(*(self.deliver(t) for t in tasks))
            await self.finish(list(done), Counts())
        except Exception:
            log.exception("immediate callbacks for teams %s failed; compensation retries", team_ids)
        finally:
            self._firing -= len(team_ids)

    async def claim(
        self, limit: int, team_ids: list[str] | None = None, capped: bool = True
    ) -> tuple[list[Task], list[Task]]:
        """Claim due tasks. Capped, a host keeps at most two rounds of its bound in hand
        (one sending, one waiting); the rest go back, due again at once behind tasks that
        were due earlier. Returns the ones kept and the ones given back."""
        tasks = await outbox.claim(self.pool, limit, self.lease, team_ids)
        keep, over = [], []
        for task in tasks:
            if capped and not self._has_room(task.host):
                over.append(task)
                continue
            host = self._hosts.get(task.host)
            if host is None:
                host = self._hosts[task.host] = _Host(asyncio.Semaphore(self.per_host))
            host.in_hand += 1
            keep.append(task)
        await outbox.release(self.pool, over, timedelta(0))
        return keep, over

    def _has_room(self, host: str) -> bool:
        held = self._hosts.get(host)
        return held is None or held.in_hand < 2 * self.per_host

    async def deliver(self, task: Task) -> Result | Task:
        """One attempt; returns the Result, or the Task itself when it was not attempted."""
        host = self._hosts[task.host]
        try:
            if self._stopping:
                return task
            async with host.slots, self._sending:
                if self._stopping or time.monotonic() - task.claimed_at > self._max_wait:
                    return task
                started_at = datetime.now(UTC)
                began = time.perf_counter()
                self.in_flight += 1
                try:
                    outcome = await self.sender.send(task.notify_url, task.event_id, task.body)
                finally:
                    self.in_flight -= 1
                elapsed = time.perf_counter() - began
            self.metrics.latency.observe(elapsed)
            ended_at = started_at + timedelta(seconds=elapsed)
            verdict = decide(outcome, task.attempt, self.schedule, ended_at, self.accept_any_2xx)
            return Result(task, outcome, verdict, started_at, int(elapsed * 1000))
        except Exception:
            # Never lose the task: it goes back unrecorded and is tried again.
            log.exception("delivering the callback for team %s failed", task.team_id)
            return task
        finally:
            host.in_hand -= 1
            if host.in_hand == 0:
                del self._hosts[task.host]
            self._room.set()

    async def finish(self, done: list[Result | Task], counts: Counts) -> None:
        """Write a batch back: results fenced by their claims, unattempted tasks released."""
        results = [d for d in done if isinstance(d, Result)]
        await outbox.release(self.pool, [d for d in done if isinstance(d, Task)], timedelta(0))
        recorded = await outbox.record(self.pool, results)
        counts.add(results, recorded)
        outcomes = Counter(
            r.verdict.status.name.lower() if r.task.id in recorded else "stale" for r in results
        )
        for outcome, n in outcomes.items():
            self.metrics.attempts.labels(outcome=outcome).inc(n)
        for r in results:
            if r.task.id not in recorded:
                log.warning("result for task %s dropped: its claim was taken over", r.task.id)
            elif r.verdict.status is not NotifyStatus.SUCCESS:
                log.info(
                    "callback for team %s failed (attempt %d): %s", r.task.team_id,
                    r.task.attempt, r.verdict.error,
                )  # fmt: skip


@dataclass
class _Drain:
    dispatcher: Dispatcher
    team_id: str | None
    deadline: float
    counts: Counts = field(default_factory=Counts)
    queue: asyncio.Queue[Task] = field(default_factory=asyncio.Queue)
    done: list[Result | Task] = field(default_factory=list)
    in_hand: int = 0
    freed: int = 0  # tasks finished since the last claim
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False
    full: set[str] = field(default_factory=set)  # hosts the last claim found at their cap

    async def run(self) -> Counts:
        d = self.dispatcher
        # More workers than send slots: a freed slot is taken at once while its last
        # holder is still writing down its result.
        count = 1 if self.team_id is not None else d.concurrency + d.concurrency // 2
        workers = [asyncio.create_task(self._work()) for _ in range(count)]
        recorder = asyncio.create_task(self._record_periodically())
        d._wakes.add(self.wake)
        try:
            await self._claim_all()
            await self.queue.join()

        finally:
            d._wakes.discard(self.wake)
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # Not cancelled: a write it has begun must land, or those sends would repeat.
            self.stopped = True
            await recorder
            await self._record()
        return self.counts

    def _refill(self) -> int | None:
        """How many to claim now, or None to wait for sends to finish. Between one and two
        rounds of the concurrency stay in hand: memory is flat whatever the backlog, and one
        claim serves many sends. Once a claim of this or an overlapping drain hit a host's
        cap (sticky while they claim), only what has finished is refilled, so a capped
        merchant's backlog is not claimed and given back over and over."""
        d = self.dispatcher
        if d._saturated:
            if self.freed >= min(d.per_host, d.concurrency) or self.in_hand == 0:
                return self.freed
            return None
        if self.in_hand <= d.concurrency * 3 // 2:
            return 2 * d.concurrency - self.in_hand
        return None

    async def _claim_all(self) -> None:
        d = self.dispatcher
        if d._stopping:
            return
        if self.team_id is not None:
            # Not capped at claim: its one task waits for a slot of its host like any send,
            # rather than going back because other drains keep that host busy.
            async with d._claim_turn:
                tasks, _ = await d.claim(1, [self.team_id], capped=False)
            self._hand(tasks)
            return
        d._drains += 1
        try:
            await self._claim_due()
        finally:
            d._drains -= 1
            if d._drains == 0:
                d._saturated = False

    async def _claim_due(self) -> None:
        """Overlapping drains (cron ticks) of one process claim in turns, and each sizes its
        claim in its turn: what another drain claimed and gave back over a host's cap is due
        again by then, and that the host is at its cap is known. So a claim that finds
        nothing means nothing is due that this process could send. A drain left with nothing
        in hand, all that is due being for hosts at their cap, leaves it to the other drains
        (they refill as those hosts' sends end); the last one waits for room itself rather
        than leave it to the next cron tick."""
        d = self.dispatcher
        while time.monotonic() < self.deadline and not d._stopping:
            async with d._claim_turn:
                want = None if d._stopping else self._refill()
                if want:
                    self.freed = 0
                    tasks, over = await d.claim(min(want, d.batch_size))
                    if not tasks and not over:
                        return
                    d._saturated = d._saturated or bool(over)
                    self.full = {task.host for task in over}
                    self._hand(tasks)
            if want is None:
                if d._stopping:
                    return
                self.wake.clear()
                await self.wake.wait()
            elif self.in_hand == 0:
                if d._drains > 1:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.deadline - time.monotonic()):
                        while (
                            self.full
                            and not d._stopping
                            and not any(d._has_room(h) for h in self.full)
                        ):
                            d._room.clear()
                            await d._room.wait()
                self.freed = min(d.per_host, d.concurrency)  # a round, as if that had ended

    def _hand(self, tasks: list[Task]) -> None:
        self.in_hand += len(tasks)
        for task in tasks:
            self.queue.put_nowait(task)

    async def _work(self) -> None:
        while True:
            task = await self.queue.get()
            try:
                result = await self.dispatcher.deliver(task)
                # Appended after the await: the recorder swaps `done` for a new list meanwhile.
                self.done.append(result)
            finally:
                self.in_hand -= 1
                self.freed += 1
                if self._refill() is not None:
                    self.wake.set()
                self.queue.task_done()

    async def _record_periodically(self) -> None:
        while not self.stopped:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self._record()
            except Exception:
                # The claims lapse and the tasks are sent again; merchants dedupe on the id.
                log.exception("writing back callback results failed")

    async def _record(self) -> None:
        if self.done:
            batch, self.done = self.done, []
            await self.dispatcher.finish(batch, self.counts)
