"""Operations endpoints: liveness, readiness, metrics and the OpenAPI document."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..db import one_line
from .envelope import RETRY_AFTER_SECONDS, UNAVAILABLE, envelope
from .routing import ROUTE_TABLE, Route, require_bearer
from .schemas import Health


async def healthz(request: web.Request, _: None) -> Health:
    return Health(status="up")


READY_TIMEOUT = 2.0


async def readyz(request: web.Request, _: None) -> web.Response:
    checks: dict[str, str] = {}

    async def probe(name: str, check: Callable[[], Awaitable[Any]]) -> None:
        # Within READY_TIMEOUT whatever the server does: the pool drops a connection whose
        # statement is cut short, without waiting for a frozen server to acknowledge.
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await check()
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; the reason is reported
            checks[name] = f"error: {type(exc).__name__}"
            request[UNAVAILABLE] = f"{name}: {one_line(exc)}"

    # The API needs PostgreSQL only; Redis is the worker's.
    await probe("postgres", lambda: request.app[SERVICES].pool.fetchval("SELECT 1"))
    ready = all(v == "ok" for v in checks.values())
    health = Health(status="ready" if ready else "unavailable", checks=checks)
    if ready:
        return envelope(health)
    response = envelope(health, code="0503", info="dependencies unavailable", status=503)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def openapi(request: web.Request, _: None) -> web.Response:
    from .openapi import build_openapi

    return web.json_response(build_openapi(request.app[ROUTE_TABLE]))


async def metrics(request: web.Request, _: None) -> web.Response:
    services = request.app[SERVICES]
    # Business volume (completions, refunds by type): for Prometheus, not for anyone.
    require_bearer(request, services.settings.metrics_secret, "/metrics", "METRICS_TOKEN")
    body = await services.metrics.scrape(services.pool)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


OPS_ROUTES: list[Route] = [
    Route("GET", "/healthz", healthz, "Process is up", "ops", None, Health, database=False),
    Route(
        "GET",
        "/readyz",
        readyz,
        "PostgreSQL reachable (503 otherwise)",
        "ops",
        None,
        Health,
        database=False,
        degraded=True,
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi,
        "This OpenAPI document",
        "ops",
        raw="application/json",
        database=False,
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics (Authorization: Bearer <METRICS_TOKEN>)",
        "ops",
        raw="text/plain",
        raises=(errors.Unauthorized,),
    ),
]
