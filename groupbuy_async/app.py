"""The aiohttp application: resources owned by cleanup_ctx, routes from one table."""

from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from .db import create_pool
from .dispatch import Dispatcher
from .keys import DISPATCHER, METRICS, MOCK_MERCHANT, POOL, REDIS, ROUTE_TABLE, SETTINGS
from .metrics import Metrics
from .notify_routes import MOCK_MERCHANT_ROUTES, NOTIFY_ROUTES, MockMerchant
from .routes import ROUTES
from .sender import Sender
from .settings import Settings
from .web import add_routes, envelope_middleware


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.database_url, "GROUPBUY_DATABASE_URL must be set (or use `dev`)"
    app[POOL] = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
    yield
    await app[POOL].close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.redis_url, "GROUPBUY_REDIS_URL must be set (or use `dev`)"
    # Connects lazily: the API serves trades while Redis is down; /readyz reports it.
    app[REDIS] = Redis.from_url(settings.redis_url, socket_connect_timeout=2)
    yield
    await app[REDIS].aclose()


async def _callbacks(app: web.Application) -> AsyncIterator[None]:
    """The one shared ClientSession of this process and the dispatcher that uses it."""
    settings = app[SETTINGS]
    sender = Sender.from_settings(settings)
    app[DISPATCHER] = Dispatcher(app[POOL], sender, settings, app[METRICS])
    yield
    await app[DISPATCHER].close(grace_seconds=settings.notify_timeout_seconds)
    await sender.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[envelope_middleware], client_max_size=256 * 1024)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[MOCK_MERCHANT] = MockMerchant(settings.signing_key)
    routes = ROUTES + NOTIFY_ROUTES + (MOCK_MERCHANT_ROUTES if settings.mock_merchant else [])
    app[ROUTE_TABLE] = routes
    app.cleanup_ctx.extend([_database, _redis, _callbacks])
    add_routes(app, routes)
    return app
