"""A merchant's endpoints: the operator's routes (admin token, `/api/v1/admin/merchants/
{merchantId}/endpoints/…`) and the merchant's own (its key, `/api/v1/gbm/endpoints/…`), the
same handlers: the merchant is the path's, or the key's. Ping and recover too."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from .. import errors
from ..bootstrap import SERVICES
from ..callbacks import deliveries, events
from ..callbacks.rules import is_success
from ..merchants import endpoints
from .merchant_schemas import (
    Binding,
    EndpointIn,
    EndpointOut,
    PingOut,
    RecoverIn,
    RecoverOut,
    RotateIn,
    RotateOut,
)
from .routing import Route, View, attributes, documented, path_param, principal


def _merchant(request: web.Request) -> str:
    """The path's merchant (operator), else the key's (the merchant itself)."""
    if "merchantId" in request.match_info:
        return str(path_param(request, "merchantId"))
    return principal(request).merchant_id


def _key(request: web.Request) -> tuple[str, str]:
    return _merchant(request), path_param(request, "endpointId")


_OUT = (
    "merchant_id endpoint_id kind disabled description create_time update_time"
    " previous_secret_until disabled_time disabled_reason secret"
)


def _out(found: endpoints.Endpoint) -> EndpointOut:
    broker = found.broker
    return EndpointOut(
        **attributes(found, _OUT),
        url=found.url if broker is None else None,
        exchange=None if broker is None else broker.exchange,
        routing_key=None if broker is None else broker.routing_key,
        event_types=list(found.event_types),  # type: ignore[arg-type]  # checked on the way in
        channels=[Binding(source=s, channel=c) for s, c in found.channels],
    )


async def put_endpoint(request: web.Request, body: EndpointIn) -> EndpointOut:
    """Create or replace an endpoint (its signing secret is in the answer that creates it,
    and only there)"""
    if body.kind == "amqp" and "merchantId" not in request.match_info:
        raise _BROKER_REFUSED  # a merchant could aim one at any exchange of the broker
    services = request.app[SERVICES]
    spec = endpoints.EndpointSpec(
        **attributes(body, "disabled description secret kind exchange routing_key"),
        url=body.url or "",
        event_types=tuple(body.event_types),
        channels=tuple((b.source, b.channel) for b in body.channels),
    )
    block = services.settings.notify_block_private
    found = await endpoints.put_endpoint(services.pool, services.box, *_key(request), spec, block)
    return _out(found)


async def get_endpoint(request: web.Request, _: None) -> EndpointOut:
    """An endpoint (never its secret)"""
    return _out(await endpoints.get_endpoint(request.app[SERVICES].pool, *_key(request)))


async def list_endpoints(request: web.Request, _: None) -> list[EndpointOut]:
    """The merchant's endpoints in endpointId order"""
    found = await endpoints.list_endpoints(request.app[SERVICES].pool, _merchant(request))
    return [_out(e) for e in found]


async def delete_endpoint(request: web.Request, _: None) -> EndpointOut:
    """Delete an endpoint and its deliveries (its events stay in the feed; disable it to keep
    them)"""
    return _out(await endpoints.delete_endpoint(request.app[SERVICES].pool, *_key(request)))


async def rotate_secret(request: web.Request, body: RotateIn) -> RotateOut:
    """A new signing secret; the replaced one keeps signing beside it for graceSeconds"""
    services = request.app[SERVICES]
    grace = timedelta(seconds=body.grace_seconds)
    rotated = await endpoints.rotate_secret(services.pool, services.box, *_key(request), grace)
    return RotateOut(secret=rotated.secret, previous_secret_until=rotated.previous_secret_until)


async def ping_endpoint(request: web.Request, _: None) -> PingOut:
    """Send a `ping` event to the endpoint now, signed as any other (disabled or not), and
    answer the attempt"""
    services = request.app[SERVICES]
    merchant_id, endpoint_id = _key(request)
    target = await endpoints.send_target(services.pool, merchant_id, endpoint_id)
    event_id = str(uuid.uuid4())
    body = events.ping_body(event_id, datetime.now(UTC), merchant_id, endpoint_id)
    keys = tuple(services.box.open_key(sealed) for sealed in target.secrets)
    began = time.perf_counter()
    delivery = services.dispatcher.delivery
    if target.broker is not None:
        outcome = await delivery.publisher.publish(target.broker, event_id, body, keys, "ping")
    else:
        outcome = await delivery.sender.send(target.url, event_id, body, keys)
    return PingOut(
        event_id=event_id,
        success=is_success(outcome, accept_any_2xx=False),
        http_status=outcome.http_status,
        duration_ms=int((time.perf_counter() - began) * 1000),
        response_body=outcome.body if outcome.http_status is not None else None,
        error=outcome.error,
    )


async def recover_endpoint(request: web.Request, body: RecoverIn) -> RecoverOut:
    """Make every delivery to the endpoint that failed (error) or was held since a time due
    now"""
    found = await deliveries.recover(request.app[SERVICES].pool, *_key(request), body.since)
    if found < 0:
        raise endpoints.EndpointNotFound()
    return RecoverOut(recovered=found)


_ADMIN = "/api/v1/admin/merchants/{merchantId}/endpoints"
_OWN = "/api/v1/gbm/endpoints"
_ONE = "/{endpointId}"
_NOT_FOUND = (endpoints.EndpointNotFound,)


_BROKER_REFUSED = errors.Forbidden(
    "kind amqp: broker endpoints are set up by the operator"
    " (PUT /api/v1/admin/merchants/{merchantId}/endpoints/{endpointId})"
)


def _both(
    method: str, tail: str, view: View, body: type[BaseModel] | None, response: Any
) -> list[Route]:
    """The operator's route and the merchant's own, to one handler. Unknown: the endpoint
    (404), or for a list or a put the operator names, the merchant."""
    whole = tail == "" or method == "PUT"
    return [
        documented(
            method, _ADMIN + tail, view, body, response, tag="endpoints", admin=True,
            raises=(endpoints.MerchantNotFound,) if whole else _NOT_FOUND,
        ),
        documented(
            method, _OWN + tail, view, body, response, tag="self-service", merchant=True,
            raises=(_BROKER_REFUSED,) if method == "PUT" else () if whole else _NOT_FOUND,
        ),
    ]  # fmt: skip


ENDPOINT_ROUTES: list[Route] = [
    *_both("PUT", _ONE, put_endpoint, EndpointIn, EndpointOut),
    *_both("GET", _ONE, get_endpoint, None, EndpointOut),
    *_both("DELETE", _ONE, delete_endpoint, None, EndpointOut),
    *_both("GET", "", list_endpoints, None, list[EndpointOut]),
    *_both("POST", f"{_ONE}/secret/rotate", rotate_secret, RotateIn, RotateOut),
    *_both("POST", f"{_ONE}/ping", ping_endpoint, None, PingOut),
    *_both("POST", f"{_ONE}/recover", recover_endpoint, RecoverIn, RecoverOut),
]
