"""A real local merchant server for end-to-end callback tests."""

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

Behaviour = Callable[[int], Awaitable[web.Response]]


async def say_success(_: int) -> web.Response:
    return web.Response(text="success")


@dataclass
class Merchant:
    server: TestServer
    behaviour: Behaviour = say_success
    requests: list[tuple[dict[str, str], str]] = field(default_factory=list)
    ids: Counter[str] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/notify"))

    @property
    def chunked_url(self) -> str:
        """Answers `success` in two chunks, some time apart."""
        return str(self.server.make_url("/chunked"))

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((dict(request.headers), await request.text()))
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"suc")
        await asyncio.sleep(0.05)
        await resp.write(b"cess")
        await resp.write_eof()
        return resp

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append((dict(request.headers), body))
        self.ids[request.headers.get("webhook-id", "")] += 1
        return await self.behaviour(len(self.requests))

    async def wait_for(self, count: int, seconds: float = 10) -> None:
        async with asyncio.timeout(seconds):
            while len(self.requests) < count:
                await asyncio.sleep(0.01)


async def start_merchant(**kwargs: Any) -> Merchant:
    app = web.Application()
    merchant = Merchant(TestServer(app, host="127.0.0.1"), **kwargs)
    app.router.add_post("/notify", merchant.handle)
    app.router.add_post("/chunked", merchant.chunked)
    await merchant.server.start_server()
    return merchant
