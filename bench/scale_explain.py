"""bench-scale's EXPLAIN pass: every hot path run once through the production functions on
the big database with auto_explain (ANALYZE, BUFFERS) reporting each statement's plan to this
client, so the plans are those of the statements exactly as the code issues them (no SQL
copied here). A Seq Scan on a big table is flagged."""

import re
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from groupbuy_async.callbacks import claims, deliveries, feed, health, metrics, retention, views
from groupbuy_async.callbacks.immediate import TEAM_COMPLETED
from groupbuy_async.trade import expiry, queries

from .common import table
from .notify_scenarios import bench_settings, make_dispatcher
from .scale_fill import BIG_TABLES, MERCHANT
from .trade_paths import CHANNEL, SOURCE, TARGET, DirectTrader, lock_body, settle_body

_SETTINGS = """
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_analyze = on;
SET auto_explain.log_buffers = on;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
"""
_SCAN = re.compile(
    r"(Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan)(?: Backward)?"
    r"(?: using (\S+))? on (\S+)"
)
_DURATION = re.compile(r"duration: ([\d.]+) ms")


@dataclass
class Plan:
    label: str
    query: str
    ms: float
    text: str
    scans: list[str] = field(default_factory=list)
    seq_big: list[str] = field(default_factory=list)  # big tables read by a Seq Scan


def _plan(label: str, message: str) -> Plan:
    head, _, text = message.partition("plan:")
    query = text.split("Query Text:", 1)[-1].strip().splitlines()[0] if text else ""
    found = _DURATION.search(head)
    plan = Plan(label, " ".join(query.split()), float(found.group(1)) if found else 0.0, text)
    for kind, index, relation in _SCAN.findall(text):
        plan.scans.append(f"{kind} {index or relation}".replace(" Scan", ""))
        if kind == "Seq Scan" and relation in BIG_TABLES:
            plan.seq_big.append(relation)
    return plan


class Explainer:
    """A pool whose connections report every plan; `run(label, step)` files those of a step."""

    def __init__(self) -> None:
        self.label = ""
        self.plans: list[Plan] = []
        self.pool: asyncpg.Pool

    def _listen(self, _: object, message: asyncpg.PostgresLogMessage) -> None:
        if "plan:" in message.message:
            plan = _plan(self.label, message.message)
            if all((p.label, p.query) != (plan.label, plan.query) for p in self.plans):
                self.plans.append(plan)

    async def _setup(self, conn: PoolConnectionProxy) -> None:
        # At each acquire: a release drops the listener and resets the settings.
        await conn.execute(_SETTINGS)
        conn.add_log_listener(self._listen)

    async def open(self, dsn: str) -> None:
        # asyncpg warns at each release that the listener goes: _setup adds it back.
        warnings.filterwarnings("ignore", ".*active log listener", asyncpg.InterfaceWarning)
        self.pool = await asyncpg.create_pool(dsn, min_size=2, max_size=2, setup=self._setup)

    async def run(self, label: str, step: Awaitable[object]) -> None:
        self.label = label
        await step
        self.label = ""


async def _rolled_back(pool: asyncpg.Pool, statement: str, *args: object) -> None:
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        await conn.execute(statement, *args)
        await tr.rollback()


async def explain_hot_paths(
    dsn: str, receiver_url: str, history_endpoint: int, prepare: Callable[[], Awaitable[None]]
) -> list[Plan]:
    """Each hot path once; `prepare` first adds what the close cron and the prune find."""
    await prepare()
    ex = Explainer()
    await ex.open(dsn)
    pool = ex.pool
    try:
        trader = DirectTrader(pool)
        prefix = "x" + uuid.uuid4().hex[0]
        await ex.run("lock: open", trader.lock(lock_body(prefix, 0, 0, receiver_url)))
        team_id = await pool.fetchval(
            "SELECT team_id FROM group_buy_order_list WHERE source = $1 AND channel = $2"
            " AND out_trade_no = $3", SOURCE, CHANNEL, lock_body(prefix, 0, 0, "")["outTradeNo"],
        )  # fmt: skip
        for member in range(1, TARGET):
            body = {**lock_body(prefix, 0, member, receiver_url), "teamId": team_id}
            await ex.run("lock: join", trader.lock(body))
        for member in range(TARGET):
            last = member == TARGET - 1
            await ex.run(
                "settle: completes" if last else "settle",
                trader.settle(settle_body(prefix, 0, member)),
            )
        dispatcher = make_dispatcher(pool, bench_settings("", 8))
        try:
            await ex.run("immediate claim, send, record", dispatcher.drain(team_id))
        finally:
            await dispatcher.close(grace_seconds=1)
        await ex.run("claim by team (immediate)", _claim(pool, [team_id]))
        await ex.run("drain claim (due)", _claim(pool, None))
        await ex.run("health sweep", health.sweep(pool, health.Limits(timedelta(hours=1), 5)))
        await ex.run(
            "health hold (rolled back)", _rolled_back(pool, health._HOLD, history_endpoint)
        )
        await ex.run("/metrics counts", metrics.status_counts(pool))
        await _feed(ex, pool, team_id)
        order = settle_body(prefix, 0, 0)
        await ex.run("order pull", queries.get_order(
            pool, SOURCE, CHANNEL, order["outTradeNo"], order["userId"]
        ))  # fmt: skip
        await ex.run("event view", views.get_event(pool, views.By.TEAM, team_id))
        await ex.run("deliveries page", deliveries.list_deliveries(pool, MERCHANT, limit=100))
        await ex.run("deliveries page, in error", deliveries.list_deliveries(pool, None, status=3))
        await ex.run("notify_tasks page", views.list_tasks(pool, None, None, 100))
        await ex.run("close cron", expiry.close_unpaid_orders(pool, parallel=1))
        await ex.run("fail expired teams", expiry.fail_expired_teams(pool))
        await ex.run("retention prune", retention.prune(pool, 30, retention.Pruned()))
    finally:
        await pool.close()
    return ex.plans


async def _claim(pool: asyncpg.Pool, team_ids: list[str] | None) -> None:
    tasks = await claims.claim(
        pool, 500, timedelta(minutes=5), team_ids, per_host=500,
        event_type=TEAM_COMPLETED if team_ids else None,
    )  # fmt: skip
    await claims.release(pool, tasks, None)


async def _feed(ex: Explainer, pool: asyncpg.Pool, team_id: str) -> None:
    """A page near the head (a reader catching up), of one type, of one team."""
    event_id = await pool.fetchval(
        "SELECT event_id FROM event ORDER BY id DESC OFFSET 1000 LIMIT 1"
    )
    position = await feed.feed_position(pool, event_id)
    assert position is not None
    await ex.run("feed position", feed.feed_position(pool, event_id))
    await ex.run("feed page", feed.list_events(pool, position, limit=100))
    one_type = feed.list_events(pool, position, event_type="order.closed", limit=100)
    await ex.run("feed page, one type", one_type)
    one_team = feed.list_events(pool, feed.FEED_START, team_id=team_id, limit=100)
    await ex.run("feed page, one team", one_team)


def plan_lines(plans: list[Plan]) -> list[str]:
    """The summary: each statement's path, time, scans; Seq Scans on big tables flagged."""
    rows = [
        [p.label, f"{p.ms:.2f}", "SEQ SCAN " + ",".join(p.seq_big) if p.seq_big else "ok",
         ", ".join(dict.fromkeys(p.scans)) or "-", p.query[:70]]
        for p in plans
    ]  # fmt: skip
    columns = [("path", -30), ("ms", 8), ("big seq scan", -14), ("scans", -60), ("statement", 0)]
    return table(columns, rows)
