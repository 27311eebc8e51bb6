"""Merchants for the fault harness, each its own process, and their handle.

    python -m tests.faults.merchant [--mode MODE] [--delay S] [--secret whsec_...]
    python -m tests.faults.merchant --hostile [--redirect-to URL]

Prints "PORT <n>" once it listens on 127.0.0.1. Every callback it gets is recorded as a
receipt: (webhook-id, arrival time.time(), whether it answers success, path, signature
valid). GET /_tally returns {"receipts": [...]}; POST /_mode {"mode", "delay"} changes the
behaviour of later callbacks.

Modes: success (answers `success`, after --delay), hang (never answers), fail-first (500
to the first request of each webhook-id, success after), error (500 always).

--hostile is a raw TCP server whose path picks the misbehaviour (none ever says success):
/garbage (random bytes, not HTTP), /huge (200 announcing 1 GiB of body, streamed), /not-success
(200 "ok"), /error (500), /reset (TCP reset after reading the request), /trickle (200 whose
body `success` comes one byte per 0.3 s), /huge-headers (a 1 MiB header line), /redirect
(302 to --redirect-to, which a sender must not follow).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from .procs import GUARD, LIVE, ROOT, clean_env, open_log

MODES = ("success", "hang", "fail-first", "error")
HOSTILE_PATHS = (
    "garbage", "huge", "not-success", "error", "reset", "trickle", "huge-headers", "redirect",
)  # fmt: skip

Receipt = tuple[str, float, bool, str, bool | None]


def signature_ok(key: bytes | None, headers: Any, body: bytes) -> bool | None:
    """Standard Webhooks v1 signature check; None when no secret is configured."""
    if key is None:
        return None
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = headers.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, s) for s in given)


@dataclass
class Behaviour:
    mode: str
    delay: float
    key: bytes | None
    receipts: list[Receipt] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)

    async def notify(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        self.seen[msg_id] += 1
        mode = self.mode
        ok = mode == "success" or (mode == "fail-first" and self.seen[msg_id] > 1)
        sig = signature_ok(self.key, request.headers, body)
        self.receipts.append((msg_id, time.time(), ok, request.path, sig))
        if mode == "hang":
            await asyncio.sleep(3600)
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if ok:
            return web.Response(text="success")
        return web.Response(status=500, text="merchant error")

    async def tally(self, _: web.Request) -> web.Response:
        return web.json_response({"receipts": self.receipts})

    async def set_mode(self, request: web.Request) -> web.Response:
        change = await request.json()
        if change.get("mode") not in MODES:
            return web.json_response({"error": f"mode must be one of {MODES}"}, status=400)
        self.mode = change["mode"]
        self.delay = float(change.get("delay", self.delay))
        return web.json_response({"mode": self.mode, "delay": self.delay})


async def serve_http(behaviour: Behaviour) -> None:
    app = web.Application(client_max_size=1024**2)
    app.router.add_get("/_tally", behaviour.tally)
    app.router.add_post("/_mode", behaviour.set_mode)
    app.router.add_post("/{tail:.*}", behaviour.notify)
    # handler_cancellation: a hung handler ends when the sender gives up on it.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    await _until_signalled()
    await runner.cleanup()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# --- hostile ------------------------------------------------------------------------------


@dataclass
class Hostile:
    redirect_to: str
    receipts: list[Receipt] = field(default_factory=list)
    huge_bytes_sent: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(30):
                await self._handle(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        await reader.readexactly(int(headers.get("content-length", "0")))
        if method == "GET" and path == "/_tally":
            body = json.dumps({"receipts": self.receipts, "hugeBytes": self.huge_bytes_sent})
            await _respond(writer, 200, body.encode(), "application/json")
            return
        self.receipts.append((headers.get("webhook-id", ""), time.time(), False, path, None))
        await self.misbehave(path.strip("/"), writer)

    async def misbehave(self, kind: str, writer: asyncio.StreamWriter) -> None:
        if kind == "garbage":
            writer.write(os.urandom(700))
        elif kind == "huge":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1073741824\r\n\r\n"
            )
            chunk = b"success " * 8192
            started = time.monotonic()
            while time.monotonic() - started < 5:  # until the sender hangs up
                writer.write(chunk)
                await writer.drain()
                self.huge_bytes_sent += len(chunk)
        elif kind == "not-success":
            await _respond(writer, 200, b"ok, thanks")
        elif kind == "error":
            await _respond(writer, 500, b"success")  # the right body, the wrong status
        elif kind == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif kind == "trickle":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\n"
            )
            for byte in b"success":
                await writer.drain()
                await asyncio.sleep(0.3)
                writer.write(bytes([byte]))
        elif kind == "huge-headers":
            writer.write(
                b"HTTP/1.1 200 OK\r\nX-Junk: "
                + b"a" * 1024**2
                + b"\r\nContent-Length: 7\r\n\r\nsuccess"
            )
        elif kind == "redirect":
            writer.write(
                b"HTTP/1.1 302 Found\r\nLocation: " + self.redirect_to.encode()
                + b"\r\nContent-Length: 0\r\n\r\n"
            )  # fmt: skip
        else:
            await _respond(writer, 404, b"no such misbehaviour")
        await writer.drain()


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, kind: str = "text/plain"
) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def serve_hostile(redirect_to: str) -> None:
    hostile = Hostile(redirect_to)
    server = await asyncio.start_server(hostile.handle, "127.0.0.1", 0, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await _until_signalled()
    server.close()


# --- the handle the harness uses -----------------------------------------------------------


class Merchant:
    """A merchant process: `async with Merchant(...) as m`; m.url(path) for notifyUrls."""

    def __init__(
        self, name: str, log: Path, mode: str = "success", delay: float = 0.0,
        secret: str | None = None, hostile: bool = False, redirect_to: str = "",
    ) -> None:  # fmt: skip
        self.name = name
        self.log = log
        self.args = ["--mode", mode, "--delay", str(delay)]
        if secret:
            self.args += ["--secret", secret]
        if hostile:
            self.args = ["--hostile", "--redirect-to", redirect_to]
        self.base = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None

    def url(self, path: str = "notify") -> str:
        return f"{self.base}/{path}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def __aenter__(self) -> Merchant:
        log = open_log(self.log)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", GUARD, str(os.getpid()), "-m", "tests.faults.merchant",
                *self.args, cwd=ROOT, env=clean_env({}), stdout=asyncio.subprocess.PIPE,
                stderr=log, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()
        LIVE[self._proc.pid] = self._proc
        assert self._proc.stdout is not None
        line = (await asyncio.wait_for(self._proc.stdout.readline(), 30)).decode()
        if not line.startswith("PORT "):
            await self.__aexit__(None, None, None)
            raise RuntimeError(f"merchant {self.name} did not start: {line!r}")
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
        if proc is not None:
            LIVE.pop(proc.pid, None)

    async def receipts(self) -> list[Receipt]:
        assert self._http is not None
        async with self._http.get(f"{self.base}/_tally") as resp:
            data = json.loads(await resp.read())
        return [(r[0], r[1], r[2], r[3], r[4]) for r in data["receipts"]]

    async def huge_bytes(self) -> int:
        """How much of its huge bodies a hostile merchant got to send."""
        assert self._http is not None
        async with self._http.get(f"{self.base}/_tally") as resp:
            return int(json.loads(await resp.read()).get("hugeBytes", 0))

    async def set_mode(self, mode: str, delay: float = 0.0) -> None:
        assert self._http is not None
        async with self._http.post(
            f"{self.base}/_mode", json={"mode": mode, "delay": delay}
        ) as resp:
            resp.raise_for_status()


def _key(secret: str | None) -> bytes | None:
    return base64.b64decode(secret.removeprefix("whsec_")) if secret else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--mode", choices=MODES, default="success")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--secret", default=None)
    parser.add_argument("--hostile", action="store_true")
    parser.add_argument("--redirect-to", default="http://127.0.0.1:9/")
    args = parser.parse_args()
    if args.hostile:
        asyncio.run(serve_hostile(args.redirect_to))
    else:
        asyncio.run(serve_http(Behaviour(args.mode, args.delay, _key(args.secret))))


if __name__ == "__main__":
    main()
