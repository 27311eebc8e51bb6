"""The embedded servers `make run` and `make test` fall back to, started for real."""

import logging
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from groupbuy_async.dev.embedded import start_postgres, start_redis


async def test_embedded_postgres_and_redis_start_answer_and_stop(
    server_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pg, rd = start_postgres(server_dir), start_redis(server_dir)
    try:
        conn = await asyncpg.connect(pg.url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        client = Redis.from_url(rd.url)
        assert await client.ping()
        await client.aclose()
        with caplog.at_level(logging.WARNING, logger="groupbuy_async.dev.embedded"):
            # A running server is reused, not started twice, and the log says so.
            assert start_postgres(server_dir).url == pg.url
            assert start_redis(server_dir).url == rd.url
        reused = [r.getMessage() for r in caplog.records if "reusing" in r.getMessage()]
        assert len(reused) == 2 and "PostgreSQL" in reused[0] and "Redis" in reused[1]
    finally:
        pg.stop()
        rd.stop()
    try:
        await asyncpg.connect(pg.url, timeout=2)
    except OSError:
        pass
    else:
        raise AssertionError("PostgreSQL still answers after stop()")
