"""Startup failures: a setting, an unreachable server or a taken port is a StartupError, which
the CLI prints in one line before it exits 2 (after everything already opened is closed)."""

import contextlib
import logging
from collections.abc import Iterator

import asyncpg
from redis.exceptions import RedisError

from ..db import DOWN
from ..settings import Settings
from .reasons import unreachable

log = logging.getLogger("groupbuy_async")

# What reaching PostgreSQL or Redis may raise: PostgreSQL down (db.DOWN: refused or unknown
# hosts, time-outs, a connection dropped during the handshake...), its refusal (asyncpg's
# PostgresError: CannotConnectNowError, InvalidCatalogNameError, bad password...) and redis-py's
# own errors.
UNREACHABLE: tuple[type[BaseException], ...] = (*DOWN, asyncpg.PostgresError, RedisError)


class StartupError(Exception):
    """The process cannot start; the message says what to fix, in one line."""


@contextlib.contextmanager
def reaching(what: str, url: str) -> Iterator[None]:
    """Turn a failure to reach `what` (PostgreSQL, Redis) into a one-line StartupError."""
    try:
        yield
    except UNREACHABLE as exc:
        raise StartupError(unreachable(what, url, exc)) from None


def warn_unsafe(settings: Settings, api: bool) -> None:
    """A production process says at start which protection its settings turn off."""
    if api and not settings.admin_secret:
        log.warning("GROUPBUY_ADMIN_TOKEN is not set: every /api/v1/admin/* call is refused")
    if not settings.notify_block_private:
        log.warning(
            "GROUPBUY_NOTIFY_BLOCK_PRIVATE is false: callbacks may reach loopback, private,"
            " link-local and metadata addresses (this host, the internal network)"
        )
