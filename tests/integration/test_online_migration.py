"""Index migrations of large tables run outside a transaction (CONCURRENTLY): deliveries
and settlements keep writing to notify_task while sql/015 builds its index, a build that
failed is built again, and two processes migrating at once do not wait for each other in a
cycle."""

import asyncio
import shutil
from pathlib import Path

import asyncpg

from groupbuy_async.db import SQL_DIR, migrate, statements
from groupbuy_async.dev.databases import temporary_database

INDEX_MIGRATION = "015_scale_indexes.sql"


def _up_to(directory: Path, last: str) -> Path:
    for path in sorted(SQL_DIR.glob("*.sql")):
        if path.name <= last:
            shutil.copy(path, directory / path.name)
    return directory


async def _valid(conn: asyncpg.Connection, index: str) -> bool | None:
    valid: bool | None = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = $1",
        index,
    )
    return valid


def test_statements_end_at_a_semicolon_ending_a_line() -> None:
    text = (
        "-- migrate: outside a transaction\n-- a comment; with a semicolon;\n"
        "DROP INDEX CONCURRENTLY IF EXISTS a; -- why\n\n"
        "CREATE INDEX CONCURRENTLY b ON t (x)\n    WHERE y IN (1, 2);\nVACUUM t;"
    )
    assert statements(text) == [
        "DROP INDEX CONCURRENTLY IF EXISTS a",
        "CREATE INDEX CONCURRENTLY b ON t (x)\n    WHERE y IN (1, 2)",
        "VACUUM t",
    ]


async def test_the_index_migration_does_not_hold_back_writes(
    server_urls: tuple[str, str], tmp_path: Path
) -> None:
    async with temporary_database(server_urls[0], "groupbuy_test_online", migrated=False) as url:
        assert (await migrate(url, _up_to(tmp_path, "014_retention.sql")))[
            -1
        ] == "014_retention.sql"
        before, writer = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            # A write in progress when the migration starts: the build waits for it to end...
            holding = before.transaction()
            await holding.start()
            await before.execute("UPDATE notify_task SET update_time = now() WHERE false")
            migrating = asyncio.create_task(migrate(url))
            await asyncio.sleep(1)
            assert not migrating.done()
            # ...but writes that come meanwhile go through (a plain CREATE or DROP INDEX,
            # queued for its lock, would hold each of them back behind it).
            await writer.execute("SET lock_timeout = '3s'")
            async with writer.transaction():
                await writer.execute("UPDATE notify_task SET update_time = now() WHERE false")
            await holding.commit()
            assert await asyncio.wait_for(migrating, 30) == [INDEX_MIGRATION]
            assert await _valid(writer, "notify_task_counts_idx") is True
            assert await _valid(writer, "notify_task_event_idx") is None
        finally:
            await before.close()
            await writer.close()


async def test_an_index_build_that_failed_is_built_again(server_urls: tuple[str, str]) -> None:
    async with temporary_database(server_urls[0], "groupbuy_test_online") as url:
        conn = await asyncpg.connect(url)
        try:
            # What a build interrupted half-way leaves: the index, invalid, and 015 not recorded.
            await conn.execute(
                "UPDATE pg_index SET indisvalid = false"
                " WHERE indexrelid = 'notify_task_counts_idx'::regclass;"
                " DELETE FROM schema_migrations WHERE version = 15"
            )
            assert await _valid(conn, "notify_task_counts_idx") is False
            assert await migrate(url) == [INDEX_MIGRATION]
            assert await _valid(conn, "notify_task_counts_idx") is True
        finally:
            await conn.close()


async def test_processes_migrating_at_once_each_finish(server_urls: tuple[str, str]) -> None:
    async with temporary_database(server_urls[0], "groupbuy_test_online", migrated=False) as url:
        ran = await asyncio.wait_for(asyncio.gather(migrate(url), migrate(url), migrate(url)), 60)
        assert sorted(len(r) for r in ran) == [0, 0, len(list(SQL_DIR.glob("*.sql")))]
        conn = await asyncpg.connect(url)
        try:
            assert await _valid(conn, "notify_task_counts_idx") is True
        finally:
            await conn.close()
