"""The command line as deployments run it: migrate, api and worker as real processes."""

import asyncio
import os
import signal
import socket
import sys
from typing import Any

import aiohttp
import asyncpg

from groupbuy_async.settings import Settings

from ..conftest import ADMIN_TOKEN, make_tasks, new_id, now_iso
from ..merchant import Merchant


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    assert settings.database_url and settings.redis_url
    return {
        **os.environ,
        "GROUPBUY_DATABASE_URL": settings.database_url,
        "GROUPBUY_REDIS_URL": settings.redis_url,
        "GROUPBUY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GROUPBUY_NOTIFY_BLOCK_PRIVATE": "false",
        "GROUPBUY_MOCK_MERCHANT": "true",
        **extra,
    }


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def _stop(proc: asyncio.subprocess.Process) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()[-2000:]
    return out.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_migrate_command_is_idempotent(settings: Settings) -> None:
    code, out = await _run("migrate", env=_env(settings))
    assert code == 0 and "applied 0 migration(s): none pending" in out


async def test_commands_refuse_to_start_without_servers(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_")}
    code, out = await _run("api", env=env)
    assert code != 0 and "GROUPBUY_DATABASE_URL" in out


async def test_api_process_serves_a_whole_trade_and_stops_cleanly(
    settings: Settings, api: Any
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    act = await api.new_activity(target=1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", "api",
        env=_env(settings, GROUPBUY_PORT=str(port), GROUPBUY_LOG_FORMAT="json"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(20):
                while True:
                    try:
                        async with http.get(f"{base}/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.1)
            out = new_id()
            notify = f"{base}/api/v1/test/group_buy_notify"
            lock = {**act, "userId": "cli", "outTradeNo": out, "notifyUrl": notify}
            async with http.post(f"{base}/api/v1/gbm/trade/lock_market_pay_order", json=lock) as r:
                assert r.status == 200, await r.text()
            settle = {"source": act["source"], "channel": act["channel"], "userId": "cli",
                      "outTradeNo": out, "outTradeTime": now_iso()}  # fmt: skip
            async with http.post(
                f"{base}/api/v1/gbm/trade/settlement_market_pay_order", json=settle
            ) as r:
                assert (await r.json())["data"]["teamCompleted"] is True
            async with asyncio.timeout(10):
                while True:
                    async with http.get(notify) as r:
                        received = (await r.json())["data"]
                    if any(out in c["payload"]["outTradeNoList"] for c in received):
                        break
                    await asyncio.sleep(0.05)
    finally:
        log = await _stop(proc)
    assert '"message": "POST /api/v1/gbm/trade/lock_market_pay_order 200' in log


async def test_worker_process_delivers_due_callbacks(
    settings: Settings, pool: asyncpg.Pool, merchant: Merchant
) -> None:
    team_ids = await make_tasks(pool, 3, merchant.url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", "worker", env=_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(20):
            while (
                await pool.fetchval(
                    "SELECT count(*) FROM notify_task WHERE team_id = ANY($1::text[])"
                    " AND notify_status = 1",
                    team_ids,
                )
                < 3
            ):
                await asyncio.sleep(0.1)
    finally:
        await _stop(proc)
    assert len(merchant.ids) >= 3
