"""Delivering notify tasks: claim, send concurrently outside any transaction, record in batches.

One Dispatcher per process holds the bounds (sends in flight, sends per merchant host, tasks
in hand per host), so they hold however many drains (cron ticks) and immediate sends
overlap. A drain is a pipeline: a claimer keeps a bounded number of tasks in hand, shared
fairly among the merchant hosts with due tasks, workers start the next send as soon as one
ends, and a recorder writes results back in one statement per batch.
"""

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ..db import one_line, unavailable
from ..settings import Settings
from . import outbox
from .events import EventType
from .metrics import Metrics
from .outbox import Result, Task
from .rules import (
    Admission,
    AttemptOutcome,
    Breaker,
    BreakerChange,
    BreakerPolicy,
    NotifyStatus,
    decide,
    unreachable,
)
from .sender import Sender

log = logging.getLogger(__name__)

TEAM_COMPLETED = str(EventType.TEAM_COMPLETED)


def _log_failure(message: str, *args: object) -> None:
    """In an except block: a database outage is one line (its reason), anything else a
    traceback. The work is not lost either way: claims lapse and are delivered again."""
    exc = sys.exc_info()[1]
    if exc is not None and unavailable(exc):
        log.warning(message + ": %s", *args, one_line(exc))
    else:
        log.exception(message, *args)


# How long finished sends collect before they are written back in one statement.
FLUSH_SECONDS = 0.02
# Settlements completing within this share one claim and one write-back of their callbacks.
FIRE_WINDOW = 0.002
# A compensation drain stops claiming after this long; the next cron tick goes on.
DRAIN_SECONDS = 300.0
# A merchant host whose attempts go unanswered (timeout, failed connect) this many times in
# a row in this process is paused: its due tasks wait, unattempted, for the pause to end,
# then one probe. Pauses double after each unanswered probe, up to the longest.
BREAKER_FAILURES = 5
BREAKER_PAUSE_SECONDS = 30.0
BREAKER_MAX_PAUSE_SECONDS = 600.0
# Closed breakers still counting failures are forgotten past this many hosts.
BREAKERS_KEPT = 10_000


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
        return {
            "waitCount": self.wait_count,
            "successCount": self.success_count,
            "retryCount": self.retry_count,
            "errorCount": self.error_count,
        }

    def report(self) -> dict[str, Any]:
        """as_dict() and byType: the same four for every event type, zeros included."""
        by_type = {str(t): self.by_type.get(str(t), Counts()).as_dict() for t in EventType}
        return {**self.as_dict(), "byType": by_type}


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
        # Set as each send ends: its host has room again, or a probe's answer is in.
        self._room = asyncio.Event()
        # Beyond this wait for a send slot, the lease could lapse mid-send: give it back.
        self._max_wait = self.lease.total_seconds() - 2 * settings.notify_timeout_seconds - 10
        self.breaker_failures = BREAKER_FAILURES
        self.breaker_pause = BREAKER_PAUSE_SECONDS
        self.breaker_max_pause = BREAKER_MAX_PAUSE_SECONDS
        self._breakers: dict[str, Breaker] = {}  # hosts with unanswered attempts, or paused
        metrics.in_flight.set_function(lambda: self.in_flight)
        metrics.paused_hosts.set_function(
            lambda: sum(b.until is not None for b in self._breakers.values())
        )

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
        share one claim; each holds its immediate slot until its own send ends, and a host
        at its cap of tasks in hand leaves the rest to the worker."""
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
        held = len(team_ids)  # immediate slots this batch holds
        try:
            # Capped: past its host's cap a task goes back, due, for the worker, rather
            # than wait in the API for that host's sends to end.
            tasks, _ = await self.claim(len(team_ids), team_ids, event_type=TEAM_COMPLETED)
            self._firing -= held - len(tasks)
            held = len(tasks)
            sends = [asyncio.create_task(self.deliver(task)) for task in tasks]
            for send in sends:  # from here each send frees its own slot as it ends
                send.add_done_callback(self._fired)
            held = 0
            await self._record_as_they_end(sends)
        except Exception:
            _log_failure("immediate callbacks for teams %s failed; compensation retries", team_ids)
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
                    await self.finish([send.result() for send in done], Counts())
                except Exception:
                    # Their claims lapse and the worker sends them again.
                    _log_failure("writing back immediate callback results failed")
        finally:
            for send in pending:
                send.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def claim(
        self,
        limit: int,
        team_ids: list[str] | None = None,
        capped: bool = True,
        event_type: str | None = None,
    ) -> tuple[list[Task], set[str]]:
        """Claim due tasks. Capped, a host keeps at most two rounds of its bound in hand
        (one sending, one waiting): a claim of all that is due takes no more of a host than
        its room, and shares itself out among the hosts with due tasks; what a claim of
        named teams took over a host's room goes back, due again at once, for the worker.
        Returns the tasks kept, and the hosts at their cap that have due tasks left.
        Capped, a paused host's tasks are not claimed."""
        now = datetime.now(UTC)
        paused = [h for h, b in self._breakers.items() if b.paused(now)] if capped else []
        if team_ids is not None:
            tasks = await outbox.claim(
                self.pool, limit, self.lease, team_ids, skip=paused, event_type=event_type
            )
            full: set[str] = set()
        else:
            rooms = {host: self._room_left(host) for host in self._hosts}
            tasks = await outbox.claim(
                self.pool, limit, self.lease, rooms=rooms, per_host=self._cap, skip=paused
            )
            full = {host for host, room in rooms.items() if room <= 0 and host not in paused}
        keep, over = [], []
        for task in tasks:
            if capped and self._room_left(task.host) <= 0:
                over.append(task)
                continue
            host = self._hosts.get(task.host)
            if host is None:
                host = self._hosts[task.host] = _Host(asyncio.Semaphore(self.per_host))
            host.in_hand += 1
            keep.append(task)
        await outbox.release(self.pool, over, None)
        if full:  # those at their cap before the claim: is anything of theirs due?
            full = await outbox.due_hosts(self.pool, full)
        return keep, full | {task.host for task in over}

    @property
    def _cap(self) -> int:
        return 2 * self.per_host

    def _room_left(self, host: str) -> int:
        """How many more of this host's tasks may be taken in hand now."""
        held = self._hosts.get(host)
        return self._cap - (0 if held is None else held.in_hand)

    def _has_room(self, host: str) -> bool:
        """Whether waiting for this host's sends to end is over: it has room, or it is
        paused (nothing of it will be claimed)."""
        breaker = self._breakers.get(host)
        paused = breaker is not None and breaker.paused(datetime.now(UTC))
        return paused or self._room_left(host) > 0

    async def deliver(self, task: Task, gated: bool = True) -> Result | Task:
        """One attempt; returns the Result, or the Task itself when it was not attempted.
        `gated`: only if its host's breaker lets it (an operator's one-team drain is not)."""
        host = self._hosts[task.host]
        probe = False
        try:
            if self._stopping:
                return task
            async with host.slots:
                if gated and task.host in self._breakers:  # else: nothing to ask it
                    admission = await self._admit(task)
                    probe = admission is Admission.PROBE  # given up in `finally` if not sent
                    if admission is Admission.REFUSE:
                        return task
                if self._stopping:
                    return task
                done = await self._attempt(task)
                if isinstance(done, Result):
                    if probe or task.host in self._breakers or unreachable(done.outcome):
                        # Before the slot is let go: the host's next send sees the change.
                        await self._observe(task.host, done.outcome, probe)
                    probe = False
                return done
        except Exception:
            # Never lose the task: it goes back unrecorded and is tried again.
            log.exception("delivering the callback for team %s failed", task.team_id)
            return task
        finally:
            if probe and (breaker := self._breakers.get(task.host)):
                breaker.abandon_probe()  # it was not sent after all: the next send probes
            host.in_hand -= 1
            if host.in_hand == 0:
                del self._hosts[task.host]
            self._room.set()

    async def _attempt(self, task: Task) -> Result | Task:
        async with self._sending:
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

    async def _admit(self, task: Task) -> Admission:
        """What the host's breaker says to this send; while another send probes the host,
        waits for its answer. (A host without a breaker is never asked.)"""
        while True:
            breaker = self._breakers.get(task.host)
            if breaker is None:
                return Admission.SEND
            admission = breaker.admit(datetime.now(UTC))
            if admission is not Admission.WAIT:
                break
            self._room.clear()  # set as the probe (like any send) ends
            await self._room.wait()
        if admission is Admission.PROBE:
            log.info(
                "merchant host %s: pause over, probing it with the callback for team %s",
                task.host, task.team_id,
            )  # fmt: skip
        return admission

    async def _observe(self, host: str, outcome: AttemptOutcome, probe: bool) -> None:
        """Tell the host's breaker how an attempt ended; pausing the host postpones its
        due tasks. One log line per change of state."""
        answered = not unreachable(outcome)
        breaker = self._breakers.get(host)
        if breaker is None:
            if answered:
                return
            if len(self._breakers) >= BREAKERS_KEPT:
                self._breakers = {h: b for h, b in self._breakers.items() if b.until is not None}
            breaker = self._breakers[host] = Breaker()
        policy = BreakerPolicy(
            self.breaker_failures,
            timedelta(seconds=self.breaker_pause),
            timedelta(seconds=self.breaker_max_pause),
        )
        change = breaker.observe(answered, probe, datetime.now(UTC), policy)
        if breaker.until is None and breaker.failures == 0:
            del self._breakers[host]
        if change is BreakerChange.CLOSED:
            self._saturated = False  # its backlog is claimable again
            log.info("merchant host %s answered the probe: callbacks to it resumed", host)
        elif change is not None:
            await self._pause(host, breaker, change, outcome)

    async def _pause(
        self, host: str, breaker: Breaker, change: BreakerChange, outcome: AttemptOutcome
    ) -> None:
        assert breaker.until is not None
        try:
            postponed = await outbox.postpone(self.pool, host, breaker.until)
        except Exception:
            # Claims skip the host all the same; what falls due is given back when claimed.
            _log_failure("postponing the callbacks to merchant host %s failed", host)
            postponed = 0
        why = (
            f"{self.breaker_failures} attempts in a row got no answer (last: {outcome.error})"
            if change is BreakerChange.OPENED
            else f"the probe got no answer ({outcome.error})"
        )
        log.warning(
            "merchant host %s: %s; callbacks to it paused for %gs, %d due ones postponed",
            host, why, breaker.pause.total_seconds(), postponed,
        )  # fmt: skip

    def _due_again(self, host: str) -> datetime | None:
        """When a task given back unattempted is due again: when its host's pause ends
        (now, if it has ended already or the host is not paused)."""
        breaker = self._breakers.get(host)
        return None if breaker is None else breaker.until

    async def finish(self, done: list[Result | Task], counts: Counts) -> None:
        """Write a batch back: results fenced by their claims, unattempted tasks released."""
        results = [d for d in done if isinstance(d, Result)]
        unsent: dict[datetime | None, list[Task]] = {}
        for d in done:
            if isinstance(d, Task):
                unsent.setdefault(self._due_again(d.host), []).append(d)
        for due_at, tasks in unsent.items():
            await outbox.release(self.pool, tasks, due_at)
        recorded = await outbox.record(self.pool, results)
        counts.add(results, recorded)
        outcomes = Counter(
            (r.verdict.status.name.lower() if r.task.id in recorded else "stale",
             r.task.type)
            for r in results
        )  # fmt: skip
        for (outcome, kind), n in outcomes.items():
            self.metrics.attempts.labels(outcome=outcome, type=kind).inc(n)
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
        claim serves many sends. Once a claim of this or an overlapping drain left a due host
        at its cap (sticky while they claim), only what has finished is refilled, so claims
        that could only find that merchant's backlog do not repeat in a loop."""
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
            # Every due event of the team (its team.* and its orders'). Not capped at claim:
            # they wait for slots of their host like any send, rather than going back
            # because other drains keep that host busy.
            async with d._claim_turn:
                tasks, _ = await d.claim(d.batch_size, [self.team_id], capped=False)
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
        claim in its turn, from the hosts' rooms as they are then: a claim takes at most a
        host's room and says which hosts it left due at their cap. So a claim that finds
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
                    tasks, full = await d.claim(min(want, d.batch_size))
                    if not tasks and not full:
                        return
                    d._saturated = d._saturated or bool(full)
                    self.full = full
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
                result = await self.dispatcher.deliver(task, gated=self.team_id is None)
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
                _log_failure("writing back callback results failed")

    async def _record(self) -> None:
        if self.done:
            batch, self.done = self.done, []
            await self.dispatcher.finish(batch, self.counts)
