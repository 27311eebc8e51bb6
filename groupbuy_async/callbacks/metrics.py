"""Prometheus metrics of callback delivery, on a registry of our own (not the global one)."""

from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .outbox import status_counts


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.attempts = Counter(
            "groupbuy_notify_attempts", "Callback attempts by outcome", ["outcome"], registry=r
        )
        self.latency = Histogram(
            "groupbuy_notify_delivery_seconds", "Duration of one callback attempt",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "groupbuy_notify_in_flight", "Callback requests being sent now", registry=r
        )
        self.tasks = Gauge(
            "groupbuy_notify_tasks", "Notify tasks by status (0 initial, 1 success, 2 retry,"
            " 3 error)", ["status"], registry=r,
        )  # fmt: skip
        self.due = Gauge("groupbuy_notify_due", "Notify tasks due now (backlog)", registry=r)
        self.paused_hosts = Gauge(
            "groupbuy_notify_paused_hosts", "Merchant hosts this process paused after"
            " unanswered attempts in a row (breaker open or probing)", registry=r,
        )  # fmt: skip

    def set_task_counts(self, by_status: dict[int, int], due: int) -> None:
        for status in range(4):
            self.tasks.labels(status=str(status)).set(by_status.get(status, 0))
        self.due.set(due)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def metrics_response(metrics: Metrics, pool: asyncpg.Pool) -> web.Response:
    """The text exposition, with the outbox's counts read at scrape time."""
    by_status, due = await status_counts(pool)
    metrics.set_task_counts(by_status, due)
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")
