"""Deliveries: the merchant's own (its key, `/api/v1/gbm/deliveries…`) and any one for the
operator (admin token, `/api/v1/admin/deliveries/{deliveryId}…`), the same handlers. Another
merchant's delivery is not found (404)."""

from typing import Any

from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..callbacks import deliveries
from .callback_schemas import NotifyAttemptOut
from .delivery_schemas import DeliveryDetail, DeliveryOut, DeliveryPage, DeliveryQuery
from .routing import Raises, Route, documented, path_param, principal


class DeliveryNotFound(errors.NotFound):
    info = "delivery not found"


def _merchant(request: web.Request) -> str | None:
    """The key's merchant on the shop API; None (every merchant) for the operator."""
    return None if request.path.startswith("/api/v1/admin/") else principal(request).merchant_id


def _out(found: deliveries.Delivery) -> dict[str, Any]:
    return {name: getattr(found, name) for name in DeliveryOut.model_fields}


async def list_deliveries(request: web.Request, query: DeliveryQuery) -> DeliveryPage:
    """The merchant's deliveries, newest first, one keyset page"""
    page = await deliveries.list_deliveries(
        request.app[SERVICES].pool, _merchant(request), status=query.status,
        event_type=query.type, endpoint_id=query.endpoint_id, after=query.after,
        limit=query.limit,
    )  # fmt: skip
    items = [DeliveryOut(**_out(d)) for d in page.items]
    return DeliveryPage(items=items, next_cursor=page.next_cursor)


async def _found(request: web.Request) -> deliveries.Delivery:
    pool = request.app[SERVICES].pool
    found = await deliveries.get_delivery(
        pool, _merchant(request), path_param(request, "deliveryId")
    )
    if found is None:
        raise DeliveryNotFound()
    return found


async def get_delivery(request: web.Request, _: None) -> DeliveryDetail:
    """A delivery with every attempt (status, duration, the answer's first 2 KB, error)"""
    found = await _found(request)
    attempts = [NotifyAttemptOut(**vars(a)) for a in found.attempts]
    return DeliveryDetail(**_out(found), attempts=attempts)


async def resend(request: web.Request, _: None) -> DeliveryOut:
    """A new attempt of the delivery whatever its status, same webhook-id, its schedule
    restarted (a held one stays held until its endpoint is enabled)"""
    pool = request.app[SERVICES].pool
    if not await deliveries.resend(pool, _merchant(request), path_param(request, "deliveryId")):
        await _found(request)
        raise errors.DeliveryInFlight()
    return DeliveryOut(**_out(await _found(request)))


async def retry_now(request: web.Request, _: None) -> DeliveryOut:
    """Make a waiting delivery (0, 2) due now"""
    pool = request.app[SERVICES].pool
    delivery_id = path_param(request, "deliveryId")
    if not await deliveries.retry_now(pool, _merchant(request), delivery_id):
        found = await _found(request)
        if found.status in (0, 2):
            raise errors.DeliveryInFlight()
        raise errors.DeliveryNotWaiting()
    return DeliveryOut(**_out(await _found(request)))


_OWN, _ADMIN, _ONE = "/api/v1/gbm/deliveries", "/api/v1/admin/deliveries", "/{deliveryId}"
_NOT_FOUND: Raises = (DeliveryNotFound,)
_REFUSED: Raises = (DeliveryNotFound, errors.DeliveryInFlight)


def _both(method: str, tail: str, view: Any, response: Any, raises: Raises) -> list[Route]:
    """The merchant's own route and the operator's, to one handler."""
    return [
        documented(method, _OWN + tail, view, None, response, tag="self-service",
                   merchant=True, raises=raises),
        documented(method, _ADMIN + tail, view, None, response, tag="callbacks", admin=True,
                   raises=raises),
    ]  # fmt: skip


DELIVERY_ROUTES: list[Route] = [
    documented(
        "GET",
        _OWN,
        list_deliveries,
        None,
        DeliveryPage,
        tag="self-service",
        merchant=True,
        query=DeliveryQuery,
    ),
    *_both("GET", _ONE, get_delivery, DeliveryDetail, _NOT_FOUND),
    *_both("POST", f"{_ONE}/resend", resend, DeliveryOut, _REFUSED),
    *_both(
        "POST",
        f"{_ONE}/retry-now",
        retry_now,
        DeliveryOut,
        (*_REFUSED, errors.DeliveryNotWaiting),
    ),
]
