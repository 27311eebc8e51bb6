"""Shop-front and catalog (admin) endpoints of the trade half, in one table."""

from typing import TypeVar

from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..callbacks.rules import url_problem
from ..trade import catalog, orders, queries, refunds
from ..trade.models import (
    Activity,
    Discount,
    Goods,
    LockCommand,
    MarketQuery,
    RefundCommand,
    SettleCommand,
    Sku,
)
from .catalog_schemas import (
    ActivityIn,
    ActivityOut,
    ActivityPage,
    ActivityPageQuery,
    CodePageQuery,
    DiscountIn,
    DiscountOut,
    DiscountPage,
    SkuIn,
    SkuOut,
    SkuPage,
)
from .routing import Route, path_param, principal, require_pair, to_domain, to_wire
from .schemas import (
    LockIn,
    LockOut,
    MarketConfig,
    MarketConfigQuery,
    OrderOut,
    OrderQuery,
    RefundIn,
    RefundOut,
    SettleIn,
    SettleOut,
    TeamOut,
)

T = TypeVar("T")


def _found(value: T | None, what: str) -> T:
    if value is None:
        raise errors.NotFound(f"{what} not found")
    return value


def _activity(body: ActivityIn) -> Activity:
    goods = [to_domain(Goods, g) for g in body.goods]
    return Activity(**{**dict(body), "goods": goods})


# --- admin ---------------------------------------------------------------------------


async def put_discount(request: web.Request, body: DiscountIn) -> DiscountOut:
    discount_id = path_param(request, "discountId")
    stored = await catalog.put_discount(
        request.app[SERVICES].pool, discount_id, to_domain(Discount, body)
    )
    return to_wire(DiscountOut, stored)


async def get_discount(request: web.Request, _: None) -> DiscountOut:
    found = await catalog.get_discount(
        request.app[SERVICES].pool, path_param(request, "discountId")
    )
    return to_wire(DiscountOut, _found(found, "discount"))


async def list_discounts(request: web.Request, query: CodePageQuery) -> DiscountPage:
    page = await catalog.list_discounts(request.app[SERVICES].pool, query.limit, query.after)
    return to_wire(DiscountPage, page)


async def delete_discount(request: web.Request, _: None) -> DiscountOut:
    found = await catalog.delete_discount(
        request.app[SERVICES].pool, path_param(request, "discountId")
    )
    return to_wire(DiscountOut, _found(found, "discount"))


async def put_sku(request: web.Request, body: SkuIn) -> SkuOut:
    goods_id = path_param(request, "goodsId")
    stored = await catalog.put_sku(request.app[SERVICES].pool, goods_id, to_domain(Sku, body))
    return to_wire(SkuOut, stored)


async def get_sku(request: web.Request, _: None) -> SkuOut:
    found = await catalog.get_sku(request.app[SERVICES].pool, path_param(request, "goodsId"))
    return to_wire(SkuOut, _found(found, "sku"))


async def list_skus(request: web.Request, query: CodePageQuery) -> SkuPage:
    page = await catalog.list_skus(request.app[SERVICES].pool, query.limit, query.after)
    return to_wire(SkuPage, page)


async def delete_sku(request: web.Request, _: None) -> SkuOut:
    found = await catalog.delete_sku(request.app[SERVICES].pool, path_param(request, "goodsId"))
    return to_wire(SkuOut, _found(found, "sku"))


async def put_activity(request: web.Request, body: ActivityIn) -> ActivityOut:
    activity_id = path_param(request, "activityId")
    stored = await catalog.put_activity(request.app[SERVICES].pool, activity_id, _activity(body))
    return to_wire(ActivityOut, stored)


async def get_activity(request: web.Request, _: None) -> ActivityOut:
    activity_id = path_param(request, "activityId")
    found = await catalog.get_activity(request.app[SERVICES].pool, activity_id)
    return to_wire(ActivityOut, _found(found, "activity"))


async def list_activities(request: web.Request, query: ActivityPageQuery) -> ActivityPage:
    page = await catalog.list_activities(request.app[SERVICES].pool, query.limit, query.after)
    return to_wire(ActivityPage, page)


async def delete_activity(request: web.Request, _: None) -> ActivityOut:
    activity_id = path_param(request, "activityId")
    found = await catalog.delete_activity(request.app[SERVICES].pool, activity_id)
    return to_wire(ActivityOut, _found(found, "activity"))


# --- shop front ----------------------------------------------------------------------


async def query_market_config(request: web.Request, body: MarketConfigQuery) -> MarketConfig:
    who = require_pair(request, body.source, body.channel)
    query = to_domain(MarketQuery, body)
    return to_wire(
        MarketConfig, await queries.market_config(request.app[SERVICES].pool, query, who.pairs)
    )


async def lock_order(request: web.Request, body: LockIn) -> LockOut:
    who = require_pair(request, body.source, body.channel)
    services = request.app[SERVICES]
    if services.settings.notify_block_private:
        problem = url_problem(body.notify_url, block_private=True)
        if problem:  # an address literal callbacks may never reach: refused before any write
            raise errors.BadInput(problem)
    locked = await orders.lock_order(services.pool, to_domain(LockCommand, body), who.pairs)
    return to_wire(LockOut, locked)


async def settle_order(request: web.Request, body: SettleIn) -> SettleOut:
    require_pair(request, body.source, body.channel)
    services = request.app[SERVICES]
    command = to_domain(SettleCommand, body)
    settlement = await orders.settle_order(services.pool, command, services.settings.sc_blacklist)
    if settlement.notify_team_id is not None:
        # After commit, never awaited: the shop front does not wait for the merchant.
        services.dispatcher.fire(settlement.notify_team_id)
    return to_wire(SettleOut, settlement.result)


async def refund_order(request: web.Request, body: RefundIn) -> RefundOut:
    # Its order.closed / order.refunded event goes out with the worker's next drain: the
    # merchant asked for the refund and has the answer already.
    require_pair(request, body.source, body.channel)
    refunded = await refunds.refund_order(
        request.app[SERVICES].pool, to_domain(RefundCommand, body)
    )
    return to_wire(RefundOut, refunded)


async def get_team(request: web.Request, _: None) -> TeamOut:
    team = await queries.get_team(
        request.app[SERVICES].pool, path_param(request, "teamId"), principal(request).pairs
    )
    return to_wire(TeamOut, team)


async def get_order(request: web.Request, query: OrderQuery) -> OrderOut:
    require_pair(request, query.source, query.channel)
    order = await queries.get_order(
        request.app[SERVICES].pool,
        query.source,
        query.channel,
        path_param(request, "outTradeNo"),
        query.user_id,
    )
    return to_wire(OrderOut, order)


# What each shop-front call can be refused for, beyond bad input (declared in OpenAPI).
_ACTIVITY_CLOSED = (
    errors.NoActivityForGoods,
    errors.ActivityNotEffective,
    errors.OutsideActivityTime,
)
_LOCK_REFUSALS = (
    errors.BadInput("notifyUrl points at a blocked address (GROUPBUY_NOTIFY_BLOCK_PRIVATE)"),
    errors.ActivityNotFound,
    *_ACTIVITY_CLOSED,
    errors.TeamNotFound,
    errors.TakeLimitReached,
    errors.TeamFull,
    errors.TeamClosed,
    errors.OutTradeNoConflict,
    errors.TeamActivityMismatch,
)
_SETTLE_REFUSALS = (
    errors.BadInput("outTradeTime is before the order was locked (beyond the clock skew allowed)"),
    errors.UnknownOutTradeNo,
    errors.ChannelBlacklisted,
    errors.TradeTimeOutsideWindow,
    errors.OrderClosed,
    errors.TeamFailed,
    errors.OrderRefunded,
)
# A config body is checked against what it names when it is stored.
_PUT_ACTIVITY_REFUSALS = (
    errors.BadInput("discountId does not exist"),
    errors.BadInput("goods: a goodsId has no SKU under the given source and channel"),
    errors.UniqueConflict("goods: a goods item is already in another activity"),
    errors.ActivitySpansMerchants,
)

TRADE_ROUTES: list[Route] = [
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
        raises=(errors.NotFound,),
    ),
    Route(
        "GET",
        "/api/v1/admin/discounts",
        list_discounts,
        "Discounts in discountId order, one keyset page",
        "admin",
        None,
        DiscountPage,
        admin=True,
        query=CodePageQuery,
    ),
    Route(
        "DELETE",
        "/api/v1/admin/discounts/{discountId}",
        delete_discount,
        "Delete a discount nothing refers to",
        "admin",
        None,
        DiscountOut,
        admin=True,
        raises=(errors.NotFound, errors.StillReferenced),
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
        raises=(errors.StillReferenced,),
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
        raises=(errors.NotFound,),
    ),
    Route(
        "GET",
        "/api/v1/admin/skus",
        list_skus,
        "Goods items in goodsId order, one keyset page",
        "admin",
        None,
        SkuPage,
        admin=True,
        query=CodePageQuery,
    ),
    Route(
        "DELETE",
        "/api/v1/admin/skus/{goodsId}",
        delete_sku,
        "Delete a goods item nothing refers to",
        "admin",
        None,
        SkuOut,
        admin=True,
        raises=(errors.NotFound, errors.StillReferenced),
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
        raises=_PUT_ACTIVITY_REFUSALS,
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
        raises=(errors.NotFound,),
    ),
    Route(
        "GET",
        "/api/v1/admin/activities",
        list_activities,
        "Activities in activityId order, one keyset page",
        "admin",
        None,
        ActivityPage,
        admin=True,
        query=ActivityPageQuery,
    ),
    Route(
        "DELETE",
        "/api/v1/admin/activities/{activityId}",
        delete_activity,
        "Delete an activity without teams (its goods bindings go with it) nothing refers to",
        "admin",
        None,
        ActivityOut,
        admin=True,
        raises=(errors.NotFound, errors.StillReferenced),
    ),
    Route(
        "POST",
        "/api/v1/gbm/index/query_group_buy_market_config",
        query_market_config,
        "Price trial and joinable teams",
        "shop",
        MarketConfigQuery,
        MarketConfig,
        raises=(errors.Forbidden, *_ACTIVITY_CLOSED),
        merchant=True,
    ),
    Route(
        "POST",
        "/api/v1/gbm/trade/lock_market_pay_order",
        lock_order,
        "Lock a discounted order (open or join a team)",
        "shop",
        LockIn,
        LockOut,
        raises=(errors.Forbidden, *_LOCK_REFUSALS),
        merchant=True,
    ),
    Route(
        "POST",
        "/api/v1/gbm/trade/settlement_market_pay_order",
        settle_order,
        "Settle a paid order",
        "shop",
        SettleIn,
        SettleOut,
        raises=(errors.Forbidden, *_SETTLE_REFUSALS),
        merchant=True,
    ),
    Route(
        "POST",
        "/api/v1/gbm/trade/refund_market_pay_order",
        refund_order,
        "Refund an order: cancel a locked one, refund a paid one (idempotent)",
        "shop",
        RefundIn,
        RefundOut,
        raises=(errors.Forbidden, errors.UnknownOutTradeNo),
        merchant=True,
    ),
    Route(
        "GET",
        "/api/v1/gbm/teams/{teamId}",
        get_team,
        "A team's state",
        "shop",
        None,
        TeamOut,
        raises=(errors.TeamNotFound,),
        merchant=True,
    ),
    Route(
        "GET",
        "/api/v1/gbm/orders/{outTradeNo}",
        get_order,
        "An order's state: status, team, prices, times (reconcile callbacks with it)",
        "shop",
        None,
        OrderOut,
        query=OrderQuery,
        raises=(errors.Forbidden, errors.UnknownOutTradeNo),
        merchant=True,
    ),
]
