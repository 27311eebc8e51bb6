"""The shoppers: drive teams to completion over the API's HTTP interface, as a client would.

Every call is recorded (start, duration, HTTP status or error). A call that fails for a
reason a retry can mend (connection refused or reset, a timeout, a 5xx) is retried with the
same body until it succeeds or the deadline passes: lock and settlement are idempotent on
outTradeNo, so a retried call never makes a second order or a second completion.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

ADMIN_TOKEN = "faults-admin-token"
MERCHANT_ID = "faults"
ACTIVITY_ID = 9_000_001
GOODS_ID, DISCOUNT_ID = "faults-goods", "faults-20-off"
SOURCE, CHANNEL = "s01", "c01"
LOCK = "/api/v1/gbm/trade/lock_market_pay_order"
SETTLE = "/api/v1/gbm/trade/settlement_market_pay_order"
RETRY_PAUSE = 0.1


class ShopError(Exception):
    """The API answered something no fault excuses (a 4xx on a valid call, a wrong team)."""


@dataclass
class Call:
    path: str
    started: float  # time.time()
    seconds: float
    status: int | None  # HTTP status; None: no answer (refused, reset, timeout)
    error: str = ""

    @property
    def ended(self) -> float:
        return self.started + self.seconds


@dataclass
class Tenant:
    """A merchant of the shop: its source+channel pair, its activity and goods there, and
    the API key its shoppers' requests carry."""

    merchant_id: str
    source: str
    channel: str
    activity_id: int
    goods_id: str
    key: str = ""


@dataclass
class Team:
    index: int
    notify_url: str
    size: int
    tenant: Tenant
    team_id: str = ""
    completed_at: float | None = None  # time.time() when the completing settlement answered
    prefix: str = "t"

    def user(self, member: int) -> str:
        return f"{self.prefix}{self.index}u{member}"

    def order(self, member: int) -> str:
        return f"{self.prefix}{self.index}o{member}"


@dataclass
class Shop:
    base: str
    session: aiohttp.ClientSession
    calls: list[Call] = field(default_factory=list)
    teams: list[Team] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)  # calls awaiting an answer, by path
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    # The faults merchant, made by set_up; add_tenant makes others.
    tenant: Tenant = field(
        default_factory=lambda: Tenant(MERCHANT_ID, SOURCE, CHANNEL, ACTIVITY_ID, GOODS_ID)
    )

    async def call(
        self, method: str, path: str, body: Any = None, deadline: float | None = None,
        admin: bool = False, key: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The envelope's data; retried (same body) on no answer or 5xx until `deadline`
        (time.monotonic(); default 60 s from now). Sent with the admin token, or `key`
        (default the faults merchant's)."""
        deadline = deadline or time.monotonic() + 60
        bearer = ADMIN_TOKEN if admin else key or self.tenant.key
        headers = {"Authorization": f"Bearer {bearer}"}
        while True:
            started, began = time.time(), time.monotonic()
            status: int | None = None
            self.in_flight[path] += 1
            try:
                async with self.session.request(
                    method, self.base + path, json=body, headers=headers
                ) as resp:
                    status = resp.status
                    envelope = await resp.json(content_type=None)
                self.calls.append(Call(path, started, time.monotonic() - began, status))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
                self.calls.append(Call(path, started, time.monotonic() - began, status, error))
            else:
                if status == 200 and envelope.get("code") == "0000":
                    return envelope["data"]  # type: ignore[no-any-return]
                if status < 500:
                    raise ShopError(f"{method} {path} {body} -> HTTP {status} {envelope}")
            finally:
                self.in_flight[path] -= 1
            if time.monotonic() > deadline:
                raise ShopError(f"{method} {path} still failing at its deadline: {self.calls[-1]}")
            await asyncio.sleep(RETRY_PAUSE)

    async def set_up(self, target: int) -> None:
        """The discount, and the faults merchant (see add_tenant)."""
        await self.call("PUT", f"/api/v1/admin/discounts/{DISCOUNT_ID}", {
            "discountName": "20 off", "marketPlan": "ZJ", "marketExpr": "20",
        }, admin=True)  # fmt: skip
        await self.add_tenant(self.tenant, target)

    async def add_tenant(self, tenant: Tenant, target: int) -> Tenant:
        """The merchant holding the tenant's source+channel, an API key of it (into
        tenant.key), its goods and an effective activity with teams of `target`."""
        now = datetime.now(UTC)
        merchant = f"/api/v1/admin/merchants/{tenant.merchant_id}"
        await self.call("PUT", merchant, {
            "name": tenant.merchant_id,
            "bindings": [{"source": tenant.source, "channel": tenant.channel}],
        }, admin=True)  # fmt: skip
        tenant.key = (await self.call("POST", f"{merchant}/keys", admin=True))["key"]
        pair = {"source": tenant.source, "channel": tenant.channel}
        await self.call("PUT", f"/api/v1/admin/skus/{tenant.goods_id}", {
            "goodsName": f"{tenant.merchant_id} goods", "originalPrice": 100, **pair,
        }, admin=True)  # fmt: skip
        await self.call("PUT", f"/api/v1/admin/activities/{tenant.activity_id}", {
            "activityName": tenant.merchant_id, "discountId": DISCOUNT_ID, "takeLimitCount": 1,
            "target": target, "validTime": 120, "status": 1,
            "startTime": (now - timedelta(hours=1)).isoformat(),
            "endTime": (now + timedelta(days=1)).isoformat(),
            "goods": [{**pair, "goodsId": tenant.goods_id}],
        }, admin=True)  # fmt: skip
        return tenant

    async def endpoint(
        self, endpoint_id: str, url: str, secret: str, tenant: Tenant | None = None
    ) -> None:
        """An enabled endpoint of the tenant's merchant (default the faults merchant) at
        `url`, signing with `secret`: a lock's notifyUrl must be one."""
        merchant_id = (tenant or self.tenant).merchant_id
        await self.call(
            "PUT", f"/api/v1/admin/merchants/{merchant_id}/endpoints/{endpoint_id}",
            {"url": url, "secret": secret}, admin=True,
        )  # fmt: skip

    def new_team(self, notify_url: str, size: int, tenant: Tenant | None = None) -> Team:
        team = Team(next(self._counter), notify_url, size, tenant or self.tenant)
        self.teams.append(team)
        return team

    async def lock(self, team: Team, deadline: float | None = None) -> None:
        t = team.tenant
        for member in range(team.size):
            body = {
                "userId": team.user(member), "activityId": t.activity_id, "goodsId": t.goods_id,
                "source": t.source, "channel": t.channel, "outTradeNo": team.order(member),
                "notifyUrl": team.notify_url,
            }  # fmt: skip
            if member:
                body["teamId"] = team.team_id
            got = (await self.call("POST", LOCK, body, deadline, key=t.key))["teamId"]
            if member and got != team.team_id:
                raise ShopError(f"member {member} of team {team.team_id} landed in {got}")
            team.team_id = got

    async def settle(self, team: Team, deadline: float | None = None) -> None:
        paid = datetime.now(UTC).isoformat()  # one payment time per order, kept on retries
        completions = 0
        t = team.tenant
        for member in range(team.size):
            body = {
                "source": t.source, "channel": t.channel, "userId": team.user(member),
                "outTradeNo": team.order(member), "outTradeTime": paid,
            }  # fmt: skip
            data = await self.call("POST", SETTLE, body, deadline, key=t.key)
            if data["teamCompleted"]:
                completions += 1
                team.completed_at = time.time()
        if completions != 1:
            raise ShopError(f"team {team.team_id}: {completions} settlements said teamCompleted")

    async def trade(self, team: Team, deadline: float | None = None) -> None:
        await self.lock(team, deadline)
        await self.settle(team, deadline)

    def calls_between(self, start: float, end: float) -> list[Call]:
        """Calls that were in progress at some moment of [start, end] (time.time())."""
        return [c for c in self.calls if c.started <= end and c.ended >= start]


async def drive(
    units: Iterable[Team], concurrency: int, work: Callable[[Team], Awaitable[None]]
) -> None:
    """`work` over the units with `concurrency` workers; the first failure is raised."""
    feed = iter(units)

    async def worker() -> None:
        for unit in feed:
            await work(unit)

    await _at_once(concurrency, worker)


async def steady_load(
    shop: Shop, notify_url: str, size: int, until: Callable[[], bool], concurrency: int = 4,
    pause: float = 0.15, max_teams: int = 400, deadline: float | None = None,
) -> None:  # fmt: skip
    """Whole teams one after another on `concurrency` workers, each pausing `pause` between
    teams, until `until()` or `max_teams`: load that keeps going through a fault."""
    started = itertools.count()

    async def worker() -> None:
        while not until() and next(started) < max_teams:
            await shop.trade(shop.new_team(notify_url, size), deadline)
            await asyncio.sleep(pause)

    await _at_once(concurrency, worker)


async def _at_once(count: int, worker: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """`count` workers at once; the first failure is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(worker())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
