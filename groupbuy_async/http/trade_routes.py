"""The shop front (a merchant's API key): price trial, lock, settle, refund, and a team's or
an order's state; their handlers and route table."""

from functools import partial

from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..trade import locking, queries, refunds, settlement
from ..trade.models import LockCommand, MarketQuery, RefundCommand, SettleCommand
from .routing import Route, documented, path_param, principal, require_pair, to_domain, to_wire
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
    """Price trial and joinable teams"""
    who = require_pair(request, body.source, body.channel)
    query = to_domain(MarketQuery, body)
    view = await queries.market_config(request.app[SERVICES].pool, query, who.pairs)
    return to_wire(MarketConfig, view)


async def lock_order(request: web.Request, body: LockIn) -> LockOut:
    """Lock a discounted order (open or join a team)"""
    who = require_pair(request, body.source, body.channel)
    services = request.app[SERVICES]
    if body.notify_url is not None:  # events can go only where the merchant said
        await services.endpoint_urls.check(who.merchant_id, body.notify_url)
    locked = await locking.lock_order(services.pool, to_domain(LockCommand, body), who.pairs)
    return to_wire(LockOut, locked)


async def settle_order(request: web.Request, body: SettleIn) -> SettleOut:
    """Settle a paid order"""
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
    """Refund an order: cancel a locked one, refund a paid one (idempotent)"""
    # Its order.closed / order.refunded event goes out with the worker's next drain: the
    # merchant asked for the refund and has the answer already.
    require_pair(request, body.source, body.channel)
    command = to_domain(RefundCommand, body)
    refunded = await refunds.refund_order(request.app[SERVICES].pool, command)
    return to_wire(RefundOut, refunded)


async def get_team(request: web.Request, _: None) -> TeamOut:
    """A team's state"""
    team = await queries.get_team(
        request.app[SERVICES].pool, path_param(request, "teamId"), principal(request).pairs
    )
    return to_wire(TeamOut, team)


async def get_order(request: web.Request, query: OrderQuery) -> OrderOut:
    """An order's state: status, team, prices, times (reconcile callbacks with it; orders are
    kept for ever, events only GROUPBUY_RETENTION_DAYS)"""
    require_pair(request, query.source, query.channel)
    order = await queries.get_order(
        request.app[SERVICES].pool,
        query.source,
        query.channel,
        path_param(request, "outTradeNo"),
        query.user_id,
    )
    return to_wire(OrderOut, order)


_CONFIG = "/api/v1/gbm/index/query_group_buy_market_config"
_LOCK = "/api/v1/gbm/trade/lock_market_pay_order"
_SETTLE = "/api/v1/gbm/trade/settlement_market_pay_order"
_REFUND = "/api/v1/gbm/trade/refund_market_pay_order"
_TEAM = "/api/v1/gbm/teams/{teamId}"
_ORDER = "/api/v1/gbm/orders/{outTradeNo}"

# What each shop-front call can be refused for, beyond bad input (declared in OpenAPI).
_ACTIVITY_CLOSED = (
    errors.NoActivityForGoods,
    errors.ActivityNotEffective,
    errors.OutsideActivityTime,
)
_NO_PRICE = (errors.Forbidden, *_ACTIVITY_CLOSED)
_LOCK_REFUSALS = (
    errors.Forbidden,
    errors.BadInput("notifyUrl: not the url of an enabled endpoint of the merchant"),
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
    errors.Forbidden,
    errors.BadInput("outTradeTime is before the order was locked (beyond the clock skew allowed)"),
    errors.UnknownOutTradeNo,
    errors.ChannelBlacklisted,
    errors.TradeTimeOutsideWindow,
    errors.OrderClosed,
    errors.TeamFailed,
    errors.OrderRefunded,
)
_UNKNOWN_ORDER = (errors.Forbidden, errors.UnknownOutTradeNo)

_shop = partial(documented, tag="shop", merchant=True)

TRADE_ROUTES: list[Route] = [
    _shop("POST", _CONFIG, query_market_config, MarketConfigQuery, MarketConfig, raises=_NO_PRICE),
    _shop("POST", _LOCK, lock_order, LockIn, LockOut, raises=_LOCK_REFUSALS),
    _shop("POST", _SETTLE, settle_order, SettleIn, SettleOut, raises=_SETTLE_REFUSALS),
    _shop("POST", _REFUND, refund_order, RefundIn, RefundOut, raises=_UNKNOWN_ORDER),
    _shop("GET", _TEAM, get_team, None, TeamOut, raises=(errors.TeamNotFound,)),
    _shop("GET", _ORDER, get_order, None, OrderOut, query=OrderQuery, raises=_UNKNOWN_ORDER),
]
