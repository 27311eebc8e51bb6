"""The process's one Dispatcher: what the API, the worker and the CLI call to deliver
callbacks. drain() delivers what is due (drain.py); fire() sends a just-completed team's
callback at once (immediate.py); both go through the process's one Delivery (delivery.py),
so its bounds hold however many of them overlap."""

import time

from .delivery import Delivery
from .drain import DRAIN_SECONDS, Counts, Drain
from .immediate import Immediate


class Dispatcher:
    def __init__(self, delivery: Delivery, immediate_limit: int) -> None:
        self.delivery = delivery
        self.immediate = Immediate(delivery, immediate_limit)

    async def drain(self, team_id: str | None = None, seconds: float = DRAIN_SECONDS) -> Counts:
        """Deliver every due task (or one team's) until none is due or `seconds` pass; first,
        disable the endpoints whose attempts have all failed too long (health.py)."""
        await self.delivery.sweep_health()
        return await Drain(self.delivery, team_id, time.monotonic() + seconds).run()

    def fire(self, team_id: str) -> bool:
        """Send a just-completed team's callback in the background; False when it is left
        to the worker (see Immediate.fire)."""
        return self.immediate.fire(team_id)

    def stop(self) -> None:
        """Begin a graceful stop (a worker's SIGTERM): drains claim nothing more, sends in
        flight finish and are recorded as usual, and tasks claimed but not yet sent are
        released, due now, as their drains end. For good: a drain started later ends at once."""
        self.delivery.stop()

    async def wait_background(self, grace_seconds: float) -> None:
        """Let background sends finish; the leases of any cut short simply expire."""
        await self.immediate.wait(grace_seconds)

    async def close(self, grace_seconds: float) -> None:
        """Stop firing, let background sends finish, close the sender's session and the
        publisher's broker connection."""
        self.immediate.closed = True
        await self.immediate.wait(grace_seconds)
        await self.delivery.sender.close()
        await self.delivery.publisher.close()
