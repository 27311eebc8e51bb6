"""The operator's catalog (admin): discounts, goods and activities, stored, read, listed and
deleted; their handlers and route table."""

from typing import TypeVar

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
from .routing import Route, path_param, to_domain, to_wire

T = TypeVar("T")


def _found(value: T | None, what: str) -> T:
    if value is None:
        raise errors.NotFound(f"{what} not found")
    return value


def _activity(body: ActivityIn) -> Activity:
    goods = [to_domain(Goods, g) for g in body.goods]
    return Activity(**{**dict(body), "goods": goods})


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


# A config body is checked against what it names when it is stored.
_PUT_ACTIVITY_REFUSALS = (
    errors.BadInput("discountId does not exist"),
    errors.BadInput("goods: a goodsId has no SKU under the given source and channel"),
    errors.UniqueConflict("goods: a goods item is already in another activity"),
    errors.ActivitySpansMerchants,
)

CATALOG_ROUTES: list[Route] = [
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
]
