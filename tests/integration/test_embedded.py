"""The embedded servers `make run` and `make test` fall back to, started for real."""

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from groupbuy_async.dev.embedded import start_postgres, start_redis
from groupbuy_async.dev.host import free_port

from ..conftest import ROOT, wait_ready


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


# --- Servers a killed `make run` left: `make stop`, `make reset-data`, and dev's Ctrl-C --------

LEAVE_RUNNING = """
import sys
from pathlib import Path
from groupbuy_async.dev.embedded import start_postgres, start_redis
print(start_postgres(Path(sys.argv[1])).url, start_redis(Path(sys.argv[1])).url)
"""


async def _left_running(data_dir: Path) -> tuple[str, str]:
    """Both servers started on `data_dir` by a process that ends without stopping them, as a
    killed `make run` does; their URLs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LEAVE_RUNNING, str(data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0
    pg_url, redis_url = out.decode().split()
    return pg_url, redis_url


async def _answering(pg_url: str, redis_url: str) -> tuple[bool, bool]:
    try:
        await (await asyncpg.connect(pg_url, timeout=5)).close()
        pg = True
    except OSError:
        pg = False
    client = Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        rd = bool(await client.ping())
    except RedisConnectionError:
        rd = False
    finally:
        await client.aclose()
    return pg, rd


async def _make(target: str, data_dir: Path) -> tuple[int, str]:
    env = {**os.environ, "GROUPBUY_DATA_DIR": str(data_dir)}
    proc = await asyncio.create_subprocess_exec(
        "make", "--no-print-directory", "-C", str(ROOT), target, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_make_stop_stops_what_a_killed_run_left_and_reset_data_refuses_until_then(
    server_dir: Path,
) -> None:
    urls = await _left_running(server_dir)
    try:
        code, out = await _make("reset-data", server_dir)
        assert code != 0, out
        (said,) = [line for line in out.splitlines() if not line.startswith("make")]
        assert said.startswith("groupbuy-async dev: PostgreSQL (pid "), said
        assert " and Redis (pid " in said and "still running" in said, said
        assert await asyncio.to_thread((server_dir / "postgres" / "PG_VERSION").exists)
        assert await _answering(*urls) == (True, True)

        code, out = await _make("stop", server_dir)
        assert code == 0, out
        assert out.count("stopped PostgreSQL (pid ") == out.count("stopped Redis (pid ") == 1
        assert await _answering(*urls) == (False, False)
    finally:
        await _make("stop", server_dir)

    code, out = await _make("reset-data", server_dir)
    assert code == 0 and not await asyncio.to_thread(server_dir.exists), out


async def test_ctrl_c_on_dev_stops_the_servers_it_reused(server_dir: Path) -> None:
    urls = await _left_running(server_dir)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_")}
    env.update(GROUPBUY_DATA_DIR=str(server_dir), GROUPBUY_PORT=str(port))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", "dev", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, f"http://127.0.0.1:{port}", proc, seconds=60)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        await _make("stop", server_dir)
    log = out.decode()
    assert proc.returncode == 0, log[-3000:]
    assert log.count("reusing PostgreSQL") == log.count("reusing Redis") == 1, log[-3000:]
    assert await _answering(*urls) == (False, False)


async def test_reset_data_refuses_while_servers_run_in_a_folder_inside(server_dir: Path) -> None:
    """As the tests' own under .data/test do while a `make test` runs on embedded servers."""
    inside = server_dir / "test"
    await _left_running(inside)
    try:
        code, out = await _make("reset-data", server_dir)
        assert code != 0, out
        (said,) = [line for line in out.splitlines() if not line.startswith("make")]
        assert said.startswith("groupbuy-async dev: PostgreSQL (pid "), said
        assert f" on {inside} and Redis (pid " in said and said.count(f" on {inside} ") == 2, said
        assert await asyncio.to_thread((inside / "postgres" / "PG_VERSION").exists)
    finally:
        await _make("stop", inside)


def _data_dir_with(root: Path, *files: str) -> Path:
    data = root / "data"
    (data / "redis").mkdir(parents=True)
    for name in files:
        (data / name).write_text("the user's own")
    return data


async def test_reset_data_deletes_only_a_folder_dev_wrote(tmp_path: Path) -> None:
    """GROUPBUY_DATA_DIR may name a folder of the user's: reset-data does not empty it."""
    data = await asyncio.to_thread(_data_dir_with, tmp_path, "notes.txt")
    code, out = await _make("reset-data", data)
    assert code != 0 and "notes.txt" in out, out
    assert await asyncio.to_thread((data / "notes.txt").exists)
    await asyncio.to_thread((data / "notes.txt").unlink)
    code, out = await _make("reset-data", data)
    assert code == 0 and not await asyncio.to_thread(data.exists), out
