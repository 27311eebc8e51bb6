"""Unit tests of the HTTP sender with aioresponses (the maintained aioresponses-ng fork; no
network)."""

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses
from aioresponses.core import RequestCall
from yarl import URL

from groupbuy_async.callbacks.rules import is_blocked_ip, verify
from groupbuy_async.callbacks.sender import Sender, create_session
from groupbuy_async.merchants.secret_box import signing_key as secret_key

from ..conftest import SECRET

URL_ = "http://merchant.test/notify"
KEYS = (secret_key(SECRET),)


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    session = create_session(10, 10, block_private=False)
    yield Sender(session, timeout=1.0)
    await session.close()


def _posts(mock: aioresponses) -> list[RequestCall]:
    assert mock.requests is not None
    return mock.requests[("POST", URL(URL_))]


def _refused() -> aiohttp.ClientConnectorError:
    key = ConnectionKey("merchant.test", 80, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


async def test_success_is_signed_and_body_read(sender: Sender) -> None:
    with aioresponses() as mock:
        mock.post(URL_, status=200, body="success")
        outcome = await sender.send(URL_, "evt_1", '{"teamId":"1"}', KEYS)
        (call,) = _posts(mock)
    assert (outcome.http_status, outcome.body, outcome.error) == (200, "success", None)
    headers = call.kwargs["headers"]
    assert headers["webhook-id"] == "evt_1"
    assert verify(secret_key(SECRET), "evt_1", int(headers["webhook-timestamp"]),
                  '{"teamId":"1"}', headers["webhook-signature"])  # fmt: skip


async def test_refused_connection_is_retried_inside_one_attempt(sender: Sender) -> None:
    with aioresponses() as mock:
        mock.post(URL_, exception=_refused())
        mock.post(URL_, status=200, body="success")
        outcome = await sender.send(URL_, "evt_1", "{}", KEYS)
        assert len(_posts(mock)) == 2
    assert outcome.http_status == 200


async def test_any_response_ends_the_attempt(sender: Sender) -> None:
    with aioresponses() as mock:
        mock.post(URL_, status=503, body="busy", headers={"Retry-After": "30"})
        mock.post(URL_, status=200, body="success")
        outcome = await sender.send(URL_, "evt_1", "{}", KEYS)
        assert len(_posts(mock)) == 1
    assert (outcome.http_status, outcome.retry_after) == (503, "30")


async def test_persistent_refusal_becomes_an_error_outcome(sender: Sender) -> None:
    with aioresponses() as mock:
        for _ in range(3):
            mock.post(URL_, exception=_refused())
        outcome = await sender.send(URL_, "evt_1", "{}", KEYS)
    assert outcome.http_status is None and "Connection refused" in (outcome.error or "")
    assert not outcome.permanent


async def test_timeout_and_bad_urls(sender: Sender) -> None:
    with aioresponses() as mock:
        mock.post(URL_, exception=TimeoutError())
        outcome = await sender.send(URL_, "evt_1", "{}", KEYS)
    assert outcome.error and "timeout" in outcome.error
    bad = await sender.send("gopher://x/", "evt_1", "{}", KEYS)
    assert bad.permanent and "invalid notifyUrl" in (bad.error or "")


def test_blocked_ip_ranges() -> None:
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254",
               "::1", "fe80::1", "::ffff:127.0.0.1", "0.0.0.0", "100.64.0.1"):  # fmt: skip
        assert is_blocked_ip(ip), ip
    for ip in ("93.184.216.34", "2606:4700::1111", "example.com"):
        assert not is_blocked_ip(ip), ip
