"""asyncpg pools and versioned migrations from sql/NNN_*.sql."""

import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from yarl import URL

log = logging.getLogger(__name__)

# What a statement runs on: a bare connection or one borrowed from a pool.
Conn = asyncpg.Connection | PoolConnectionProxy

# In a wheel the migrations ship inside the package (pyproject's hatch force-include copies
# sql/ to groupbuy_async/migrations); in a source checkout (editable install, tests) they are
# read from the top-level sql/.
_PACKAGED_SQL = Path(__file__).resolve().parent / "migrations"
SQL_DIR = (
    _PACKAGED_SQL if _PACKAGED_SQL.is_dir() else Path(__file__).resolve().parent.parent / "sql"
)
_MIGRATION_NAME = re.compile(r"^(\d{3})_[\w-]+\.sql$")
# Any constant: serialises concurrent `migrate` runs against one database.
_MIGRATE_LOCK = 7_342_001


class MigrationError(RuntimeError):
    """The migrations cannot be applied: files missing or misnamed (a broken installation), or
    one failed on the server (named, with PostgreSQL's first line; it was rolled back)."""


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30)
    if pool is None:  # only when the pool is created without awaiting; never here
        raise RuntimeError("asyncpg.create_pool returned no pool")
    return pool


def migration_files(sql_dir: Path = SQL_DIR) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path.name} is not named NNN_name.sql")
        found.append((int(match.group(1)), path))
    if not found:
        raise MigrationError(f"no migrations found in {sql_dir}: the installation is incomplete")
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {sql_dir}")
    return found


async def migrate(dsn: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply each migration once, in order, each in its own transaction. Returns what ran."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn, sql_dir)
    finally:
        await conn.close()


async def apply_migrations(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """migrate() on a connection already open; MigrationError names a migration that fails."""
    files = migration_files(sql_dir)
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATE_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, path in files:
            if version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        path.name,
                    )
            except asyncpg.PostgresError as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise MigrationError(f"migration {path.name} failed: {first}") from exc
            log.info("applied migration %s", path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATE_LOCK)
    return applied


@asynccontextmanager
async def temporary_database(admin_dsn: str, prefix: str) -> AsyncIterator[str]:
    """A new, migrated database on the server of `admin_dsn`; dropped on exit (tests, bench)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = str(URL(admin_dsn).with_path(f"/{name}"))
    try:
        await migrate(url)
        yield url
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
