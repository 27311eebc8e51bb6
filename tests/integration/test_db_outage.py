"""PostgreSQL frozen, stopped, or slower than the command timeout: every request answers
503 `0503` with Retry-After within its time limit, logs one line (no traceback), writes
nothing half-way, and the API recovers by itself once the database is back.

The frozen and stopped servers are embedded ones this module starts (never the shared one).
"""

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from groupbuy_async.db import migrate
from groupbuy_async.dev.embedded import EmbeddedServer, start_postgres
from groupbuy_async.settings import Settings

from ..conftest import ADMIN_TOKEN, SECRETS_KEY, Api, new_id, now_iso, start_client

ACQUIRE, COMMAND = 1.0, 1.0  # the pool's limits in these tests
READYZ_LIMIT = 2.0  # /readyz's own probe limit
MARGIN = 1.0
LOCK = "/api/v1/gbm/trade/lock_market_pay_order"
SETTLE = "/api/v1/gbm/trade/settlement_market_pay_order"


@dataclass
class OwnPostgres:
    """An embedded PostgreSQL only this test uses: it may freeze, stop and restart it."""

    data_dir: Path
    server: EmbeddedServer

    @property
    def url(self) -> str:
        return self.server.url

    def _signal_all(self, sig: int) -> None:
        # The postmaster first (it forks no backend while stopped), then every child: each
        # backend is a process group of its own. The whole server freezes, as on a paused
        # VM or a stuck disk.
        assert self.server._proc is not None
        postmaster = self.server._proc.pid
        os.kill(postmaster, sig)
        for pid in _children(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def freeze(self) -> None:
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.server._proc is not None and self.server._proc.poll() is None:
            self._signal_all(signal.SIGCONT)

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.stop)

    async def restart(self) -> None:
        port = urlparse(self.url).port
        self.server = await asyncio.to_thread(start_postgres, self.data_dir, port)


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rpartition(")")[2].split()[1]) == parent:
                    found.append(int(entry))
    return found


@pytest.fixture
async def own_pg() -> AsyncIterator[OwnPostgres]:
    # Not under pytest's tmp_path: other pytest sessions on the machine prune
    # /tmp/pytest-of-<user> while they start, under a server's feet.
    data_dir = Path(tempfile.mkdtemp(prefix="groupbuy-outage-"))
    try:
        pg = OwnPostgres(data_dir, await asyncio.to_thread(start_postgres, data_dir))
        try:
            await migrate(pg.url)
            yield pg
        finally:
            pg.thaw()  # never leave a frozen server behind
            await pg.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _settings(database_url: str, **extra: Any) -> Settings:
    return Settings(**{
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "secrets_key": SECRETS_KEY,
        "notify_block_private": False,
        "db_pool_min": 1,
        "db_pool_max": 4,
        "db_acquire_timeout_seconds": ACQUIRE,
        "db_command_timeout_seconds": COMMAND,
        **extra,
    })  # fmt: skip


@pytest.fixture
async def own_client(own_pg: OwnPostgres) -> AsyncIterator[TestClient[Any, Any]]:
    # Four connections open from the start: the first requests into the frozen server
    # are cut by the command timeout (mid-statement, mid-transaction), the later ones by
    # the acquire timeout (opening a connection).
    client = await start_client(_settings(own_pg.url, db_pool_min=4))
    yield client
    await client.close()


@dataclass
class Answer:
    status: int
    envelope: dict[str, Any]
    headers: dict[str, str]
    seconds: float
    request_id: str


async def _call(
    client: TestClient[Any, Any],
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    rid = uuid.uuid4().hex
    began = time.monotonic()
    headers = {**(headers or {}), "X-Request-Id": rid}
    async with client.request(method, path, json=body, headers=headers) as resp:
        envelope = await resp.json()
        return Answer(resp.status, envelope, dict(resp.headers), time.monotonic() - began, rid)


def _settle_body(act: dict[str, Any], user: str, out: str) -> dict[str, Any]:
    return {"source": act["source"], "channel": act["channel"], "userId": user,
            "outTradeNo": out, "outTradeTime": now_iso()}  # fmt: skip


def _assert_unavailable(answer: Answer, limit: float) -> None:
    assert answer.status == 503, answer
    assert answer.envelope["code"] == "0503", answer
    assert int(answer.headers["Retry-After"]) >= 1, answer
    assert answer.seconds <= limit + MARGIN, answer


def _assert_one_line_each(records: list[logging.LogRecord], answers: list[Answer]) -> None:
    """One log line per failed request (carrying its request id), no traceback anywhere.
    (asyncpg's pool may add a line per reconnect attempt, with backoff: one line each.)"""
    assert not [r for r in records if r.exc_info or r.exc_text], [r.getMessage() for r in records]
    others = [r for r in records if not hasattr(r, "request_id") and r.name != "aiohttp.access"]
    assert all(r.name == "asyncpg.pool" for r in others), [r.getMessage() for r in others]
    for answer in answers:
        mine = [r for r in records if getattr(r, "request_id", None) == answer.request_id]
        assert len(mine) == 1, [r.getMessage() for r in mine]
        assert mine[0].levelno == logging.WARNING and "503" in mine[0].getMessage()


async def _until_ready(client: TestClient[Any, Any], seconds: float = 20) -> None:
    async with asyncio.timeout(seconds):
        while (await _call(client, "GET", "/readyz")).status != 200:
            await asyncio.sleep(0.1)


async def test_a_frozen_database_is_503_within_the_limits_and_the_api_recovers(
    own_pg: OwnPostgres, own_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    api = await Api.for_client(own_client)
    act = await api.new_activity()
    status, opened = await api.lock(**act, userId="u1", outTradeNo="o1")
    assert status == 200, opened
    team_id = opened["data"]["teamId"]
    join = {**act, "userId": "u2", "outTradeNo": "o2", "teamId": team_id}

    # With the default limits (longer than its own 2 s), /readyz cuts its probe short.
    defaults = await start_client(Settings(database_url=own_pg.url, secrets_key=SECRETS_KEY))
    try:
        assert (await _call(defaults, "GET", "/readyz")).status == 200
        own_pg.freeze()
        try:
            with caplog.at_level(logging.INFO):
                readyz, lock, settle, default_readyz = await asyncio.gather(
                    _call(own_client, "GET", "/readyz"),
                    _call(own_client, "POST", LOCK, join, api.shop),
                    _call(own_client, "POST", SETTLE, _settle_body(act, "u1", "o1"), api.shop),
                    _call(defaults, "GET", "/readyz"),
                )
                # Twice more at once, on what is left of the pool: one gets its last
                # connection, the other must open one; each is bounded all the same.
                again = await asyncio.gather(*(
                    _call(own_client, "POST", SETTLE, _settle_body(act, "u1", "o1"), api.shop)
                    for _ in range(2)
                ))  # fmt: skip
        finally:
            own_pg.thaw()
    finally:
        await defaults.close()

    _assert_unavailable(readyz, READYZ_LIMIT)
    _assert_unavailable(default_readyz, READYZ_LIMIT)
    for answer in (lock, settle, *again):
        _assert_unavailable(answer, max(ACQUIRE, COMMAND))
    _assert_one_line_each(caplog.records, [readyz, lock, settle, default_readyz, *again])

    await _until_ready(own_client)
    # What the frozen requests began was rolled back: the join and the payment happen now.
    status, joined = await api.lock(**join)
    assert status == 200 and joined["data"]["teamId"] == team_id, joined
    status, paid = await api.call("POST", SETTLE, _settle_body(act, "u1", "o1"))
    assert status == 200, paid
    team = await api.team(team_id)
    assert (team["lockCount"], team["completeCount"]) == (2, 1), team


async def test_a_stopped_database_is_503_at_once_and_the_api_recovers_after_restart(
    own_pg: OwnPostgres, own_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    api = await Api.for_client(own_client)
    act = await api.new_activity()
    await own_pg.stop()
    with caplog.at_level(logging.INFO):
        answers = [
            await _call(own_client, "GET", "/readyz"),
            await _call(
                own_client, "POST", LOCK, {**act, "userId": "u1", "outTradeNo": "o1"}, api.shop
            ),
            await _call(own_client, "POST", SETTLE, _settle_body(act, "u1", "o1"), api.shop),
        ]
    for answer in answers:
        _assert_unavailable(answer, 0.0)  # refused at once: within the margin
    _assert_one_line_each(caplog.records, answers)

    await own_pg.restart()
    await _until_ready(own_client)
    status, locked = await api.lock(**act, userId="u1", outTradeNo="o1")
    assert status == 200, locked


async def test_a_statement_over_the_command_timeout_is_503_and_rolls_back(
    database_url: str, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """The completing settlement has moved the team to complete and the order to paid when
    its last statement (the outbox insert) waits past the command timeout on a conflicting
    insert: it answers 503 in time, and none of it is ever committed."""
    client = await start_client(_settings(database_url))
    try:
        api = await Api.for_client(client)
        act = await api.new_activity(target=2)
        outs = [new_id(), new_id()]
        status, env = await api.lock(**act, userId="m0", outTradeNo=outs[0])
        team_id = env["data"]["teamId"]
        await api.lock(**act, userId="m1", outTradeNo=outs[1], teamId=team_id)
        status, env = await api.settle(**_settle_body(act, "m0", outs[0]))
        assert status == 200 and env["data"]["teamCompleted"] is False, env

        blocker = await asyncpg.connect(database_url)
        try:
            blocking = blocker.transaction()
            await blocking.start()
            await blocker.execute(
                "INSERT INTO event (event_id, event_type, activity_id, team_id, parameter_json)"
                " VALUES (gen_random_uuid(), 'team.completed', $1, $2, '{}')",
                act["activityId"], team_id,
            )  # fmt: skip
            with caplog.at_level(logging.INFO):
                async with asyncio.timeout(COMMAND + 5 * MARGIN):
                    answer = await _call(
                        client, "POST", SETTLE, _settle_body(act, "m1", outs[1]), api.shop
                    )
            await blocking.rollback()
        finally:
            await blocker.close()
        _assert_unavailable(answer, COMMAND)
        _assert_one_line_each(caplog.records, [answer])

        # The settlement's backend finishes its insert, finds its client gone and aborts.
        async with asyncio.timeout(10):
            while await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state <> 'idle' AND query LIKE '%notify_task%'"
            ):
                await asyncio.sleep(0.05)
        team = await api.team(team_id)
        assert (team["completeCount"], team["status"]) == (1, 0), team
        paid = await pool.fetchval(
            "SELECT status FROM group_buy_order_list WHERE out_trade_no = $1", outs[1]
        )
        tasks = await pool.fetchval("SELECT count(*) FROM event WHERE team_id = $1", team_id)
        assert (paid, tasks) == (0, 0)
        status, env = await api.settle(**_settle_body(act, "m1", outs[1]))
        assert status == 200 and env["data"]["teamCompleted"] is True, env
    finally:
        await client.close()


async def test_every_way_to_borrow_from_the_pool_is_bounded(database_url: str) -> None:
    """pool.fetch*()/execute(), `async with pool.acquire()` and `await pool.acquire()` all
    give up after the acquire timeout when no connection frees up (asyncpg's own default is
    to wait forever)."""
    from groupbuy_async.db import create_pool

    pool = await create_pool(database_url, 1, 1, acquire_timeout=0.3, command_timeout=COMMAND)
    try:
        async with pool.acquire():  # the only connection, held throughout

            async def borrow_with() -> None:
                async with pool.acquire():
                    pass

            async def borrow_await() -> None:
                await pool.release(await pool.acquire())

            for borrow in (lambda: pool.fetchval("SELECT 1"), borrow_with, borrow_await):
                began = time.monotonic()
                with pytest.raises(TimeoutError):
                    await borrow()
                assert time.monotonic() - began < 0.3 + 0.2
    finally:
        await pool.close()


async def test_a_released_connection_costs_no_round_trip(database_url: str) -> None:
    """asyncpg's default release sends RESET ALL and three more statements every time; the
    pool's connections keep no session state, so nothing is sent."""
    from groupbuy_async.db import create_pool

    pool = await create_pool(database_url, 1, 1)
    try:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        assert await pool.fetchval("SELECT 'the last statement'") == "the last statement"
        last = await asyncpg.connect(database_url)
        try:
            query = await last.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
        finally:
            await last.close()
        assert query == "SELECT 'the last statement'"
    finally:
        await pool.close()
