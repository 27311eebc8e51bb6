"""The aiohttp application: shared objects from bootstrap in cleanup_ctx, routes from tables."""

from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from ..bootstrap import SERVICES, services
from ..settings import Settings
from .callback_routes import CALLBACK_ROUTES
from .catalog_routes import CATALOG_ROUTES
from .delivery_routes import DELIVERY_ROUTES
from .endpoint_routes import ENDPOINT_ROUTES
from .envelope import envelope_middleware
from .merchant_routes import MERCHANT_ROUTES
from .ops_routes import OPS_ROUTES
from .routing import ROUTE_TABLE, Route, add_routes
from .trade_routes import TRADE_ROUTES

MAX_BODY = 256 * 1024


def create_app(settings: Settings, extra_routes: Sequence[Route] = ()) -> web.Application:
    """The API; `extra_routes` are served beside it (e.g. `dev`'s mock merchant)."""
    app = web.Application(middlewares=[envelope_middleware], client_max_size=MAX_BODY)
    routes: list[Route] = [
        *CATALOG_ROUTES,
        *TRADE_ROUTES,
        *MERCHANT_ROUTES,
        *ENDPOINT_ROUTES,
        *DELIVERY_ROUTES,
        *CALLBACK_ROUTES,
        *OPS_ROUTES,
        *extra_routes,
    ]
    app[ROUTE_TABLE] = routes

    async def shared(app: web.Application) -> AsyncIterator[None]:
        async with services(settings) as shared_objects:
            app[SERVICES] = shared_objects
            yield

    app.cleanup_ctx.append(shared)
    add_routes(app, routes)
    return app
