"""SSRF guard with NOTIFY_BLOCK_PRIVATE on: every spelling of a loopback address is refused,
at lock time (400, nothing written) and at send time (the address actually connected to)."""

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from groupbuy_async.callbacks.sender import BlockedAddress, Sender, create_session, public_socket
from groupbuy_async.settings import Settings

from ..conftest import ADMIN_TOKEN, SHOP_MERCHANT, Api, new_id, start_client
from ..merchant import LocalMerchant

# Each reached a loopback receiver through the old guard: aiohttp passes digit-and-dot hosts
# to connect() unresolved, and the C library reads them as IPv4 ("127.1" is 127.0.0.1).
NON_CANONICAL = [
    "127.1",
    "2130706433",
    "0",
    "0177.0.0.1",
    "127.000.000.001",
    "0x7f.0.0.1",
    "127.0.0.1.",
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits
    "127\u30020\u30020\u30021",  # ideographic full stops
]
CANONICAL_BLOCKED = ["127.0.0.1", "[::ffff:127.0.0.1]", "[::1]", "169.254.169.254", "10.0.0.1"]
# Names that always mean this machine (RFC 6761), whatever a resolver would answer.
LOOPBACK_NAMES = ["localhost", "LocalHost", "shop.localhost"]


@pytest.fixture
async def guarded() -> AsyncIterator[Sender]:
    session = create_session(10, 10, block_private=True)
    yield Sender(session, timeout=2.0, block_private=True)
    await session.close()


@pytest.mark.parametrize("host", NON_CANONICAL + CANONICAL_BLOCKED + ["localhost"])
async def test_sender_never_reaches_a_loopback_receiver(
    host: str, guarded: Sender, merchant: LocalMerchant
) -> None:
    url = f"http://{host}:{merchant.server.port}/notify"
    outcome = await guarded.send(url, "evt", "{}", (b"k" * 32,))
    assert outcome.http_status is None and outcome.permanent, outcome
    assert merchant.requests == 0


@pytest.mark.parametrize(
    "host", ["127.1", "2130706433", "0177.0.0.1", "0", "127.0.0.1", "::ffff:127.0.0.1", "::1"]
)
def test_the_socket_factory_refuses_every_spelling_of_loopback(host: str) -> None:
    """The last word: whatever aiohttp passes to connect() (older releases pass "127.1"
    through unresolved), the address the C library would read is what is judged."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with pytest.raises(BlockedAddress):
        public_socket((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, 80)))
    public_socket(
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("93.184.215.14", 80))
    ).close()


async def test_the_connection_itself_is_refused_whatever_the_url_check_says(
    merchant: LocalMerchant,
) -> None:
    """A URL no check saw: without the guard it reaches the receiver, with it no socket is
    ever connected."""
    url = f"http://[::ffff:127.0.0.1]:{merchant.server.port}/notify"
    async with (
        create_session(10, 10, block_private=False) as open_session,
        open_session.post(url, data=b"{}") as resp,
    ):
        assert resp.status == 200
    assert merchant.requests == 1
    async with create_session(10, 10, block_private=True) as guarded_session:
        with pytest.raises(aiohttp.ClientConnectorError, match="blocked"):
            await guarded_session.post(url, data=b"{}")
    assert merchant.requests == 1


async def _lock(
    client: Any, act: dict[str, Any], url: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    body = {**act, "userId": new_id("u"), "outTradeNo": new_id(), "notifyUrl": url}
    lock = "/api/v1/gbm/trade/lock_market_pay_order"
    async with client.post(lock, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("host", NON_CANONICAL)
async def test_non_canonical_hosts_are_refused_at_lock_time_always(
    host: str, api: Api, pool: asyncpg.Pool
) -> None:
    act = await api.new_activity()
    status, env = await _lock(api.client, act, f"http://{host}:8080/notify", api.shop)
    assert (status, env["code"]) == (400, "0002"), env
    assert "notifyUrl" in env["info"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM group_buy_order WHERE activity_id = $1", act["activityId"]
        )
        == 0
    )


async def test_blocked_literals_are_refused_as_endpoints_when_blocking(
    settings: Settings, api: Api, pool: asyncpg.Pool
) -> None:
    """With blocking on, an endpoint at a blocked address literal (or a loopback name) is
    refused, so no lock can name one either; public ones are taken."""
    act = await api.new_activity()
    client = await start_client(settings.model_copy(update={"notify_block_private": True}))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    path = f"/api/v1/admin/merchants/{SHOP_MERCHANT}/endpoints/ssrf"
    try:
        for host in CANONICAL_BLOCKED + LOOPBACK_NAMES:
            url = f"http://{host}:8080/notify"
            async with client.put(path, json={"url": url}, headers=admin) as resp:
                status, env = resp.status, await resp.json()
            assert (status, env["code"]) == (400, "0002"), (host, env)
            assert "blocked" in env["info"] and "GROUPBUY_NOTIFY_BLOCK_PRIVATE" in env["info"]
            assert env["info"].startswith("url: "), env
            status, env = await _lock(client, act, url, api.shop)
            assert (status, env["code"]) == (400, "0002") and "notifyUrl" in env["info"], env
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM group_buy_order WHERE activity_id = $1", act["activityId"]
            )
            == 0
        )
        assert not await pool.fetchval("SELECT count(*) FROM endpoint WHERE endpoint_id = 'ssrf'")
        for url in (
            "http://93.184.215.14/notify",
            "https://merchant.example.com/notify",
            "https://localhost.example.com/notify",
        ):
            async with client.put(path, json={"url": url}, headers=admin) as resp:
                assert resp.status == 200, await resp.text()
            status, env = await _lock(client, act, url, api.shop)
            assert status == 200, env
    finally:
        await client.close()
