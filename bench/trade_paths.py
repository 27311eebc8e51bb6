"""The trade benchmark's workload, the two ways to run it (HTTP API, direct on a pool),
and the checks of what it left in PostgreSQL."""

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import aiohttp
import asyncpg

from groupbuy_async.db import create_pool
from groupbuy_async.trade import catalog, locking, settlement
from groupbuy_async.trade.models import (
    Activity,
    Discount,
    Goods,
    LockCommand,
    SettleCommand,
    Sku,
)

from .common import BenchFailure, command, percentile, timed
from .cpu import Section, Source, measure
from .trade_api import ApiClient

ACTIVITY_ID, GOODS_ID, DISCOUNT_ID = 7_000_001, "bench-goods", "bench-20-off"
SOURCE, CHANNEL = "s01", "c01"
_PAIRS = frozenset({(SOURCE, CHANNEL)})  # what the bench merchant's key holds
TARGET = 3
LOCK_PATH = "/api/v1/gbm/trade/lock_market_pay_order"
SETTLE_PATH = "/api/v1/gbm/trade/settlement_market_pay_order"
SHUFFLE_SEED = 20240601
# Their statistics steer the team statements' plans: see prepare().
TRADE_TABLES = ("group_buy_order", "group_buy_order_list", "notify_task", "notify_attempt")

T = TypeVar("T")


@dataclass
class Phase:
    path: str
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    section: Section = field(default_factory=Section)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.requests / self.section.seconds if self.section.seconds else 0.0

    def cells(self) -> list[str]:
        lat = self.latencies_ms
        return [
            self.path, self.name, str(self.requests), f"{self.section.seconds:.2f}",
            f"{self.rate:.0f}", *(f"{percentile(lat, p):.1f}" for p in (50, 90, 99)),
            f"{max(lat, default=0.0):.1f}",
        ]  # fmt: skip


PHASE_COLUMNS = [
    ("path", -7), ("phase", -7), ("requests", 8), ("seconds", 8), ("req/s", 9),
    ("p50 ms", 8), ("p90 ms", 8), ("p99 ms", 8), ("max ms", 8),
]  # fmt: skip


@dataclass
class PathRun:
    lock: Phase
    settle: Phase
    team_ids: list[str]
    completions: int  # settlements that answered teamCompleted
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Trader(Protocol):
    """lock() returns the teamId; settle() whether this settlement completed the team."""

    path: str
    prefix: str  # of its user ids and outTradeNos, as long for every path

    async def lock(self, body: dict[str, Any]) -> str: ...

    async def settle(self, body: dict[str, Any]) -> bool: ...

    async def warm_up(self, concurrency: int) -> None: ...


class HttpTrader(ApiClient):
    def __init__(
        self, session: aiohttp.ClientSession, base: str, path: str = "http", prefix: str = "h"
    ) -> None:
        super().__init__(session, base)
        self.path = path
        self.prefix = prefix

    async def lock(self, body: dict[str, Any]) -> str:
        return (await self.post(LOCK_PATH, body))["teamId"]  # type: ignore[no-any-return]

    async def settle(self, body: dict[str, Any]) -> bool:
        body = {**body, "outTradeTime": datetime.now(UTC).isoformat()}
        return (await self.post(SETTLE_PATH, body))["teamCompleted"]  # type: ignore[no-any-return]


class DirectTrader:
    """The service's own transaction functions on a pool: what the HTTP layer wraps."""

    path = "direct"
    prefix = "d0"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def lock(self, body: dict[str, Any]) -> str:
        locked = await locking.lock_order(self.pool, command(LockCommand, body), _PAIRS)
        return locked.team_id

    async def settle(self, body: dict[str, Any]) -> bool:
        req = command(SettleCommand, {**body, "outTradeTime": datetime.now(UTC)})
        return (await settlement.settle_order(self.pool, req, frozenset())).result.team_completed

    async def warm_up(self, concurrency: int) -> None:
        for _ in range(3):
            await asyncio.gather(*(self.pool.fetchval("SELECT 1") for _ in range(concurrency)))


async def drive(units: Iterable[T], concurrency: int, work: Callable[[T], Awaitable[None]]) -> None:
    """Run `work` over the units with `concurrency` workers. The first exception cancels
    the rest and is raised."""
    feed = iter(units)

    async def worker() -> None:
        for unit in feed:  # shared iterator: each unit is taken by exactly one worker
            await work(unit)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    except ExceptionGroup as failed:  # the first failure, not a group of cancellations
        raise failed.exceptions[0] from None


def lock_body(prefix: str, team: int, member: int, notify_url: str) -> dict[str, Any]:
    return {
        "userId": f"{prefix}u{team}-{member}",
        "activityId": ACTIVITY_ID,
        "goodsId": GOODS_ID,
        "source": SOURCE,
        "channel": CHANNEL,
        "outTradeNo": f"{prefix}o{team}-{member}",
        "notifyUrl": notify_url,
    }


def settle_body(prefix: str, team: int, member: int) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "channel": CHANNEL,
        "userId": f"{prefix}u{team}-{member}",
        "outTradeNo": f"{prefix}o{team}-{member}",
    }


async def run_path(
    trader: Trader, teams: int, concurrency: int, notify_url: str, cpu: Mapping[str, Source]
) -> PathRun:
    """Lock every team whole (opener, then the joins, which need its teamId), then settle
    all orders in one shuffled order: payments arrive in no particular order, so members
    of a team sometimes settle concurrently and serialise on the team row."""
    prefix = trader.prefix  # each path its own users and orders
    await trader.warm_up(concurrency)

    lock = Phase(trader.path, "lock")
    team_ids: list[str] = [""] * teams

    async def lock_team(team: int) -> None:
        opener = lock_body(prefix, team, 0, notify_url)
        team_id = await timed(lock.latencies_ms, trader.lock(opener))
        for member in range(1, TARGET):
            body = {**lock_body(prefix, team, member, notify_url), "teamId": team_id}
            joined = await timed(lock.latencies_ms, trader.lock(body))
            if joined != team_id:
                raise BenchFailure(f"join of team {team_id} landed in team {joined}")
        team_ids[team] = team_id

    with measure(cpu) as lock.section:
        await drive(range(teams), concurrency, lock_team)

    settle = Phase(trader.path, "settle")
    orders = [(t, m) for t in range(teams) for m in range(TARGET)]
    random.Random(SHUFFLE_SEED).shuffle(orders)  # same order for both paths
    completions = 0

    async def settle_one(order: tuple[int, int]) -> None:
        nonlocal completions
        if await timed(settle.latencies_ms, trader.settle(settle_body(prefix, *order))):
            completions += 1

    with measure(cpu) as settle.section:
        await drive(orders, concurrency, settle_one)
    return PathRun(lock, settle, team_ids, completions)


async def prepare(db_url: str) -> str:
    """Returns PostgreSQL's version, for the report. Sets up one activity (100.00 goods, 20 off, teams of 3, one take per user, a day to fill),
    and no autovacuum on the trade tables: an auto-ANALYZE lands at a random moment and
    flips the plans of the team statements (after one that saw few forming teams, the
    join and completion UPDATEs scan every forming team instead of using the team_id
    key), so one path could run on other plans than the other."""
    pool = await create_pool(db_url, 1, 2)
    try:
        await catalog.put_discount(pool, DISCOUNT_ID, Discount(
            discount_name="bench 20 off", market_plan="ZJ", market_expr="20",
        ))  # fmt: skip
        await catalog.put_sku(pool, GOODS_ID, Sku(
            goods_name="bench goods", original_price=Decimal("100.00"), source=SOURCE,
            channel=CHANNEL,
        ))  # fmt: skip
        now = datetime.now(UTC)
        await catalog.put_activity(pool, ACTIVITY_ID, Activity(
            activity_name="bench activity", discount_id=DISCOUNT_ID, target=TARGET,
            take_limit_count=1, valid_time=24 * 60, status=1,
            start_time=now - timedelta(hours=1), end_time=now + timedelta(days=2),
            goods=[Goods(source=SOURCE, channel=CHANNEL, goods_id=GOODS_ID)],
        ))  # fmt: skip
        for table in TRADE_TABLES:
            await pool.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
        version: str = await pool.fetchval("SHOW server_version")
        return version.split()[0]
    finally:
        await pool.close()


async def check_path(conn: asyncpg.Connection, run: PathRun, teams: int) -> list[str]:
    """What PostgreSQL says about this path's teams; a list of problems (empty = correct)."""
    problems = []
    label = run.lock.path
    if len(set(run.team_ids)) != teams:
        problems.append(f"{label}: {len(set(run.team_ids))} distinct teams, expected {teams}")
    if run.completions != teams:
        problems.append(f"{label}: {run.completions} settlements said teamCompleted, not {teams}")
    row = await conn.fetchrow(
        "SELECT count(*) AS teams,"
        " count(*) FILTER (WHERE status = 1 AND complete_count = $2 AND lock_count = $2)"
        "   AS complete"
        " FROM group_buy_order WHERE team_id = ANY($1)",
        run.team_ids,
        TARGET,
    )
    assert row is not None
    if row["teams"] != teams or row["complete"] != teams:
        problems.append(f"{label}: {row['complete']}/{row['teams']} teams complete, want {teams}")
    row = await conn.fetchrow(
        "SELECT count(*) AS orders, count(*) FILTER (WHERE status = 1) AS paid,"
        " count(*) FILTER (WHERE completed_team) AS completers"
        " FROM group_buy_order_list WHERE team_id = ANY($1)",
        run.team_ids,
    )
    assert row is not None
    if (row["orders"], row["paid"], row["completers"]) != (teams * TARGET,) * 2 + (teams,):
        problems.append(
            f"{label}: {row['orders']} orders, {row['paid']} paid, {row['completers']} completers;"
            f" want {teams * TARGET}, {teams * TARGET}, {teams}"
        )
    tasks = await conn.fetchval(
        "SELECT count(*) FROM notify_task WHERE team_id = ANY($1)", run.team_ids
    )
    if tasks != teams:
        problems.append(f"{label}: {tasks} notify tasks, want exactly {teams}")
    return problems
