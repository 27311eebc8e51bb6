"""The one place that builds the shared objects of a process: the app, the worker, the CLI,
tests and benchmarks all get their pool, sender, broker publisher, dispatcher and metrics
from here."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from .callbacks.amqp import Publisher
from .callbacks.delivery import Delivery
from .callbacks.dispatch import Dispatcher
from .callbacks.metrics import Metrics
from .callbacks.sender import Sender
from .db import close_pool, create_pool
from .merchants.endpoints import EndpointUrls
from .merchants.keys import KeyCheck
from .merchants.secret_box import SecretBox
from .settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    pool: asyncpg.Pool
    dispatcher: Dispatcher
    metrics: Metrics
    keys: KeyCheck
    box: SecretBox
    endpoint_urls: EndpointUrls


SERVICES = web.AppKey("services", Services)


def secret_box(settings: Settings) -> SecretBox:
    """What seals and opens endpoints' secrets (GROUPBUY_SECRETS_KEY)."""
    if not settings.sealing_key:
        raise RuntimeError("GROUPBUY_SECRETS_KEY is not set")
    return SecretBox(settings.sealing_key)


def build_dispatcher(pool: asyncpg.Pool, settings: Settings, metrics: Metrics) -> Dispatcher:
    """A dispatcher with its own Sender (the process's one shared ClientSession) and broker
    Publisher (its one broker connection, opened at the first publish)."""
    box = secret_box(settings)  # first: refused before any session is opened
    delivery = Delivery(
        pool,
        Sender.from_settings(settings),
        box,
        settings,
        metrics,
        Publisher.from_settings(settings),
    )
    return Dispatcher(delivery, settings.notify_immediate_limit)


@contextlib.asynccontextmanager
async def services(settings: Settings, pool_min: int | None = None) -> AsyncIterator[Services]:
    """Open everything a process shares; on exit let background sends finish, then close."""
    if not settings.database_url:
        raise RuntimeError("GROUPBUY_DATABASE_URL is not set")
    pool = await create_pool(
        settings.database_url,
        pool_min or settings.db_pool_min,
        settings.db_pool_max,
        acquire_timeout=settings.db_acquire_timeout_seconds,
        command_timeout=settings.db_command_timeout_seconds,
    )
    try:
        metrics = Metrics()
        dispatcher = build_dispatcher(pool, settings, metrics)
        try:
            yield Services(
                settings, pool, dispatcher, metrics, KeyCheck(pool), dispatcher.delivery.box,
                EndpointUrls(pool),
            )  # fmt: skip
        finally:
            await dispatcher.close(grace_seconds=settings.notify_timeout_seconds)
    finally:
        await close_pool(pool, settings.db_acquire_timeout_seconds)
