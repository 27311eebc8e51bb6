"""A local merchant for the benchmarks, run as its own process, and its handle.

    python -m bench.receiver [--delay SECONDS] [--port 0]

Answers POST /notify with "success", at once or after `--delay`; counts requests per
`webhook-id` so a benchmark can check each callback arrived exactly once. GET /count gives
{"requests", "distinct", "duplicates", "unsigned"}; POST /reset clears the tally. Prints
"PORT <n>" on stdout once it listens. Its own process, so it never shares (or slows) the
event loop of the code being measured.
"""

import argparse
import asyncio
import signal
import sys
from collections import Counter
from types import TracebackType

import aiohttp
from aiohttp import web

from .common import BenchFailure, stop_process


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.unsigned = 0
        self.ids: Counter[str] = Counter()

    def reset(self) -> None:
        self.requests = self.unsigned = 0
        self.ids.clear()

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "distinct": len(self.ids),
            "duplicates": sum(n - 1 for n in self.ids.values() if n > 1),
            "unsigned": self.unsigned,
        }


def build_app(delay: float) -> web.Application:
    tally = Tally()

    async def notify(request: web.Request) -> web.Response:
        await request.read()
        tally.requests += 1
        tally.ids[request.headers.get("webhook-id", "")] += 1
        if "webhook-signature" not in request.headers:
            tally.unsigned += 1
        if delay > 0:
            await asyncio.sleep(delay)
        return web.Response(text="success")

    async def count(_: web.Request) -> web.Response:
        return web.json_response(tally.as_dict())

    async def reset(_: web.Request) -> web.Response:
        tally.reset()
        return web.json_response(tally.as_dict())

    app = web.Application()
    app.router.add_post("/notify", notify)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    return app


async def serve(delay: float, port: int) -> None:
    runner = web.AppRunner(build_app(delay), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


class Receiver:
    """This module in a child process, answering after `delay_ms`: `async with`."""

    def __init__(self, delay_ms: int) -> None:
        self.delay_ms = delay_ms
        self.base = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._control: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"{self.base}/notify"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def __aenter__(self) -> "Receiver":
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.receiver", "--delay", str(self.delay_ms / 1000),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._proc.stdout is not None
        line = (await asyncio.wait_for(self._proc.stdout.readline(), 30)).decode()
        if not line.startswith("PORT "):
            await stop_process(self._proc)
            raise BenchFailure(f"receiver did not start: {line!r}")
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"
        self._control = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._control is not None:
            await self._control.close()
        if self._proc is not None:
            await stop_process(self._proc)

    async def count(self) -> dict[str, int]:
        assert self._control is not None
        async with self._control.get(f"{self.base}/count") as resp:
            return await resp.json()  # type: ignore[no-any-return]

    async def reset(self) -> None:
        assert self._control is not None
        async with self._control.post(f"{self.base}/reset") as resp:
            await resp.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    args = parser.parse_args()
    asyncio.run(serve(args.delay, args.port))


if __name__ == "__main__":
    main()
