"""A worker's liveness: when it last completed a callback drain and a team-expiry sweep, and
since when PostgreSQL is out of reach. The cron jobs report it, the heartbeat carries it (for
`health worker`, which judges it with `stale`), and the worker's /metrics shows it."""

import logging
import time
from typing import Any

from prometheus_client import Gauge

from ..callbacks.drain import DRAIN_SECONDS
from ..callbacks.metrics import Metrics
from ..process.reasons import reason, server_address
from ..settings import Settings

log = logging.getLogger("groupbuy_async.worker")


class PostgresLost(Exception):
    """PostgreSQL stayed out of reach longer than GROUPBUY_WORKER_MAX_OUTAGE_SECONDS (said
    already, in one line): the worker exits 1."""


class Liveness:
    """When this worker last completed a drain and an expiry sweep, and since when PostgreSQL
    is out of reach. The cron jobs report here; /metrics and the heartbeat read it."""

    def __init__(self, settings: Settings) -> None:
        now = time.time()  # a worker just started is not stale
        self.last_drain = self.last_sweep = now
        # Stale when older than three cron periods plus the job's time limit: a drain's is
        # DRAIN_SECONDS and a last round of sends; a sweep is a few short statements, one
        # period is plenty.
        self.drain_stale_after = (
            3 * settings.notify_cron_seconds + DRAIN_SECONDS + settings.notify_timeout_seconds
        )
        self.sweep_stale_after = 4.0 * settings.fail_teams_cron_seconds
        self.max_outage = settings.worker_max_outage_seconds
        self.where = server_address(settings.database_url or "")
        self.down_since: float | None = None  # time.monotonic()
        self.gave_up = False
        self.changed = True  # since the heartbeat last carried it
        self.drains = 0  # running now

    def drained(self) -> None:
        self.last_drain = time.time()
        self._reached()

    def swept(self) -> None:
        self.last_sweep = time.time()
        self._reached()

    def _reached(self) -> None:
        self.changed = True
        if self.down_since is not None:
            took = time.monotonic() - self.down_since
            self.down_since = None
            log.info("PostgreSQL at %s back after %.0f s", self.where, took)

    def lost(self, exc: BaseException) -> None:
        """A cron job could not reach PostgreSQL: one line when that starts, one when it has
        lasted too long (the worker then exits), nothing in between."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning(
                "lost PostgreSQL at %s: %s; retrying at every cron tick, exiting after %d s",
                self.where,
                reason(exc),
                self.max_outage,
            )
        elif now - self.down_since >= self.max_outage and not self.gave_up:
            self.gave_up = True
            log.error(
                "worker stopped: PostgreSQL at %s unreachable for %.0f s"
                " (GROUPBUY_WORKER_MAX_OUTAGE_SECONDS=%d): %s",
                self.where,
                now - self.down_since,
                self.max_outage,
                reason(exc),
            )

    def as_record(self) -> dict[str, Any]:
        """What the heartbeat carries, for `health worker`."""
        return {
            "last_drain": self.last_drain,
            "last_sweep": self.last_sweep,
            "drain_stale_after": self.drain_stale_after,
            "sweep_stale_after": self.sweep_stale_after,
            "postgres_down_since": None
            if self.down_since is None
            else time.time() - (time.monotonic() - self.down_since),
        }

    def expose(self, metrics: Metrics) -> None:
        Gauge(
            "groupbuy_worker_last_drain_timestamp_seconds",
            "Unix time this worker last completed a callback drain",
            registry=metrics.registry,
        ).set_function(lambda: self.last_drain)
        Gauge(
            "groupbuy_worker_last_expiry_sweep_timestamp_seconds",
            "Unix time this worker last completed a team expiry sweep",
            registry=metrics.registry,
        ).set_function(lambda: self.last_sweep)


def stale(record: dict[str, Any], now: float) -> list[str]:
    """What is stale in a heartbeat's record, in words; empty when nothing is."""
    found = []
    for what, stamp, limit in (
        ("drain", "last_drain", "drain_stale_after"),
        ("expiry sweep", "last_sweep", "sweep_stale_after"),
    ):
        if stamp in record and limit in record and now - record[stamp] > record[limit]:
            found.append(
                f"last {what} {now - record[stamp]:.0f} s ago (stale after {record[limit]:.0f} s)"
            )
    return found
