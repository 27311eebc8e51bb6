"""A drain: deliver every due task (or one team's) through the process's Delivery, as a
pipeline. A claimer keeps a bounded number of tasks in hand, shared fairly among the merchant
hosts with due tasks; workers start the next send as soon as one ends; a recorder writes
results back in one statement per batch."""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic.alias_generators import to_camel

from ..db import log_failure
from .claims import Result, Task
from .delivery import FLUSH_SECONDS, Delivery
from .events import EventType
from .rules import NotifyStatus

log = logging.getLogger(__name__)

# A compensation drain stops claiming after this long; the next cron tick goes on.
DRAIN_SECONDS = 300.0


_COUNTED = ("wait_count", "success_count", "retry_count", "error_count")


@dataclass
class Counts:
    wait_count: int = 0
    success_count: int = 0
    retry_count: int = 0
    error_count: int = 0
    # The same four counts for each event type attempted.
    by_type: dict[str, "Counts"] = field(default_factory=dict)

    def add(self, results: list[Result], recorded: set[int]) -> None:
        for r in results:
            status = r.verdict.status if r.task.id in recorded else None
            self._count(status)
            self.by_type.setdefault(r.task.type, Counts())._count(status)

    def _count(self, status: NotifyStatus | None) -> None:
        """One attempted task; None when its result was dropped (its claim was taken over)."""
        self.wait_count += 1
        if status is NotifyStatus.SUCCESS:
            self.success_count += 1
        elif status is NotifyStatus.RETRY:
            self.retry_count += 1
        elif status is not None:
            self.error_count += 1

    def as_dict(self) -> dict[str, int]:
        """The four counts, named as the compensation answer names them (waitCount, …)."""
        return {to_camel(name): getattr(self, name) for name in _COUNTED}

    def report(self) -> dict[str, Any]:
        """as_dict() and byType: the same four for every event type, zeros included."""
        by_type = {str(t): self.by_type.get(str(t), Counts()).as_dict() for t in EventType}
        return {**self.as_dict(), "byType": by_type}


@dataclass
class Drain:
    delivery: Delivery
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
        d = self.delivery
        # More workers than send slots: a freed slot is taken at once while its last
        # holder is still writing down its result.
        count = 1 if self.team_id is not None else d.concurrency + d.concurrency // 2
        workers = [asyncio.create_task(self._work()) for _ in range(count)]
        recorder = asyncio.create_task(self._record_periodically())
        d.wakes.add(self.wake)
        try:
            await self._claim_all()
            await self.queue.join()

        finally:
            d.wakes.discard(self.wake)
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # Not cancelled: a write it has begun must land, or those sends would repeat.
            self.stopped = True
            await recorder
            await self._record()
        return self.counts

    def _refill(self) -> int | None:
        """How many to claim now, or None to wait for sends to finish. At most two rounds of
        the concurrency stay in hand: memory is flat whatever the backlog. A claim tops up
        as soon as an eighth of a round has finished: it takes tens of ms on a busy loop,
        and asked for only once half a round was gone, the sends in hand ran dry before it
        came back. Once a claim of this or an overlapping drain left a due host at its cap
        (sticky while they claim), a claim waits until a round has finished (or nothing is
        in hand), so claims that could only find that merchant's backlog do not repeat in a
        loop; it then tops up to two rounds as ever, each host to its room. (Not just what
        finished: shared out among the hosts due, that would keep a host that sends fast at a
        share of what a slow one finishes, at the slow one's pace.)"""
        d = self.delivery
        if d.saturated:
            if self.freed >= min(d.per_host, d.concurrency) or self.in_hand == 0:
                return self.freed and max(self.freed, 2 * d.concurrency - self.in_hand)
            return None
        if self.in_hand <= 2 * d.concurrency - d.concurrency // 8:
            return 2 * d.concurrency - self.in_hand
        return None

    async def _claim_all(self) -> None:
        d = self.delivery
        if d.stopping:
            return
        if self.team_id is not None:
            # Every due event of the team (its team.* and its orders'). Not capped at claim:
            # they wait for slots of their host like any send, rather than going back
            # because other drains keep that host busy.
            async with d.claim_turn:
                tasks, _ = await d.claim(d.batch_size, [self.team_id], capped=False)
            self._hand(tasks)
            return
        d.claiming += 1
        try:
            await self._claim_due()
        finally:
            d.claiming -= 1
            if d.claiming == 0:
                d.saturated = False

    async def _claim_due(self) -> None:
        """Overlapping drains (cron ticks) of one process claim in turns, and each sizes its
        claim in its turn, from the hosts' rooms as they are then: a claim takes at most a
        host's room and says which hosts it left due at their cap. So a claim that finds
        nothing means nothing is due that this process could send. A drain left with nothing
        in hand, all that is due being for hosts at their cap, leaves it to the other drains
        (they refill as those hosts' sends end); the last one waits for room itself rather
        than leave it to the next cron tick."""
        d = self.delivery
        while time.monotonic() < self.deadline and not d.stopping:
            async with d.claim_turn:
                want = None if d.stopping else self._refill()
                if want:
                    self.freed = 0
                    tasks, full = await d.claim(min(want, d.batch_size))
                    if not tasks and not full:
                        return
                    d.saturated = d.saturated or bool(full)
                    self.full = full
                    self._hand(tasks)
            if want is None:
                if d.stopping:
                    return
                self.wake.clear()
                await self.wake.wait()
            elif self.in_hand == 0:
                if d.claiming > 1:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.deadline - time.monotonic()):
                        while (
                            self.full
                            and not d.stopping
                            and not any(d.has_room(h) for h in self.full)
                        ):
                            d.room.clear()
                            await d.room.wait()
                self.freed = min(d.per_host, d.concurrency)  # a round, as if that had ended

    def _hand(self, tasks: list[Task]) -> None:
        self.in_hand += len(tasks)
        for task in tasks:
            self.queue.put_nowait(task)

    async def _work(self) -> None:
        while True:
            task = await self.queue.get()
            try:
                result = await self.delivery.deliver(task, gated=self.team_id is None)
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
                log_failure(log, "writing back callback results failed")

    async def _record(self) -> None:
        if self.done:
            batch, self.done = self.done, []
            self.counts.add(*await self.delivery.finish(batch))
