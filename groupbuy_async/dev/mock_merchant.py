"""The original's TestApiClientController as a demo merchant (served only with
GROUPBUY_MOCK_MERCHANT=true, which `dev` turns on)."""

import json
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .. import errors
from ..callbacks.rules import verify
from ..http.callback_schemas import ReceivedCallback
from ..http.routing import Route

SIGNATURE_TOLERANCE_SECONDS = 300


class MockMerchant:
    """The original's TestApiClientController: answers `success`, remembers what came."""

    def __init__(self, signing_key: bytes | None, keep: int = 100) -> None:
        self.signing_key = signing_key
        self.keep = keep
        self.received: OrderedDict[str, ReceivedCallback] = OrderedDict()

    def check(self, headers: Any, body: str) -> bool:
        """True when signed correctly; raises Unauthorized when a secret is set and it is not."""
        if self.signing_key is None:
            return False
        try:
            msg_id = headers["webhook-id"]
            timestamp = int(headers["webhook-timestamp"])
            signature = headers["webhook-signature"]
        except (KeyError, ValueError):
            raise errors.Unauthorized("missing webhook signature headers") from None
        if abs(time.time() - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
            raise errors.Unauthorized("webhook timestamp outside tolerance")
        if not verify(self.signing_key, msg_id, timestamp, body, signature):
            raise errors.Unauthorized("invalid webhook signature")
        return True

    def remember(self, webhook_id: str, verified: bool, body: str) -> None:
        if webhook_id in self.received:
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = body
        self.received[webhook_id] = ReceivedCallback(
            webhook_id=webhook_id, received_at=datetime.now(UTC),
            signature_verified=verified, payload=payload,
        )  # fmt: skip
        while len(self.received) > self.keep:
            self.received.popitem(last=False)


async def mock_merchant_receive(request: web.Request, _: None) -> web.Response:
    merchant = request.app[MOCK_MERCHANT]
    body = await request.text()
    verified = merchant.check(request.headers, body)  # Unauthorized: 401, in the envelope
    merchant.remember(
        request.headers.get("webhook-id", f"unsigned-{time.time_ns()}"), verified, body
    )
    return web.Response(text="success")


async def mock_merchant_list(request: web.Request, _: None) -> list[ReceivedCallback]:
    return list(reversed(request.app[MOCK_MERCHANT].received.values()))


MOCK_MERCHANT = web.AppKey("mock_merchant", MockMerchant)


MOCK_MERCHANT_ROUTES: list[Route] = [
    Route(
        "POST",
        "/api/v1/test/group_buy_notify",
        mock_merchant_receive,
        "Mock merchant: receives a callback, answers 'success'",
        "test",
        raw="text/plain",
        raises=(errors.Unauthorized,),
        database=False,
    ),
    Route(
        "GET",
        "/api/v1/test/group_buy_notify",
        mock_merchant_list,
        "Mock merchant: callbacks received (newest first)",
        "test",
        None,
        list[ReceivedCallback],
        database=False,
    ),
]
