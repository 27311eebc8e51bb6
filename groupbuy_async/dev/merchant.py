"""A merchant that receives callbacks: the mock merchant `dev` serves beside the API
(GROUPBUY_MOCK_MERCHANT), and the one tests, fault scenarios and benchmarks run, in their own
process or in one of its own:

    python -m groupbuy_async.dev.merchant [--mode MODE] [--mode-for PATH=MODE ...] [--delay S]
                                          [--secret whsec_...] [--keep N]

which prints "PORT <n>" once it listens on 127.0.0.1 and stops on SIGTERM or SIGINT
(merchant_process.MerchantProcess is its handle). It answers a callback (a POST to any path)
as its mode says, after its delay:

  success     200 `success`
  fail        500
  fail-first  500 to the first request of each webhook-id, `success` to the others
  garbage     200 with a body that is not `success`
  hang        nothing, until the sender gives up
  chunked     200 `success` in two chunks, 50 ms apart

(or as a test's own `answer` says); a callback to a PATH given --mode-for (e.g.
`--mode-for /a=hang --mode-for /b=success`, repeatable) is answered as that path's mode
says instead: several merchants' endpoints on one host and port. It records each as a
Receipt: its webhook-id, when it came, whether it was answered success, its path, whether
its Standard Webhooks signature verified (None without a secret; the mock merchant verifies
with the secrets of the endpoints whose url ends in its path), its headers and body.
GET /_tally: the counts and the receipts (without headers and body); POST /_mode {"mode",
"delay"} changes how later callbacks are answered ({"mode", "path"}: those to that path
only); POST /_reset forgets what came.
"""

import argparse
import asyncio
import base64
import json
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiohttp import web

from .. import errors
from ..bootstrap import SERVICES
from ..callbacks.rules import verify
from ..http.callback_schemas import ReceivedCallback
from ..http.routing import Route
from ..merchants import endpoints
from ..process.signals import on_stop_signals
from ..settings import Settings

MODES = ("success", "fail", "fail-first", "garbage", "hang", "chunked")
SIGNATURE_TOLERANCE_SECONDS = 300
MOCK_MERCHANT_PATH = "/api/v1/test/group_buy_notify"
MOCK_MERCHANT_KEEPS = 100  # callbacks

# A test's own answer, given the request's number (1 for the first).
Answer = Callable[[int], Awaitable[web.StreamResponse]]


class Receipt(NamedTuple):
    webhook_id: str
    at: float  # time.time() when it came
    ok: bool | None  # answered success; None: a test's own answer
    path: str
    signature: bool | None  # verified; None without a secret
    headers: dict[str, str]
    body: str


class Merchant:
    """Answers callbacks as its mode says and records them; see the module's doc."""

    def __init__(
        self,
        signing_key: bytes | None = None,
        mode: str = "success",
        delay: float = 0.0,
        keep: int | None = None,
        refuse_bad_signatures: bool = False,
    ) -> None:
        self.signing_key = signing_key
        self.mode = mode
        self.modes: dict[str, str] = {}  # by path: its own mode instead of `mode`
        self.delay = delay
        # 401 to a callback whose signature does not verify (the mock merchant's way).
        self.refuse_bad_signatures = refuse_bad_signatures
        self.answer: Answer | None = None
        self.received: deque[Receipt] = deque(maxlen=keep)  # the last `keep`; all with None
        self.ids: Counter[str] = Counter()  # requests by webhook-id
        self.unsigned = 0

    def signature_problem(
        self, headers: Mapping[str, str], body: str, keys: Sequence[bytes]
    ) -> str | None:
        """Why the Standard Webhooks signature does not verify with any of `keys`; None when
        it does."""
        try:
            msg_id = headers["webhook-id"]
            timestamp = int(headers["webhook-timestamp"])
            signature = headers["webhook-signature"]
        except (KeyError, ValueError):
            return "missing webhook signature headers"
        if abs(time.time() - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
            return "webhook timestamp outside tolerance"
        if not any(verify(key, msg_id, timestamp, body, signature) for key in keys):
            return "invalid webhook signature"
        return None

    async def receive(
        self, request: web.Request, keys: Sequence[bytes] | None = None
    ) -> web.StreamResponse:
        """Answer and record a callback, verified with `keys` when given (else with this
        merchant's own key, if it has one)."""
        body = await request.text()
        webhook_id = request.headers.get("webhook-id", "")
        self.ids[webhook_id] += 1
        self.unsigned += "webhook-signature" not in request.headers
        if keys is None and self.signing_key is not None:
            keys = (self.signing_key,)
        problem = None if keys is None else self.signature_problem(request.headers, body, keys)
        refused = problem is not None and self.refuse_bad_signatures
        mode, again = self.modes.get(request.path, self.mode), self.ids[webhook_id] > 1
        ok = not refused and (mode in ("success", "chunked") or (mode == "fail-first" and again))
        if self.received.maxlen != 0:
            signature = None if keys is None else problem is None
            self.received.append(
                Receipt(
                    webhook_id,
                    time.time(),
                    None if self.answer else ok,
                    request.path,
                    signature,
                    dict(request.headers),
                    body,
                )
            )
        if self.answer is not None:
            return await self.answer(self.requests)
        if refused:
            return web.Response(status=401, text=problem)
        return await self._answer(request, mode, ok)

    async def _answer(self, request: web.Request, mode: str, ok: bool) -> web.StreamResponse:
        if mode == "hang":
            await asyncio.sleep(3600)
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if mode == "chunked":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(b"suc")
            await asyncio.sleep(0.05)
            await resp.write(b"cess")
            await resp.write_eof()
            return resp
        if mode == "garbage":
            return web.Response(text="ok, thanks")
        return web.Response(text="success") if ok else web.Response(status=500, text="error")

    @property
    def requests(self) -> int:
        return sum(self.ids.values())

    def tally(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "distinct": len(self.ids),
            "duplicates": sum(n - 1 for n in self.ids.values() if n > 1),
            "unsigned": self.unsigned,
            "receipts": [receipt[:5] for receipt in self.received],
        }

    def reset(self) -> None:
        self.received.clear()
        self.ids.clear()
        self.unsigned = 0

    def app(self) -> web.Application:
        """This merchant on its own: callbacks to any path, and its /_ controls."""

        async def tally(_: web.Request) -> web.Response:
            return web.json_response(self.tally())

        async def set_mode(request: web.Request) -> web.Response:
            change = await request.json()
            if change.get("mode") not in MODES:
                return web.json_response({"error": f"mode must be one of {MODES}"}, status=400)
            if "path" in change:
                self.modes[_path(str(change["path"]))] = change["mode"]
            else:
                self.mode = change["mode"]
            self.delay = float(change.get("delay", self.delay))
            return web.json_response({"mode": self.mode, "delay": self.delay, "modes": self.modes})

        async def reset(_: web.Request) -> web.Response:
            self.reset()
            return web.json_response(self.tally())

        app = web.Application(client_max_size=1024**2)
        app.router.add_get("/_tally", tally)
        app.router.add_post("/_mode", set_mode)
        app.router.add_post("/_reset", reset)
        app.router.add_post("/{tail:.*}", self.receive)
        return app

    def routes(self) -> list[Route]:
        """This merchant as `dev`'s mock merchant, on the API's port."""

        async def receive(request: web.Request, _: None) -> web.StreamResponse:
            # Verified with the secrets of the endpoints at this path (the demo's `mock`).
            services = request.app[SERVICES]
            keys = await endpoints.signing_keys_at(services.pool, services.box, request.path)
            answer = await self.receive(request, keys)
            if answer.status == 401 and isinstance(answer, web.Response):
                raise errors.Unauthorized(answer.text)  # in the envelope, as it is declared
            return answer

        async def listed(_: web.Request, __: None) -> list[ReceivedCallback]:
            return list(reversed(self.callbacks().values()))

        return [
            Route(
                "POST",
                MOCK_MERCHANT_PATH,
                receive,
                "Mock merchant: receives a callback, answers 'success'",
                "test",
                raw="text/plain",
                raises=(errors.Unauthorized,),
                database=False,
            ),
            Route(
                "GET",
                MOCK_MERCHANT_PATH,
                listed,
                "Mock merchant: callbacks received (newest first)",
                "test",
                response=list[ReceivedCallback],
                database=False,
            ),
        ]

    def callbacks(self) -> dict[str, ReceivedCallback]:
        """Each callback kept and not refused, by webhook-id, as it first came."""
        found: dict[str, ReceivedCallback] = {}
        for r in self.received:
            key = r.webhook_id or f"unsigned-{int(r.at * 1e9)}"
            if r.signature is not False and key not in found:
                try:
                    payload = json.loads(r.body)
                except ValueError:
                    payload = r.body
                found[key] = ReceivedCallback(
                    webhook_id=key,
                    received_at=datetime.fromtimestamp(r.at, UTC),
                    signature_verified=bool(r.signature),
                    payload=payload,
                )
        return found


def _path(path: str) -> str:
    return path if path.startswith("/") else f"/{path}"


def _mode_for(value: str) -> tuple[str, str]:
    """--mode-for's PATH=MODE."""
    path, _, mode = value.rpartition("=")
    if not path or mode not in MODES:
        raise argparse.ArgumentTypeError(f"{value!r}: not PATH=MODE, MODE one of {MODES}")
    return _path(path), mode


def mock_merchant_routes(settings: Settings) -> list[Route]:
    """The mock merchant's routes with GROUPBUY_MOCK_MERCHANT (as under `dev`), else none."""
    if not settings.mock_merchant:
        return []
    merchant = Merchant(keep=MOCK_MERCHANT_KEEPS, refuse_bad_signatures=True)
    return merchant.routes()


async def serve(merchant: Merchant) -> None:
    # handler_cancellation: a hung answer ends when the sender gives up on it.
    runner = web.AppRunner(
        merchant.app(), access_log=None, handle_signals=False, handler_cancellation=True
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    with on_stop_signals(stop.set):
        await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="success")
    parser.add_argument(
        "--mode-for", type=_mode_for, action="append", default=[], metavar="PATH=MODE",
        help="answer callbacks to PATH as MODE says (repeatable)",
    )  # fmt: skip
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--secret", default=None, help="whsec_...: verify signatures")
    parser.add_argument("--keep", type=int, default=None, help="receipts kept (default all)")
    args = parser.parse_args()
    key = base64.b64decode(args.secret.removeprefix("whsec_")) if args.secret else None
    merchant = Merchant(key, args.mode, args.delay, args.keep)
    merchant.modes.update(args.mode_for)
    asyncio.run(serve(merchant))


if __name__ == "__main__":
    main()
