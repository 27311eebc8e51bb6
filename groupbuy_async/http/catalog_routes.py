"""The operator's catalog (admin): discounts, goods and activities, stored, read, listed and
deleted; their handlers and route table (each route's summary is its handler's docstring)."""

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..trade import catalog
from ..trade.models import Activity, Discount, Goods, Sku
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
from .routing import Route, documented, path_param, to_domain, to_wire

T = TypeVar("T")


async def _stored(
    request: web.Request,
    find: Callable[[asyncpg.Pool, Any], Awaitable[T | None]],
    key: str,
    what: str,
) -> T:
    """What `find` finds under the path's `key`; 404 when nothing is stored there."""
    found = await find(request.app[SERVICES].pool, path_param(request, key))
    if found is None:
        raise errors.NotFound(f"{what} not found")
    return found


async def put_discount(request: web.Request, body: DiscountIn) -> DiscountOut:
    """Create or replace a discount"""
    discount_id = path_param(request, "discountId")
    stored = await catalog.put_discount(
        request.app[SERVICES].pool, discount_id, to_domain(Discount, body)
    )
    return to_wire(DiscountOut, stored)


async def get_discount(request: web.Request, _: None) -> DiscountOut:
    """A stored discount"""
    found = await _stored(request, catalog.get_discount, "discountId", "discount")
    return to_wire(DiscountOut, found)


async def list_discounts(request: web.Request, query: CodePageQuery) -> DiscountPage:
    """Discounts in discountId order, one keyset page"""
    page = await catalog.list_discounts(request.app[SERVICES].pool, query.limit, query.after)
    return to_wire(DiscountPage, page)


async def delete_discount(request: web.Request, _: None) -> DiscountOut:
    """Delete a discount nothing refers to"""
    found = await _stored(request, catalog.delete_discount, "discountId", "discount")
    return to_wire(DiscountOut, found)


async def put_sku(request: web.Request, body: SkuIn) -> SkuOut:
    """Create or replace a goods item"""
    goods_id = path_param(request, "goodsId")
    stored = await catalog.put_sku(request.app[SERVICES].pool, goods_id, to_domain(Sku, body))
    return to_wire(SkuOut, stored)


async def get_sku(request: web.Request, _: None) -> SkuOut:
    """A stored goods item"""
    return to_wire(SkuOut, await _stored(request, catalog.get_sku, "goodsId", "sku"))


async def list_skus(request: web.Request, query: CodePageQuery) -> SkuPage:
    """Goods items in goodsId order, one keyset page"""
    page = await catalog.list_skus(request.app[SERVICES].pool, query.limit, query.after)
    return to_wire(SkuPage, page)


async def delete_sku(request: web.Request, _: None) -> SkuOut:
    """Delete a goods item nothing refers to"""
    return to_wire(SkuOut, await _stored(request, catalog.delete_sku, "goodsId", "sku"))


async def put_activity(request: web.Request, body: ActivityIn) -> ActivityOut:
    """Create or replace an activity"""
    activity = Activity(**{**dict(body), "goods": [to_domain(Goods, g) for g in body.goods]})
    activity_id = path_param(request, "activityId")
    stored = await catalog.put_activity(request.app[SERVICES].pool, activity_id, activity)
    return to_wire(ActivityOut, stored)


async def get_activity(request: web.Request, _: None) -> ActivityOut:
    """A stored activity"""
    found = await _stored(request, catalog.get_activity, "activityId", "activity")
    return to_wire(ActivityOut, found)


async def list_activities(request: web.Request, query: ActivityPageQuery) -> ActivityPage:
    """Activities in activityId order, one keyset page"""
    page = await catalog.list_activities(request.app[SERVICES].pool, query.limit, query.after)
    return to_wire(ActivityPage, page)


async def delete_activity(request: web.Request, _: None) -> ActivityOut:
    """Delete an activity without teams (its goods bindings go with it) nothing refers to"""
    found = await _stored(request, catalog.delete_activity, "activityId", "activity")
    return to_wire(ActivityOut, found)


# A config body is checked against what it names when it is stored.
_PUT_ACTIVITY_REFUSALS = (
    errors.BadInput("discountId does not exist"),
    errors.BadInput("goods: a goodsId has no SKU under the given source and channel"),
    errors.UniqueConflict("goods: a goods item is already in another activity"),
    errors.ActivitySpansMerchants,
)
_NOT_FOUND = (errors.NotFound,)
_IN_USE = (errors.NotFound, errors.StillReferenced)

_DISCOUNTS = "/api/v1/admin/discounts"
_DISCOUNT = _DISCOUNTS + "/{discountId}"
_SKUS = "/api/v1/admin/skus"
_SKU = _SKUS + "/{goodsId}"
_ACTIVITIES = "/api/v1/admin/activities"
_ACTIVITY = _ACTIVITIES + "/{activityId}"
_admin = partial(documented, tag="admin", admin=True)

CATALOG_ROUTES: list[Route] = [
    _admin("PUT", _DISCOUNT, put_discount, DiscountIn, DiscountOut),
    _admin("GET", _DISCOUNT, get_discount, None, DiscountOut, raises=_NOT_FOUND),
    _admin("GET", _DISCOUNTS, list_discounts, None, DiscountPage, query=CodePageQuery),
    _admin("DELETE", _DISCOUNT, delete_discount, None, DiscountOut, raises=_IN_USE),
    _admin("PUT", _SKU, put_sku, SkuIn, SkuOut, raises=(errors.StillReferenced,)),
    _admin("GET", _SKU, get_sku, None, SkuOut, raises=_NOT_FOUND),
    _admin("GET", _SKUS, list_skus, None, SkuPage, query=CodePageQuery),
    _admin("DELETE", _SKU, delete_sku, None, SkuOut, raises=_IN_USE),
    _admin("PUT", _ACTIVITY, put_activity, ActivityIn, ActivityOut, raises=_PUT_ACTIVITY_REFUSALS),
    _admin("GET", _ACTIVITY, get_activity, None, ActivityOut, raises=_NOT_FOUND),
    _admin("GET", _ACTIVITIES, list_activities, None, ActivityPage, query=ActivityPageQuery),
    _admin("DELETE", _ACTIVITY, delete_activity, None, ActivityOut, raises=_IN_USE),
]
