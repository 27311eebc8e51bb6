"""One callback attempt ends within NOTIFY_TIMEOUT_SECONDS (plus a small margin), however the
merchant fails to answer: silent, slow to fail to connect, or with a limit above aiohttp's
rounding threshold. Real sockets on 127.0.0.1."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from groupbuy_async.callbacks.sender import Sender, create_session

MARGIN = 0.1


@pytest.fixture
async def silent_merchant() -> AsyncIterator[str]:
    """Accepts connections, reads the request, never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # kept open until the test ends; the handler itself returns

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/notify"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def _timed_send(sender: Sender, url: str) -> tuple[float, str | None]:
    began = time.monotonic()
    outcome = await sender.send(url, "evt-1", "{}", (b"k" * 32,))
    return time.monotonic() - began, outcome.error


async def test_a_merchant_that_never_answers_takes_the_timeout(silent_merchant: str) -> None:
    sender = Sender(create_session(10, 10, block_private=False), timeout=0.5)
    try:
        seconds, error = await _timed_send(sender, silent_merchant)
    finally:
        await sender.close()
    assert error == "timeout after 0.5s"
    assert 0.5 <= seconds <= 0.5 + MARGIN


async def test_a_limit_above_five_seconds_is_not_rounded_up(silent_merchant: str) -> None:
    """aiohttp rounds deadlines of timeouts over its ceil_threshold (5 s) up to the loop's
    next whole second: with the default 10 s an attempt lasted up to 11 s. The send starts
    where that rounding would add 0.95 s."""
    limit = 5.2
    sender = Sender(create_session(10, 10, block_private=False), timeout=limit)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep((1.05 - (loop.time() + limit) % 1) % 1)
        seconds, error = await _timed_send(sender, silent_merchant)
    finally:
        await sender.close()
    assert error == f"timeout after {limit:g}s"
    assert limit <= seconds <= limit + MARGIN


class _SlowlyFailingResolver(AbstractResolver):
    """A DNS server that takes 0.4 s to fail: each try of a connect that cannot succeed
    stays within the 0.5 s limit on its own."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        await asyncio.sleep(0.4)
        raise OSError(socket.EAI_AGAIN, "Temporary failure in name resolution")

    async def close(self) -> None:
        pass


async def test_connect_retries_share_the_attempts_limit() -> None:
    """Failures to connect are retried within the attempt (aiohttp-retry), and the waits
    and tries together stay within its limit: they took 3 x 0.4 s plus waits before."""
    connector = aiohttp.TCPConnector(resolver=_SlowlyFailingResolver())
    sender = Sender(aiohttp.ClientSession(connector=connector), timeout=0.5)
    try:
        seconds, error = await _timed_send(sender, "http://merchant.test/notify")
    finally:
        await sender.close()
    assert error is not None
    assert seconds <= 0.5 + MARGIN, (seconds, error)
