"""The per-host circuit breakers of one process (rules.Breaker is one host's, pure). A
merchant host whose attempts go unanswered (timeout, failed connect) too many times in a row
is paused: its due tasks wait, unattempted and postponed in the outbox, for the pause to
end, then one send probes it. Pauses double after each unanswered probe, up to the longest."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from ..db import log_failure
from . import claims
from .claims import Task
from .rules import Admission, AttemptOutcome, Breaker, BreakerChange, BreakerPolicy, unreachable

log = logging.getLogger(__name__)

# 5 unanswered attempts in a row pause a host for 30 s at first, 10 minutes at the longest.
POLICY = BreakerPolicy(5, timedelta(seconds=30), timedelta(minutes=10))
# Closed breakers still counting failures are forgotten past this many hosts.
BREAKERS_KEPT = 10_000


class HostBreakers:
    """A breaker for each host with unanswered attempts, or paused; other hosts have none."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.policy = POLICY
        self._breakers: dict[str, Breaker] = {}

    def __contains__(self, host: str) -> bool:
        return host in self._breakers

    def paused(self, now: datetime) -> list[str]:
        """The hosts whose tasks are not to be claimed or sent now."""
        return [host for host, b in self._breakers.items() if b.paused(now)]

    def is_paused(self, host: str) -> bool:
        breaker = self._breakers.get(host)
        return breaker is not None and breaker.paused(datetime.now(UTC))

    def open_count(self) -> int:
        """Hosts paused or being probed."""
        return sum(b.until is not None for b in self._breakers.values())

    def due_again(self, host: str) -> datetime | None:
        """When a task given back unattempted is due again: when its host's pause ends
        (now, if it has ended already or the host is not paused)."""
        breaker = self._breakers.get(host)
        return None if breaker is None else breaker.until

    async def admit(self, task: Task, send_ended: asyncio.Event) -> Admission:
        """What the host's breaker says to this send; while another send probes the host,
        waits for its answer (`send_ended` is set as any send ends)."""
        while True:
            breaker = self._breakers.get(task.host)
            if breaker is None:
                return Admission.SEND
            admission = breaker.admit(datetime.now(UTC))
            if admission is not Admission.WAIT:
                break
            send_ended.clear()
            await send_ended.wait()
        if admission is Admission.PROBE:
            log.info(
                "endpoint %s: pause over, probing it with the callback for team %s",
                task.host,
                task.team_id,
            )
        return admission

    def abandon_probe(self, host: str) -> None:
        """The probe was not sent after all: the next send probes instead."""
        if breaker := self._breakers.get(host):
            breaker.abandon_probe()

    async def observe(
        self, host: str, outcome: AttemptOutcome, probe: bool
    ) -> BreakerChange | None:
        """Tell the host's breaker how an attempt ended; pausing the host postpones its due
        tasks. One log line per change of state, which it returns."""
        answered = not unreachable(outcome)
        breaker = self._breakers.get(host)
        if breaker is None:
            if answered:
                return None
            if len(self._breakers) >= BREAKERS_KEPT:
                self._breakers = {h: b for h, b in self._breakers.items() if b.until is not None}
            breaker = self._breakers[host] = Breaker()
        change = breaker.observe(answered, probe, datetime.now(UTC), self.policy)
        if breaker.until is None and breaker.failures == 0:
            del self._breakers[host]
        if change is BreakerChange.CLOSED:
            log.info("endpoint %s answered the probe: callbacks to it resumed", host)
        elif change is not None:
            await self._pause(host, breaker, change, outcome)
        return change

    async def _pause(
        self, host: str, breaker: Breaker, change: BreakerChange, outcome: AttemptOutcome
    ) -> None:
        assert breaker.until is not None
        try:
            postponed = await claims.postpone(self.pool, host, breaker.until)
        except Exception:
            # Claims skip the host all the same; what falls due is given back when claimed.
            log_failure(log, "postponing the callbacks to endpoint %s failed", host)
            postponed = 0
        why = (
            f"{self.policy.failures} attempts in a row got no answer (last: {outcome.error})"
            if change is BreakerChange.OPENED
            else f"the probe got no answer ({outcome.error})"
        )
        log.warning(
            "endpoint %s: %s; callbacks to it paused for %gs, %d due ones postponed",
            host,
            why,
            breaker.pause.total_seconds(),
            postponed,
        )
