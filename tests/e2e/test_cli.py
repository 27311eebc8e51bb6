"""The command line as deployments run it: migrate, api and worker as real processes."""

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from groupbuy_async.dev.embedded import EmbeddedServer
from groupbuy_async.dev.host import free_port
from groupbuy_async.process.reasons import server_address
from groupbuy_async.settings import Settings

from ..conftest import ADMIN_TOKEN, SECRETS_KEY, exited, make_tasks, new_id, now_iso, wait_ready
from ..merchant import LocalMerchant


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    assert settings.database_url and settings.redis_url
    return {
        **os.environ,
        "GROUPBUY_DATABASE_URL": settings.database_url,
        "GROUPBUY_REDIS_URL": settings.redis_url,
        "GROUPBUY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GROUPBUY_SECRETS_KEY": SECRETS_KEY,
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
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    act = await api.new_activity(target=1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", "api",
        env=_env(settings, GROUPBUY_PORT=str(port), GROUPBUY_LOG_FORMAT="json"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, base, proc)
            out = new_id()
            notify = f"{base}/api/v1/test/group_buy_notify"
            await api.endpoint(notify)  # the mock merchant, as an endpoint of the merchant
            lock = {**act, "userId": "cli", "outTradeNo": out, "notifyUrl": notify}
            lock_path = f"{base}/api/v1/gbm/trade/lock_market_pay_order"
            async with http.post(lock_path, json=lock, headers=api.shop) as r:
                assert r.status == 200, await r.text()
            settle = {"source": act["source"], "channel": act["channel"], "userId": "cli",
                      "outTradeNo": out, "outTradeTime": now_iso()}  # fmt: skip
            async with http.post(
                f"{base}/api/v1/gbm/trade/settlement_market_pay_order",
                json=settle,
                headers=api.shop,
            ) as r:
                assert (await r.json())["data"]["teamCompleted"] is True
            async with asyncio.timeout(10):
                while True:
                    async with http.get(notify) as r:
                        received = (await r.json())["data"]
                    if any(out in c["payload"]["data"]["outTradeNoList"] for c in received):
                        break
                    await asyncio.sleep(0.05)
    finally:
        log = await _stop(proc)
    assert '"message": "POST /api/v1/gbm/trade/lock_market_pay_order 200' in log


async def test_worker_process_delivers_due_callbacks(
    settings: Settings, pool: asyncpg.Pool, merchant: LocalMerchant
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


# --- Startup failures: one line naming what to fix, exit code 2 -------------------------------

UNREACHABLE_DB = "postgresql://postgres@127.0.0.1:1/x"
NOISE = ("Traceback", "Task was destroyed", "Unclosed", "Exception ignored")


def _bare_env(**groupbuy: str) -> dict[str, str]:
    """The test's environment without any GROUPBUY_* setting but the secrets key, plus the
    ones given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_")}
    return {**env, "GROUPBUY_SECRETS_KEY": SECRETS_KEY, **groupbuy}


def _one_line(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert not any(noise in out for noise in NOISE), out
    return lines[0]


@pytest.mark.parametrize(
    ("name", "value", "expected", "hidden"),
    [
        ("PORT", "abc", "valid integer", "abc"),
        ("DB_POOL_MAX", "0", "greater than or equal to 1", None),
        ("LOG_LEVEL", "LOUD", "'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'", "LOUD"),
        ("NOTIFY_RETRY_SCHEDULE", "15s,soon", "entry 2 is not a delay like 15s, 3m, 1h", "soon"),
    ],
)
async def test_a_bad_setting_is_one_line_naming_it(
    settings: Settings, name: str, value: str, expected: str, hidden: str | None
) -> None:
    assert settings.database_url
    env = _bare_env(GROUPBUY_DATABASE_URL=settings.database_url, **{f"GROUPBUY_{name}": value})
    code, out = await _run("api", env=env)
    line = _one_line(out)
    assert code == 2
    assert line.startswith(f"groupbuy-async api: GROUPBUY_{name}: "), line
    assert expected in line and "(expected: " in line
    if hidden:
        assert hidden not in line


async def test_a_bad_secrets_key_is_named_but_never_printed(settings: Settings) -> None:
    assert settings.database_url
    env = _bare_env(GROUPBUY_DATABASE_URL=settings.database_url, GROUPBUY_SECRETS_KEY="abc-key")
    code, out = await _run("api", env=env)
    line = _one_line(out)
    assert code == 2 and "GROUPBUY_SECRETS_KEY" in line and "a Fernet key" in line
    assert "abc-key" not in line


@pytest.mark.parametrize("verb", ["api", "worker", "notify"])
async def test_a_missing_secrets_key_is_refused_at_start(settings: Settings, verb: str) -> None:
    assert settings.database_url
    env = _bare_env(
        GROUPBUY_DATABASE_URL=settings.database_url,
        GROUPBUY_REDIS_URL="redis://x:1",
        GROUPBUY_SECRETS_KEY="",
    )
    code, out = await _run(verb, env=env)
    line = _one_line(out)
    assert code == 2 and "GROUPBUY_SECRETS_KEY" in line and "must be set" in line, line


@pytest.mark.parametrize("verb", ["api", "migrate", "worker", "notify"])
async def test_an_unreachable_database_is_one_line(settings: Settings, verb: str) -> None:
    assert settings.redis_url
    env = _bare_env(GROUPBUY_DATABASE_URL=UNREACHABLE_DB, GROUPBUY_REDIS_URL=settings.redis_url)
    code, out = await _run(verb, env=env)
    line = _one_line(out)
    assert code == 2
    assert line.startswith(f"groupbuy-async {verb}: cannot reach PostgreSQL at 127.0.0.1:1: ")


async def test_a_missing_database_is_one_line(settings: Settings) -> None:
    assert settings.database_url
    url = settings.database_url.rsplit("/", 1)[0] + "/groupbuy_no_such_database"
    code, out = await _run("migrate", env=_bare_env(GROUPBUY_DATABASE_URL=url))
    line = _one_line(out)
    assert code == 2 and "cannot reach PostgreSQL" in line and "does not exist" in line


async def test_an_unreachable_redis_stops_the_worker_in_one_line(settings: Settings) -> None:
    assert settings.database_url
    env = _bare_env(
        GROUPBUY_DATABASE_URL=settings.database_url, GROUPBUY_REDIS_URL="redis://127.0.0.1:1/0"
    )
    code, out = await _run("worker", env=env)
    line = _one_line(out)
    assert code == 2
    assert line.startswith("groupbuy-async worker: cannot reach Redis at 127.0.0.1:1: "), line


async def test_a_taken_port_is_one_line_and_closes_cleanly(settings: Settings) -> None:
    assert settings.database_url
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _bare_env(GROUPBUY_DATABASE_URL=settings.database_url, GROUPBUY_PORT=str(port))
        code, out = await _run("api", env=env)
    line = _one_line(out)
    assert code == 2
    assert line.startswith(f"groupbuy-async api: cannot listen on 127.0.0.1:{port} "), line


async def test_migration_failures_are_one_line_errors(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    from groupbuy_async.db import MigrationError, migrate

    with pytest.raises(MigrationError, match=r"no migrations found in .*: the installation is"):
        await migrate(database_url, tmp_path)
    (tmp_path / "099_broken.sql").write_text("CREATE TABLE broken_migration (id int);\nSELEC 1;")
    with pytest.raises(MigrationError) as caught:
        await migrate(database_url, tmp_path)
    assert str(caught.value) == 'migration 099_broken.sql failed: syntax error at or near "SELEC"'
    assert await pool.fetchval("SELECT to_regclass('broken_migration')") is None  # rolled back


# --- Help and warnings ------------------------------------------------------------------------


async def test_each_verb_lists_the_settings_it_reads() -> None:
    code, api_help = await _run("api", "--help", env=_bare_env())
    assert code == 0
    assert "GROUPBUY_DATABASE_URL" in api_help and "GROUPBUY_ADMIN_TOKEN" in api_help
    assert "GROUPBUY_REDIS_URL" not in api_help  # the API needs PostgreSQL only
    code, worker_help = await _run("worker", "--help", env=_bare_env())
    assert code == 0
    assert "GROUPBUY_REDIS_URL" in worker_help and "GROUPBUY_DATABASE_URL" in worker_help
    assert "GROUPBUY_ADMIN_TOKEN" not in worker_help


async def _start(verb: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", verb, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def _wait_healthy(process: str, env: dict[str, str], seconds: float = 20) -> None:
    async with asyncio.timeout(seconds):
        while (await _run("health", process, env=env))[0] != 0:
            await asyncio.sleep(0.2)


async def _healthy_while_it_runs(verb: str, env: dict[str, str]) -> str:
    """`health VERB` is 1 (in one line) before VERB starts, 0 once it runs, 1 again as soon as
    it stopped; VERB's log."""
    code, out = await _run("health", verb, env=env)
    assert code == 1 and _one_line(out)
    proc = await _start(verb, env)
    try:
        await _wait_healthy(verb, env)
    finally:
        log = await _stop(proc)
    code, _ = await _run("health", verb, env=env)
    assert code == 1
    return log


async def test_api_without_admin_token_warns_once_and_health_follows_it(
    settings: Settings,
) -> None:
    assert settings.database_url
    env = _bare_env(GROUPBUY_DATABASE_URL=settings.database_url, GROUPBUY_PORT=str(free_port()))
    log = await _healthy_while_it_runs("api", env)
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, log
    assert "GROUPBUY_ADMIN_TOKEN is not set" in warnings[0] and "refused" in warnings[0]


@pytest.mark.parametrize(("processes", "serving"), [("1", "API listening on"), ("2", "API: 2")])
async def test_api_with_private_callback_targets_allowed_warns_once(
    settings: Settings, processes: str, serving: str
) -> None:
    env = _env(settings, GROUPBUY_PORT=str(free_port()))  # admin token set, blocking off
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "groupbuy_async", "api", "--processes", processes, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not lines or serving not in lines[-1]:
                line = await proc.stdout.readline()
                assert line, "\n".join(lines)
                lines.append(line.decode())
    finally:
        lines.append(await _stop(proc))
    warnings = [line for line in "".join(lines).splitlines() if "WARNING" in line]
    assert len(warnings) == 1, lines
    assert "GROUPBUY_NOTIFY_BLOCK_PRIVATE is false" in warnings[0], warnings


# --- The worker on a Redis of its own: health, and never idle after losing it -----------------


async def test_health_worker_is_0_while_it_runs_and_1_once_it_stopped(
    settings: Settings, own_redis: EmbeddedServer
) -> None:
    env = _env(settings, GROUPBUY_REDIS_URL=own_redis.url)
    # 1 straight after it stopped: closing deletes the heartbeat, it does not wait for its TTL.
    log = await _healthy_while_it_runs("worker", env)
    # The session's database may hold due tasks to dead merchants: their breaker warns too.
    said = [line for line in log.splitlines() if "GROUPBUY_NOTIFY_BLOCK_PRIVATE is false" in line]
    assert len(said) == 1 and "WARNING" in said[0], log


async def test_health_worker_without_redis_is_1_in_one_line() -> None:
    code, out = await _run(
        "health", "worker", env=_bare_env(GROUPBUY_REDIS_URL="redis://127.0.0.1:1/0")
    )
    assert code == 1 and "127.0.0.1:1" in _one_line(out)


async def test_worker_that_loses_redis_exits_non_zero_instead_of_idling(
    settings: Settings, pool: asyncpg.Pool, merchant: LocalMerchant, own_redis: EmbeddedServer
) -> None:
    """Redis stops while a delivery job is in flight: the send still completes (PostgreSQL is
    fine), then the worker says once that it lost Redis and exits 1 for its supervisor."""

    merchant.delay = 2
    (team_id,) = await make_tasks(pool, 1, merchant.url)
    proc = await _start("worker", _env(settings, GROUPBUY_REDIS_URL=own_redis.url))
    try:
        await merchant.wait_for(1, seconds=20)  # the job is running, its send in flight
    finally:
        await asyncio.to_thread(own_redis.stop)
        code, log = await exited(proc)
    assert code == 1, log[-2000:]
    lost = [line for line in log.splitlines() if "worker stopped: lost Redis at" in line]
    assert len(lost) == 1 and server_address(own_redis.url) in lost[0], log[-2000:]
    assert not any(noise in log for noise in NOISE), log[-2000:]
    status = "SELECT notify_status FROM notify_task WHERE team_id = $1"
    assert await pool.fetchval(status, team_id) == 1


async def test_worker_whose_redis_stops_answering_exits_non_zero(
    settings: Settings, own_redis: EmbeddedServer
) -> None:
    """A paused or cut-off Redis (SIGSTOP here) must not leave the worker waiting forever."""
    env = _env(settings, GROUPBUY_REDIS_URL=own_redis.url)
    proc = await _start("worker", env)
    assert own_redis._proc is not None
    try:
        await _wait_healthy("worker", env)
        own_redis._proc.send_signal(signal.SIGSTOP)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        own_redis._proc.send_signal(signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = out.decode()
    assert proc.returncode == 1, log[-2000:]
    assert "worker stopped: lost Redis at" in log and "Timeout" in log, log[-2000:]
    assert not any(noise in log for noise in NOISE), log[-2000:]
