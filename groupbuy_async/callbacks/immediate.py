"""Immediate sends: the API sends a just-completed team's callback in the background, right
after the settlement that completed it committed, at most NOTIFY_IMMEDIATE_LIMIT at once.
What it does not take, or takes and cannot send, the worker's drains deliver."""

import asyncio
import logging

from ..db import log_failure
from .claims import Result, Task
from .delivery import FLUSH_SECONDS, Delivery
from .events import EventType

log = logging.getLogger(__name__)

# Settlements completing within this share one claim and one write-back of their callbacks.
# Longer batches save PostgreSQL work per team, but a batch of many teams meets its host's
# cap of tasks in hand and hands the rest to the worker: with 20 ms, 64 of bench-trade's 2,000
# callbacks waited for a drain (3.2 s) where with 2 ms none does (issue 16).
FIRE_WINDOW = 0.002
# A completed team's event has a delivery per endpoint that takes it; one immediate claim
# takes up to this many per team (any more are the worker's).
ENDPOINTS_PER_TEAM = 8
TEAM_COMPLETED = str(EventType.TEAM_COMPLETED)


class Immediate:
    def __init__(self, delivery: Delivery, limit: int) -> None:
        self.delivery = delivery
        self.limit = limit
        self.closed = False
        self._batch: list[str] = []
        self._firing = 0  # immediate slots held: teams batched or sending
        self._background: set[asyncio.Task[None]] = set()

    def fire(self, team_id: str) -> bool:
        """Deliver a just-completed team's deliveries in the background; False when saturated
        (the worker's compensation delivers it instead). Teams fired within FIRE_WINDOW
        share one claim; each holds its immediate slot until its own send ends, and a host
        at its cap of tasks in hand leaves the rest to the worker."""
        if self.closed or self.delivery.stopping or self._firing >= self.limit:
            return False
        self._firing += 1
        self._batch.append(team_id)
        if len(self._batch) == 1:
            bg = asyncio.create_task(self._fire_batch_soon())
            self._background.add(bg)
            bg.add_done_callback(self._background.discard)
        return True

    async def wait(self, grace_seconds: float) -> None:
        """Let background sends finish; the leases of any cut short simply expire."""
        if self._background:
            _, late = await asyncio.wait(self._background, timeout=grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _fire_batch_soon(self) -> None:
        await asyncio.sleep(FIRE_WINDOW)
        team_ids, self._batch = self._batch, []
        held = len(team_ids)  # immediate slots this batch holds
        try:
            # Capped: past its host's cap a task goes back, due, for the worker, rather
            # than wait in the API for that host's sends to end.
            tasks, _ = await self.delivery.claim(
                len(team_ids) * ENDPOINTS_PER_TEAM, team_ids, event_type=TEAM_COMPLETED
            )
            self._firing += len(tasks) - held  # from here a slot per delivery
            held = len(tasks)
            sends = [asyncio.create_task(self.delivery.deliver(task)) for task in tasks]
            for send in sends:  # from here each send frees its own slot as it ends
                send.add_done_callback(self._fired)
            held = 0
            await self._record_as_they_end(sends)
        except Exception:
            log_failure(
                log, "immediate callbacks for teams %s failed; compensation retries", team_ids
            )
        finally:
            self._firing -= held

    def _fired(self, _: object) -> None:
        self._firing -= 1

    async def _record_as_they_end(self, sends: list[asyncio.Task[Result | Task]]) -> None:
        """Write back each send soon after it ends (those ending within FLUSH_SECONDS of
        each other in one statement), not when the batch's slowest send ends."""
        pending = set(sends)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if pending:
                    more, pending = await asyncio.wait(pending, timeout=FLUSH_SECONDS)
                    done |= more
                try:
                    await self.delivery.finish([send.result() for send in done])
                except Exception:
                    # Their claims lapse and the worker sends them again.
                    log_failure(log, "writing back immediate callback results failed")
        finally:
            for send in pending:
                send.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
