"""The worker's cron jobs: team expiry, the unpaid timeout, callback compensation and
retention, each run by every worker at every tick (FOR UPDATE SKIP LOCKED gives each a
different share).

PostgreSQL out of reach is ridden out: a job that cannot reach it tells the liveness (one line
when it is lost, one when it is back) and returns None; the next tick tries again.
"""

import logging
from typing import Any

from arq import cron
from arq.cron import CronJob

from .. import bootstrap
from ..callbacks import retention
from ..db import DOWN
from ..settings import Settings
from ..trade import expiry
from .liveness import Liveness

log = logging.getLogger("groupbuy_async.worker")

# arq runs at most this many jobs at once per worker; drains overlap up to MAX_DRAINS of
# them, so that a long backlog (each drain then runs for DRAIN_SECONDS) never leaves team
# expiry waiting for a slot.
MAX_JOBS = 10
MAX_DRAINS = MAX_JOBS - 2


async def fail_expired_teams(ctx: dict[str, Any]) -> int | None:
    """Team expiry; None when PostgreSQL is out of reach (the next tick tries again)."""
    liveness: Liveness = ctx["liveness"]
    try:
        failed = await expiry.fail_expired_teams(ctx["services"].pool)
    except DOWN as exc:
        liveness.lost(exc)
        return None
    liveness.swept()
    if failed:
        log.info("marked %d expired teams as failed", failed)
    return failed


async def close_unpaid_orders(ctx: dict[str, Any]) -> int | None:
    """Unpaid locks past their payment deadline (or in a failed team) closed, their slots and
    takes given back; None when PostgreSQL is out of reach (the next tick tries again)."""
    try:
        closed = await expiry.close_unpaid_orders(ctx["services"].pool)
    except DOWN as exc:
        ctx["liveness"].lost(exc)
        return None
    if closed:
        log.info("closed %d unpaid orders past their payment timeout", closed)
    return closed


async def deliver_callbacks(ctx: dict[str, Any]) -> dict[str, int] | None:
    """Compensation: drain every due notify task (the original's execSettlementNotifyJob()).
    None when PostgreSQL is out of reach, or when MAX_DRAINS drains are running already."""
    services: bootstrap.Services = ctx["services"]
    liveness: Liveness = ctx["liveness"]
    if liveness.drains >= MAX_DRAINS:
        return None
    liveness.drains += 1
    try:
        counts = (await services.dispatcher.drain()).as_dict()
    except DOWN as exc:
        liveness.lost(exc)
        return None
    finally:
        liveness.drains -= 1
    liveness.drained()
    if counts["waitCount"]:
        log.info("callback compensation: %s", counts)
    return counts


async def prune_retention(ctx: dict[str, Any]) -> dict[str, int] | None:
    """Retention: finished deliveries, their attempts and events left without deliveries,
    older than GROUPBUY_RETENTION_DAYS, pruned in small batches (callbacks/retention.py).
    One line when something was pruned. None when it failed: said in one line (a traceback
    for what is not an outage), the worker goes on and the next tick tries again."""
    services: bootstrap.Services = ctx["services"]
    settings: Settings = ctx["settings"]
    pruned = retention.Pruned()
    failed = False
    try:
        walk = ctx.setdefault("prune_walk", retention.Walk())
        await retention.prune(services.pool, settings.retention_days, pruned, walk)
    except DOWN as exc:
        ctx["liveness"].lost(exc)
        failed = True
    except Exception:
        log.exception("pruning past the retention failed; the next tick tries again")
        failed = True
    counts = pruned.counts()
    counter = ctx.get("pruned_rows")
    for table, rows in counts.items():
        if counter is not None and rows:
            counter.labels(table=table).inc(rows)
    if pruned:
        log.info(
            "pruned past the %d-day retention: %d attempts, %d deliveries, %d events (%d batches)",
            settings.retention_days,
            pruned.notify_attempt,
            pruned.notify_task,
            pruned.event,
            pruned.batches,
        )
    return None if failed else counts


def every(seconds: int) -> set[int]:
    """arq cron seconds for a period that divides a minute (else the nearest that does)."""
    step = next(s for s in range(min(seconds, 60), 61) if 60 % s == 0)
    return set(range(0, 60, step))


def every_minutes(seconds: int) -> set[int] | None:
    """arq cron minutes for a period over a minute (the nearest that divides an hour);
    None (every minute) for a minute or less."""
    if seconds <= 60:
        return None
    step = next(m for m in range(-(-seconds // 60), 61) if 60 % m == 0)
    return set(range(0, 60, step))


def cron_jobs(settings: Settings) -> list[CronJob]:
    """Each job at its period's seconds of the minute (minutes of the hour for a period
    over a minute), and once at startup."""
    jobs = (  # the job, its period in seconds, its time limit in seconds
        (fail_expired_teams, settings.fail_teams_cron_seconds, 300),
        (close_unpaid_orders, settings.close_unpaid_cron_seconds, 300),
        (deliver_callbacks, settings.notify_cron_seconds, 3600),
        (prune_retention, settings.prune_cron_seconds, 300),
    )
    # arq's job ids are global in Redis: unique ones (name:time) would let the first worker
    # to enqueue a tick keep every other worker from running it.
    return [
        cron(
            job,
            minute=every_minutes(period),
            second=every(period),
            microsecond=0,
            run_at_startup=True,
            unique=False,
            timeout=timeout,
        )
        for job, period, timeout in jobs
    ]
