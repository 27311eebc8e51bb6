"""Endpoint health: an endpoint whose every attempt fails for long enough, often enough, is
disabled once, its deliveries held (not attempts), the merchant's other endpoints told; an
answer ends a run of failures; enabled again, what it held goes out once."""

import asyncio
import logging
import socket
import uuid
from functools import partial
from typing import Any

import asyncpg
import pytest
from standardwebhooks import Webhook

from ..conftest import SECRET, Api, merchant_key, new_id, now_iso
from ..merchant import LocalMerchant, start_merchant

FAST = {"notify_retry_schedule": "0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s,0s"}


def _refusing_url() -> str:
    with socket.socket() as s:  # a port nothing listens on: connects are refused at once
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hook"


async def _merchant_with(
    api: Api, dead_url: str, watcher: LocalMerchant, pool: asyncpg.Pool
) -> tuple[Api, str]:
    """A merchant with a dead endpoint and a watcher that takes endpoint.disabled only; the
    shop front has tried each of its 4 team.completed deliveries once (they wait up to
    FIRE_WINDOW to be batched: a test's drain that took them over first would try them once
    per drain, on its retry schedule of 0 s, and open its breaker)."""
    merchant_id, tag = f"h-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    pair = (f"s{tag}", f"c{tag}")
    shop = Api(api.client, await merchant_key(api.client, merchant_id, [pair]), merchant_id)
    shop.endpoints.add(Api.DEAD_URL)
    dead = await shop.endpoint(dead_url, merchant_id, eventTypes=["team.completed"])
    await shop.endpoint(watcher.url, merchant_id, eventTypes=["endpoint.disabled"])
    act = await shop.new_activity(target=1, source=pair[0], channel=pair[1])
    act.pop("notifyUrl")
    for i in range(4):
        out = new_id()
        status, env = await shop.lock(**act, userId=f"u{i}", outTradeNo=out)
        assert status == 200, env
        status, env = await shop.settle(
            source=pair[0], channel=pair[1], userId=f"u{i}", outTradeNo=out, outTradeTime=now_iso()
        )
        assert status == 200, env
    await _until(lambda: _attempted_by_api(pool, f"{merchant_id}/{dead}"))
    return shop, dead


async def _failing(
    api: Api, watcher: LocalMerchant, make_dispatcher: Any, pool: asyncpg.Pool
) -> tuple[Api, str, Any, str]:
    """A merchant with a dead endpoint, a dispatcher whose health limits are 1 s and 3
    attempts, and the endpoint's admin path."""
    shop, dead = await _merchant_with(api, _refusing_url(), watcher, pool)
    dispatcher = make_dispatcher(
        endpoint_disable_after_seconds=1, endpoint_disable_min_attempts=3, **FAST
    )
    return shop, dead, dispatcher, f"/api/v1/admin/merchants/{shop.merchant_id}/endpoints/{dead}"


async def _disabled(api: Api, path: str) -> bool:
    _, env = await api.call("GET", path, admin=True)
    return bool(env["data"]["disabled"])


async def _drain_until(dispatcher: Any, done: Any, seconds: float = 20) -> None:
    async with asyncio.timeout(seconds):
        while not await done():
            await dispatcher.drain()
            await asyncio.sleep(0.2)


async def test_an_endpoint_failing_long_enough_is_disabled_once_and_told(
    api: Api, pool: asyncpg.Pool, make_dispatcher: Any, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = await start_merchant()
    try:
        shop, dead, dispatcher, path = await _failing(api, watcher, make_dispatcher, pool)
        disabled = partial(_disabled, api, path)

        with caplog.at_level(logging.WARNING, "groupbuy_async.callbacks.health"):
            await _drain_until(dispatcher, disabled)
            attempts = (
                "SELECT count(*) FROM notify_attempt a JOIN notify_task t ON t.id = a.task_id"
            )
            where = " JOIN endpoint ep ON ep.id = t.endpoint WHERE ep.merchant_id = $1 AND ep.endpoint_id = $2"
            before = await pool.fetchval(attempts + where, shop.merchant_id, dead)
            for _ in range(3):  # held: drained again, nothing is attempted
                await dispatcher.drain()
            assert await pool.fetchval(attempts + where, shop.merchant_id, dead) == before
        _, env = await api.call("GET", path, admin=True)
        endpoint = env["data"]
        assert endpoint["disabledReason"].startswith("every attempt failed for"), endpoint
        assert endpoint["disabledTime"] is not None
        statuses = await pool.fetch(
            "SELECT DISTINCT t.notify_status FROM notify_task t JOIN endpoint ep"
            " ON ep.id = t.endpoint WHERE ep.merchant_id = $1 AND ep.endpoint_id = $2"
            " AND t.notify_status <> 3",
            shop.merchant_id,
            dead,
        )
        assert {r[0] for r in statuses} <= {4}
        # (Other tests' dead endpoints in this database may be disabled too: not counted.)
        ours = f"endpoint {shop.merchant_id}/{dead} disabled:"
        lines = [r for r in caplog.records if r.getMessage().startswith(ours)]
        assert len(lines) == 1, lines
        assert dispatcher.delivery.metrics.endpoints_disabled._value.get() >= 1
        # The watcher hears of it (and only it), signed as any other event.
        await _drain_until(dispatcher, lambda: _received(watcher))
        (receipt,) = watcher.received
        event = Webhook(SECRET).verify(
            receipt.body, {k.lower(): v for k, v in receipt.headers.items()}
        )
        assert event["type"] == "endpoint.disabled"
        assert (event["data"]["endpointId"], event["data"]["merchantId"]) == (
            dead, shop.merchant_id,
        )  # fmt: skip
        assert event["data"]["failedAttempts"] >= 3
    finally:
        await watcher.server.close()


async def _received(merchant: LocalMerchant) -> bool:
    return merchant.requests > 0


async def _attempted_by_api(pool: asyncpg.Pool, host: str) -> bool:
    """Every delivery to the host attempted and written back (none claimed or untried)."""
    untried: int = await pool.fetchval(
        "SELECT count(*) FROM notify_task"
        " WHERE host = $1 AND (notify_count = 0 OR claim_token IS NOT NULL)",
        host,
    )
    return untried == 0


async def _until(done: Any, seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not await done():
            await asyncio.sleep(0.05)


async def test_a_short_history_never_disables_and_an_answer_ends_a_run(
    api: Api, pool: asyncpg.Pool, make_dispatcher: Any
) -> None:
    watcher = await start_merchant()
    try:
        url = _refusing_url()
        shop, dead = await _merchant_with(api, url, watcher, pool)
        dispatcher = make_dispatcher(
            endpoint_disable_after_seconds=1, endpoint_disable_min_attempts=1000, **FAST
        )
        for _ in range(4):
            await dispatcher.drain()
            await asyncio.sleep(0.3)
        row = await pool.fetchrow(
            "SELECT disabled, failing_since, failed_attempts FROM endpoint"
            " WHERE merchant_id = $1 AND endpoint_id = $2",
            shop.merchant_id,
            dead,
        )
        assert row is not None and row["disabled"] is False and row["failed_attempts"] >= 4
        assert row["failing_since"] is not None
        # It answers again: its run of failures ends.
        await pool.execute(
            "UPDATE endpoint SET url = $3 WHERE merchant_id = $1 AND endpoint_id = $2",
            shop.merchant_id,
            dead,
            watcher.url,
        )
        await pool.execute(
            "UPDATE notify_task SET next_attempt_at = now() WHERE host = $1",
            f"{shop.merchant_id}/{dead}",
        )
        await dispatcher.drain()
        row = await pool.fetchrow(
            "SELECT failing_since, failed_attempts FROM endpoint"
            " WHERE merchant_id = $1 AND endpoint_id = $2",
            shop.merchant_id,
            dead,
        )
        assert row is not None and (row["failing_since"], row["failed_attempts"]) == (None, 0)
    finally:
        await watcher.server.close()


async def test_enabled_again_it_sends_what_it_held_once(
    api: Api, pool: asyncpg.Pool, make_dispatcher: Any
) -> None:
    watcher = await start_merchant()
    fixed = await start_merchant()
    try:
        shop, dead, dispatcher, path = await _failing(api, watcher, make_dispatcher, pool)
        disabled = partial(_disabled, api, path)

        await _drain_until(dispatcher, disabled)
        held = await pool.fetchval(
            "SELECT count(*) FROM notify_task WHERE host = $1 AND notify_status = 4",
            f"{shop.merchant_id}/{dead}",
        )
        assert held >= 1
        # Fixed and enabled again (PUT: disabled false): held ones go out, each once.
        status, env = await api.call(
            "PUT", path, {"url": fixed.url, "eventTypes": ["team.completed"]}, admin=True
        )
        assert status == 200 and env["data"]["disabledReason"] is None, env
        await _drain_until(dispatcher, lambda: _at_least(fixed, held))
        await dispatcher.drain()
        assert fixed.requests == held and len(fixed.ids) == held
        assert not await pool.fetchval(
            "SELECT count(*) FROM notify_task WHERE host = $1 AND notify_status IN (0, 2, 4)",
            f"{shop.merchant_id}/{dead}",
        )
    finally:
        await watcher.server.close()
        await fixed.server.close()


async def _at_least(merchant: LocalMerchant, count: int) -> bool:
    return merchant.requests >= count
