"""Trade, admin and operations endpoints, in one table (callbacks are in notify_routes)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import admin, errors, market, trade
from .keys import DISPATCHER, POOL, REDIS, ROUTE_TABLE, SETTINGS
from .models import (
    ActivityIn,
    ActivityOut,
    DiscountIn,
    DiscountOut,
    Health,
    LockIn,
    LockOut,
    MarketConfig,
    MarketConfigQuery,
    SettleIn,
    SettleOut,
    SkuIn,
    SkuOut,
    TeamOut,
)
from .web import Route, envelope, path_param


def _found(value: Any, what: str) -> Any:
    if value is None:
        raise errors.NotFound(f"{what} not found")
    return value


# --- admin ---------------------------------------------------------------------------


async def put_discount(request: web.Request, body: DiscountIn) -> DiscountOut:
    return await admin.put_discount(request.app[POOL], path_param(request, "discountId"), body)


async def get_discount(request: web.Request, _: None) -> DiscountOut:
    found = await admin.get_discount(request.app[POOL], path_param(request, "discountId"))
    return _found(found, "discount")  # type: ignore[no-any-return]


async def put_sku(request: web.Request, body: SkuIn) -> SkuOut:
    return await admin.put_sku(request.app[POOL], path_param(request, "goodsId"), body)


async def get_sku(request: web.Request, _: None) -> SkuOut:
    found = await admin.get_sku(request.app[POOL], path_param(request, "goodsId"))
    return _found(found, "sku")  # type: ignore[no-any-return]


async def put_activity(request: web.Request, body: ActivityIn) -> ActivityOut:
    activity_id = path_param(request, "activityId")
    return await admin.put_activity(request.app[POOL], activity_id, body)


async def get_activity(request: web.Request, _: None) -> ActivityOut:
    activity_id = path_param(request, "activityId")
    return _found(await admin.get_activity(request.app[POOL], activity_id), "activity")  # type: ignore[no-any-return]


# --- shop front ----------------------------------------------------------------------


async def query_market_config(request: web.Request, body: MarketConfigQuery) -> MarketConfig:
    return await market.market_config(request.app[POOL], body)


async def lock_order(request: web.Request, body: LockIn) -> LockOut:
    return await trade.lock_order(request.app[POOL], body)


async def settle_order(request: web.Request, body: SettleIn) -> SettleOut:
    app = request.app
    settlement = await trade.settle_order(app[POOL], body, app[SETTINGS].blacklist)
    if settlement.notify_team_id is not None:
        # After commit, never awaited: the shop front does not wait for the merchant.
        app[DISPATCHER].fire(settlement.notify_team_id)
    return settlement.result


async def get_team(request: web.Request, _: None) -> TeamOut:
    return await market.get_team(request.app[POOL], path_param(request, "teamId"))


# --- operations ----------------------------------------------------------------------


async def healthz(request: web.Request, _: None) -> Health:
    return Health(status="up")


async def readyz(request: web.Request, _: None) -> web.Response:
    checks: dict[str, str] = {}

    async def probe(name: str, check: Callable[[], Awaitable[Any]]) -> None:
        try:
            async with asyncio.timeout(2):
                await check()
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; the reason is reported
            checks[name] = f"error: {type(exc).__name__}"

    await asyncio.gather(
        probe("postgres", lambda: request.app[POOL].fetchval("SELECT 1")),
        probe("redis", lambda: request.app[REDIS].ping()),
    )
    ready = all(v == "ok" for v in checks.values())
    health = Health(status="ready" if ready else "unavailable", checks=checks)
    if ready:
        return envelope(health)
    return envelope(health, code="0503", info="dependencies unavailable", status=503)


async def openapi(request: web.Request, _: None) -> web.Response:
    from .openapi import build_openapi

    return web.json_response(build_openapi(request.app[ROUTE_TABLE]))


ROUTES: list[Route] = [
    Route(
        "PUT",
        "/api/v1/admin/discounts/{discountId}",
        put_discount,
        "Create or replace a discount",
        "admin",
        DiscountIn,
        DiscountOut,
        admin=True,
    ),
    Route(
        "GET",
        "/api/v1/admin/discounts/{discountId}",
        get_discount,
        "A stored discount",
        "admin",
        None,
        DiscountOut,
        admin=True,
    ),
    Route(
        "PUT",
        "/api/v1/admin/skus/{goodsId}",
        put_sku,
        "Create or replace a goods item",
        "admin",
        SkuIn,
        SkuOut,
        admin=True,
    ),
    Route(
        "GET",
        "/api/v1/admin/skus/{goodsId}",
        get_sku,
        "A stored goods item",
        "admin",
        None,
        SkuOut,
        admin=True,
    ),
    Route(
        "PUT",
        "/api/v1/admin/activities/{activityId}",
        put_activity,
        "Create or replace an activity",
        "admin",
        ActivityIn,
        ActivityOut,
        admin=True,
    ),
    Route(
        "GET",
        "/api/v1/admin/activities/{activityId}",
        get_activity,
        "A stored activity",
        "admin",
        None,
        ActivityOut,
        admin=True,
    ),
    Route(
        "POST",
        "/api/v1/gbm/index/query_group_buy_market_config",
        query_market_config,
        "Price trial and joinable teams",
        "shop",
        MarketConfigQuery,
        MarketConfig,
    ),
    Route(
        "POST",
        "/api/v1/gbm/trade/lock_market_pay_order",
        lock_order,
        "Lock a discounted order (open or join a team)",
        "shop",
        LockIn,
        LockOut,
    ),
    Route(
        "POST",
        "/api/v1/gbm/trade/settlement_market_pay_order",
        settle_order,
        "Settle a paid order",
        "shop",
        SettleIn,
        SettleOut,
    ),
    Route("GET", "/api/v1/gbm/teams/{teamId}", get_team, "A team's state", "shop", None, TeamOut),
    Route("GET", "/healthz", healthz, "Process is up", "ops", None, Health),
    Route(
        "GET",
        "/readyz",
        readyz,
        "PostgreSQL and Redis reachable (503 otherwise)",
        "ops",
        None,
        Health,
    ),
    Route("GET", "/openapi.json", openapi, "This OpenAPI document", "ops", raw="application/json"),
]
