"""The embedded servers `make run` and `make test` fall back to, started for real."""

from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from groupbuy_async.dev.embedded import start_postgres, start_redis


async def test_embedded_postgres_and_redis_start_answer_and_stop(tmp_path: Path) -> None:
    pg, rd = start_postgres(tmp_path), start_redis(tmp_path)
    try:
        conn = await asyncpg.connect(pg.url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        client = Redis.from_url(rd.url)
        assert await client.ping()
        await client.aclose()
        again = start_postgres(tmp_path)  # a running server is reused, not started twice
        assert again.url == pg.url
    finally:
        pg.stop()
        rd.stop()
    try:
        await asyncpg.connect(pg.url, timeout=2)
    except OSError:
        pass
    else:
        raise AssertionError("PostgreSQL still answers after stop()")
