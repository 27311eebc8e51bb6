"""Prometheus metrics of callback delivery, on a registry of our own (not the global one),
and the outbox's task counts that a scrape reads."""

from dataclasses import dataclass, field

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .events import EventType

# (event type, status) -> tasks
TypeStatusCounts = dict[tuple[str, int], int]


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.attempts = Counter(
            "groupbuy_notify_attempts",
            "Callback attempts by outcome and event type",
            ["outcome", "type"],
            registry=r,
        )
        self.latency = Histogram(
            "groupbuy_notify_delivery_seconds",
            "Duration of one callback attempt",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.in_flight = Gauge(
            "groupbuy_notify_in_flight", "Callback requests being sent now", registry=r
        )
        self.tasks = Gauge(
            "groupbuy_notify_tasks",
            "Notify tasks by status (0 initial, 1 success, 2 retry, 3 error) and event type",
            labelnames=("status", "type"),
            registry=r,
        )
        self.due = Gauge(
            "groupbuy_notify_due",
            "Notify tasks due now (backlog) by event type",
            ["type"],
            registry=r,
        )
        self.endpoints_disabled = Counter(
            "groupbuy_endpoints_disabled",
            "Endpoints this process disabled: every attempt failed for"
            " GROUPBUY_ENDPOINT_DISABLE_AFTER_SECONDS",
            registry=r,
        )
        self.paused_hosts = Gauge(
            "groupbuy_notify_paused_hosts",
            "Merchant hosts this process paused after"
            " unanswered attempts in a row (breaker open or probing)",
            registry=r,
        )

    def set_task_counts(self, counts: TypeStatusCounts, due: dict[str, int]) -> None:
        for kind in map(str, EventType):
            for status in range(4):
                self.tasks.labels(status=str(status), type=kind).set(counts.get((kind, status), 0))
            self.due.labels(type=kind).set(due.get(kind, 0))

    def render(self) -> bytes:
        """The text exposition, the task counts as last read."""
        return generate_latest(self.registry)

    async def scrape(self, pool: asyncpg.Pool) -> bytes:
        """The text exposition, with the outbox's task counts read now."""
        self.set_task_counts(*await status_counts(pool))
        return self.render()


# Open (0, 2) and error (3) tasks are counted through their indexes: they are the few. The
# delivered ones (1) are all the rest: counted while the table is small, past EXACT_UP_TO
# rows estimated from PostgreSQL's statistics, so a scrape costs the same at 10 M rows.
EXACT_UP_TO = 100_000
_FEW_COUNTS = """
SELECT event_type, notify_status, count(*) AS tasks,
       count(*) FILTER (WHERE notify_status IN (0, 2) AND next_attempt_at <= now()) AS due
FROM notify_task WHERE notify_status IN (0, 2, 3) GROUP BY 1, 2
"""
_TOTAL_ESTIMATE = (
    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'notify_task'::regclass"
)
_DELIVERED_EXACT = (
    "SELECT event_type, count(*) AS tasks FROM notify_task WHERE notify_status = 1 GROUP BY 1"
)
# Each type's share of the table, as ANALYZE sampled it (every type is a common value).
_TYPE_SHARES = """
SELECT s.value AS event_type, s.share
FROM pg_stats p, unnest(p.most_common_vals::text::text[], p.most_common_freqs) AS s(value, share)
WHERE p.schemaname = current_schema() AND p.tablename = 'notify_task'
  AND p.attname = 'event_type'
"""
# Held deliveries (4, a disabled endpoint's) as ANALYZE sampled them: not delivered, and not
# counted (100,000 of them must not make a scrape slower).
_HELD_SHARE = """
SELECT coalesce(sum(s.share), 0)::float8
FROM pg_stats p, unnest(p.most_common_vals::text::int[], p.most_common_freqs) AS s(value, share)
WHERE p.schemaname = current_schema() AND p.tablename = 'notify_task'
  AND p.attname = 'notify_status' AND s.value = 4
"""


async def status_counts(pool: asyncpg.Pool) -> tuple[TypeStatusCounts, dict[str, int]]:
    """Tasks by event type and status (delivered ones estimated on large tables), and how
    many of each type are due. Every type and status is present, zeros included."""
    async with pool.acquire() as conn:
        few = await conn.fetch(_FEW_COUNTS)
        total = await conn.fetchval(_TOTAL_ESTIMATE)
        small = total < EXACT_UP_TO
        rows = await conn.fetch(_DELIVERED_EXACT if small else _TYPE_SHARES)
        held = 0 if small else int(total * await conn.fetchval(_HELD_SHARE))
    counts: TypeStatusCounts = {(str(t), s): 0 for t in EventType for s in range(4)}
    due = dict.fromkeys(map(str, EventType), 0)
    for r in few:
        counts[r["event_type"], r["notify_status"]] = r["tasks"]
        due[r["event_type"]] += r["due"]
    if small:
        delivered = {r["event_type"]: r["tasks"] for r in rows}
    else:
        shares = {r["event_type"]: r["share"] for r in rows}
        delivered = estimate_delivered(total - held, shares, counts)
    for kind, n in delivered.items():
        counts[kind, 1] = n
    return counts, due


def estimate_delivered(
    total: int, shares: dict[str, float], counts: TypeStatusCounts
) -> dict[str, int]:
    """Delivered tasks by type on a large table: all rows but the counted open and error
    ones, split by each type's share of the table less its counted ones. Without statistics
    (the table never analyzed) they are all counted as team.completed, the common type."""
    open_ = {t: sum(counts[str(t), s] for s in (0, 2, 3)) for t in map(str, EventType)}
    delivered = max(total - sum(open_.values()), 0)
    weights = {t: max(total * shares.get(t, 0.0) - n, 0.0) for t, n in open_.items()}
    weight = sum(weights.values())
    if weight <= 0:
        return {**dict.fromkeys(open_, 0), str(EventType.TEAM_COMPLETED): delivered}
    split = {t: int(delivered * w / weight) for t, w in weights.items()}
    # What rounding down left over goes to the largest share, so the types sum to the total.
    largest = max(weights, key=lambda t: weights[t])
    split[largest] += delivered - sum(split.values())
    return split
