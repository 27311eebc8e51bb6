"""The shop front (a merchant's API key): price trial, lock, settle, refund, and a team's or
an order's state; their handlers and route table."""

from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..callbacks.rules import url_problem
from ..trade import locking, queries, refunds, settlement
from ..trade.models import LockCommand, MarketQuery, RefundCommand, SettleCommand
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


async def query_market_config(request: web.Request, body: MarketConfigQuery) -> MarketConfig:
    who = require_pair(request, body.source, body.channel)
    query = to_domain(MarketQuery, body)
    view = await queries.market_config(request.app[SERVICES].pool, query, who.pairs)
    return to_wire(MarketConfig, view)


async def lock_order(request: web.Request, body: LockIn) -> LockOut:
    who = require_pair(request, body.source, body.channel)
    services = request.app[SERVICES]
    if services.settings.notify_block_private:
        problem = url_problem(body.notify_url, block_private=True)
        if problem:  # an address literal callbacks may never reach: refused before any write
            raise errors.BadInput(problem)
    locked = await locking.lock_order(services.pool, to_domain(LockCommand, body), who.pairs)
    return to_wire(LockOut, locked)


async def settle_order(request: web.Request, body: SettleIn) -> SettleOut:
    require_pair(request, body.source, body.channel)
    services = request.app[SERVICES]
    command = to_domain(SettleCommand, body)
    blacklist = services.settings.sc_blacklist
    settled = await settlement.settle_order(services.pool, command, blacklist)
    if settled.notify_team_id is not None:
        # After commit, never awaited: the shop front does not wait for the merchant.
        services.dispatcher.fire(settled.notify_team_id)
    return to_wire(SettleOut, settled.result)


async def refund_order(request: web.Request, body: RefundIn) -> RefundOut:
    # Its order.closed / order.refunded event goes out with the worker's next drain: the
    # merchant asked for the refund and has the answer already.
    require_pair(request, body.source, body.channel)
    command = to_domain(RefundCommand, body)
    refunded = await refunds.refund_order(request.app[SERVICES].pool, command)
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
TRADE_ROUTES: list[Route] = [
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
