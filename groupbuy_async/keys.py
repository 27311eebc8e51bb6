"""Typed keys for the resources an app owns (created and closed by its cleanup_ctx)."""

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from .settings import Settings

if TYPE_CHECKING:
    from .dispatch import Dispatcher
    from .metrics import Metrics
    from .notify_routes import MockMerchant
    from .web import Route

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)
DISPATCHER: "web.AppKey[Dispatcher]" = web.AppKey("dispatcher")
METRICS: "web.AppKey[Metrics]" = web.AppKey("metrics")
MOCK_MERCHANT: "web.AppKey[MockMerchant]" = web.AppKey("mock_merchant")
ROUTE_TABLE: "web.AppKey[list[Route]]" = web.AppKey("route_table")
