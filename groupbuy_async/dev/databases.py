"""Databases of their own for the tests and benchmarks, on a server they are given."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from yarl import URL

from ..db import migrate


@asynccontextmanager
async def temporary_database(
    admin_dsn: str, prefix: str, migrated: bool = True
) -> AsyncIterator[str]:
    """A new database (migrated unless told not to) on the server of `admin_dsn`; dropped on
    exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _execute(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        url = str(URL(admin_dsn).with_path(f"/{name}"))
        if migrated:
            await migrate(url)
        yield url
    finally:
        await _execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _execute(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
