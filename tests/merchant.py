"""The tests' merchant in their own event loop: groupbuy_async.dev.merchant's Merchant on a
local server."""

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from groupbuy_async.dev.merchant import Answer, Merchant


class LocalMerchant(Merchant):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = TestServer(self.app(), host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/notify"))

    async def wait_for(self, count: int, seconds: float = 10) -> None:
        """Until `count` requests came."""
        async with asyncio.timeout(seconds):
            while self.requests < count:
                await asyncio.sleep(0.01)


async def start_merchant(answer: Answer | None = None, **kwargs: Any) -> LocalMerchant:
    merchant = LocalMerchant(**kwargs)
    merchant.answer = answer
    await merchant.server.start_server()
    return merchant


def answering(status: int, text: str = "", headers: dict[str, str] | None = None) -> Answer:
    """Every callback answered so."""

    async def answer(_: int) -> web.Response:
        return web.Response(status=status, text=text, headers=headers)

    return answer


def success_once(event: asyncio.Event) -> Answer:
    """Every callback answered `success` once `event` is set."""

    async def answer(_: int) -> web.Response:
        await event.wait()
        return web.Response(text="success")

    return answer
