"""A merchant in a process of its own (dev.merchant, or a module that starts the same way:
prints "PORT <n>" once it listens on 127.0.0.1, stops on SIGTERM) and its handle, for the
fault scenarios and the benchmarks: `async with MerchantProcess(...) as m`, m.url() for
notifyUrls."""

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp

# How the merchant's process is started, given its arguments after `python`: stdout a pipe.
Spawn = Callable[[Sequence[str]], Awaitable[asyncio.subprocess.Process]]
# What the merchant's GET /_tally lists of each callback: webhook-id, when it came
# (time.time()), whether it was answered success, path, whether its signature verified.
Tallied = tuple[str, float, bool | None, str, bool | None]


async def _spawn(args: Sequence[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE
    )


class MerchantProcess:
    def __init__(
        self, *args: str, module: str = "groupbuy_async.dev.merchant", spawn: Spawn = _spawn
    ) -> None:
        self.args = ["-m", module, *args]
        self.spawn = spawn
        self.base = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None

    def url(self, path: str = "notify") -> str:
        return f"{self.base}/{path}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def __aenter__(self) -> Self:
        self._proc = await self.spawn(self.args)
        assert self._proc.stdout is not None
        line = (await asyncio.wait_for(self._proc.stdout.readline(), 30)).decode()
        if not line.startswith("PORT "):
            await self.__aexit__(None, None, None)
            raise RuntimeError(f"{' '.join(self.args)} did not start: {line!r}")
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.close()
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._http is not None
        async with self._http.request(method, self.url(path), json=body) as resp:
            resp.raise_for_status()
            return json.loads(await resp.read())

    async def tally(self) -> dict[str, Any]:
        """{"requests", "distinct", "duplicates", "unsigned", "receipts"} (see dev.merchant)."""
        tally: dict[str, Any] = await self._call("GET", "_tally")
        return tally

    async def receipts(self) -> list[Tallied]:
        return [(r[0], r[1], r[2], r[3], r[4]) for r in (await self.tally())["receipts"]]

    async def set_mode(self, mode: str, delay: float = 0.0, path: str | None = None) -> None:
        """How later callbacks are answered (to `path` only, when given; see dev.merchant)."""
        body: dict[str, Any] = {"mode": mode, "delay": delay}
        if path is not None:
            body["path"] = path
        await self._call("POST", "_mode", body)

    async def reset(self) -> None:
        await self._call("POST", "_reset")
