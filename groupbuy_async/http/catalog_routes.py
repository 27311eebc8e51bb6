"""The operator's catalog (admin): discounts, goods and activities, stored, read, listed and
deleted; their handlers and route table (each route's summary is its handler's docstring)."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel

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


async def put_discount(request: web.Request, body: DiscountIn) -> DiscountOut:
    """Create or replace a discount"""
    discount_id = path_param(request, "discountId")
    stored = await catalog.put_discount(
        request.app[SERVICES].pool, discount_id, to_domain(Discount, body)
    )
    return to_wire(DiscountOut, stored)


async def put_sku(request: web.Request, body: SkuIn) -> SkuOut:
    """Create or replace a goods item"""
    goods_id = path_param(request, "goodsId")
    stored = await catalog.put_sku(request.app[SERVICES].pool, goods_id, to_domain(Sku, body))
    return to_wire(SkuOut, stored)


async def put_activity(request: web.Request, body: ActivityIn) -> ActivityOut:
    """Create or replace an activity"""
    activity = Activity(**{**dict(body), "goods": [to_domain(Goods, g) for g in body.goods]})
    activity_id = path_param(request, "activityId")
    stored = await catalog.put_activity(request.app[SERVICES].pool, activity_id, activity)
    return to_wire(ActivityOut, stored)


V = TypeVar("V", bound=Callable[..., Any])
Find = Callable[[asyncpg.Pool, Any], Awaitable[Any]]


@dataclass(frozen=True)
class _Kind:
    """One stored kind of the catalog, as its get, list and delete routes read and answer it."""

    name: str  # "sku": the operations are get_sku, list_skus, delete_sku
    plural: str
    key: str  # the path parameter
    out: type[BaseModel]
    page: type[BaseModel]
    query: type[BaseModel]
    get: Find
    delete: Find
    listing: Callable[[asyncpg.Pool, int, Any], Awaitable[Any]]
    summaries: tuple[str, str, str]  # get, list, delete


def _operation(view: V, name: str, summary: str) -> V:
    """`view` named for OpenAPI: its name is the operationId, its docstring the summary."""
    view.__name__ = view.__qualname__ = name
    view.__doc__ = summary
    return view


def _read_and_delete(kind: _Kind, collection: str) -> list[Route]:
    async def get(request: web.Request, _: None) -> BaseModel:
        return to_wire(kind.out, await _stored(request, kind.get))

    async def listing(request: web.Request, query: Any) -> BaseModel:
        page = await kind.listing(request.app[SERVICES].pool, query.limit, query.after)
        return to_wire(kind.page, page)

    async def delete(request: web.Request, _: None) -> BaseModel:
        return to_wire(kind.out, await _stored(request, kind.delete))

    async def _stored(request: web.Request, find: Find) -> Any:
        found = await find(request.app[SERVICES].pool, path_param(request, kind.key))
        if found is None:
            raise errors.NotFound(f"{kind.name} not found")
        return found

    get_, list_, delete_ = kind.summaries
    get = _operation(get, f"get_{kind.name}", get_)
    listing = _operation(listing, f"list_{kind.plural}", list_)
    delete = _operation(delete, f"delete_{kind.name}", delete_)
    item = f"{collection}/{{{kind.key}}}"
    return [
        _admin("GET", item, get, None, kind.out, raises=_NOT_FOUND),
        _admin("GET", collection, listing, None, kind.page, query=kind.query),
        _admin("DELETE", item, delete, None, kind.out, raises=_IN_USE),
    ]


# A config body is checked against what it names when it is stored.
_PUT_ACTIVITY_REFUSALS = (
    errors.BadInput("discountId does not exist"),
    errors.BadInput("goods: a goodsId has no SKU under the given source and channel"),
    errors.UniqueConflict("goods: a goods item is already in another activity"),
    errors.ActivitySpansMerchants,
)
_NOT_FOUND = (errors.NotFound,)
_IN_USE = (errors.NotFound, errors.StillReferenced)

_admin = partial(documented, tag="admin", admin=True)

_DISCOUNT = _Kind(
    "discount",
    "discounts",
    "discountId",
    DiscountOut,
    DiscountPage,
    CodePageQuery,
    catalog.get_discount,
    catalog.delete_discount,
    catalog.list_discounts,
    (
        "A stored discount",
        "Discounts in discountId order, one keyset page",
        "Delete a discount nothing refers to",
    ),
)
_SKU = _Kind(
    "sku",
    "skus",
    "goodsId",
    SkuOut,
    SkuPage,
    CodePageQuery,
    catalog.get_sku,
    catalog.delete_sku,
    catalog.list_skus,
    (
        "A stored goods item",
        "Goods items in goodsId order, one keyset page",
        "Delete a goods item nothing refers to",
    ),
)
_ACTIVITY = _Kind(
    "activity",
    "activities",
    "activityId",
    ActivityOut,
    ActivityPage,
    ActivityPageQuery,
    catalog.get_activity,
    catalog.delete_activity,
    catalog.list_activities,
    (
        "A stored activity",
        "Activities in activityId order, one keyset page",
        "Delete an activity without teams (its goods bindings go with it) nothing refers to",
    ),
)
_DISCOUNTS = "/api/v1/admin/discounts"
_SKUS = "/api/v1/admin/skus"
_ACTIVITIES = "/api/v1/admin/activities"

CATALOG_ROUTES: list[Route] = [
    _admin("PUT", _DISCOUNTS + "/{discountId}", put_discount, DiscountIn, DiscountOut),
    *_read_and_delete(_DISCOUNT, _DISCOUNTS),
    _admin("PUT", _SKUS + "/{goodsId}", put_sku, SkuIn, SkuOut, raises=(errors.StillReferenced,)),
    *_read_and_delete(_SKU, _SKUS),
    _admin(
        "PUT",
        _ACTIVITIES + "/{activityId}",
        put_activity,
        ActivityIn,
        ActivityOut,
        raises=_PUT_ACTIVITY_REFUSALS,
    ),
    *_read_and_delete(_ACTIVITY, _ACTIVITIES),
]
