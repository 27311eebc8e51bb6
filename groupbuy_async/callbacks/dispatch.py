"""Delivering notify tasks: claim, send concurrently outside any transaction, record in batches.

One Dispatcher per process holds the bounds (sends in flight, sends per merchant host, tasks
in hand per host), so they hold however many drains (cron ticks) and immediate sends
overlap. A drain is a pipeline: a claimer keeps a bounded number of tasks in hand, shared
fairly among the merchant hosts with due tasks, workers start the next send as soon as one
ends, and a recorder writes results back in one statement per batch.
"""

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from ..db import log_failure
from ..settings import Settings
from . import claims
from .claims import Result, Task
from .drain import DRAIN_SECONDS, FLUSH_SECONDS, Counts, Drain
from .events import EventType
from .metrics import Metrics
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


# Settlements completing within this share one claim and one write-back of their callbacks.
FIRE_WINDOW = 0.002
# A merchant host whose attempts go unanswered (timeout, failed connect) this many times in
# a row in this process is paused: its due tasks wait, unattempted, for the pause to end,
# then one probe. Pauses double after each unanswered probe, up to the longest.
BREAKER_FAILURES = 5
BREAKER_PAUSE_SECONDS = 30.0
BREAKER_MAX_PAUSE_SECONDS = 600.0
# Closed breakers still counting failures are forgotten past this many hosts.
BREAKERS_KEPT = 10_000


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
        return await Drain(self, team_id, time.monotonic() + seconds).run()

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
                    await self.finish([send.result() for send in done], Counts())
                except Exception:
                    # Their claims lapse and the worker sends them again.
                    log_failure(log, "writing back immediate callback results failed")
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
            tasks = await claims.claim(
                self.pool, limit, self.lease, team_ids, skip=paused, event_type=event_type
            )
            full: set[str] = set()
        else:
            rooms = {host: self._room_left(host) for host in self._hosts}
            tasks = await claims.claim(
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
        await claims.release(self.pool, over, None)
        if full:  # those at their cap before the claim: is anything of theirs due?
            full = await claims.due_hosts(self.pool, full)
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
            postponed = await claims.postpone(self.pool, host, breaker.until)
        except Exception:
            # Claims skip the host all the same; what falls due is given back when claimed.
            log_failure(log, "postponing the callbacks to merchant host %s failed", host)
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
            await claims.release(self.pool, tasks, due_at)
        recorded = await claims.record(self.pool, results)
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
