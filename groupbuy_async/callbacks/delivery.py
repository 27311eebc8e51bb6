"""One process's delivery of notify tasks, within its bounds: sends in flight, sends per
merchant host, tasks in hand per host. Drains (drain.py) and immediate sends (immediate.py)
claim, send and write back through the process's one Delivery, so the bounds hold however
many of them overlap. Sends happen outside any transaction; results are written back in
batches, fenced by their claims."""

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from ..db import log_failure, unavailable
from ..merchants.secret_box import SecretBox
from ..settings import Settings
from . import claims, health
from .amqp import Publisher
from .breaker import HostBreakers
from .claims import Result, Task
from .metrics import Metrics
from .rules import Admission, AttemptOutcome, BreakerChange, NotifyStatus, decide, unreachable
from .sender import Sender

log = logging.getLogger(__name__)

# How long finished sends collect before they are written back in one statement.
FLUSH_SECONDS = 0.02


@dataclass
class _Host:
    slots: asyncio.Semaphore
    in_hand: int = 0  # claimed by this process and not finished


class Delivery:
    def __init__(
        self,
        pool: asyncpg.Pool,
        sender: Sender,
        box: SecretBox,
        settings: Settings,
        metrics: Metrics,
        publisher: Publisher | None = None,
    ) -> None:
        self.pool = pool
        self.sender = sender
        # Broker endpoints' (kind amqp); none given: one without a broker (they fail, saying so).
        self.publisher = publisher or Publisher(None, settings.notify_timeout_seconds)
        self.box = box
        self.metrics = metrics
        self.concurrency = settings.notify_concurrency
        self.per_host = settings.notify_per_host
        self.batch_size = settings.notify_batch_size
        self.lease = settings.notify_lease
        self.schedule = settings.notify_retry_schedule
        self.accept_any_2xx = settings.notify_accept_any_2xx
        self.breakers = HostBreakers(pool)
        self.health = health.Limits(
            timedelta(seconds=settings.endpoint_disable_after_seconds),
            settings.endpoint_disable_min_attempts,
        )
        # When this process last told each endpoint's answer (see _health): monotonic time.
        self._answered_told: dict[int, float] = {}
        self.in_flight = 0
        # Set by stop(): nothing more is claimed or sent, tasks in hand go back due now.
        self.stopping = False
        # Set as each send ends: its host has room again, or a probe's answer is in.
        self.room = asyncio.Event()
        # What the drains of this process share (see drain.py): their wake-ups; how many
        # claim all that is due now (their claims take turns); whether one of those claims
        # left a host at its cap with due tasks (sticky while they claim).
        self.wakes: set[asyncio.Event] = set()
        self.claiming = 0
        self.claim_turn = asyncio.Lock()
        self.saturated = False
        self._sending = asyncio.Semaphore(self.concurrency)
        self._hosts: dict[str, _Host] = {}
        # Beyond this wait for a send slot, the lease could lapse mid-send: give it back.
        self._max_wait = self.lease.total_seconds() - 2 * settings.notify_timeout_seconds - 10
        metrics.in_flight.set_function(lambda: self.in_flight)
        metrics.paused_hosts.set_function(self.breakers.open_count)

    def stop(self) -> None:
        """Claim and send nothing more; wake the drains waiting, so that they end."""
        self.stopping = True
        self.room.set()
        for wake in self.wakes:
            wake.set()

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
        paused = self.breakers.paused(datetime.now(UTC)) if capped else []
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

    def has_room(self, host: str) -> bool:
        """Whether waiting for this host's sends to end is over: it has room, or it is
        paused (nothing of it will be claimed)."""
        return self.breakers.is_paused(host) or self._room_left(host) > 0

    async def deliver(self, task: Task, gated: bool = True) -> Result | Task:
        """One attempt of a task claimed here; returns the Result, or the Task itself when
        it was not attempted. `gated`: only if its host's breaker lets it (an operator's
        one-team drain is not)."""
        host = self._hosts[task.host]
        probe = False
        try:
            if self.stopping:
                return task
            async with host.slots:
                if gated and task.host in self.breakers:  # else: nothing to ask it
                    admission = await self.breakers.admit(task, self.room)
                    probe = admission is Admission.PROBE  # given up in `finally` if not sent
                    if admission is Admission.REFUSE:
                        return task
                if self.stopping:
                    return task
                done = await self._attempt(task)
                if isinstance(done, Result):
                    if probe or task.host in self.breakers or unreachable(done.outcome):
                        # Before the slot is let go: the host's next send sees the change.
                        await self._observe(task.host, done.outcome, probe)
                    probe = False
                return done
        except Exception:
            # Never lose the task: it goes back unrecorded and is tried again.
            log.exception("delivering the callback for team %s failed", task.team_id)
            return task
        finally:
            if probe:
                self.breakers.abandon_probe(task.host)
            host.in_hand -= 1
            if host.in_hand == 0:
                del self._hosts[task.host]
            self.room.set()

    async def _observe(self, host: str, outcome: AttemptOutcome, probe: bool) -> None:
        if await self.breakers.observe(host, outcome, probe) is BreakerChange.CLOSED:
            self.saturated = False  # its backlog is claimable again

    async def _attempt(self, task: Task) -> Result | Task:
        async with self._sending:
            if self.stopping or time.monotonic() - task.claimed_at > self._max_wait:
                return task
            started_at = datetime.now(UTC)
            began = time.perf_counter()
            self.in_flight += 1
            try:
                outcome = await self._send(task)
            finally:
                self.in_flight -= 1
            elapsed = time.perf_counter() - began
        self.metrics.latency.observe(elapsed)
        ended_at = started_at + timedelta(seconds=elapsed)
        verdict = decide(outcome, task.attempt, self.schedule, ended_at, self.accept_any_2xx)
        return Result(task, outcome, verdict, started_at, int(elapsed * 1000))

    async def _send(self, task: Task) -> AttemptOutcome:
        try:
            keys = tuple(self.box.open_key(sealed) for sealed in task.secrets)
        except ValueError as exc:  # sealed under another GROUPBUY_SECRETS_KEY: fixable
            return AttemptOutcome(None, error=f"signing secret: {exc}")
        if task.broker is not None:
            return await self.publisher.publish(
                task.broker, task.event_id, task.body, keys, task.type
            )
        return await self.sender.send(task.url, task.event_id, task.body, keys)

    async def sweep_health(self) -> None:
        """Disable the endpoints past the health limits. A database outage propagates, as
        from the drain's first claim; anything else is logged and the drain goes on."""
        try:
            disabled = await health.sweep(self.pool, self.health)
        except Exception as exc:
            if unavailable(exc):
                raise
            log.exception("sweeping endpoint health failed")
            return
        if disabled:
            self.metrics.endpoints_disabled.inc(disabled)

    async def _health(self, results: list[Result]) -> None:
        """Tell each endpoint's failures, and its answers at most once a minute per process
        (an answer ends a run of failures: told that often, a run of failures can never
        outlast an endpoint that answers by more than a minute). Never fails the batch."""
        now = time.monotonic()
        told = []
        for r in results:
            answered = r.verdict.status is NotifyStatus.SUCCESS
            if answered and now - self._answered_told.get(r.task.endpoint, -1e9) < 60:
                continue
            if answered:
                self._answered_told[r.task.endpoint] = now
            told.append(health.Attempted(r.task.endpoint, answered, r.started_at))
        if len(self._answered_told) > 10_000:
            self._answered_told.clear()
        try:
            disabled = await health.observe(self.pool, told, self.health)
        except Exception:
            log_failure(log, "noting endpoint health failed (the attempts are recorded)")
            return
        if disabled:
            self.metrics.endpoints_disabled.inc(disabled)

    async def finish(self, done: list[Result | Task]) -> tuple[list[Result], set[int]]:
        """Write a batch back: results fenced by their claims, unattempted tasks released.
        Returns the results, and the ids of the tasks whose results were recorded."""
        results = [d for d in done if isinstance(d, Result)]
        unsent: dict[datetime | None, list[Task]] = {}
        for d in done:
            if isinstance(d, Task):
                unsent.setdefault(self.breakers.due_again(d.host), []).append(d)
        for due_at, tasks in unsent.items():
            await claims.release(self.pool, tasks, due_at)
        recorded = await claims.record(self.pool, results)
        await self._health([r for r in results if r.task.id in recorded])
        outcomes = Counter(
            (r.verdict.status.name.lower() if r.task.id in recorded else "stale", r.task.type)
            for r in results
        )
        for (outcome, kind), n in outcomes.items():
            self.metrics.attempts.labels(outcome=outcome, type=kind).inc(n)
        for r in results:
            if r.task.id not in recorded:
                log.warning("result for task %s dropped: its claim was taken over", r.task.id)
            elif r.verdict.status is not NotifyStatus.SUCCESS:
                log.info(
                    "callback for team %s failed (attempt %d): %s",
                    r.task.team_id,
                    r.task.attempt,
                    r.verdict.error,
                )
        return results, recorded
