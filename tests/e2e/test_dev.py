"""`groupbuy-async dev` (what `make run` runs) as a process, on the tests' PostgreSQL and a Redis
of its own: the demo's callback arrives signed and verified, and Ctrl-C stops it cleanly (no
send cut short, nothing left in Redis)."""

import asyncio
import os
import signal
import sys
import uuid
from asyncio.subprocess import Process
from pathlib import Path
from typing import Any

import aiohttp

from groupbuy_async.db import create_pool
from groupbuy_async.dev.databases import temporary_database
from groupbuy_async.dev.embedded import EmbeddedServer
from groupbuy_async.dev.host import free_port
from groupbuy_async.dev.run import DEMO_ACTIVITY, DEMO_GOODS

from ..conftest import SECRETS_KEY, exited, keys_left, make_tasks, now_iso, wait_ready
from ..merchant import LocalMerchant

NOISE = ("Traceback", "Task was destroyed", "Unclosed", "Exception ignored")


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], key: str) -> Any:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        envelope = await resp.json()
    assert envelope["code"] == "0000", envelope
    return envelope["data"]


async def _complete_a_demo_team(http: aiohttp.ClientSession, base: str, key: str) -> str:
    """Three shoppers lock and pay, as the printed curl lines do; the team's id."""
    trade = f"{base}/api/v1/gbm/trade"
    run, team_id = uuid.uuid4().hex[:8], None
    for i in (1, 2, 3):
        lock = {
            "userId": f"u{i}-{run}", "outTradeNo": f"o{i}-{run}", "activityId": DEMO_ACTIVITY,
            "goodsId": DEMO_GOODS, "source": "s01", "channel": "c01",
            "notifyUrl": f"{base}/api/v1/test/group_buy_notify",
            **({"teamId": team_id} if team_id else {}),
        }  # fmt: skip
        team_id = (await _post(http, f"{trade}/lock_market_pay_order", lock, key))["teamId"]
    for i in (1, 2, 3):
        settle = {"source": "s01", "channel": "c01", "userId": f"u{i}-{run}",
                  "outTradeNo": f"o{i}-{run}", "outTradeTime": now_iso()}  # fmt: skip
        await _post(http, f"{trade}/settlement_market_pay_order", settle, key)
    assert team_id is not None
    return str(team_id)


async def _start_dev(
    database_url: str, redis_url: str, data_dir: Path, **groupbuy: str
) -> tuple[Process, str]:
    """`python -m groupbuy_async dev` on those servers, once it serves; its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_")}
    env.update(
        GROUPBUY_DATABASE_URL=database_url, GROUPBUY_REDIS_URL=redis_url,
        GROUPBUY_PORT=str(port), GROUPBUY_DATA_DIR=str(data_dir), **groupbuy,
    )  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", "dev", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, base, proc)
    except BaseException:
        proc.kill()
        await proc.communicate()
        raise
    return proc, base


async def _ctrl_c(proc: Process) -> str:
    """SIGINT, as Ctrl-C sends it; dev's output once it exited 0, cleanly."""
    proc.send_signal(signal.SIGINT)
    code, log = await exited(proc)
    assert code == 0, log[-3000:]
    assert "SIGUSR1" not in log, log[-3000:]  # arq's close() stood in for a signal
    assert not any(noise in log for noise in NOISE), log[-3000:]
    return log


async def _demo_key(proc: Process) -> str:
    """The API key dev printed for this run, from its output."""
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        while line := (await proc.stdout.readline()).decode():
            if "API key for this run: " in line:
                return line.rsplit(" ", 1)[1].strip()
    raise AssertionError("dev printed no API key")


async def test_dev_shows_a_verified_callback_and_ctrl_c_leaves_nothing_behind(
    server_urls: tuple[str, str], own_redis: EmbeddedServer, tmp_path: Path
) -> None:
    async with temporary_database(server_urls[0], "groupbuy_test_dev") as database_url:
        await _verified_demo_callback(database_url, own_redis, tmp_path)


async def _verified_demo_callback(
    database_url: str, own_redis: EmbeddedServer, tmp_path: Path
) -> None:
    proc, base = await _start_dev(database_url, own_redis.url, tmp_path)
    try:
        key = await _demo_key(proc)
        assert key.startswith("gbk_")
        async with aiohttp.ClientSession() as http:
            team_id = await _complete_a_demo_team(http, base, key)
            async with asyncio.timeout(20):
                while True:
                    async with http.get(f"{base}/api/v1/test/group_buy_notify") as r:
                        received = (await r.json())["data"]
                    ours = [c for c in received if c["payload"]["data"]["teamId"] == team_id]
                    if ours:
                        break
                    await asyncio.sleep(0.1)
        assert [c["signatureVerified"] for c in ours] == [True], ours
    finally:
        await _ctrl_c(proc)
    assert await keys_left(own_redis.url) == {}


async def test_ctrl_c_lets_the_workers_send_in_flight_finish_and_records_it(
    server_urls: tuple[str, str], own_redis: EmbeddedServer, merchant: LocalMerchant, tmp_path: Path
) -> None:
    """As the worker process on SIGTERM: a drain sending when Ctrl-C comes is not cut short."""

    merchant.delay = 2
    async with temporary_database(server_urls[0], "groupbuy_test_dev") as url:
        pool = await create_pool(url, 1, 2)
        try:
            (team_id,) = await make_tasks(pool, 1, merchant.url)
            # The key the backlog's endpoint secret was sealed with (dev's own otherwise).
            proc, _ = await _start_dev(
                url, own_redis.url, tmp_path, GROUPBUY_SECRETS_KEY=SECRETS_KEY
            )
            try:
                async with asyncio.timeout(30):
                    while not merchant.requests:  # until the worker's first drain sends
                        assert proc.returncode is None, f"dev exited {proc.returncode}"
                        await asyncio.sleep(0.05)
            finally:
                await _ctrl_c(proc)
            status = "SELECT notify_status FROM notify_task WHERE team_id = $1"
            assert await pool.fetchval(status, team_id) == 1
            assert merchant.requests == 1
        finally:
            await pool.close()


async def test_dev_whose_redis_stops_says_so_in_one_line_and_exits_1(
    server_urls: tuple[str, str], own_redis: EmbeddedServer, tmp_path: Path
) -> None:
    """As when `make stop` stops the servers under a running `make run`. (Each dev run has a
    database of its own: its demo merchant holds the demo's s01/c01.)"""
    async with temporary_database(server_urls[0], "groupbuy_test_dev") as database_url:
        proc, _ = await _start_dev(database_url, own_redis.url, tmp_path)
        await asyncio.to_thread(own_redis.stop)
        code, log = await exited(proc)
    assert code == 1, log[-3000:]
    assert len([line for line in log.splitlines() if "worker stopped: " in line]) == 1, log
    assert not any(noise in log for noise in NOISE), log[-3000:]
