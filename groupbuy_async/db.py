"""asyncpg pools and versioned migrations from sql/NNN_*.sql."""

import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any, Literal

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy
from asyncpg.transaction import Transaction

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
IsolationLevel = Literal["read_committed", "read_uncommitted", "serializable", "repeatable_read"]

# Any constant: serialises concurrent `migrate` runs against one database.
_MIGRATE_LOCK = 7_342_001


class MigrationError(RuntimeError):
    """The migrations cannot be applied: files missing or misnamed (a broken installation), or
    one failed on the server (named, with PostgreSQL's first line; it was rolled back)."""


# What a database that does not answer, refuses or goes away raises: a time-out (waiting
# for a pooled connection, or a statement), a refused, reset or lost connection, and the
# server's own "not now": too many connections or out of resources (53xxx), starting up,
# shutting down or a cancelled statement (57xxx). The API answers these 503 (code 0503).
# asyncpg's InternalClientError ("cannot switch to state …", "not connected") is a
# connection whose protocol broke with the server gone mid-statement: the same outage.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.InternalClientError,
)
# The same for a process that rides an outage out on its pool (the worker): a connection
# dropped in doubt and then used again also raises asyncpg's InterfaceError.
DOWN: tuple[type[BaseException], ...] = (*UNAVAILABLE, asyncpg.InterfaceError)

# After these, what a connection was doing is unknown (a statement may still run, a reply
# may still come): it is dropped, never asked to cancel or roll back first, since a server
# that does not answer would hold the caller for another time-out. PostgreSQL rolls back
# whatever the dropped connection had not committed.
_IN_DOUBT: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncio.CancelledError,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InternalClientError,
)


def columns(row: asyncpg.Record | Mapping[str, Any], names: str) -> dict[str, Any]:
    """The row's columns of these (space-separated) names, as keyword arguments for a record
    whose fields are named like the columns."""
    return {name: row[name] for name in names.split()}


def one_line(exc: BaseException) -> str:
    """An exception for a log line, without a traceback: its kind and its first line."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _OneLine(logging.Filter):
    """asyncpg's pool logs each failed reconnect (restoring its minimum size, with backoff)
    with a traceback; during an outage that is one line each, its reason at the end."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {one_line(record.exc_info[1])}"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


DEFAULT_ACQUIRE_TIMEOUT = 3.0
DEFAULT_COMMAND_TIMEOUT = 5.0


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """In an except block: a database outage is one line (its reason), anything else a
    traceback."""
    exc = sys.exc_info()[1]
    if exc is not None and unavailable(exc):
        logger.warning(message + ": %s", *args, one_line(exc))
    else:
        logger.exception(message, *args)


def unavailable(exc: BaseException) -> bool:
    """True when `exc` means the database is unreachable or overloaded (not a bug, not a
    rule): callers should retry later."""
    return isinstance(exc, UNAVAILABLE)


class _Transaction(Transaction):
    """`conn.transaction()` of the pool's connections: a transaction that fails on a
    connection in doubt drops the connection instead of sending ROLLBACK."""

    __slots__ = ("_owner",)

    def __init__(
        self,
        connection: asyncpg.Connection,
        isolation: IsolationLevel | None,
        readonly: bool,
        deferrable: bool,
    ) -> None:
        super().__init__(connection, isolation, readonly, deferrable)
        self._owner = connection

    async def __aexit__(self, extype: object, ex: object, tb: object) -> None:
        if isinstance(ex, _IN_DOUBT):
            self._owner.terminate()
            return
        await super().__aexit__(extype, ex, tb)


class _Connection(asyncpg.Connection):
    def transaction(
        self,
        *,
        isolation: IsolationLevel | None = None,
        readonly: bool = False,
        deferrable: bool = False,
    ) -> Transaction:
        if self.is_closed():
            raise asyncpg.InterfaceError("connection is closed")
        return _Transaction(self, isolation, readonly, deferrable)


class PoolTimeout(TimeoutError):
    """No pooled connection became free, or could be opened, within the acquire timeout."""


class _Borrow(PoolAcquireContext):
    """`async with pool.acquire() as conn`: bounded by the pool's acquire timeout; a
    connection left in doubt is dropped rather than reset and reused."""

    __slots__ = ("limit",)

    def __init__(self, pool: asyncpg.Pool, limit: float) -> None:
        # asyncpg's own acquire timeout is unused: it runs each borrow in a task of its own
        # (wait_for); asyncio.timeout bounds the same wait without one.
        super().__init__(pool, None)
        self.limit = limit

    async def __aenter__(self) -> PoolConnectionProxy:
        try:
            async with asyncio.timeout(self.limit):
                return await super().__aenter__()
        except TimeoutError:
            raise PoolTimeout(f"no connection within {self.limit:g}s") from None

    def __await__(self) -> Generator[Any, None, PoolConnectionProxy]:
        # `conn = await pool.acquire()` (released with pool.release(conn)): bounded too.
        self.timeout = self.limit
        return super().__await__()

    async def __aexit__(self, *exc: object) -> None:
        if len(exc) > 1 and isinstance(exc[1], _IN_DOUBT) and self.connection is not None:
            with contextlib.suppress(asyncpg.InterfaceError):  # dropped by its transaction
                self.connection.terminate()
        await super().__aexit__(*exc)


class BoundedPool(asyncpg.Pool):
    """asyncpg's pool where every borrow waits at most `acquire_timeout` seconds: explicit
    `pool.acquire()` and the implicit one of `pool.fetch()`/`fetchrow()`/`execute()`… alike
    (asyncpg's own default is to wait forever)."""

    acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        return _Borrow(self, self.acquire_timeout if timeout is None else timeout)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes back to the pool with: nothing to undo. asyncpg's default
    sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release, a round trip and four statements per request; pooled connections here never
    take session-level advisory locks, hold cursors past a transaction, LISTEN or SET
    (migrations use a connection of their own). A transaction left open is still rolled
    back (asyncpg does that before calling this)."""


async def create_pool(
    dsn: str,
    min_size: int = 2,
    max_size: int = 20,
    *,
    acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
) -> BoundedPool:
    """A pool whose waits are all bounded: a connection within `acquire_timeout` (also the
    limit on opening one), each statement within `command_timeout`."""
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _OneLine) for f in pool_log.filters):
        pool_log.addFilter(_OneLine())
    pool = BoundedPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=_Connection,
        record_class=asyncpg.Record,
        command_timeout=command_timeout,
        timeout=acquire_timeout,
        reset=_keep_session,
    )
    pool.acquire_timeout = acquire_timeout
    await pool
    return pool


async def close_pool(pool: asyncpg.Pool, grace_seconds: float) -> None:
    """Close gracefully within `grace_seconds` (a frozen server never answers the goodbye),
    else drop every connection."""
    try:
        await asyncio.wait_for(pool.close(), grace_seconds)
    except UNAVAILABLE:
        pool.terminate()


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
    """Apply each migration once, in order, each in its own transaction (or, one marked
    OUTSIDE_A_TRANSACTION, statement by statement). Returns what ran."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn, sql_dir)
    finally:
        await conn.close()


# A migration whose first line is this runs statement by statement outside a transaction:
# for CREATE INDEX CONCURRENTLY and DROP INDEX CONCURRENTLY, which change the indexes of a
# large table without holding up its writes for the build (a plain CREATE INDEX holds back
# every insert and update for as long as it takes: tens of seconds at 10 M rows). Its
# statements end with a semicolon at the end of a line (none inside a literal or a $$ body
# may end a line) and must be safe to run again:
# a build that failed leaves an invalid index, so drop it IF EXISTS before creating it.
OUTSIDE_A_TRANSACTION = "-- migrate: outside a transaction"


# A semicolon at the end of a line (a comment may follow it) ends a statement.
_STATEMENT_END = re.compile(r";[ \t]*(?:--.*)?$", re.M)


def statements(text: str) -> list[str]:
    """The statements of a migration run outside a transaction, without their comments."""
    kept = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in _STATEMENT_END.split(kept) if s.strip()]


async def _run(conn: asyncpg.Connection, version: int, name: str, text: str) -> None:
    record = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
    if text.startswith(OUTSIDE_A_TRANSACTION):
        for statement in statements(text):
            await conn.execute(statement)
        await conn.execute(record, version, name)
        return
    async with conn.transaction():
        await conn.execute(text)
        await conn.execute(record, version, name)


async def _take_migrate_lock(conn: asyncpg.Connection) -> None:
    # Polled, not waited for in a statement: a process waiting in a statement holds a
    # snapshot, which a CREATE INDEX CONCURRENTLY of the holder's would wait for in turn.
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _MIGRATE_LOCK):
            return
        await asyncio.sleep(0.2)


async def apply_migrations(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> list[str]:
    """migrate() on a connection already open; MigrationError names a migration that fails."""
    files = migration_files(sql_dir)
    applied: list[str] = []
    await _take_migrate_lock(conn)
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
                await _run(conn, version, path.name, path.read_text())
            except asyncpg.PostgresError as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise MigrationError(f"migration {path.name} failed: {first}") from exc
            log.info("applied migration %s", path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATE_LOCK)
    return applied
